//! Process plumbing for the mount's life (no layer access): mount(2) and unmount,
//! fork and detaching from the terminal, limits and priorities, ids, and receiving
//! the /dev/fuse fd that fusermount3 passes over a socket. Like the rest of `sys`,
//! every unsafe block says why it is sound.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{cvt, open_path};

pub fn mount(
    source: &CStr,
    target: &CStr,
    fstype: &CStr,
    flags: libc::c_ulong,
    data: &CStr,
) -> io::Result<()> {
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
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
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    cvt(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) })
        .map(drop)
}

pub enum Fork {
    Parent,
    Child,
}

/// fork(2). Only called while the process has a single thread.
pub fn fork() -> io::Result<Fork> {
    // SAFETY: called while the process has a single thread (see above), so the child may go on running any code.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Fork::Child),
        _ => Ok(Fork::Parent),
    }
}

pub fn setsid() {
    // SAFETY: a call without pointers; it cannot break any Rust invariant.
    unsafe { libc::setsid() };
}

/// Points stdin, stdout and stderr at /dev/null so no caller waits on our pipes.
pub fn detach_stdio() -> io::Result<()> {
    let null = open_path(c"/dev/null", libc::O_RDWR)?;
    for target in 0..3 {
        // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
        cvt(unsafe { libc::dup2(null.as_raw_fd(), target) })?;
    }
    Ok(())
}

/// Leaves the process at once, without running destructors (used by the parent after fork).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: ends the process at once; no memory is involved.
    unsafe { libc::_exit(code) }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the limit now in force.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit that the calls read and write.
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

/// Lowers the calling thread's CPU priority (raises its nice value by `inc`; always
/// allowed, never undone: used only by short-lived threads).
pub fn nice_this_thread(inc: i32) {
    // SAFETY: plain calls on this thread's own id; no memory is involved.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let cur = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, (cur + inc).min(19));
    }
}

/// Gives memory the allocator holds but no longer uses back to the system.
pub fn release_free_memory() {
    // SAFETY: a call without pointers; it cannot break any Rust invariant.
    unsafe { libc::malloc_trim(0) };
}

/// Restores SIGPIPE's default action (Rust ignores it), so a command whose output
/// is piped into `head` ends quietly, as other tools do, instead of failing to print.
pub fn default_sigpipe() {
    // SAFETY: a call without pointers; setting a signal to its default cannot break any Rust invariant.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Clears the process umask: modes of new objects are set exactly as asked.
pub fn clear_umask() {
    // SAFETY: a call without pointers; it cannot break any Rust invariant.
    unsafe { libc::umask(0) };
}

pub fn geteuid() -> u32 {
    // SAFETY: a call without pointers; it cannot break any Rust invariant.
    unsafe { libc::geteuid() }
}

pub fn getegid() -> u32 {
    // SAFETY: a call without pointers; it cannot break any Rust invariant.
    unsafe { libc::getegid() }
}

/// A connected pair of Unix stream sockets; only the first is close-on-exec, so the
/// second can be handed to a child (fusermount3's `_FUSE_COMMFD`).
pub fn socketpair_for_child() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    cvt(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) })?;
    // SAFETY: the kernel just returned both fds open, and nothing else owns them.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the fds are open for the call's length (borrowed), the names are NUL-terminated, and every buffer is valid for the length passed.
    cvt(unsafe { libc::fcntl(ours.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) })?;
    Ok((ours, theirs))
}

/// Receives one fd sent with SCM_RIGHTS over `sock`.
pub fn recv_fd(sock: BorrowedFd) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: a pure computation on a length.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: all-zero bytes are a valid value of this plain C struct.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: `msg` points at `iov` (one byte of `byte`) and `cbuf` (`space` bytes), all alive for the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `msg` was filled by the successful recvmsg above; its control buffer is `cbuf`.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    if cmsg.is_null() {
        return Err(io::Error::from_raw_os_error(libc::EPROTO));
    }
    // SAFETY: `cmsg` is non-null and points into `cbuf`, filled by the kernel; the data of an SCM_RIGHTS message is an fd we now own.
    unsafe {
        if (*cmsg).cmsg_level != libc::SOL_SOCKET || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Err(io::Error::from_raw_os_error(libc::EPROTO));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// The user id of the process at the other end of the Unix socket `sock`
/// (SO_PEERCRED), as the kernel recorded it at connect.
pub fn peer_uid(sock: BorrowedFd) -> io::Result<u32> {
    // SAFETY: all-zero bytes are a valid value of this plain C struct.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the size passed, for the call's length.
    cvt(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    })?;
    Ok(cred.uid)
}

/// Grows this process's fd table to hold `n` fds now, while it runs one thread: the
/// kernel grows the table of a multi-threaded process by waiting for an RCU grace
/// period each time, which a walk that fills the directory fd cache would otherwise
/// pay several times over. (A dup at the top of the range, closed at once.)
pub fn pregrow_fd_table(n: u64) {
    let top = n.saturating_sub(1).min(libc::c_int::MAX as u64) as libc::c_int;
    // SAFETY: a call without pointers on fd 0 (stdin or /dev/null, open in a daemon);
    // the new fd, if any, is ours alone and closed at once.
    unsafe {
        let fd = libc::fcntl(0, libc::F_DUPFD_CLOEXEC, top);
        if fd >= 0 {
            libc::close(fd);
        }
    }
}
