//! Extended attributes through the mount: the real object's, minus overlay-private names.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use std::sync::Arc;

use crate::copy_up::copy_up;
use crate::inode::Node;
use crate::overlay::Overlay;
use crate::sys::{self, At};
use crate::whiteout::is_private_xattr;

fn enodata() -> io::Error {
    io::Error::from_raw_os_error(libc::ENODATA)
}

/// With `noxattrs=1`, every xattr call answers ENOSYS (the kernel then stops asking).
fn check_enabled(ov: &Overlay) -> io::Result<()> {
    if ov.settings.noxattrs {
        return Err(io::Error::from_raw_os_error(libc::ENOSYS));
    }
    Ok(())
}

/// Is `name` a POSIX ACL while ACLs are off (`noacl`)? Those read as absent and
/// cannot be set.
fn acl_off(ov: &Overlay, name: &[u8]) -> bool {
    name.starts_with(b"system.posix_acl_") && !ov.acl.load(std::sync::atomic::Ordering::Relaxed)
}

/// The value of `name` on `node`; private names read as absent.
pub fn get(ov: &Overlay, node: &Node, name: &OsStr) -> io::Result<Vec<u8>> {
    check_enabled(ov)?;
    if is_private_xattr(name.as_bytes()) || acl_off(ov, name.as_bytes()) {
        return Err(enodata());
    }
    let cname =
        CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    node.at_real(ov, |dir, name| sys::getxattr(At { dir, name }, &cname))
}

/// The names on `node`, NUL-terminated each, private ones left out.
pub fn list(ov: &Overlay, node: &Node) -> io::Result<Vec<u8>> {
    check_enabled(ov)?;
    let names = node.at_real(ov, |dir, name| sys::listxattr(At { dir, name }))?;
    let mut out = Vec::new();
    for n in names
        .iter()
        .filter(|n| !is_private_xattr(n) && !acl_off(ov, n))
    {
        out.extend_from_slice(n);
        out.push(0);
    }
    Ok(out)
}

fn xattr_name(ov: &Overlay, name: &OsStr) -> io::Result<CString> {
    check_enabled(ov)?;
    if is_private_xattr(name.as_bytes()) {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    if acl_off(ov, name.as_bytes()) {
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Sets `name` on `node`, copying it up first. Private names are refused.
pub fn set(
    ov: &Overlay,
    node: &Arc<Node>,
    name: &OsStr,
    value: &[u8],
    flags: i32,
) -> io::Result<()> {
    let cname = xattr_name(ov, name)?;
    copy_up(ov, node)?;
    // Through the object itself: never another one put at its name meanwhile.
    let (dir, _) = node.object(ov)?;
    let obj = CString::default();
    let set = sys::setxattr(
        At {
            dir: dir.as_fd(),
            name: &obj,
        },
        &cname,
        value,
        flags,
    );
    acl_may_have_changed(node, &cname);
    set
}

/// After a change of the xattr `name` of `node`: a directory's default ACL is read
/// again by the next create in it.
fn acl_may_have_changed(node: &Node, name: &CStr) {
    if name == crate::acl::DEFAULT {
        node.stack().unlearn(crate::stack::Known::NoDefaultAcl);
    }
}

/// Removes `name` from `node`, copying it up first.
pub fn remove(ov: &Overlay, node: &Arc<Node>, name: &OsStr) -> io::Result<()> {
    let cname = xattr_name(ov, name)?;
    // Absent is absent, with no copy-up for nothing.
    get(ov, node, name)?;
    copy_up(ov, node)?;
    let (dir, _) = node.object(ov)?;
    let obj = CString::default();
    let removed = sys::removexattr(
        At {
            dir: dir.as_fd(),
            name: &obj,
        },
        &cname,
    );
    acl_may_have_changed(node, &cname);
    removed
}

/// Answers a getxattr/listxattr the FUSE way: the size when `size` is 0, else the
/// data, or ERANGE when it does not fit.
pub fn reply(value: io::Result<Vec<u8>>, size: u32, reply: fuser::ReplyXattr) {
    match value {
        Err(e) => reply.error(e.into()),
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(fuser::Errno::ERANGE),
        Ok(v) => reply.data(&v),
    }
}
