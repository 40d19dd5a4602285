//! Thin, safe wrappers over the Linux syscalls stratafs uses to reach its layers.
//!
//! Every layer access goes through here and is relative to a directory fd: single
//! names with `O_NOFOLLOW`/`AT_SYMLINK_NOFOLLOW`, multi-component paths only through
//! a chain of such single-name opens; nothing ever follows a symlink inside a layer.
//! All `unsafe` code of the crate lives in this module and `process.rs` below it (the
//! mount's process plumbing); the crate root denies it elsewhere. Each block says why
//! it is sound.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

mod process;
mod xattr;
pub use process::*;
pub use xattr::*;

pub type Stat = libc::stat64;

pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub(crate) fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Opens `path` (absolute or relative to the cwd) as given on the command line.
/// Used only at start-up for layer roots, the mountpoint and /dev/fuse.
pub fn open_path(path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    let fd = cvt(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: `fd` was just returned open by the kernel, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a single name inside `dir`; the name must not contain '/'. An empty name
/// opens the object `dir` itself anew (through its `/proc/self/fd` magic link, which
/// leads to that very object and is never followed further: an `O_PATH` fd of a
/// symlink reopens as ELOOP), with `flags`.
pub fn openat(dir: BorrowedFd, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    if name.is_empty() {
        let p = At { dir, name }.proc_path();
        let flags = flags & !libc::O_NOFOLLOW & !libc::O_CREAT;
        // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
        let fd = cvt(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC) })?;
        // SAFETY: `fd` was just returned open by the kernel, and nothing else owns it.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: `fd` was just returned open by the kernel, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An all-zero stat (for attributes that describe nothing).
pub fn zeroed_stat() -> Stat {
    // SAFETY: all-zero bytes are a valid value of this plain C struct.
    unsafe { std::mem::zeroed() }
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; an empty name stats `dir` itself.
pub fn statat(dir: BorrowedFd, name: &CStr) -> io::Result<Stat> {
    let mut st = MaybeUninit::<Stat>::uninit();
    let flags = if name.is_empty() {
        libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    cvt(unsafe { libc::fstatat64(dir.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: the call above succeeded, so the kernel filled it in.
    Ok(unsafe { st.assume_init() })
}

/// The path the kernel has for the object open as `fd` (its `/proc/self/fd` link):
/// canonical, with every symlink on the way resolved.
pub fn fd_path(fd: BorrowedFd) -> io::Result<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The paths of the directories open as `dirs` (as `fd_path` gives them), found by
/// moving the working directory to each (`fchdir`) and asking for it (`getcwd`),
/// which costs a fifth of a walk through /proc per directory; the working directory
/// is moved back at the end. Only while the process has a single thread.
pub fn dir_paths(dirs: &[BorrowedFd]) -> io::Result<Vec<std::path::PathBuf>> {
    use std::os::unix::ffi::OsStringExt;
    let home = open_path(c".", libc::O_PATH | libc::O_DIRECTORY)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    let found: io::Result<Vec<std::path::PathBuf>> = dirs
        .iter()
        .map(|d| {
            // SAFETY: `d` is an open directory fd.
            cvt_unit(unsafe { libc::fchdir(d.as_raw_fd()) })?;
            // SAFETY: `d` is an open directory fd and `buf` is valid for `buf.len()` bytes.
            if unsafe { libc::getcwd(buf.as_mut_ptr().cast(), buf.len()) }.is_null() {
                return fd_path(*d); // (a path longer than PATH_MAX)
            }
            let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            Ok(std::path::PathBuf::from(std::ffi::OsString::from_vec(
                buf[..len].to_vec(),
            )))
        })
        .collect();
    // SAFETY: `home` is an open directory fd (the cwd we came from).
    cvt_unit(unsafe { libc::fchdir(home.as_raw_fd()) })?;
    found
}

/// `flock(fd, LOCK_EX | LOCK_NB)`: EWOULDBLOCK when another open file holds it.
pub fn lock_exclusive(fd: BorrowedFd) -> io::Result<()> {
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    cvt_unit(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) })
}

/// `flock(fd, op)`, waiting: `LOCK_SH` or `LOCK_EX` (the store's lock file).
pub fn flock_wait(fd: BorrowedFd, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
        match cvt_unit(unsafe { libc::flock(fd.as_raw_fd(), op) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

pub fn fstat(fd: BorrowedFd) -> io::Result<Stat> {
    statat(fd, c"")
}

/// `readahead(2)` of the first `len` bytes of `fd`: starts reading them into the
/// page cache and returns without waiting for the data.
pub fn readahead(fd: BorrowedFd, len: usize) -> io::Result<()> {
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    cvt_unit(unsafe { libc::readahead(fd.as_raw_fd(), 0, len) } as libc::c_int)
}

pub fn fstatfs(fd: BorrowedFd) -> io::Result<libc::statvfs64> {
    let mut st = MaybeUninit::<libc::statvfs64>::uninit();
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    cvt(unsafe { libc::fstatvfs64(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: the call above succeeded, so the kernel filled it in.
    Ok(unsafe { st.assume_init() })
}

/// `readlinkat(dir, name)`: the target, verbatim.
pub fn readlinkat(dir: BorrowedFd, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
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

/// Runs a size-returning syscall again while it is interrupted.
fn retry_eintr(mut f: impl FnMut() -> libc::ssize_t) -> io::Result<usize> {
    loop {
        match cvt_size(f()) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            other => return other,
        }
    }
}

pub fn pread(fd: BorrowedFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    retry_eintr(|| unsafe {
        libc::pread64(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            offset as i64,
        )
    })
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
        // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
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

// --- changes inside a layer (upper and workdir only) ---

pub(crate) fn cvt_unit(ret: libc::c_int) -> io::Result<()> {
    cvt(ret).map(drop)
}

pub fn mkdirat(dir: BorrowedFd, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    cvt_unit(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })
}

pub fn mknodat(dir: BorrowedFd, name: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    cvt_unit(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) })
}

pub fn symlinkat(target: &CStr, dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    cvt_unit(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
}

pub fn unlinkat(dir: BorrowedFd, name: &CStr, rmdir: bool) -> io::Result<()> {
    let flags = if rmdir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    cvt_unit(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
}

/// A new name (`newdir`, `new`) for (`olddir`, `old`), or for the object `olddir`
/// itself when `old` is empty (through its magic link, which needs no privilege as
/// AT_EMPTY_PATH would).
pub fn linkat(olddir: BorrowedFd, old: &CStr, newdir: BorrowedFd, new: &CStr) -> io::Result<()> {
    if old.is_empty() {
        let p = At {
            dir: olddir,
            name: old,
        }
        .proc_path();
        // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
        return cvt_unit(unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                p.as_ptr(),
                newdir.as_raw_fd(),
                new.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        });
    }
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    cvt_unit(unsafe {
        libc::linkat(
            olddir.as_raw_fd(),
            old.as_ptr(),
            newdir.as_raw_fd(),
            new.as_ptr(),
            0,
        )
    })
}

pub fn renameat2(
    olddir: BorrowedFd,
    old: &CStr,
    newdir: BorrowedFd,
    new: &CStr,
    flags: u32,
) -> io::Result<()> {
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    cvt_unit(unsafe {
        libc::renameat2(
            olddir.as_raw_fd(),
            old.as_ptr(),
            newdir.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    })
}

/// fchownat with AT_SYMLINK_NOFOLLOW; an empty name addresses `dir` itself.
pub fn chownat(dir: BorrowedFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    let mut flags = libc::AT_SYMLINK_NOFOLLOW;
    if name.is_empty() {
        flags |= libc::AT_EMPTY_PATH;
    }
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    cvt_unit(unsafe { libc::fchownat(dir.as_raw_fd(), name.as_ptr(), uid, gid, flags) })
}

/// `fchmodat2(2)` (Linux 6.6+), which takes AT_SYMLINK_NOFOLLOW and AT_EMPTY_PATH.
const SYS_FCHMODAT2: libc::c_long = 452;

/// chmod of (`dir`, `name`) or of `dir` itself, never through a symlink: a symlink
/// (which has no mode to change) gives EOPNOTSUPP, whatever it points to.
pub fn chmodat(dir: BorrowedFd, name: &CStr, mode: u32) -> io::Result<()> {
    let mut flags = libc::AT_SYMLINK_NOFOLLOW;
    if name.is_empty() {
        flags |= libc::AT_EMPTY_PATH;
    }
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    let ret = unsafe {
        libc::syscall(
            SYS_FCHMODAT2,
            dir.as_raw_fd(),
            name.as_ptr(),
            mode as libc::c_uint,
            flags,
        )
    };
    match cvt(ret as libc::c_int) {
        Err(e) if enosys(&e) => {}
        other => return other.map(drop),
    }
    // An older kernel: pin the object without following it, refuse a symlink, and
    // chmod the object through its magic link (never followed further).
    let obj = if name.is_empty() {
        None
    } else {
        Some(openat(dir, name, libc::O_PATH, 0)?)
    };
    let fd = obj.as_ref().map_or(dir, |f| f.as_fd());
    if fstat(fd)?.st_mode & libc::S_IFMT == libc::S_IFLNK {
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    let p = At { dir: fd, name: c"" }.proc_path();
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    cvt_unit(unsafe { libc::chmod(p.as_ptr(), mode) })
}

pub fn fchmod(fd: BorrowedFd, mode: u32) -> io::Result<()> {
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    cvt_unit(unsafe { libc::fchmod(fd.as_raw_fd(), mode) })
}

/// utimensat with AT_SYMLINK_NOFOLLOW; an empty name addresses `dir` itself.
pub fn utimensat(dir: BorrowedFd, name: &CStr, times: &[libc::timespec; 2]) -> io::Result<()> {
    let mut flags = libc::AT_SYMLINK_NOFOLLOW;
    if name.is_empty() {
        flags |= libc::AT_EMPTY_PATH;
    }
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    cvt_unit(unsafe { libc::utimensat(dir.as_raw_fd(), name.as_ptr(), times.as_ptr(), flags) })
}

pub fn ftruncate(fd: BorrowedFd, size: u64) -> io::Result<()> {
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    cvt_unit(unsafe { libc::ftruncate64(fd.as_raw_fd(), size as i64) })
}

pub fn pwrite(fd: BorrowedFd, buf: &[u8], offset: u64) -> io::Result<usize> {
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    retry_eintr(|| unsafe {
        libc::pwrite64(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            offset as i64,
        )
    })
}

pub fn fsync(fd: BorrowedFd, datasync: bool) -> io::Result<()> {
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    cvt_unit(unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })
}

/// Writes the file's dirty data out and waits for it (`sync_file_range` over the whole
/// file), without the journal commit of an fsync.
pub fn write_out(fd: BorrowedFd) -> io::Result<()> {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    cvt_unit(unsafe { libc::sync_file_range(fd.as_raw_fd(), 0, 0, flags) })
}

pub fn fallocate(fd: BorrowedFd, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    cvt_unit(unsafe { libc::fallocate64(fd.as_raw_fd(), mode, offset as i64, len as i64) })
}

/// lseek; `Ok(None)` for ENXIO (no data/hole past the offset).
pub fn lseek(fd: BorrowedFd, offset: i64, whence: libc::c_int) -> io::Result<Option<i64>> {
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    let ret = unsafe { libc::lseek64(fd.as_raw_fd(), offset, whence) };
    if ret >= 0 {
        return Ok(Some(ret));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENXIO) {
        Ok(None)
    } else {
        Err(e)
    }
}

/// FICLONE: share all of `src`'s extents with `dst` (reflink).
pub fn ficlone(dst: BorrowedFd, src: BorrowedFd) -> io::Result<()> {
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    cvt_unit(unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE, src.as_raw_fd()) })
}

pub fn copy_file_range(
    src: BorrowedFd,
    off_in: u64,
    dst: BorrowedFd,
    off_out: u64,
    len: usize,
) -> io::Result<usize> {
    let mut i = off_in as i64;
    let mut o = off_out as i64;
    let ret =
        // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
        unsafe { libc::copy_file_range(src.as_raw_fd(), &mut i, dst.as_raw_fd(), &mut o, len, 0) };
    cvt_size(ret as libc::ssize_t)
}

/// `open_by_handle_at(2)`: opens (`O_PATH`) the object a file handle names on the
/// filesystem of `mount_fd`. Needs CAP_DAC_READ_SEARCH.
pub fn open_by_handle(
    mount_fd: BorrowedFd,
    handle_type: i32,
    handle: &[u8],
) -> io::Result<OwnedFd> {
    // struct file_handle { u32 handle_bytes; int handle_type; u8 f_handle[]; }
    let mut buf: Vec<u32> = vec![0; 2 + handle.len().div_ceil(4)];
    buf[0] = handle.len() as u32;
    buf[1] = handle_type as u32;
    // SAFETY: `buf` holds 8 header bytes and at least `handle.len()` more (its length is rounded up), and nothing else borrows it.
    let bytes: &mut [u8] = unsafe {
        std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>().add(8), handle.len())
    };
    bytes.copy_from_slice(handle);
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    let fd = cvt(unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd.as_raw_fd(),
            buf.as_mut_ptr(),
            libc::O_PATH | libc::O_CLOEXEC,
        ) as libc::c_int
    })?;
    // SAFETY: `fd` was just returned open by the kernel, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn enosys(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSYS)
}
