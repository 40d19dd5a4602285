//! Layer directories in Docker's overlay2 form: `overlay2/<id>/diff/` (the files),
//! `link` (the short name), `lower` (`l/A:l/B`, the layers below, topmost first;
//! not for the bottom layer), `work/`; and `overlay2/l/<link> -> ../<id>/diff`.
//! A layer is built in `tmp/` and renamed into place whole.

use std::path::PathBuf;

use super::fsdir::Dir;
use super::store::{short_link, Store};

fn io(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// A layer being built: `tmp/<name>/` with an empty `diff/`.
pub struct Staged {
    pub name: String,
    pub dir: Dir,
    pub diff: Dir,
}

/// Starts a layer in `tmp/` (`name` must be unique among this command's staged items).
pub fn stage(store: &Store, name: &str) -> Result<Staged, String> {
    let tmp = store.tmp().map_err(io("tmp/"))?;
    tmp.remove(name).map_err(io(name))?;
    let dir = tmp.make_sub(name, 0o700).map_err(io(name))?;
    let diff = dir.make_sub("diff", 0o755).map_err(io("diff/"))?;
    Ok(Staged {
        name: name.to_string(),
        dir,
        diff,
    })
}

/// Gives a staged layer its `link`, `lower` and `work/`, renames it to
/// `overlay2/<id>` and links `l/<link>` to its `diff/`. `below` are the ids of the
/// layers under it, topmost first. With `merged`, a container's mount point too.
pub fn place(
    store: &Store,
    staged: Staged,
    id: &str,
    below: &[String],
    merged: bool,
) -> Result<(), String> {
    let link = short_link(id);
    staged
        .dir
        .write_atomic("link", link.as_bytes())
        .map_err(io("link"))?;
    if !below.is_empty() {
        let mut lower = Vec::new();
        for b in below {
            lower.push(format!("l/{}", store.link_of(b)?));
        }
        staged
            .dir
            .write_atomic("lower", lower.join(":").as_bytes())
            .map_err(io("lower"))?;
        staged.dir.make_sub("work", 0o700).map_err(io("work/"))?;
    }
    if merged {
        staged
            .dir
            .make_sub("merged", 0o755)
            .map_err(io("merged/"))?;
    }
    let layers = store.layers().map_err(io("overlay2/"))?;
    let tmp = store.tmp().map_err(io("tmp/"))?;
    tmp.rename(&staged.name, &layers, id)
        .map_err(io(&format!("placing layer {id}")))?;
    let l = layers.sub("l").map_err(io("overlay2/l"))?;
    let _ = l.remove(&link);
    l.symlink(&format!("../{id}/diff"), &link)
        .map_err(io("overlay2/l link"))?;
    layers.sync().map_err(io("overlay2/"))
}

/// Removes a layer directory and its `l/` link.
pub fn remove(store: &Store, id: &str) -> Result<(), String> {
    let layers = store.layers().map_err(io("overlay2/"))?;
    if let Ok(link) = store.link_of(id) {
        if let Ok(l) = layers.sub("l") {
            let _ = l.remove(&link);
        }
    }
    layers
        .remove(id)
        .map_err(io(&format!("removing layer {id}")))
}

/// The paths a mount takes for layers `ids` (topmost first): their `l/` links, as
/// Docker passes them.
pub fn lower_paths(store: &Store, ids: &[String]) -> Result<Vec<PathBuf>, String> {
    ids.iter()
        .map(|id| Ok(store.root.join("overlay2/l").join(store.link_of(id)?)))
        .collect()
}

/// The `diff/` directories of layers `ids`, opened.
pub fn diff_dirs(store: &Store, ids: &[String]) -> Result<Vec<Dir>, String> {
    let layers = store.layers().map_err(io("overlay2/"))?;
    ids.iter()
        .map(|id| layers.sub(id).and_then(|d| d.sub("diff")).map_err(io(id)))
        .collect()
}
