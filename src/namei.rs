//! Name lookup across the layers (the kernel's `namei.c`).
//!
//! A name is searched in each layer of the parent directory, topmost first. A
//! whiteout stops the search; a non-directory hides everything below it; directories
//! merge until one of them is opaque.

use std::ffi::CString;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use fuser::FileType;

use crate::inode::{kind_of, LayerRef, Node};
use crate::overlay::Overlay;
use crate::sys::{self, Stat};
use crate::whiteout::{self, Opacity};

/// What a lookup found: the topmost object's stat and inode number, and its layers.
pub struct Found {
    pub ino: u64,
    pub kind: FileType,
    pub stat: Stat,
    pub refs: Vec<LayerRef>,
}

fn enoent() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

/// Rejects names that can never be looked up: empty, `.`/`..`, with a `/`, and the
/// names the AUFS whiteout format reserves.
pub fn check_name(name: &[u8]) -> io::Result<CString> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    if whiteout::is_aufs_name(name) {
        return Err(enoent());
    }
    if name.len() > 255 {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Resolves `name` in the merged directory `parent`.
pub fn lookup(ov: &Overlay, parent: &Arc<Node>, name: &CString) -> io::Result<Found> {
    let pstack = parent.stack();
    let wh_name = CString::new(whiteout::aufs_whiteout_name(name.as_bytes()))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut top: Option<(Stat, u16)> = None;
    let mut refs: Vec<LayerRef> = Vec::new();
    let last = pstack.refs.len().saturating_sub(1);
    for (pos, pref) in pstack.refs.iter().enumerate() {
        let dir = match parent.dir_fd(ov, pref.layer) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => continue,
            Err(e) => return Err(e),
        };
        let st = match sys::statat(dir.as_fd(), name) {
            Ok(st) => st,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                // An AUFS whiteout in this layer hides the name in every layer below.
                if pos < last && sys::statat(dir.as_fd(), &wh_name).is_ok() {
                    break;
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        if whiteout::is_whiteout_dev(&st)
            || (pref.xwhiteouts && whiteout::is_xattr_whiteout(dir.as_fd(), name, &st))
        {
            break;
        }
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if top.is_some() && !is_dir {
            // A non-directory below a directory ends the merge.
            break;
        }
        let opacity = if is_dir && pos < last {
            whiteout::opacity(
                sys::openat(dir.as_fd(), name, libc::O_PATH | libc::O_DIRECTORY, 0)?.as_fd(),
                c"",
            )
        } else {
            Opacity::Transparent
        };
        refs.push(LayerRef {
            layer: pref.layer,
            xwhiteouts: opacity == Opacity::XWhiteouts,
        });
        if top.is_none() {
            top = Some((st, pref.layer));
        }
        if !is_dir || opacity == Opacity::Opaque {
            break;
        }
    }
    let (stat, layer) = top.ok_or_else(enoent)?;
    let kind = kind_of(stat.st_mode).ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))?;
    let ino = ov.inos.map(ov.layer(layer), stat.st_dev, stat.st_ino);
    Ok(Found {
        ino,
        kind,
        stat,
        refs,
    })
}
