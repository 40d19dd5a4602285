//! Attribute changes (the kernel's `ovl_setattr`): copy up first (without data when
//! the file is truncated to zero), then change the upper object.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use fuser::{FileType, TimeOrNow};

use crate::copy_up::copy_up_with;
use crate::inode::Node;
use crate::overlay::Overlay;
use crate::sys::{self, Stat};

/// The changes one setattr asks for.
pub struct Changes {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
    /// Clear the set-user-id bit, and the set-group-id bit of a group-executable
    /// file, as the kernel does on chown, and on write and truncate by a caller
    /// without CAP_FSETID (the daemon's own calls keep them: it has that capability).
    pub kill_suidgid: bool,
}

/// The mode `mode` becomes when its set-id bits are killed, if it changes.
fn without_suidgid(mode: u32) -> Option<u32> {
    let mut kill = mode & libc::S_ISUID;
    if mode & (libc::S_ISGID | libc::S_IXGRP) == libc::S_ISGID | libc::S_IXGRP {
        kill |= libc::S_ISGID;
    }
    (kill != 0).then_some(mode & 0o7777 & !kill)
}

/// Kills the set-id bits of the open upper file `fd` (a write with
/// FUSE_WRITE_KILL_SUIDGID).
pub fn kill_suidgid(fd: BorrowedFd) -> io::Result<()> {
    let st = sys::fstat(fd)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok(());
    }
    match without_suidgid(st.st_mode) {
        Some(mode) => sys::fchmod(fd, mode),
        None => Ok(()),
    }
}

fn timespec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => libc::timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: d.subsec_nanos() as i64,
            },
            Err(e) => {
                let d = e.duration();
                let (mut s, mut ns) = (-(d.as_secs() as i64), -(d.subsec_nanos() as i64));
                if ns < 0 {
                    s -= 1;
                    ns += 1_000_000_000;
                }
                libc::timespec {
                    tv_sec: s,
                    tv_nsec: ns,
                }
            }
        },
    }
}

/// Applies `c` to `node` (through `fh` when the node has no name left) and returns
/// the new stat.
pub fn setattr(
    ov: &Overlay,
    node: &Arc<Node>,
    fh: Option<Arc<OwnedFd>>,
    c: Changes,
) -> io::Result<Stat> {
    if c.size.is_some() && node.kind == FileType::Directory {
        return Err(io::Error::from_raw_os_error(libc::EISDIR));
    }
    let named = node.loc().is_some();
    if named {
        copy_up_with(ov, node, c.size != Some(0))?;
    } else if fh.is_none() && !ov.layer(node.stack().top()).is_upper {
        // A lower file that lost its name cannot be copied up any more.
        return Err(io::Error::from_raw_os_error(libc::ESTALE));
    }
    // Every change goes through an fd of the upper object itself (an unlinked file's
    // open fd, or one opened without following anything and checked to be the
    // node's object), so no change ever reaches what a symlink put at its name points
    // to, nor another object renamed there meanwhile.
    let obj: Arc<OwnedFd> = match (named, &fh) {
        (false, Some(fd)) => fd.clone(),
        _ => node.object(ov)?.0,
    };
    let (d, name) = (obj.as_fd(), CString::default());
    if let Some(size) = c.size {
        match &fh {
            Some(fd) => sys::ftruncate(fd.as_fd(), size)?,
            None => sys::ftruncate(sys::openat(d, &name, libc::O_WRONLY, 0)?.as_fd(), size)?,
        }
    }
    let at = sys::At {
        dir: d,
        name: &name,
    };
    let kept_in_xattr = ov
        .layer(0)
        .stat_override
        .filter(|_| matches!(node.kind, FileType::Directory | FileType::RegularFile));
    let owner_mode_in_xattr =
        kept_in_xattr.is_some() && (c.uid.is_some() || c.gid.is_some() || c.mode.is_some());
    if let (Some(x), true) = (kept_in_xattr, owner_mode_in_xattr) {
        // Owner and mode live in the override xattr (xattr_permissions).
        let mut cur = sys::statat(d, &name)?;
        ov.effective(0, at, &mut cur);
        crate::override_stat::write(
            x,
            at,
            c.uid.unwrap_or(cur.st_uid),
            c.gid.unwrap_or(cur.st_gid),
            c.mode.unwrap_or(cur.st_mode),
        )?;
    } else {
        if c.uid.is_some() || c.gid.is_some() {
            sys::chownat(
                d,
                &name,
                c.uid.unwrap_or(u32::MAX),
                c.gid.unwrap_or(u32::MAX),
            )?;
        }
        if let Some(mode) = c.mode {
            if node.kind != FileType::Symlink {
                sys::chmodat(d, &name, mode & 0o7777)?;
            }
        }
    }
    if c.atime.is_some() || c.mtime.is_some() {
        sys::utimensat(d, &name, &[timespec(c.atime), timespec(c.mtime)])?;
    }
    let mut st = sys::statat(d, &name)?;
    // Set-id bits to kill, judged on the stat just taken (a second one only when a
    // chmod was needed).
    if c.kill_suidgid
        && !owner_mode_in_xattr
        && !matches!(node.kind, FileType::Directory | FileType::Symlink)
    {
        if let Some(mode) = without_suidgid(st.st_mode) {
            sys::chmodat(d, &name, mode)?;
            st = sys::statat(d, &name)?;
        }
    }
    ov.effective(0, at, &mut st);
    Ok(st)
}
