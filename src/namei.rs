//! Name lookup across the layers (the kernel's `namei.c`).
//!
//! A name is searched in each layer of the parent directory, topmost first. A
//! whiteout stops the search; a non-directory hides everything below it; directories
//! merge until one of them is opaque.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use fuser::FileType;

use crate::inode::{kind_of, Node};
use crate::ondisk::Ovl;
use crate::overlay::Overlay;
use crate::stack::LayerRef;
use crate::sys::{self, At, Stat};
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
    let wh_name = whiteout::aufs_whiteout_name(name.as_bytes())?;
    let mut top: Option<(Stat, u16, Option<u64>)> = None;
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
                if pos < last
                    && !ov.aufs_free(&pstack, pos, dir.as_fd())
                    && sys::statat(dir.as_fd(), &wh_name).is_ok()
                {
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
        if top.is_none() {
            let origin = if ov.layer(pref.layer).is_upper {
                read_origin(dir.as_fd(), name)
            } else {
                None
            };
            let mut shown = st;
            ov.effective(
                pref.layer,
                At {
                    dir: dir.as_fd(),
                    name,
                },
                &mut shown,
            );
            top = Some((shown, pref.layer, origin));
        }
        if !is_dir {
            refs.push(LayerRef::new(pref.layer));
            break;
        }
        let sub = sys::openat(dir.as_fd(), name, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        // Opaque markers and redirects matter only where a layer lies below; one
        // listxattr serves both.
        let (xattrs, opacity) = if (pref.layer as usize) + 1 < ov.layers.len() {
            let names = sys::listxattr(At {
                dir: sub.as_fd(),
                name: c"",
            })
            .unwrap_or_default();
            let opacity = whiteout::opacity_with(sub.as_fd(), c"", &names);
            (names, opacity)
        } else {
            (Vec::new(), Opacity::Transparent)
        };
        refs.push(LayerRef {
            layer: pref.layer,
            xwhiteouts: opacity == Opacity::XWhiteouts,
            path: None,
        });
        if opacity == Opacity::Opaque {
            break;
        }
        if let Some(target) = read_redirect(sub.as_fd(), &xattrs) {
            // A renamed directory: its lower parts are found at the recorded path (an
            // absolute one from the layer roots, a relative one beside the parent's
            // directory in each layer).
            let start = if target.first() == Some(&b'/') {
                Redirect::Path(target[1..].to_vec())
            } else {
                Redirect::Sibling(parent, target)
            };
            follow_redirect(ov, pref.layer + 1, start, &mut refs)?;
            break;
        }
    }
    let (stat, layer, origin) = top.ok_or_else(enoent)?;
    let kind = kind_of(stat.st_mode).ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))?;
    let ino = origin.unwrap_or_else(|| ov.inos.map(ov.layer(layer), stat.st_dev, stat.st_ino));
    Ok(Found {
        ino,
        kind,
        stat,
        refs,
    })
}

/// Where a redirect sends the search in the layers below.
enum Redirect<'a> {
    /// A path from each layer's root.
    Path(Vec<u8>),
    /// A name beside `parent`'s directory in each layer (a relative redirect).
    Sibling(&'a Arc<Node>, Vec<u8>),
}

/// Adds the directories found where a redirect points, in the layers from `first`
/// down, as the kernel follows redirects: a whiteout or non-directory on the way ends
/// the search, a layer without the path is skipped, an opaque directory is the last
/// one merged, and a redirect met on the way (on the directory itself, or on one of
/// the directories of the path: renamed again after a remount pushed the first rename
/// down) sends the search in the layers below it on from its target.
fn follow_redirect(
    ov: &Overlay,
    first: u16,
    start: Redirect,
    refs: &mut Vec<LayerRef>,
) -> io::Result<()> {
    let mut fixed: Option<Vec<u8>> = None;
    'layers: for layer in first as usize..ov.layers.len() {
        let path = match (&fixed, &start) {
            (Some(p), _) | (None, Redirect::Path(p)) => p.clone(),
            (None, Redirect::Sibling(parent, name)) => {
                let mut p = parent.layer_path(layer as u16)?;
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(name);
                p
            }
        };
        let comps: Vec<&[u8]> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        if comps.is_empty() || comps.iter().any(|c| *c == b".." || *c == b".") {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let mut cur: Option<std::os::fd::OwnedFd> = None;
        let mut next_path = None;
        for (i, comp) in comps.iter().enumerate() {
            let cname = CString::new(*comp).map_err(|_| io::Error::from_raw_os_error(libc::EIO))?;
            let dir = cur
                .as_ref()
                .map_or(ov.layers[layer].root.as_fd(), |f| f.as_fd());
            match sys::statat(dir, &cname) {
                Ok(st) if whiteout::is_whiteout_dev(&st) => return Ok(()),
                Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => return Ok(()),
                Ok(_) => {}
                Err(_) => {
                    let wh = whiteout::aufs_whiteout_name(comp)?;
                    if sys::statat(dir, &wh).is_ok() {
                        return Ok(());
                    }
                    // Not in this layer; a redirect met on the way still holds below.
                    if let Some(p) = next_path {
                        fixed = Some(p);
                    }
                    continue 'layers;
                }
            }
            let next = sys::openat(dir, &cname, libc::O_PATH | libc::O_DIRECTORY, 0)?;
            let names = sys::listxattr(At {
                dir: next.as_fd(),
                name: c"",
            })
            .unwrap_or_default();
            let done = comps[..=i].join(&b'/');
            if let Some(target) = read_redirect(next.as_fd(), &names) {
                let mut p = redirect_target(&done, &target);
                for rest in &comps[i + 1..] {
                    p.push(b'/');
                    p.extend_from_slice(rest);
                }
                next_path = Some(p);
            }
            if i + 1 == comps.len() {
                let opacity = whiteout::opacity_with(next.as_fd(), c"", &names);
                let cpath = CString::new(path.clone())
                    .map_err(|_| io::Error::from_raw_os_error(libc::EIO))?;
                refs.push(LayerRef {
                    layer: layer as u16,
                    xwhiteouts: opacity == Opacity::XWhiteouts,
                    path: Some(Arc::new(cpath)),
                });
                if opacity == Opacity::Opaque {
                    return Ok(());
                }
            }
            cur = Some(next);
        }
        if let Some(p) = next_path {
            fixed = Some(p);
        }
    }
    Ok(())
}

/// Where a redirect on the directory at `path` points: an absolute target (leading
/// `/`) is a path from the layer root, a relative one a sibling name.
fn redirect_target(path: &[u8], target: &[u8]) -> Vec<u8> {
    if target.first() == Some(&b'/') {
        return target[1..].to_vec();
    }
    let mut p = match path.iter().rposition(|&b| b == b'/') {
        Some(i) => path[..=i].to_vec(),
        None => Vec::new(),
    };
    p.extend_from_slice(target);
    p
}

/// The inode number recorded at copy-up on the upper object (`dir`, `name`).
pub fn read_origin(dir: BorrowedFd, name: &std::ffi::CStr) -> Option<u64> {
    Ovl::StratafsOrigin.names().iter().find_map(|attr| {
        let v = sys::getxattr(At { dir, name }, attr).ok()?;
        Some(u64::from_le_bytes(v.try_into().ok()?))
    })
}

/// The redirect recorded on the directory open as `dir`, if any.
pub fn redirect_of(dir: BorrowedFd) -> Option<Vec<u8>> {
    let names = sys::listxattr(At { dir, name: c"" }).ok()?;
    read_redirect(dir, &names)
}

/// The redirect recorded on a renamed directory (open as `dir`, its xattr names
/// listed in `names`), if any.
fn read_redirect(dir: BorrowedFd, names: &[Vec<u8>]) -> Option<Vec<u8>> {
    Ovl::Redirect
        .names()
        .iter()
        .filter(|attr| names.iter().any(|n| n.as_slice() == attr.to_bytes()))
        .find_map(|attr| sys::getxattr(At { dir, name: c"" }, attr).ok())
        .filter(|v| !v.is_empty())
}

/// Does `name` exist in `parent`'s layers below the upper one? (If so, removing or
/// renaming it away needs a whiteout.)
pub fn lower_positive(ov: &Overlay, parent: &Arc<Node>, name: &CString) -> io::Result<bool> {
    let pstack = parent.stack();
    let wh_name = whiteout::aufs_whiteout_name(name.as_bytes())?;
    for pref in pstack.refs.iter().filter(|r| !ov.layer(r.layer).is_upper) {
        let dir = match parent.dir_fd(ov, pref.layer) {
            Ok(fd) => fd,
            Err(_) => continue,
        };
        match sys::statat(dir.as_fd(), name) {
            Ok(st) => {
                return Ok(!(whiteout::is_whiteout_dev(&st)
                    || (pref.xwhiteouts && whiteout::is_xattr_whiteout(dir.as_fd(), name, &st))))
            }
            Err(_) if sys::statat(dir.as_fd(), &wh_name).is_ok() => return Ok(false),
            Err(_) => continue,
        }
    }
    Ok(false)
}

/// A node for the directory found at (`parent`, `name`): the one the kernel knows, or
/// a transient one.
fn dir_node(ov: &Overlay, parent: &Arc<Node>, name: &CString) -> io::Result<Arc<Node>> {
    let f = lookup(ov, parent, name)?;
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
    let map = ov.links.map(layer, ov.layer(layer).root.as_fd());
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
        match lookup(ov, &cur, last) {
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
