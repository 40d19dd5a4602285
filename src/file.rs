//! Opening files (the kernel's `file.c`): the real file behind a node, copied up first
//! when the open writes, a lower file opened at its first read, passthrough for big
//! lower files on a read-only mount, and reads that follow a copy-up. The handles
//! themselves are handles.rs's.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::copy_up::copy_up_with;
use crate::handles::{real_flags, RealFd};
use crate::inode::Node;
use crate::overlay::Overlay;
use crate::real_io::open_regular;
use crate::sys;

/// The fd a read of handle `fh` goes to: its own, or, for a lower file copied up
/// since the handle was opened, the upper copy (opened at the first such read and
/// kept in the handle), as kernel overlayfs reads do after a copy-up.
pub fn read_fd(ov: &Overlay, fh: u64) -> io::Result<Arc<OwnedFd>> {
    let (ino, real) = ov.handles.handle(fh)?;
    if let Some(flags) = real.lower_flags() {
        let node = ov.table.get(ino);
        if let Some(node) = node.filter(|n| ov.layer(n.stack().top()).is_upper) {
            let up = Arc::new(open(ov, &node, flags)?);
            ov.handles.set_real(fh, RealFd::open(up.clone()));
            return Ok(up);
        }
    }
    real.get()
}

/// Does an open with these flags change the file (and so need a copy-up)?
pub fn wants_write(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

/// Opens the real file behind `node` with the caller's access mode and the flags
/// that matter to the real file, copying it up first if the open writes. The file
/// opened is the node's own object, even while its name is renamed or removed on
/// another thread (`Node::at_real`), and never anything else that a layer changed
/// beneath the mount may hold at its name (ESTALE: the kernel looks the name up again).
pub fn open(ov: &Overlay, node: &Arc<Node>, flags: i32) -> io::Result<OwnedFd> {
    if wants_write(flags) {
        copy_up_with(ov, node, flags & libc::O_TRUNC == 0)?;
    }
    // Truncated only once it is known to be the right file.
    let fd = node.at_real(ov, |dir, name| {
        let (fd, st) = open_regular(dir, name, real_flags(flags) & !libc::O_TRUNC)?;
        node.check_object(ov, &st)?;
        Ok(fd)
    })?;
    if flags & libc::O_TRUNC != 0 {
        sys::ftruncate(fd.as_fd(), 0)?;
    }
    Ok(fd)
}

/// Opens `node` for the kernel's OPEN: a lower file opened for reading is opened at
/// its first READ (never, if the kernel has its pages); anything else now.
pub fn open_handle(ov: &Overlay, node: &Arc<Node>, flags: i32) -> io::Result<Arc<RealFd>> {
    if !wants_write(flags) && !ov.layer(node.stack().top()).is_upper {
        let (dir, name) = node.real(ov)?;
        if !name.is_empty() {
            // What the name holds is checked now, so that a layer changed beneath
            // the mount gives ESTALE here, where the kernel looks the name up again,
            // and not at the first read (which opens it, checked again).
            let st = sys::statat(dir.as_fd(), &name)?;
            node.check_object(ov, &st)?;
            if !passthrough_lower(ov, &st) {
                return Ok(RealFd::later(dir, name, real_flags(flags)));
            }
        }
    }
    Ok(RealFd::open(Arc::new(open(ov, node, flags)?)))
}

/// Lower files at least this big are passthrough on a read-only mount.
const PASSTHROUGH_LOWER_MIN: i64 = 1 << 20;

/// Is the lower file of stat `st` to be opened now, for passthrough? Only on a
/// read-only mount (elsewhere a later copy-up could not switch the backing to the
/// upper file), and only a big one: a small one is read in a request or two, and a
/// lazy open of it costs nothing at all when its pages are cached.
fn passthrough_lower(ov: &Overlay, st: &sys::Stat) -> bool {
    ov.settings.read_only
        && ov.passthrough.load(Ordering::Relaxed)
        && st.st_size >= PASSTHROUGH_LOWER_MIN
}

/// Chooses how a new open file of `n` (real file `fd`) does its I/O: through the
/// node's passthrough backing (registered with `open_backing` on first use) when
/// passthrough is on, the file is in the upper layer (or the mount is read-only)
/// and no daemon-served file of the node is open; else through the daemon. Lower
/// files of a writable mount are never passthrough: a later copy-up could not
/// switch their backing to the upper file.
pub fn io_mode(
    ov: &Overlay,
    n: &Node,
    fd: &crate::handles::RealFd,
    open_backing: impl FnOnce(&OwnedFd) -> std::io::Result<fuser::BackingId>,
) -> Option<Arc<fuser::BackingId>> {
    use std::sync::atomic::Ordering::Relaxed;
    let io = ov.handles.io(n.ino);
    let mut io = io.lock();
    // (A handle left to open later is a lower file's: daemon-served.)
    if let (true, 0, true, Some(real)) = (
        ov.passthrough.load(Relaxed),
        io.cached,
        ov.settings.read_only || ov.layer(n.stack().top()).is_upper,
        fd.if_open(),
    ) {
        if let Some(id) = io.backing.upgrade() {
            return Some(id);
        }
        match open_backing(&real) {
            Ok(id) => {
                let id = Arc::new(id);
                io.backing = Arc::downgrade(&id);
                return Some(id);
            }
            Err(e) => {
                // Not permitted here (no CAP_SYS_ADMIN in the initial namespace):
                // the daemon serves I/O from now on.
                log::info!("FUSE passthrough refused ({e}); the daemon serves file I/O");
                ov.passthrough.store(false, Relaxed);
            }
        }
    }
    io.cached += 1;
    None
}

/// The kernel released handle `fh`: a daemon-served file leaves the node's count, a
/// passthrough file that still has a name is kept open for the next open like it
/// (handles.rs), and the node's I/O state goes once no open file is left.
pub fn release(ov: &Overlay, fh: u64) {
    if let Some(f) = ov.handles.close_file(fh) {
        let ino = f.ino;
        if f.backing.is_none() {
            let io = ov.handles.io(ino);
            let mut io = io.lock();
            io.cached = io.cached.saturating_sub(1);
        }
        // A passthrough file that still has a name is kept open for the next open
        // like it (file.rs).
        if let (Some(backing), Some(fd)) = (&f.backing, f.fd.if_open()) {
            if f.flags >= 0 && ov.table.get(ino).is_some_and(|n| n.loc().is_some()) {
                ov.handles.keep(ino, f.flags, fd, backing.clone());
            }
        }
        // A passthrough backing goes away with its last handle (dropped here).
        drop(f);
        ov.handles.io_idle(ino);
    }
}
