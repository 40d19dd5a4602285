//! Thin, safe wrappers over the Linux syscalls stratafs uses to reach its layers.
//!
//! Every layer access goes through here and is relative to a directory fd: single
//! names with `O_NOFOLLOW`/`AT_SYMLINK_NOFOLLOW`, multi-component paths only through
//! a chain of such single-name opens; nothing ever follows a symlink inside a layer.
//! All `unsafe` code of the crate lives in this module.

use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

pub type Stat = libc::stat64;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Opens `path` (absolute or relative to the cwd) as given on the command line.
/// Used only at start-up for layer roots, the mountpoint and /dev/fuse.
pub fn open_path(path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    let fd = cvt(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a single name inside `dir`; the name must not contain '/'.
pub fn openat(dir: BorrowedFd, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            mode as libc::c_uint,
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; an empty name stats `dir` itself.
pub fn statat(dir: BorrowedFd, name: &CStr) -> io::Result<Stat> {
    let mut st = MaybeUninit::<Stat>::uninit();
    let flags = if name.is_empty() {
        libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    cvt(unsafe { libc::fstatat64(dir.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), flags) })?;
    Ok(unsafe { st.assume_init() })
}

pub fn fstat(fd: BorrowedFd) -> io::Result<Stat> {
    statat(fd, c"")
}

pub fn fstatfs(fd: BorrowedFd) -> io::Result<libc::statvfs64> {
    let mut st = MaybeUninit::<libc::statvfs64>::uninit();
    cvt(unsafe { libc::fstatvfs64(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    Ok(unsafe { st.assume_init() })
}

/// `readlinkat(dir, name)`: the target, verbatim.
pub fn readlinkat(dir: BorrowedFd, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    let n = cvt_size(unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(buf)
}

pub fn pread(fd: BorrowedFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    loop {
        let ret = unsafe {
            libc::pread64(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                offset as i64,
            )
        };
        match cvt_size(ret) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other,
        }
    }
}

/// One entry of a raw directory listing.
pub struct DirEntry {
    pub ino: u64,
    pub dtype: u8,
    pub name: Vec<u8>,
}

/// Reads a whole directory (opened with `O_RDONLY | O_DIRECTORY`) with getdents64,
/// leaving out `.` and `..`.
pub fn read_dir_all(dir: BorrowedFd) -> io::Result<Vec<DirEntry>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(out);
        }
        let mut pos = 0usize;
        while pos + 19 <= n as usize {
            let rec = &buf[pos..n as usize];
            let ino = u64::from_ne_bytes(rec[0..8].try_into().unwrap_or([0; 8]));
            let reclen = u16::from_ne_bytes([rec[16], rec[17]]) as usize;
            if reclen < 19 || reclen > rec.len() {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            let dtype = rec[18];
            let name_field = &rec[19..reclen];
            let len = name_field
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name_field.len());
            let name = &name_field[..len];
            if name != b"." && name != b".." {
                out.push(DirEntry {
                    ino,
                    dtype,
                    name: name.to_vec(),
                });
            }
            pos += reclen;
        }
    }
}

// --- extended attributes, fd-relative (getxattrat & co., Linux 6.13+, with a /proc fallback) ---

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
    fn proc_path(&self) -> CString {
        let mut p = format!("/proc/self/fd/{}", self.dir.as_raw_fd()).into_bytes();
        if !self.name.is_empty() {
            p.push(b'/');
            p.extend_from_slice(self.name.to_bytes());
        }
        CString::new(p).unwrap_or_default()
    }
}

fn enosys(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSYS)
}

fn getxattr_raw(at: At, attr: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    if at.name.is_empty() {
        let p = at.proc_path();
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
        return cvt_size(unsafe {
            libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        });
    }
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

// --- process-level helpers used by the mount lifecycle ---

pub fn mount(
    source: &CStr,
    target: &CStr,
    fstype: &CStr,
    flags: libc::c_ulong,
    data: &CStr,
) -> io::Result<()> {
    cvt(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    })
    .map(drop)
}

pub fn umount_detach(target: &CStr) -> io::Result<()> {
    cvt(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) })
        .map(drop)
}

pub enum Fork {
    Parent,
    Child,
}

/// fork(2). Only called while the process has a single thread.
pub fn fork() -> io::Result<Fork> {
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Fork::Child),
        _ => Ok(Fork::Parent),
    }
}

pub fn setsid() {
    unsafe { libc::setsid() };
}

/// Points stdin, stdout and stderr at /dev/null so no caller waits on our pipes.
pub fn detach_stdio() -> io::Result<()> {
    let null = open_path(c"/dev/null", libc::O_RDWR)?;
    for target in 0..3 {
        cvt(unsafe { libc::dup2(null.as_raw_fd(), target) })?;
    }
    Ok(())
}

/// Leaves the process at once, without running destructors (used by the parent after fork).
pub fn exit_now(code: i32) -> ! {
    unsafe { libc::_exit(code) }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the limit now in force.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

pub fn geteuid() -> u32 {
    unsafe { libc::geteuid() }
}

pub fn getegid() -> u32 {
    unsafe { libc::getegid() }
}
