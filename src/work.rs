//! The upper layer's work directory (`WORKDIR/work`): copy-ups, objects that replace a
//! whiteout and whiteouts that replace an object are built here and renamed into
//! place, so a crash never leaves a half-made object visible. It also holds the shared
//! whiteout that new whiteouts are hard links to (as kernel overlayfs does). Also
//! decides, once per mount, which formats the upper filesystem allows: char 0/0
//! whiteouts or `.wh.` files, and `trusted.` or `user.` overlay xattrs.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use log::{debug, info};
use parking_lot::Mutex;

use crate::ondisk::{Ovl, PREFIXES};
use crate::procfs;
use crate::sys::{self, At};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhiteoutFormat {
    /// A char device 0/0, as kernel overlayfs writes.
    CharDev,
    /// An empty `.wh.NAME` file (where mknod is not allowed).
    Aufs,
}

/// Where the overlay's own xattrs go on the upper filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrNs {
    Trusted,
    User,
    /// Neither is allowed: opaque directories get a `.wh..wh..opq` file instead.
    None,
}

impl XattrNs {
    /// The prefix of overlay xattr names in this namespace.
    pub fn prefix(self) -> Option<&'static str> {
        match self {
            XattrNs::Trusted => Some(PREFIXES[0]),
            XattrNs::User => Some(PREFIXES[1]),
            XattrNs::None => None,
        }
    }
}

pub struct Work {
    /// `WORKDIR` itself (`O_PATH`).
    pub dir: OwnedFd,
    /// `WORKDIR/work` open for reading and locked (`flock`) for the life of the
    /// mount, as the kernel marks its workdir in use: a second mount of the same
    /// upper and work is refused instead of emptying `work/` under the first.
    _lock: OwnedFd,
    /// `WORKDIR/work`, where objects are built.
    pub fd: OwnedFd,
    pub whiteout: WhiteoutFormat,
    pub ns: XattrNs,
    next: AtomicU64,
    /// Part of every temporary name: the process that made the `Work` (asked once,
    /// as each ask is a syscall; names stay unique by `next` within one daemon).
    pid: u32,
    /// The char 0/0 whiteout in the work dir that new whiteouts are hard links to, as
    /// kernel overlayfs shares one: a link allocates no inode.
    shared_whiteout: Mutex<Option<CString>>,
    /// The owner (uid, gid) that objects made in `fd` get: the daemon's, with the
    /// work dir's group if it is set-group-id.
    pub creator: (u32, u32),
}

impl Work {
    /// Do upper directories stay free of `.wh.` names? They do while whiteouts are
    /// char devices: the daemon then makes no such name, and none can be made
    /// through the mount. So what a listing or a mkdir found of an upper directory
    /// holds for the life of its node (readdir.rs, dir.rs, copy_up.rs).
    pub fn upper_stays_aufs_free(&self) -> bool {
        self.whiteout == WhiteoutFormat::CharDev
    }

    /// Opens (creating if needed) `workdir/work`, empties it of leftovers from an
    /// earlier run, and probes what the filesystem allows.
    pub fn open(workdir: &Path) -> Result<Work, String> {
        let c = CString::new(workdir.as_os_str().as_bytes())
            .map_err(|_| "invalid workdir path".to_string())?;
        let wdir = sys::open_path(&c, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| format!("workdir {}: {e}", workdir.display()))?;
        match sys::mkdirat(wdir.as_fd(), c"work", 0o700) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => {
                return Err(format!(
                    "workdir {}: cannot create work: {e}",
                    workdir.display()
                ))
            }
        }
        let fd = sys::openat(wdir.as_fd(), c"work", libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(|e| format!("workdir {}/work: {e}", workdir.display()))?;
        // A daemon whose mount just went away may still be on its way out: it lets
        // go within moments, a live mount never.
        let lock = match lock(fd.as_fd(), std::time::Duration::from_secs(3)) {
            Ok(lock) => lock,
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                return Err(format!(
                    "workdir {} is in use by another mount{}",
                    workdir.display(),
                    holder_of(fd.as_fd()).map_or(String::new(), |h| format!(" ({h})"))
                ))
            }
            Err(e) => {
                return Err(format!(
                    "workdir {}/work: cannot lock: {e}",
                    workdir.display()
                ))
            }
        };
        clean_dir(fd.as_fd())
            .map_err(|e| format!("workdir {}/work: cannot clean: {e}", workdir.display()))?;
        let whiteout = if std::env::var_os("FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT").is_some()
            || std::env::var("STRATAFS_WHITEOUT").is_ok_and(|v| v == "aufs")
        {
            WhiteoutFormat::Aufs
        } else if takes_char_whiteouts(fd.as_fd()) {
            WhiteoutFormat::CharDev
        } else {
            WhiteoutFormat::Aufs
        };
        let ns = probe_xattr_ns(fd.as_fd());
        info!("upper formats: whiteouts as {whiteout:?}, overlay xattrs in {ns:?}");
        let creator = match sys::fstat(fd.as_fd()) {
            Ok(st) if st.st_mode & libc::S_ISGID != 0 => (sys::geteuid(), st.st_gid),
            _ => (sys::geteuid(), sys::getegid()),
        };
        Ok(Work {
            dir: wdir,
            _lock: lock,
            fd,
            whiteout,
            ns,
            next: AtomicU64::new(1),
            pid: std::process::id(),
            shared_whiteout: Mutex::new(None),
            creator,
        })
    }

    /// Makes a char 0/0 whiteout at (`dir`, `name`): a hard link to the shared one,
    /// which is made anew when missing or full (EMLINK); a whiteout of its own where
    /// links are refused.
    pub fn link_whiteout(&self, dir: BorrowedFd, name: &CStr) -> io::Result<()> {
        for _ in 0..2 {
            let shared = self.shared_whiteout()?;
            match sys::linkat(self.fd.as_fd(), &shared, dir, name) {
                Ok(()) => return Ok(()),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMLINK | libc::ENOENT)) => {
                    self.retire_shared_whiteout(&shared)
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => return Err(e),
                Err(e) => {
                    debug!("shared whiteout not linked: {e}");
                    break;
                }
            }
        }
        sys::mknodat(dir, name, libc::S_IFCHR, 0)
    }

    fn shared_whiteout(&self) -> io::Result<CString> {
        let mut cur = self.shared_whiteout.lock();
        if let Some(n) = cur.as_ref() {
            return Ok(n.clone());
        }
        let n = self.tmp_name();
        sys::mknodat(self.fd.as_fd(), &n, libc::S_IFCHR, 0)?;
        *cur = Some(n.clone());
        Ok(n)
    }

    /// The shared whiteout `n` is full or gone: the next whiteout makes a new one.
    fn retire_shared_whiteout(&self, n: &CString) {
        let mut cur = self.shared_whiteout.lock();
        if cur.as_ref() == Some(n) {
            let _ = sys::unlinkat(self.fd.as_fd(), n, false);
            *cur = None;
        }
    }

    /// A fresh name for a temporary object in the work directory.
    pub fn tmp_name(&self) -> CString {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        CString::new(format!("#{:x}.{n:x}", self.pid)).unwrap_or_default()
    }

    /// The full name of overlay xattr `what` (`opaque`, `redirect`, ...) in our namespace.
    pub fn xattr(&self, what: Ovl) -> Option<CString> {
        CString::new(format!("{}{}", self.ns.prefix()?, what.suffix())).ok()
    }

    /// Does (`dir`, `name`) carry overlay xattr `what` already?
    pub fn has_xattr(&self, dir: BorrowedFd, name: &CStr, what: Ovl) -> bool {
        self.xattr(what)
            .is_some_and(|attr| sys::getxattr(At { dir, name }, &attr).is_ok())
    }

    /// Sets overlay xattr `what` on (`dir`, `name`).
    pub fn set_xattr(
        &self,
        dir: BorrowedFd,
        name: &CStr,
        what: Ovl,
        value: &[u8],
    ) -> io::Result<()> {
        let attr = self
            .xattr(what)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOTSUP))?;
        sys::setxattr(At { dir, name }, &attr, value, 0)
    }

    /// Removes a temporary object (a whole tree for a directory) from the work dir.
    pub fn remove(&self, name: &CStr) {
        let _ = remove_tree(self.fd.as_fd(), name);
    }
}

/// Does the filesystem of the work dir `work` take char 0/0 whiteouts (mknod)?
pub fn takes_char_whiteouts(work: BorrowedFd) -> bool {
    let made = sys::mknodat(work, c"#probe", libc::S_IFCHR, 0).is_ok();
    let _ = sys::unlinkat(work, c"#probe", false);
    made
}

/// Locks the work dir `work` (`flock` on a fd of it, returned: the lock lasts as
/// long as it is open), waiting up to `wait` for another holder to let go;
/// EWOULDBLOCK when none did.
pub fn lock(work: BorrowedFd, wait: std::time::Duration) -> io::Result<OwnedFd> {
    let fd = sys::openat(work, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let deadline = std::time::Instant::now() + wait;
    loop {
        match sys::lock_exclusive(fd.as_fd()) {
            Err(e)
                if e.raw_os_error() == Some(libc::EWOULDBLOCK)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            r => return r.map(|_| fd),
        }
    }
}

/// Which namespace of overlay xattrs the filesystem of the work dir `work` takes:
/// tried on `work` itself and taken off again, as the kernel tries its workdir.
pub fn probe_xattr_ns(work: BorrowedFd) -> XattrNs {
    let at = At {
        dir: work,
        name: c"",
    };
    for (attr, ns) in [
        (Ovl::Opaque.names()[0], XattrNs::Trusted),
        (Ovl::Opaque.names()[1], XattrNs::User),
    ] {
        if sys::setxattr(at, attr, b"0", 0).is_ok() {
            let _ = sys::removexattr(at, attr);
            return ns;
        }
    }
    XattrNs::None
}

/// Which other process holds the work directory `work` open (the mount that locked
/// it), as "pid N: its command line": looked for in /proc, only to say so.
fn holder_of(work: BorrowedFd) -> Option<String> {
    let target = sys::fd_path(work).ok()?;
    let me = std::process::id();
    let pid = procfs::pids().find(|&p| p != me && procfs::holds(p, target.as_os_str()))?;
    Some(format!("pid {pid}: {}", procfs::cmdline(pid)))
}

/// Removes everything inside the directory `dir`.
fn clean_dir(dir: BorrowedFd) -> io::Result<()> {
    let rd = sys::openat(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    for e in sys::read_dir_all(rd.as_fd())? {
        let name = CString::new(e.name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        remove_tree(dir, &name)?;
    }
    Ok(())
}

/// Removes (`dir`, `name`), recursively if it is a directory; never follows a symlink.
pub fn remove_tree(dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    let st = sys::statat(dir, name)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return sys::unlinkat(dir, name, false);
    }
    let sub = sys::openat(dir, name, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    clean_dir(sub.as_fd())?;
    sys::unlinkat(dir, name, true)
}
