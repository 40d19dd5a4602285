//! Copy-up (the kernel's `copy_up.c`): bringing a lower object into the upper layer
//! before its first change, parents first.
//!
//! The copy is built in the work directory (data by FICLONE, else copy_file_range
//! over the data extents so holes stay holes, else read/write; then owner, mode,
//! xattrs except overlay-private ones, an origin record, times) and renamed into place
//! in one step. Each node has its own copy lock: concurrent writers copy it once, and
//! nothing else in the mount waits. A thread holds one copy lock at most: parents are
//! copied up before a node's lock is taken, the other names of a hard link linked
//! after it is let go (docs/architecture.md, "Locks").

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fuser::FileType;
use log::debug;

use crate::events::{Method, What};
use crate::inject::{self, Step};
use crate::inode::Node;
use crate::ondisk::Ovl;
use crate::overlay::Overlay;
use crate::stack::{Known, LayerRef, Stack};
use crate::sys::{self, At, Stat};
use crate::whiteout::is_private_xattr;
use crate::work::Work;

fn erofs() -> io::Error {
    io::Error::from_raw_os_error(libc::EROFS)
}

/// Makes sure `node` is in the upper layer, copying it (and its parents) up if needed.
pub fn copy_up(ov: &Overlay, node: &Arc<Node>) -> io::Result<()> {
    copy_up_with(ov, node, true)
}

/// Copy-up that skips the data when the caller is about to truncate it to zero.
pub fn copy_up_with(ov: &Overlay, node: &Arc<Node>, with_data: bool) -> io::Result<()> {
    let work = ov.work.as_ref().ok_or_else(erofs)?;
    if ov.settings.read_only {
        return Err(erofs());
    }
    let stale = || io::Error::from_raw_os_error(libc::ESTALE);
    // Parents first, each under its own lock only: this node's lock is taken once its
    // parent is in the upper layer, so no copy lock is ever held while another is
    // waited for (the kernel's copy-up walks to the topmost ancestor not yet copied up
    // the same way). A rename of the parent meanwhile moves this node with it, and
    // the loop copies up the new parent (a rename copies up what it moves anyway).
    let mut tries = 0;
    let (guard, loc, parent) = loop {
        if node.stack().top() == 0 {
            return Ok(()); // (another writer may have done it meanwhile)
        }
        let parent = node.loc().ok_or_else(stale)?.parent.ok_or_else(stale)?;
        copy_up(ov, &parent)?;
        let guard = node.copy_lock.lock();
        if node.stack().top() == 0 {
            return Ok(());
        }
        let loc = node.loc().ok_or_else(stale)?;
        match &loc.parent {
            Some(p) if p.stack().top() == 0 => {
                let p = p.clone();
                break (guard, loc, p);
            }
            Some(_) if tries < 16 => tries += 1,
            _ => return Err(stale()),
        }
    };
    let t0 = std::time::Instant::now();
    let upper_parent = parent.dir_fd(ov, 0)?;
    // The lower object itself, held open and checked to be the node's: a layer changed
    // beneath the mount (a symlink or a FIFO put at the name) is never copied in its
    // place, and nothing after this looks the name up again.
    let (src_dir, real_st) = node.object(ov)?;
    let src_name = CString::default();
    // Owner and mode as shown (a lower may keep them in an override xattr).
    let mut st = real_st;
    let src_at = At {
        dir: src_dir.as_fd(),
        name: &src_name,
    };
    ov.effective(node.stack().top(), src_at, &mut st);
    let tmp = work.tmp_name();
    let sync = !ov.settings.volatile;
    let mut method = Method::MetadataOnly;
    let built = build(work, &tmp, src_dir.as_fd(), &src_name, &st, with_data, sync)
        .and_then(|m| {
            method = m;
            finish_meta(work, &tmp, src_dir.as_fd(), &src_name, &st, node.ino)
        })
        .and_then(|_| match ov.layer(0).stat_override {
            // xattr_permissions: the copy records the owner and mode it shows.
            Some(x) if matches!(st.st_mode & libc::S_IFMT, libc::S_IFDIR | libc::S_IFREG) => {
                let at = At {
                    dir: work.fd.as_fd(),
                    name: &tmp,
                };
                crate::override_stat::write(x, at, st.st_uid, st.st_gid, st.st_mode)
            }
            _ => Ok(()),
        });
    if let Err(e) = built {
        work.remove(&tmp);
        return Err(e);
    }
    // Copied-up entries make their directory "impure" (they carry origins).
    mark_impure(work, &parent, upper_parent.as_fd());
    if let Err(e) = inject::at(Step::CopyRename).and_then(|_| {
        sys::renameat2(
            work.fd.as_fd(),
            &tmp,
            upper_parent.as_fd(),
            &loc.name,
            libc::RENAME_NOREPLACE,
        )
    }) {
        work.remove(&tmp);
        return Err(e);
    }
    let old = node.stack();
    let mut refs = vec![LayerRef::new(0)];
    if node.kind == FileType::Directory {
        refs.extend(old.refs.iter().cloned());
    }
    let stack = Stack::of(refs, node.kind == FileType::Directory);
    if node.kind == FileType::Directory {
        // The layers below keep what was known of them, one position down; the new
        // upper directory is empty, and may stay free of `.wh.` names.
        stack.note_aufs_free_bits(old.aufs_free_bits() << 1);
        if work.upper_stays_aufs_free() {
            stack.note_aufs_free(0);
        }
    }
    node.set_stack(stack);
    debug!("copied up {:?} (ino {})", loc.name, node.ino);
    let bytes = if method == Method::MetadataOnly {
        0
    } else {
        st.st_size as u64
    };
    let from_layer = old.top();
    ov.happened(
        What::CopyUp {
            from_layer,
            bytes,
            method,
            micros: t0.elapsed().as_micros() as u64,
        },
        || node.path(),
    );
    // The other names of a lower hard link are linked after the lock is let go: they
    // copy up their own parents, each under its own lock.
    drop(guard);
    if node.kind != FileType::Directory && real_st.st_nlink > 1 {
        link_up_aliases(ov, node, old.top(), &real_st);
    }
    Ok(())
}

/// Marks the upper directory `upper` of `dir` "impure": some entries in it carry
/// origins, which listings must then read (readdir.rs). Set once, and remembered in
/// the stack: a read of the mark costs a path walk through /proc (no xattr call takes
/// an O_PATH directory fd).
pub fn mark_impure(work: &Work, dir: &Node, upper: BorrowedFd) {
    let stack = dir.stack();
    if !stack.knows(Known::Impure) {
        if !work.has_xattr(upper, c"", Ovl::Impure) {
            let _ = work.set_xattr(upper, c"", Ovl::Impure, b"y");
        }
        stack.learn(Known::Impure);
    }
}

/// Creates the temporary copy `tmp` in the work dir: the object itself, and its data;
/// returns how the data was copied.
fn build(
    work: &Work,
    tmp: &CString,
    src_dir: BorrowedFd,
    src: &CString,
    st: &Stat,
    with_data: bool,
    sync: bool,
) -> io::Result<Method> {
    let w = work.fd.as_fd();
    let meta = |r: io::Result<()>| r.map(|_| Method::MetadataOnly);
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => meta(sys::mkdirat(w, tmp, 0o700)),
        libc::S_IFREG => {
            // Made with its permission bits (the daemon's umask is 0); set-id bits
            // come last (finish_meta), as a chown would clear them.
            let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
            let dst = sys::openat(w, tmp, flags, st.st_mode & 0o777)?;
            let mut method = Method::MetadataOnly;
            if with_data && st.st_size > 0 {
                inject::at(Step::CopyData)?;
                let srcfd = crate::real_io::open_regular(src_dir, src, libc::O_RDONLY)?.0;
                // Blocks for every byte: no holes to look for.
                let dense = (st.st_blocks as u64).saturating_mul(512) >= st.st_size as u64;
                method = copy_data(&srcfd, &dst, st.st_size as u64, dense)?;
                if sync {
                    // On disk before it becomes visible (unless volatile): the data is
                    // written out and waited for, which also allocates its blocks in the
                    // running journal transaction. The rename that follows is journaled
                    // no earlier, so after a crash the name shows either the lower file
                    // or the whole copy, as with the kernel's fsync, without a journal
                    // commit per copy.
                    sys::write_out(dst.as_fd())?;
                }
            }
            Ok(method)
        }
        libc::S_IFLNK => {
            let target = sys::readlinkat(src_dir, src)?;
            let target =
                CString::new(target).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            meta(sys::symlinkat(&target, w, tmp))
        }
        _ => meta(sys::mknodat(w, tmp, st.st_mode, st.st_rdev)),
    }
}

/// Owner, mode, xattrs, origin and times of the copy, in the order that keeps them.
fn finish_meta(
    work: &Work,
    tmp: &CString,
    src_dir: BorrowedFd,
    src: &CString,
    st: &Stat,
    ino: u64,
) -> io::Result<()> {
    inject::at(Step::CopyMeta)?;
    let w = work.fd.as_fd();
    let kind = st.st_mode & libc::S_IFMT;
    // The copy was made with the daemon's owner: a chown only where that differs.
    let owned = if (st.st_uid, st.st_gid) == work.creator {
        Ok(())
    } else {
        sys::chownat(w, tmp, st.st_uid, st.st_gid)
    };
    match owned {
        // A daemon without the right to give files away (a plain user), or in a user
        // namespace where the owner is not mapped (EINVAL), keeps the copy as its
        // own, as fuse-overlayfs does.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EINVAL)) => {
            debug!("copy-up: owner {}:{} not kept: {e}", st.st_uid, st.st_gid)
        }
        r => r?,
    }
    // A regular file was made with its permission bits: only set-id and sticky bits
    // are missing.
    let made_with_mode = kind == libc::S_IFREG && st.st_mode & 0o7000 == 0;
    if kind != libc::S_IFLNK && !made_with_mode {
        sys::chmodat(w, tmp, st.st_mode & 0o7777)?;
    }
    copy_xattrs(
        At {
            dir: src_dir,
            name: src,
        },
        At { dir: w, name: tmp },
    )?;
    let _ = work.set_xattr(w, tmp, Ovl::StratafsOrigin, &ino.to_le_bytes());
    let times = [
        libc::timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec,
        },
        libc::timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec,
        },
    ];
    sys::utimensat(w, tmp, &times)
}

/// Copies every xattr but the overlay-private ones. A source filesystem without
/// xattrs (EOPNOTSUPP) has none to copy, and one gone since it was listed (ENODATA)
/// is skipped; any other failure to read them fails the copy-up, as in the kernel. One
/// that the upper refuses is skipped (as the kernel does for EOPNOTSUPP/EPERM).
pub fn copy_xattrs(src: At, dst: At) -> io::Result<()> {
    let names = match sys::listxattr(src) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(()),
        Err(e) => return Err(e),
    };
    for n in names.iter().filter(|n| !is_private_xattr(n)) {
        let Ok(cn) = CString::new(n.clone()) else {
            continue;
        };
        let v = match sys::getxattr(src, &cn) {
            Ok(v) => v,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA | libc::EOPNOTSUPP)) => {
                continue
            }
            Err(e) => return Err(e),
        };
        if let Err(e) = sys::setxattr(dst, &cn, &v, 0) {
            debug!("copy-up: xattr {cn:?} not copied: {e}");
        }
    }
    Ok(())
}

/// Copies `size` bytes: reflink if the filesystem can, else the data extents only
/// (holes stay holes; `dense`: the source has none), by copy_file_range or, failing
/// that, read/write. Returns which of these it was.
pub fn copy_data(src: &OwnedFd, dst: &OwnedFd, size: u64, dense: bool) -> io::Result<Method> {
    if !NO_FICLONE.load(Ordering::Relaxed) {
        match sys::ficlone(dst.as_fd(), src.as_fd()) {
            Ok(()) => return Ok(Method::Reflink),
            // The upper's filesystem has no reflinks (the copy is always made there).
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOTTY)) => {
                NO_FICLONE.store(true, Ordering::Relaxed)
            }
            Err(_) => {}
        }
    }
    if size >= BACKGROUND_COPY {
        // A long copy runs at a lower CPU priority, so that the requests of the rest of
        // the mount are served first; this request's thread waits for it.
        return std::thread::scope(|s| {
            s.spawn(|| {
                sys::nice_this_thread(10);
                copy_extents(src, dst, size, dense)
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::from_raw_os_error(libc::EIO)))
        });
    }
    copy_extents(src, dst, size, dense)
}

/// Set once FICLONE failed for want of support: the work dir never moves.
static NO_FICLONE: AtomicBool = AtomicBool::new(false);

/// Copies of this size or more run in a low-priority thread.
const BACKGROUND_COPY: u64 = 4 << 20;

fn copy_extents(src: &OwnedFd, dst: &OwnedFd, size: u64, dense: bool) -> io::Result<Method> {
    let mut method = Method::CopyFileRange;
    let mut note = |(n, rw): (u64, bool)| {
        if rw {
            method = Method::ReadWrite;
        }
        n
    };
    if dense && note(copy_range(src, dst, 0, size)?) == size {
        return Ok(method);
    }
    let mut off = 0u64;
    while off < size {
        let data = match sys::lseek(src.as_fd(), off as i64, libc::SEEK_DATA) {
            Ok(Some(d)) => d as u64,
            Ok(None) => break, // only a hole is left
            Err(_) => off,     // no SEEK_DATA here: treat it all as data
        };
        let end = match sys::lseek(src.as_fd(), data as i64, libc::SEEK_HOLE) {
            Ok(Some(h)) => (h as u64).min(size),
            _ => size,
        };
        note(copy_range(src, dst, data, end.saturating_sub(data))?);
        off = end.max(data + 1);
    }
    // A hole at the end, or a source that got shorter: the copy gets the full size.
    sys::ftruncate(dst.as_fd(), size)?;
    Ok(method)
}

/// Copies `len` bytes at `off` (less if the source ends first); returns how many,
/// and whether it fell back to read/write.
fn copy_range(src: &OwnedFd, dst: &OwnedFd, mut off: u64, mut len: u64) -> io::Result<(u64, bool)> {
    let want_all = len;
    const CHUNK: u64 = 1 << 20;
    let mut use_cfr = true;
    let mut buf = Vec::new();
    while len > 0 {
        let want = len.min(CHUNK) as usize;
        let n = if use_cfr {
            match sys::copy_file_range(src.as_fd(), off, dst.as_fd(), off, want) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
                    ) =>
                {
                    use_cfr = false;
                    continue;
                }
                Err(e) => return Err(e),
            }
        } else {
            buf.resize(want, 0);
            let n = sys::pread(src.as_fd(), &mut buf, off)?;
            if crate::real_io::write(dst, off, &buf[..n])? < n {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            n
        };
        if n == 0 {
            break; // the source got shorter
        }
        off += n as u64;
        len -= n as u64;
    }
    Ok((want_all - len, !use_cfr))
}

/// Links (`parent`, `name`) in the upper layer to the upper file (`src_dir`,
/// `src_name`), copying the parent up first. The link carries the copy's origin, so
/// the parent is marked impure (listings there read origins, as for any copy-up).
pub fn link_in_upper(
    ov: &Overlay,
    src_dir: std::os::fd::BorrowedFd,
    src_name: &CString,
    parent: &Arc<Node>,
    name: &CString,
) -> io::Result<()> {
    copy_up(ov, parent)?;
    let up = parent.dir_fd(ov, 0)?;
    sys::linkat(src_dir, src_name, up.as_fd(), name)?;
    if let Some(work) = &ov.work {
        mark_impure(work, parent, up.as_fd());
    }
    ov.happened(What::LinkUp, || parent.child_path(name));
    Ok(())
}

/// After `node` (a non-directory with several lower names) was copied up from the
/// lower object `lower` (its stat) in `layer`, links every other live name of that
/// object to the upper copy.
pub fn link_up_aliases(ov: &Overlay, node: &Arc<Node>, layer: u16, lower: &sys::Stat) {
    let aliases = crate::namei::live_names(ov, layer, lower.st_dev, lower.st_ino);
    if aliases.is_empty() {
        return;
    }
    let Ok((src_dir, src_name)) = node.real(ov) else {
        return;
    };
    for (parent, name) in aliases {
        match link_in_upper(ov, src_dir.as_fd(), &src_name, &parent, &name) {
            Ok(()) => {
                node.add_alias_last(&parent, &name);
                debug!("linked up alias {name:?} of ino {}", node.ino);
            }
            Err(e) => debug!("alias {name:?} of ino {} not linked: {e}", node.ino),
        }
    }
}
