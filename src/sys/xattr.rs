//! Extended attributes, fd-relative: `getxattrat` and its kin (Linux 6.13+) on a
//! (directory fd, name) pair that is never followed, with a `/proc/self/fd` path as
//! the fallback and for a directory itself. Like the rest of `sys`, every unsafe
//! block says why it is sound.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::{cvt, cvt_size, cvt_unit, enosys};

const SYS_GETXATTRAT: libc::c_long = 464;
const SYS_LISTXATTRAT: libc::c_long = 465;

#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// The object an xattr call addresses: `name` inside `dir`, or `dir` itself when `name` is empty.
#[derive(Clone, Copy)]
pub struct At<'a> {
    pub dir: BorrowedFd<'a>,
    pub name: &'a CStr,
}

impl At<'_> {
    fn flags(&self) -> libc::c_uint {
        libc::AT_SYMLINK_NOFOLLOW as libc::c_uint
    }

    /// `/proc/self/fd/N[/name]`: for `dir` itself (the xattr syscalls refuse `O_PATH`
    /// fds with `AT_EMPTY_PATH`), and for kernels without the *xattrat syscalls. The
    /// only component after the fd's magic link is a single name, never followed.
    pub(crate) fn proc_path(&self) -> CString {
        let mut p = format!("/proc/self/fd/{}", self.dir.as_raw_fd()).into_bytes();
        if !self.name.is_empty() {
            p.push(b'/');
            p.extend_from_slice(self.name.to_bytes());
        }
        CString::new(p).unwrap_or_default()
    }
}

fn getxattr_raw(at: At, attr: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    if at.name.is_empty() {
        let p = at.proc_path();
        // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
        return cvt_size(unsafe {
            libc::getxattr(
                p.as_ptr(),
                attr.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        });
    }
    let mut args = XattrArgs {
        value: buf.as_mut_ptr() as u64,
        size: buf.len() as u32,
        flags: 0,
    };
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    let ret = unsafe {
        libc::syscall(
            SYS_GETXATTRAT,
            at.dir.as_raw_fd(),
            at.name.as_ptr(),
            at.flags(),
            attr.as_ptr(),
            &mut args as *mut XattrArgs,
            std::mem::size_of::<XattrArgs>(),
        )
    };
    match cvt_size(ret as libc::ssize_t) {
        Err(e) if enosys(&e) => {
            let p = at.proc_path();
            // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
            cvt_size(unsafe {
                libc::lgetxattr(
                    p.as_ptr(),
                    attr.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            })
        }
        other => other,
    }
}

fn listxattr_raw(at: At, buf: &mut [u8]) -> io::Result<usize> {
    if at.name.is_empty() {
        let p = at.proc_path();
        // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
        return cvt_size(unsafe {
            libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        });
    }
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    let ret = unsafe {
        libc::syscall(
            SYS_LISTXATTRAT,
            at.dir.as_raw_fd(),
            at.name.as_ptr(),
            at.flags(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    match cvt_size(ret as libc::ssize_t) {
        Err(e) if enosys(&e) => {
            let p = at.proc_path();
            // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
            cvt_size(unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
        }
        other => other,
    }
}

/// Reads a whole value, growing the buffer as needed.
fn read_grow(mut f: impl FnMut(&mut [u8]) -> io::Result<usize>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < (1 << 20) => {
                let need = f(&mut []).unwrap_or(buf.len() * 2);
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e),
        }
    }
}

pub fn getxattr(at: At, attr: &CStr) -> io::Result<Vec<u8>> {
    read_grow(|b| getxattr_raw(at, attr, b))
}

/// Names of all xattrs, each without its NUL.
pub fn listxattr(at: At) -> io::Result<Vec<Vec<u8>>> {
    let raw = read_grow(|b| listxattr_raw(at, b))?;
    Ok(raw
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

const SYS_SETXATTRAT: libc::c_long = 463;
const SYS_REMOVEXATTRAT: libc::c_long = 466;

pub fn setxattr(at: At, attr: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
    if !at.name.is_empty() {
        let args = XattrArgs {
            value: value.as_ptr() as u64,
            size: value.len() as u32,
            flags: flags as u32,
        };
        // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
        let ret = unsafe {
            libc::syscall(
                SYS_SETXATTRAT,
                at.dir.as_raw_fd(),
                at.name.as_ptr(),
                at.flags(),
                attr.as_ptr(),
                &args as *const XattrArgs,
                std::mem::size_of::<XattrArgs>(),
            )
        };
        match cvt(ret as libc::c_int) {
            Err(e) if enosys(&e) => {}
            other => return other.map(drop),
        }
    }
    let p = at.proc_path();
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    let ret = unsafe {
        if at.name.is_empty() {
            libc::setxattr(
                p.as_ptr(),
                attr.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        } else {
            libc::lsetxattr(
                p.as_ptr(),
                attr.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        }
    };
    cvt_unit(ret)
}

pub fn removexattr(at: At, attr: &CStr) -> io::Result<()> {
    if !at.name.is_empty() {
        // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
        let ret = unsafe {
            libc::syscall(
                SYS_REMOVEXATTRAT,
                at.dir.as_raw_fd(),
                at.name.as_ptr(),
                at.flags(),
                attr.as_ptr(),
            )
        };
        match cvt(ret as libc::c_int) {
            Err(e) if enosys(&e) => {}
            other => return other.map(drop),
        }
    }
    let p = at.proc_path();
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    cvt_unit(unsafe {
        if at.name.is_empty() {
            libc::removexattr(p.as_ptr(), attr.as_ptr())
        } else {
            libc::lremovexattr(p.as_ptr(), attr.as_ptr())
        }
    })
}
