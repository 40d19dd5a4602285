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
//!
//! This module holds the maps (state, below the overlay's); the walk that finds the
//! live names is `namei::live_names`, the linking `copy_up::link_up_aliases`.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, OnceLock};

use log::debug;

use crate::sys;

/// Paths (from the layer root, components) of the multiply-linked non-directories of
/// one layer, by inode number.
pub type LinkMap = HashMap<u64, Vec<Vec<CString>>>;

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

    /// The map of `layer`, whose root is `root`: scanned at the first call.
    pub fn map(&self, layer: u16, root: BorrowedFd) -> Arc<LinkMap> {
        self.maps[layer as usize]
            .get_or_init(|| {
                let map = scan(root).unwrap_or_default();
                debug!("layer {layer}: {} multiply-linked inodes", map.len());
                Arc::new(map)
            })
            .clone()
    }
}

/// Walks a layer (never following a symlink) and records every non-directory whose
/// link count is above one.
fn scan(root: BorrowedFd) -> io::Result<LinkMap> {
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
