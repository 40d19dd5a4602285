//! Lower hard links across copy-up (what the kernel's `index=on` is for).
//!
//! When a lower file with several names is copied up, every other name of it that
//! the merged tree still shows from that lower layer is linked to the copy in the
//! upper layer, so a write through one name is seen through every other, st_nlink
//! stays right, and all of it survives a remount as plain upper hard links, which
//! the kernel (and any other reader) understands without an index.
//!
//! The names are found through a per-layer map of (inode number → paths) of the
//! multiply-linked non-directories, built once per lower layer on first need (lower
//! layers never change), then each path is resolved through the merged view,
//! following a directory that a rename moved (found among the nodes the kernel
//! knows): a name that is whited out, hidden by an opaque directory or shadowed by an
//! upper object is not linked.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, OnceLock};

use fuser::FileType;
use log::debug;

use crate::inode::Node;
use crate::namei;
use crate::overlay::Overlay;
use crate::sys;

/// Paths (from the layer root, components) of the multiply-linked non-directories of
/// one layer, by inode number.
type LinkMap = HashMap<u64, Vec<Vec<CString>>>;

/// The link maps of all layers, each built on first use.
pub struct Links {
    maps: Vec<OnceLock<Arc<LinkMap>>>,
}

impl Links {
    pub fn new(layers: usize) -> Self {
        Links {
            maps: (0..layers).map(|_| OnceLock::new()).collect(),
        }
    }

    fn map(&self, ov: &Overlay, layer: u16) -> Arc<LinkMap> {
        self.maps[layer as usize]
            .get_or_init(|| {
                let map = scan(ov.layer(layer).root.as_fd()).unwrap_or_default();
                debug!("layer {layer}: {} multiply-linked inodes", map.len());
                Arc::new(map)
            })
            .clone()
    }
}

/// Walks a layer (never following a symlink) and records every non-directory whose
/// link count is above one.
fn scan(root: std::os::fd::BorrowedFd) -> io::Result<LinkMap> {
    let mut map = LinkMap::new();
    let top = sys::openat(root, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut todo: Vec<(OwnedFd, Vec<CString>)> = vec![(top, Vec::new())];
    while let Some((dir, path)) = todo.pop() {
        let Ok(entries) = sys::read_dir_all(dir.as_fd()) else {
            continue;
        };
        for e in entries {
            let Ok(name) = CString::new(e.name) else {
                continue;
            };
            if e.dtype == libc::DT_DIR {
                if let Ok(sub) =
                    sys::openat(dir.as_fd(), &name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                {
                    let mut p = path.clone();
                    p.push(name);
                    todo.push((sub, p));
                }
                continue;
            }
            let Ok(st) = sys::statat(dir.as_fd(), &name) else {
                continue;
            };
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                if let Ok(sub) =
                    sys::openat(dir.as_fd(), &name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                {
                    let mut p = path.clone();
                    p.push(name);
                    todo.push((sub, p));
                }
            } else if st.st_nlink > 1 && !crate::whiteout::is_whiteout_dev(&st) {
                let mut p = path.clone();
                p.push(name);
                map.entry(st.st_ino).or_default().push(p);
            }
        }
    }
    Ok(map)
}

/// A node for the directory found at (`parent`, `name`): the one the kernel knows, or
/// a transient one.
fn dir_node(ov: &Overlay, parent: &Arc<Node>, name: &CString) -> io::Result<Arc<Node>> {
    let f = namei::lookup(ov, parent, name)?;
    if f.kind != FileType::Directory {
        return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
    }
    Ok(match ov.table.get(f.ino) {
        Some(n) if n.kind == FileType::Directory => n,
        _ => Arc::new(Node::new(
            f.ino,
            f.kind,
            parent.clone(),
            name.clone(),
            f.refs,
        )),
    })
}

/// The names under which the merged tree still shows the lower object (`layer`,
/// `lower_dev`, `lower_ino`) itself, as (parent directory, name). A name already
/// copied up resolves to the upper copy and is not among them.
pub fn live_names(
    ov: &Overlay,
    layer: u16,
    lower_dev: u64,
    lower_ino: u64,
) -> Vec<(Arc<Node>, CString)> {
    let map = ov.links.map(ov, layer);
    let Some(paths) = map.get(&lower_ino) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    'paths: for comps in paths {
        let Some((last, dirs)) = comps.split_last() else {
            continue;
        };
        let Some(mut cur) = ov.table.root() else {
            break;
        };
        let mut i = 0;
        while i < dirs.len() {
            match dir_node(ov, &cur, &dirs[i]) {
                Ok(n) => cur = n,
                // Moved away with a directory? Pick the walk up where it shows now.
                Err(_) => match moved_dir(ov, layer, &dirs[..=i]) {
                    Some((n, depth)) if depth > i => (cur, i) = (n, depth - 1),
                    _ => continue 'paths,
                },
            }
            i += 1;
        }
        // Not whited out, not shadowed, not moved away.
        match namei::lookup(ov, &cur, last) {
            Ok(f)
                if f.refs.first().is_some_and(|r| r.layer == layer)
                    && f.stat.st_ino == lower_ino
                    && f.stat.st_dev == lower_dev =>
            {
                out.push((cur, last.clone()))
            }
            _ => {}
        }
    }
    out
}

/// The known directory node that shows the deepest of the directories `dirs[..k]`
/// (components from the root of `layer`) wherever it is in the merged tree now
/// (a rename moves a directory and leaves a redirect to its lower path), with that
/// `k`. Visits every node the kernel holds; only a copy-up of a lower hard link
/// whose other name's directory was renamed comes here.
fn moved_dir(ov: &Overlay, layer: u16, dirs: &[CString]) -> Option<(Arc<Node>, usize)> {
    let want: Vec<&[u8]> = dirs.iter().map(|c| c.to_bytes()).collect();
    ov.table
        .filter_map(|n| {
            if n.kind != FileType::Directory || n.stack().pos(layer).is_none() {
                return None;
            }
            let path = n.layer_path(layer).ok()?;
            let comps: Vec<&[u8]> = path
                .split(|&b| b == b'/')
                .filter(|c| !c.is_empty())
                .collect();
            let depth = comps.len();
            (depth > 0 && depth <= want.len() && comps[..] == want[..depth])
                .then(|| (n.clone(), depth))
        })
        .into_iter()
        .max_by_key(|(_, depth)| *depth)
}

/// Links (`parent`, `name`) in the upper layer to the upper file (`src_dir`,
/// `src_name`), copying the parent up first.
pub fn link_in_upper(
    ov: &Overlay,
    src_dir: std::os::fd::BorrowedFd,
    src_name: &CString,
    parent: &Arc<Node>,
    name: &CString,
) -> io::Result<()> {
    crate::copy_up::copy_up(ov, parent)?;
    let up = parent.dir_fd(ov, 0)?;
    sys::linkat(src_dir, src_name, up.as_fd(), name)
}

/// After `node` (a non-directory with several lower names) was copied up from the
/// lower object `lower` (its stat) in `layer`, links every other live name of that
/// object to the upper copy.
pub fn link_up_aliases(ov: &Overlay, node: &Arc<Node>, layer: u16, lower: &sys::Stat) {
    let aliases = live_names(ov, layer, lower.st_dev, lower.st_ino);
    if aliases.is_empty() {
        return;
    }
    let Ok((src_dir, src_name)) = node.real(ov) else {
        return;
    };
    for (parent, name) in aliases {
        match link_in_upper(ov, src_dir.as_fd(), &src_name, &parent, &name) {
            Ok(()) => {
                node.add_alias_last(&parent, &name);
                debug!("linked up alias {name:?} of ino {}", node.ino);
            }
            Err(e) => debug!("alias {name:?} of ino {} not linked: {e}", node.ino),
        }
    }
}
