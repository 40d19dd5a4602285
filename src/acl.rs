//! POSIX ACLs on new objects (the VFS's `posix_acl_create`).
//!
//! New objects are built in the work directory, where the target directory's default
//! ACL cannot reach them, so stratafs applies it itself: with a default ACL on the
//! parent, the new object's access ACL is that ACL limited by the requested mode (and
//! a new directory inherits the default ACL too); without one, the caller's umask
//! applies. Permission checks against ACLs are the kernel's (FUSE_POSIX_ACL).

use std::ffi::CStr;
use std::io;
use std::os::fd::BorrowedFd;

use crate::sys::{self, At};

pub const ACCESS: &CStr = c"system.posix_acl_access";
pub const DEFAULT: &CStr = c"system.posix_acl_default";

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const GROUP_OBJ: u16 = 0x04;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// One ACL in its xattr form: a 4-byte version, then 8-byte entries (tag, perm, id).
struct Acl {
    entries: Vec<(u16, u16, u32)>,
}

impl Acl {
    fn parse(v: &[u8]) -> Option<Acl> {
        if v.len() < 4 || !(v.len() - 4).is_multiple_of(8) {
            return None;
        }
        if u32::from_le_bytes(v[0..4].try_into().ok()?) != VERSION {
            return None;
        }
        let entries = v[4..]
            .chunks_exact(8)
            .map(|c| {
                (
                    u16::from_le_bytes([c[0], c[1]]),
                    u16::from_le_bytes([c[2], c[3]]),
                    u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
                )
            })
            .collect();
        Some(Acl { entries })
    }

    fn bytes(&self) -> Vec<u8> {
        let mut v = VERSION.to_le_bytes().to_vec();
        for (tag, perm, id) in &self.entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    /// Limits the ACL by `mode` as a new object's access ACL; returns the mode bits
    /// the object gets, and whether the ACL says more than those bits.
    fn apply_mode(&mut self, mode: u32) -> (u32, bool) {
        let (mut u, mut g, mut o) = (0u32, 0u32, 0u32);
        let has_mask = self.entries.iter().any(|e| e.0 == MASK);
        let mut extended = false;
        for e in &mut self.entries {
            match e.0 {
                USER_OBJ => {
                    e.1 &= ((mode >> 6) & 7) as u16;
                    u = e.1 as u32;
                }
                GROUP_OBJ if !has_mask => {
                    e.1 &= ((mode >> 3) & 7) as u16;
                    g = e.1 as u32;
                }
                MASK => {
                    e.1 &= ((mode >> 3) & 7) as u16;
                    g = e.1 as u32;
                }
                OTHER => {
                    e.1 &= (mode & 7) as u16;
                    o = e.1 as u32;
                }
                _ => extended = true,
            }
        }
        ((mode & !0o777) | u << 6 | g << 3 | o, extended || has_mask)
    }
}

/// The parent's default ACL (the upper directory open as `parent`), if it has one.
pub fn parent_default(parent: BorrowedFd) -> Option<Vec<u8>> {
    sys::getxattr(
        At {
            dir: parent,
            name: c"",
        },
        DEFAULT,
    )
    .ok()
    .filter(|v| Acl::parse(v).is_some())
}

/// The mode a new object gets, and its access ACL when it needs one, from the
/// requested `mode`, the caller's `umask` and the parent's default ACL.
pub fn for_new(mode: u32, umask: u32, default: Option<&[u8]>) -> (u32, Option<Vec<u8>>) {
    let Some(mut acl) = default.and_then(Acl::parse) else {
        return (mode & !(umask & 0o777), None);
    };
    let (mode, extended) = acl.apply_mode(mode);
    (mode, extended.then(|| acl.bytes()))
}

/// Sets the inherited ACLs on the new object (`dir`, `name`).
pub fn set_inherited(
    dir: BorrowedFd,
    name: &CStr,
    access: Option<&[u8]>,
    default_for_dir: Option<&[u8]>,
) -> io::Result<()> {
    let at = At { dir, name };
    if let Some(a) = access {
        sys::setxattr(at, ACCESS, a, 0)?;
    }
    if let Some(d) = default_for_dir {
        sys::setxattr(at, DEFAULT, d, 0)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        Acl {
            entries: entries.to_vec(),
        }
        .bytes()
    }

    #[test]
    fn umask_applies_without_a_default_acl() {
        assert_eq!(for_new(0o666, 0o022, None), (0o644, None));
    }

    #[test]
    fn a_default_acl_replaces_the_umask() {
        let d = acl(&[(USER_OBJ, 7, 0), (GROUP_OBJ, 5, 0), (OTHER, 0, 0)]);
        assert_eq!(for_new(0o666, 0o022, Some(&d)), (0o640, None));
        let d = acl(&[
            (USER_OBJ, 7, 0),
            (0x02, 7, 1000),
            (GROUP_OBJ, 5, 0),
            (MASK, 7, 0),
            (OTHER, 5, 0),
        ]);
        let (mode, access) = for_new(0o664, 0o077, Some(&d));
        assert_eq!(mode, 0o664);
        let a = Acl::parse(&access.unwrap()).unwrap();
        assert!(a.entries.contains(&(0x02, 7, 1000)));
        assert!(a.entries.contains(&(MASK, 6, 0)));
    }
}
