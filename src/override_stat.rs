//! Ownership and mode kept in an xattr (fuse-overlayfs's `xattr_permissions=1|2`),
//! for stores where the daemon cannot chown (rootless podman with `force_mask`).
//!
//! A layer whose root carries one of the override xattrs keeps, for each of its
//! directories and regular files, the owner and mode the mount shows in that xattr as
//! `UID:GID:MODE` (mode in octal): `security.fuseoverlayfs.override_stat`,
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

fn parse(v: &[u8]) -> Option<(u32, u32, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let mut it = s.trim_end_matches('\0').splitn(3, ':');
    let uid = it.next()?.parse().ok()?;
    let gid = it.next()?.parse().ok()?;
    let mode = u32::from_str_radix(it.next()?, 8).ok()?;
    Some((uid, gid, mode))
}

/// Replaces owner and mode in `st` (the real object `at`) by its override, if the
/// layer uses `xattr` and the object has one.
pub fn apply(xattr: Option<&CStr>, at: At, st: &mut Stat) {
    let Some(x) = xattr else { return };
    if !applies(st) {
        return;
    }
    if let Some((uid, gid, mode)) = sys::getxattr(at, x).ok().as_deref().and_then(parse) {
        st.st_uid = uid;
        st.st_gid = gid;
        st.st_mode = (st.st_mode & libc::S_IFMT) | (mode & 0o7777);
    }
}

/// Records owner and mode on the real object `at` in the override xattr `xattr`.
pub fn write(xattr: &CStr, at: At, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    let v = format!("{uid}:{gid}:{:o}", mode & 0o7777);
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
}
