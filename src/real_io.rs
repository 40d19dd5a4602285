//! The real files' I/O: a checked open of a regular file, and reads and writes that
//! go on until done (short only at end of file).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::sys;

/// Opens (`dir`, `name`) with `flags` if it is a regular file, and returns its stat:
/// never following a symlink, never waiting (a FIFO or a device put there beneath
/// the mount opens without blocking, or fails), and anything but a regular file
/// is refused with ESTALE, as are the errors such objects give an open.
pub fn open_regular(dir: BorrowedFd, name: &CStr, flags: i32) -> io::Result<(OwnedFd, sys::Stat)> {
    let stale = || io::Error::from_raw_os_error(libc::ESTALE);
    let fd = sys::openat(dir, name, flags | libc::O_NONBLOCK | libc::O_NOCTTY, 0).map_err(|e| {
        match e.raw_os_error() {
            // a symlink (O_NOFOLLOW), a socket or a FIFO without a reader, a directory
            Some(libc::ELOOP | libc::ENXIO | libc::EISDIR | libc::ENODEV) => stale(),
            _ => e,
        }
    })?;
    let st = sys::fstat(fd.as_fd())?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(stale());
    }
    Ok((fd, st))
}

/// Writes all of `data` at `offset` (appends if the file was opened O_APPEND).
pub fn write(fd: &OwnedFd, offset: u64, data: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        let n = sys::pwrite(fd.as_fd(), &data[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// Reads up to `size` bytes at `offset`, short only at end of file.
pub fn read(fd: &OwnedFd, offset: u64, size: u32) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; size as usize];
    let done = read_into(fd, offset, &mut buf)?;
    buf.truncate(done);
    Ok(buf)
}

/// Fills `buf` from `offset`, short only at end of file; returns how much it read.
pub fn read_into(fd: &OwnedFd, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = sys::pread(fd.as_fd(), &mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}
