//! Small lower files handed to the kernel's page cache at their first open for
//! reading (FUSE_NOTIFY_STORE), before the open is answered.
//!
//! A lower file is daemon-served (a copy-up could not switch a passthrough backing),
//! so reading it cold costs a READ request, and every READ makes the kernel drop the
//! file's atime, so the next stat of it costs a GETATTR as well. With the pages in
//! the cache already (and kept there by KEEP_CACHE, a lower never changes), reading
//! the file costs neither: `tar` or `grep -r` of a tree of small files makes two
//! round trips a file fewer. Each node is handed over once in its life (the kernel
//! may drop the pages later; then READs fetch them again), one thread at a time
//! does it, so the others are always free to answer the READs of pages it may wait
//! for, and it holds off copy-ups of the node meanwhile (pages a writer put in the
//! kernel after one must not be overwritten). `STRATAFS_DISABLE=prefill` turns it
//! off.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use fuser::{INodeNo, Notifier};
use log::debug;
use parking_lot::Mutex;

use crate::handles::RealFd;
use crate::inode::Node;
use crate::overlay::Overlay;
use crate::sys;

/// Files up to this size are handed over.
const MAX_SIZE: i64 = 64 << 10;

pub struct Prefill {
    on: bool,
    notifier: OnceLock<Notifier>,
    /// A thread is handing pages over.
    busy: AtomicBool,
    /// What it reads the file into: one buffer for all, as one thread at a time
    /// uses it (a buffer each would stay in each thread's malloc arena).
    buf: Mutex<Vec<u8>>,
}

impl Prefill {
    pub fn new(on: bool) -> Self {
        Prefill {
            on,
            notifier: OnceLock::new(),
            busy: AtomicBool::new(false),
            buf: Mutex::new(Vec::new()),
        }
    }

    /// The session's notifier, once the session exists.
    pub fn set_notifier(&self, n: Notifier) {
        let _ = self.notifier.set(n);
    }

    /// Before the reply to an open of `node` for reading: hands the pages of its
    /// real file `fd` (a lower file not opened yet, served by the daemon) to the
    /// kernel, if the file is small, this is the node's first open since the kernel
    /// learnt of it, and no other thread is at it.
    pub fn first_open(&self, ov: &Overlay, node: &Node, fd: &RealFd, flags: i32) {
        let Some(notifier) = self.notifier.get() else {
            return;
        };
        if !self.on || fd.if_open().is_some() || flags & libc::O_DIRECT != 0 {
            return;
        }
        if self.busy.swap(true, Ordering::Acquire) {
            return;
        }
        if node.note_prefilled() {
            self.busy.store(false, Ordering::Release);
            return; // handed over before
        }
        let pushed = (|| -> std::io::Result<usize> {
            // No copy-up meanwhile: after one, a writer served by the daemon may have
            // pages in the kernel that these would overwrite.
            let _no_copy_up = node.copy_lock.lock();
            if ov.layer(node.stack().top()).is_upper {
                return Ok(0);
            }
            let real = fd.get()?;
            let st = sys::fstat(real.as_fd())?;
            if st.st_size <= 0 || st.st_size > MAX_SIZE {
                return Ok(0);
            }
            let mut buf = self.buf.lock();
            buf.resize(MAX_SIZE as usize, 0);
            let done = crate::real_io::read_into(&real, 0, &mut buf[..st.st_size as usize])?;
            notifier.store(INodeNo(node.ino), 0, &buf[..done])?;
            Ok(done)
        })();
        self.busy.store(false, Ordering::Release);
        match pushed {
            Ok(n) if n > 0 => debug!("prefilled ino {} ({n} bytes)", node.ino),
            Ok(_) => {}
            Err(e) => debug!("prefill of ino {}: {e}", node.ino),
        }
    }
}
