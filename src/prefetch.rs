//! Reading ahead what a walker will ask for next, on a thread of its own.
//!
//! On a cold cache every listing, stat and read makes the daemon wait for the disk
//! while the caller waits for the daemon: the disk reads and the round trips take
//! turns. Where callers were seen to walk, what they will want next is read into the
//! layers' caches ahead of them, so the two overlap, on a CPU that would otherwise
//! wait:
//! - **Subdirectories.** A directory listed whose parent was listed lately is a
//!   walker descending (`find`, `du`, `tar`): each subdirectory of the new listing is
//!   read (getdents) in every layer of it, and, where the last listing that held
//!   files gave their attributes (the walker stats them), each entry is stat'ed too,
//!   so its inode is read. A single `ls` lists a directory without its parent.
//! - **Files.** When at least half as many files were opened since the last listing
//!   as that listing held (`tar` and `grep -r` read them, a copy-up reads the lower
//!   file; `find`, `ls -l` and `git status` open few), the regular files of 1 MiB or
//!   less in the next listing are read ahead into their real files' page cache with
//!   `readahead(2)`.
//!
//! The thread reaches everything through the layer fds the listing used, opens with
//! `O_NOFOLLOW` and changes nothing. Jobs wait in a queue of at most 4096; more are
//! left out. `STRATAFS_DISABLE=prefetch` turns it off.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};

use log::debug;

use crate::inode::Node;
use crate::overlay::Overlay;
use crate::sys;

/// Files up to this size are read ahead (whole).
pub const MAX_SIZE: i64 = 1 << 20;

/// Jobs (files and directories) waiting to be read ahead, at most; more are left out.
const QUEUE: usize = 4096;

/// Directories remembered as listed lately, to tell a walker that descends.
const RECENT: usize = 64;

/// What to read ahead of a name in a real directory of a layer.
pub enum What {
    /// A file: its first `size` bytes.
    File { size: i64 },
    /// A directory: its entries, and their inodes if the walker stats files.
    Dir,
}

pub struct Job {
    pub dir: Arc<OwnedFd>,
    pub name: CString,
    pub what: What,
}

pub struct Prefetch {
    on: bool,
    /// To the reading thread, started at the first job (after the daemon forked).
    tx: OnceLock<SyncSender<Job>>,
    /// Files opened, ever.
    opens: AtomicU64,
    /// `opens` when the last listing was decided on.
    opens_then: AtomicU64,
    /// The files in the last listing.
    files_then: AtomicU64,
    /// The directory of the last listing, and whether it was read ahead (for the
    /// later parts of a listing too big for one reply).
    last_dir: AtomicU64,
    last_wanted: AtomicBool,
    /// The directories listed lately (a ring), and where the next one goes.
    recent: [AtomicU64; RECENT],
    next: AtomicUsize,
    /// The last listing that held files gave their attributes: the caller stats
    /// them (read by the thread as it takes each directory).
    stats_files: Arc<AtomicBool>,
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
            recent: std::array::from_fn(|_| AtomicU64::new(0)),
            next: AtomicUsize::new(0),
            stats_files: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A file was opened (to read it, or to write it: a lower file is read for its
    /// copy-up).
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

    /// After a part of a listing with attributes: it gave the attributes of `files`
    /// regular files, and `jobs` (empty unless it was wanted) are to be read ahead.
    /// `first_with_files`: the part at offset 0 of a listing that holds files, which
    /// tells whether the caller stats files.
    pub fn listed(&self, first_with_files: bool, files: u64, jobs: Vec<Job>) {
        self.files_then.fetch_add(files, Ordering::Relaxed);
        if first_with_files {
            self.stats_files.store(files > 0, Ordering::Relaxed);
        }
        self.queue(jobs);
    }

    /// Directory `dir`, in directory `parent`, is listed anew: is a walker
    /// descending (was `parent` listed lately)? If so, the subdirectories it lists
    /// are to be read ahead (their entries, and their inodes if the walker stats
    /// files), each before the walker comes to it.
    pub fn descending(&self, dir: u64, parent: u64) -> bool {
        if !self.on {
            return false;
        }
        let seen = parent != dir
            && self
                .recent
                .iter()
                .any(|r| r.load(Ordering::Relaxed) == parent);
        let at = self.next.fetch_add(1, Ordering::Relaxed) % RECENT;
        self.recent[at].store(dir, Ordering::Relaxed);
        seen
    }

    /// Queues `jobs` for the reading thread.
    pub fn queue(&self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        let tx = self.tx.get_or_init(|| start(self.stats_files.clone()));
        for job in jobs {
            // A full queue means the reading is far behind: the rest is left out.
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = tx.try_send(job) {
                break;
            }
        }
    }
}

/// Starts the reading thread; if it can't start, jobs are dropped.
fn start(stats_files: Arc<AtomicBool>) -> SyncSender<Job> {
    let (tx, rx) = sync_channel(QUEUE);
    if let Err(e) = std::thread::Builder::new()
        .name("prefetch".into())
        .spawn(move || run(rx, &stats_files))
    {
        debug!("prefetch thread: {e}");
    }
    tx
}

fn run(rx: Receiver<Job>, stats_files: &AtomicBool) {
    // Reading leaves the files' atimes alone where the daemon may say so (it owns
    // them, or is root); once refused (EPERM), it stops asking.
    let mut noatime = true;
    while let Ok(job) = rx.recv() {
        match job.what {
            What::File { size } => read_file(&job.dir, &job.name, size, &mut noatime),
            What::Dir => read_dir(&job.dir, &job.name, stats_files.load(Ordering::Relaxed)),
        }
    }
}

/// Only names that were regular files when listed are queued as files; one gone
/// meanwhile fails to open, and readahead(2) of anything else reads nothing.
fn read_file(dir: &OwnedFd, name: &CString, size: i64, noatime: &mut bool) {
    let flags = libc::O_RDONLY | libc::O_NONBLOCK;
    let fd = match *noatime {
        true => match sys::openat(dir.as_fd(), name, flags | libc::O_NOATIME, 0) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                *noatime = false;
                sys::openat(dir.as_fd(), name, flags, 0)
            }
            r => r,
        },
        false => sys::openat(dir.as_fd(), name, flags, 0),
    };
    if let Ok(fd) = fd {
        let _ = sys::readahead(fd.as_fd(), size as usize);
    }
}

/// Reads a directory's entries (and with `stat`, their inodes) into the caches;
/// a name that is no directory in this layer fails to open and reads nothing.
fn read_dir(dir: &OwnedFd, name: &CString, stat: bool) {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NONBLOCK;
    let Ok(fd) = sys::openat(dir.as_fd(), name, flags, 0) else {
        return;
    };
    let Ok(entries) = sys::read_dir_all(fd.as_fd()) else {
        return;
    };
    if stat {
        for e in entries {
            if let Ok(name) = CString::new(e.name) {
                let _ = sys::statat(fd.as_fd(), &name);
            }
        }
    }
}

/// What listings ask to read ahead.
impl Prefetch {
    /// A listed file to read ahead: a small one, at its own name in its layer, whose
    /// pages were not handed to the kernel yet.
    pub fn file_job(
        ov: &Overlay,
        dir: &Node,
        node: &Node,
        layer: u16,
        size: i64,
        name: std::ffi::CString,
    ) -> Option<Job> {
        if size <= 0 || size > MAX_SIZE || node.prefilled() {
            return None;
        }
        let dir = dir.dir_fd(ov, layer).ok()?;
        let what = What::File { size };
        Some(Job { dir, name, what })
    }

    /// After a new listing of `dir`: where a walker descends, its subdirectories are
    /// read ahead in every layer of `dir` (prefetch.rs).
    pub fn read_subdirs_ahead(&self, ov: &Overlay, dir: &Node, entries: &[crate::handles::Entry]) {
        let parent = dir.parent().map_or(dir.ino, |p| p.ino);
        if !self.descending(dir.ino, parent) {
            return;
        }
        let names: Vec<_> = entries
            .iter()
            .skip(2)
            .filter(|e| e.kind == fuser::FileType::Directory)
            .filter_map(|e| std::ffi::CString::new(e.name.clone()).ok())
            .collect();
        if names.is_empty() {
            return;
        }
        let fds: Vec<_> = dir
            .stack()
            .refs
            .iter()
            .filter_map(|r| dir.dir_fd(ov, r.layer).ok())
            .collect();
        let mut jobs = Vec::new();
        for name in names {
            for fd in &fds {
                jobs.push(Job {
                    dir: fd.clone(),
                    name: name.clone(),
                    what: What::Dir,
                });
            }
        }
        self.queue(jobs);
    }
}

#[cfg(test)]
mod tests {
    use super::Prefetch;

    #[test]
    fn files_are_read_ahead_after_callers_opened_half_of_the_last_listing() {
        let p = Prefetch::new(true);
        assert!(!p.wanted(10, 0), "the first listing: nothing seen yet");
        p.listed(true, 8, Vec::new());
        (0..3).for_each(|_| p.note_open());
        assert!(!p.wanted(11, 0), "3 of 8 opened");
        p.listed(true, 8, Vec::new());
        (0..4).for_each(|_| p.note_open());
        assert!(p.wanted(12, 0), "4 of 8 opened");
        assert!(p.wanted(12, 100), "a later part of the same listing");
        p.listed(false, 8, Vec::new());
        assert!(!p.wanted(13, 0), "no open since");
        let off = Prefetch::new(false);
        (0..10).for_each(|_| off.note_open());
        assert!(!off.wanted(1, 0) && !off.wanted(2, 0));
    }

    #[test]
    fn a_listing_below_one_listed_lately_is_a_walker_descending() {
        let p = Prefetch::new(true);
        assert!(!p.descending(1, 1), "the root is its own parent");
        assert!(p.descending(5, 1), "below the root, listed");
        assert!(p.descending(9, 5));
        assert!(!p.descending(20, 7), "7 was never listed: a single ls");
        // Listings far enough back are forgotten.
        (100..200).for_each(|d| {
            p.descending(d, 0);
        });
        assert!(!p.descending(30, 5));
        assert!(!Prefetch::new(false).descending(5, 1));
    }
}
