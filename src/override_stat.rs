//! Ownership and mode kept in an xattr (fuse-overlayfs's `xattr_permissions=1|2`),
//! for stores where the daemon cannot chown (rootless podman with `force_mask`).
//!
//! A layer whose root carries one of the override xattrs keeps, for each of its
//! directories and regular files, the owner and mode the mount shows in that xattr as
//! `UID:GID:MODE[:TYPE]` (mode in octal; TYPE, as containers/storage writes it today,
//! one of `file`, `dir`, `symlink`, `pipe`, `socket`, `char-MAJ-MIN`, `block-MAJ-MIN`:
//! an empty file with `char-1-3` shows as that device, a plain user's stand-in): `security.fuseoverlayfs.override_stat`,
//! `user.containers.override_stat` or `user.fuseoverlayfs.override_stat`, the first
//! found on the root. With `xattr_permissions=1` (`security.`) or `=2`
//! (`user.containers.`) the upper layer is such a layer: its root is marked, chown and
//! chmod write the xattr instead of changing the real file, new objects and copies get
//! it too. The names are private: never listed, read or set through the mount.

use std::ffi::CStr;
use std::io;

use crate::sys::{self, At, Stat};

pub const PRIVILEGED: &CStr = c"security.fuseoverlayfs.override_stat";
pub const CONTAINERS: &CStr = c"user.containers.override_stat";
pub const USER: &CStr = c"user.fuseoverlayfs.override_stat";

/// Is `name` one of the override xattrs?
pub fn is_override_name(name: &[u8]) -> bool {
    [PRIVILEGED, CONTAINERS, USER]
        .iter()
        .any(|n| n.to_bytes() == name)
}

/// The override xattr a layer uses, from the xattr names of its root (`None`: the
/// real owner and mode).
pub fn detect(root_xattrs: &[Vec<u8>]) -> Option<&'static CStr> {
    [PRIVILEGED, CONTAINERS, USER]
        .into_iter()
        .find(|n| root_xattrs.iter().any(|x| x.as_slice() == n.to_bytes()))
}

/// The xattr `xattr_permissions=N` writes in the upper layer.
pub fn for_setting(n: u8) -> Option<&'static CStr> {
    match n {
        1 => Some(PRIVILEGED),
        2 => Some(CONTAINERS),
        _ => None,
    }
}

fn applies(st: &Stat) -> bool {
    matches!(st.st_mode & libc::S_IFMT, libc::S_IFDIR | libc::S_IFREG)
}

/// What an override value says: owner, mode, and the type it stands for, if given.
#[derive(Debug, PartialEq, Eq)]
struct Value {
    uid: u32,
    gid: u32,
    mode: u32,
    /// The file type bits and device number the object shows instead of its own.
    kind: Option<(u32, u64)>,
    /// The TYPE field as written, kept when owner or mode change.
    type_field: Option<String>,
}

fn parse_type(t: &str) -> Option<(u32, u64)> {
    let dev = |rest: &str| {
        let (ma, mi) = rest.split_once('-')?;
        Some(libc::makedev(ma.parse().ok()?, mi.parse().ok()?))
    };
    Some(match t {
        "file" => (libc::S_IFREG, 0),
        "dir" => (libc::S_IFDIR, 0),
        "symlink" => (libc::S_IFLNK, 0),
        "pipe" => (libc::S_IFIFO, 0),
        "socket" => (libc::S_IFSOCK, 0),
        _ => {
            if let Some(r) = t.strip_prefix("char-") {
                (libc::S_IFCHR, dev(r)?)
            } else if let Some(r) = t.strip_prefix("block-") {
                (libc::S_IFBLK, dev(r)?)
            } else {
                return None;
            }
        }
    })
}

fn parse_value(v: &[u8]) -> Option<Value> {
    let s = std::str::from_utf8(v).ok()?;
    let mut it = s.trim_end_matches('\0').splitn(4, ':');
    let uid = it.next()?.parse().ok()?;
    let gid = it.next()?.parse().ok()?;
    let mode = u32::from_str_radix(it.next()?, 8).ok()?;
    let type_field = it.next().map(String::from);
    let kind = type_field.as_deref().and_then(parse_type);
    Some(Value {
        uid,
        gid,
        mode,
        kind,
        type_field,
    })
}

#[cfg(test)]
fn parse(v: &[u8]) -> Option<(u32, u32, u32)> {
    parse_value(v).map(|x| (x.uid, x.gid, x.mode))
}

/// Replaces owner and mode in `st` (the real object `at`) by its override, if the
/// layer uses `xattr` and the object has one; an empty regular file whose override
/// names a device, a fifo or a socket shows as one.
pub fn apply(xattr: Option<&CStr>, at: At, st: &mut Stat) {
    let Some(x) = xattr else { return };
    if !applies(st) {
        return;
    }
    let Some(v) = sys::getxattr(at, x).ok().as_deref().and_then(parse_value) else {
        return;
    };
    st.st_uid = v.uid;
    st.st_gid = v.gid;
    let mut ftype = st.st_mode & libc::S_IFMT;
    if let Some((t, rdev)) = v.kind {
        if ftype == libc::S_IFREG
            && st.st_size == 0
            && matches!(
                t,
                libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO | libc::S_IFSOCK
            )
        {
            ftype = t;
            st.st_rdev = rdev;
        }
    }
    st.st_mode = ftype | (v.mode & 0o7777);
}

/// Records owner and mode on the real object `at` in the override xattr `xattr`,
/// keeping the TYPE field the value had.
pub fn write(xattr: &CStr, at: At, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    let old = sys::getxattr(at, xattr).ok();
    match old
        .as_deref()
        .and_then(parse_value)
        .and_then(|v| v.type_field)
    {
        Some(t) => write_typed(xattr, at, uid, gid, mode, &t),
        None => {
            let v = format!("{uid}:{gid}:{:o}", mode & 0o7777);
            sys::setxattr(at, xattr, v.as_bytes(), 0)
        }
    }
}

/// Records owner, mode and type (`file`, `dir`, `char-1-3`, ...) in the override
/// xattr, as containers/storage writes it.
pub fn write_typed(
    xattr: &CStr,
    at: At,
    uid: u32,
    gid: u32,
    mode: u32,
    kind: &str,
) -> io::Result<()> {
    let v = format!("{uid}:{gid}:{:04o}:{kind}", mode & 0o7777);
    sys::setxattr(at, xattr, v.as_bytes(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fuse_overlayfs_values() {
        assert_eq!(parse(b"0:0:755"), Some((0, 0, 0o755)));
        assert_eq!(parse(b"1000:100:4755\0"), Some((1000, 100, 0o4755)));
        assert_eq!(parse(b"x:0:755"), None);
        assert_eq!(parse(b"0:0"), None);
    }

    #[test]
    fn parses_containers_storage_typed_values() {
        assert_eq!(parse(b"0:0:0755:dir"), Some((0, 0, 0o755)));
        let v = parse_value(b"0:5:0620:char-136-2").unwrap();
        assert_eq!(v.kind, Some((libc::S_IFCHR, libc::makedev(136, 2))));
        assert_eq!(v.type_field.as_deref(), Some("char-136-2"));
        assert_eq!(
            parse_value(b"1:1:644:block-8-1").unwrap().kind,
            Some((libc::S_IFBLK, libc::makedev(8, 1)))
        );
        assert_eq!(
            parse_value(b"1:1:644:pipe").unwrap().kind,
            Some((libc::S_IFIFO, 0))
        );
        assert_eq!(parse_value(b"1:1:644:char-x").unwrap().kind, None);
        assert_eq!(parse_value(b"1:1:644:char-x").unwrap().uid, 1);
    }
}
