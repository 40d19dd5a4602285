//! Reading ahead the small files of a listing, for callers that read what they list.
//!
//! `tar`, `grep -r` or a backup list a directory, then open and read its files one by
//! one, each behind a round trip to the daemon (OPEN, RELEASE) and, cold, a disk read
//! the daemon makes while the caller waits (prefill.rs, or the first READ). Where the
//! callers were seen to do so, the files of each new listing are read ahead into the
//! real files' page cache by a thread of their own, `readahead(2)` each: the disk
//! reads then run beside the round trips instead of between them, on a CPU that would
//! otherwise wait. Whether callers read what they list is learnt as in rdplus.rs:
//! when at least half as many files were opened for reading since the last listing as
//! that listing held, the next listing is read ahead. `find`, `ls -l` or `git status`
//! open few files, so they cost no reads. The thread reads through the layer fds the
//! listing used, so nothing leaves the layers. `STRATAFS_DISABLE=prefetch` turns it off.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};

use log::debug;

use crate::sys;

/// Files up to this size are read ahead (whole).
pub const MAX_SIZE: i64 = 1 << 20;

/// Files waiting to be read ahead, at most; more are left out.
const QUEUE: usize = 4096;

/// One file to read ahead: its name in a real directory of a layer.
pub struct Job {
    pub dir: Arc<OwnedFd>,
    pub name: CString,
    pub size: i64,
}

pub struct Prefetch {
    on: bool,
    /// To the reading thread, started at the first job (after the daemon forked).
    tx: OnceLock<SyncSender<Job>>,
    /// Files opened for reading, ever.
    opens: AtomicU64,
    /// `opens` when the last listing was decided on.
    opens_then: AtomicU64,
    /// The files in the last listing.
    files_then: AtomicU64,
    /// The directory of the last listing, and whether it was read ahead (for the
    /// later parts of a listing too big for one reply).
    last_dir: AtomicU64,
    last_wanted: AtomicBool,
}

impl Prefetch {
    pub fn new(on: bool) -> Self {
        Prefetch {
            on,
            tx: OnceLock::new(),
            opens: AtomicU64::new(0),
            opens_then: AtomicU64::new(0),
            files_then: AtomicU64::new(0),
            last_dir: AtomicU64::new(0),
            last_wanted: AtomicBool::new(false),
        }
    }

    /// A file was opened for reading.
    pub fn note_open(&self) {
        if self.on {
            self.opens.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Is the part of directory `dir`'s listing that starts at `offset` to be read
    /// ahead? Asked once per part, before it is made.
    pub fn wanted(&self, dir: u64, offset: u64) -> bool {
        if !self.on {
            return false;
        }
        if offset > 0 && self.last_dir.load(Ordering::Relaxed) == dir {
            return self.last_wanted.load(Ordering::Relaxed);
        }
        let opens = self.opens.load(Ordering::Relaxed);
        let before = self.opens_then.swap(opens, Ordering::Relaxed);
        let files = self.files_then.swap(0, Ordering::Relaxed);
        let wanted = opens.wrapping_sub(before) >= (files / 2).max(2);
        self.last_dir.store(dir, Ordering::Relaxed);
        self.last_wanted.store(wanted, Ordering::Relaxed);
        wanted
    }

    /// After a part of a listing: it held `files` regular files, and `jobs` (empty
    /// unless it was wanted) are to be read ahead.
    pub fn listed(&self, files: u64, jobs: Vec<Job>) {
        self.files_then.fetch_add(files, Ordering::Relaxed);
        if jobs.is_empty() {
            return;
        }
        let tx = self.tx.get_or_init(start);
        for job in jobs {
            // A full queue means the reading is far behind: the rest is left out.
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(job) {
                break;
            }
        }
    }
}

/// Starts the reading thread; if it can't start, jobs are dropped.
fn start() -> SyncSender<Job> {
    let (tx, rx) = sync_channel(QUEUE);
    if let Err(e) = std::thread::Builder::new()
        .name("prefetch".into())
        .spawn(move || run(rx))
    {
        debug!("prefetch thread: {e}");
    }
    tx
}

fn run(rx: Receiver<Job>) {
    while let Ok(job) = rx.recv() {
        let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOATIME;
        let fd = sys::openat(job.dir.as_fd(), &job.name, flags, 0)
            .or_else(|_| sys::openat(job.dir.as_fd(), &job.name, flags & !libc::O_NOATIME, 0));
        // Only names that were regular files when listed are queued; one gone
        // meanwhile fails to open, and readahead(2) of anything else reads nothing.
        if let Ok(fd) = fd {
            let _ = sys::readahead(fd.as_fd(), job.size as usize);
        }
    }
}
