//! `stratafs diff`: what a container changed against its image, as `docker diff` and
//! `podman diff` print it (`A`, `C`, `D` and a path, sorted), by their rules
//! (containers/storage `pkg/archive/changes.go`, the overlay driver's form): the
//! merged tree is compared with the image's; a directory made over a deleted one
//! (opaque) is a deletion, and its entries additions; an entry is changed if its mode, owner, device, mtime or (not for a
//! directory) size differ; a directory holding a change is changed; under an added or
//! deleted directory only that directory is listed for a deletion, every entry for an
//! addition. Only directories the upper holds (or that are new) are walked.

use std::io;

use super::view::{Item, View};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Add,
    Change,
    Delete,
}

impl Kind {
    pub fn letter(self) -> char {
        match self {
            Kind::Add => 'A',
            Kind::Change => 'C',
            Kind::Delete => 'D',
        }
    }
}

/// A change: its kind and its path in the tree (`/etc/motd`).
pub type Change = (Kind, String);

fn join(parent: &str, name: &[u8]) -> String {
    let n = String::from_utf8_lossy(name);
    if parent == "/" {
        format!("/{n}")
    } else {
        format!("{parent}/{n}")
    }
}

fn differ(a: &crate::sys::Stat, b: &crate::sys::Stat) -> bool {
    a.st_mode != b.st_mode
        || a.st_uid != b.st_uid
        || a.st_gid != b.st_gid
        || a.st_rdev != b.st_rdev
        || a.st_mtime != b.st_mtime
        || a.st_mtime_nsec != b.st_mtime_nsec
        || (a.st_mode & libc::S_IFMT != libc::S_IFDIR && a.st_size != b.st_size)
}

/// The changes of `new` (the container's view) against `old` (the image's).
pub fn changes(new: &View, old: &View) -> io::Result<Vec<Change>> {
    let mut out = Vec::new();
    walk(new, old, &new.root()?, Some(&old.root()?), "/", &mut out)?;
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

fn walk(
    new: &View,
    old: &View,
    dir: &Item,
    odir: Option<&Item>,
    path: &str,
    out: &mut Vec<Change>,
) -> io::Result<()> {
    let at_entry = out.len();
    let mut old_names: Vec<Vec<u8>> = match odir {
        Some(o) if o.is_dir() => old.names(o)?,
        _ => Vec::new(),
    };
    for name in new.names(dir)? {
        let Some(item) = new.child(dir, &name)? else {
            continue;
        };
        let p = join(path, &name);
        let oitem = match odir {
            Some(o) if o.is_dir() && old_names.contains(&name) => old.child(o, &name)?,
            _ => None,
        };
        old_names.retain(|n| *n != name);
        // A directory made over a deleted one (opaque in the upper): the old one is
        // deleted and everything in the new one added, as the overlay drivers of
        // docker and podman report it.
        if item.is_dir() && oitem.as_ref().is_some_and(|o| o.is_dir()) && new.upper_opaque(&item) {
            out.push((Kind::Delete, p.clone()));
            walk(new, old, &item, None, &p, out)?;
            continue;
        }
        match &oitem {
            None => out.push((Kind::Add, p.clone())),
            Some(o) if differ(&o.st, &item.st) => out.push((Kind::Change, p.clone())),
            Some(_) => {}
        }
        if item.is_dir() && (oitem.is_none() || new.in_upper(&item)) {
            let before = out.len();
            walk(
                new,
                old,
                &item,
                oitem.as_ref().filter(|o| o.is_dir()),
                &p,
                out,
            )?;
            let inner = out.len() > before;
            if inner && oitem.is_some() && !out[..before].iter().any(|(_, x)| *x == p) {
                out.insert(before, (Kind::Change, p.clone()));
            }
        }
    }
    for gone in old_names {
        out.push((Kind::Delete, join(path, &gone)));
    }
    let _ = at_entry;
    Ok(())
}
