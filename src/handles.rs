//! The handles handed to the kernel and what they hold: open files (their real fd,
//! opened now or at first use, and passthrough backing), the listings being read,
//! each node's I/O state, and released passthrough files kept open for the next open
//! like them. State only: opening is file.rs's.
//!
//! Locks: the maps are sharded and `kept` is a leaf (files close after it is let
//! go); a node's I/O state is held across the backing ioctl of an open
//! (docs/architecture.md, "Locks").

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use fuser::FileType;
use parking_lot::Mutex;

use crate::inode::OpenState;
use crate::real_io::open_regular;

/// One entry of a merged listing.
pub struct Entry {
    pub name: Vec<u8>,
    pub ino: u64,
    pub kind: FileType,
}

/// An open file: its node, its real fd, and the passthrough backing it keeps
/// registered while open (none when the daemon serves its I/O).
pub struct OpenFile {
    pub ino: u64,
    pub fd: Arc<RealFd>,
    pub backing: Option<Arc<fuser::BackingId>>,
    /// The open flags that matter to the real file (`keep_flags`).
    pub flags: i32,
}

/// A passthrough file kept open after its release, with its backing registered: the
/// next open of the same file with the same flags takes both over, so an
/// open-write-close loop costs the daemon no open(2), close(2) or backing ioctls.
/// Dropped when the file loses its last name, when the kernel forgets it, and when
/// newer ones push it out.
struct Kept {
    ino: u64,
    flags: i32,
    fd: Arc<OwnedFd>,
    backing: Arc<fuser::BackingId>,
}

/// How many released passthrough files are kept open.
const KEPT: usize = 32;

/// The flags a kept file is matched by: those that matter to the real file, less
/// the ones that act only at open (an open that truncates never takes a kept file).
pub fn keep_flags(flags: i32) -> i32 {
    real_flags(flags) & !libc::O_TRUNC
}

/// The real file behind a handle: open, or (a lower file opened for reading) opened
/// at its first use. Reads of cached pages never reach the daemon, so a warm read
/// of a lower file then costs the daemon no open(2) and no close(2).
pub struct RealFd {
    fd: OnceLock<Arc<OwnedFd>>,
    /// Where to open it, and with which flags: a lower file opened for reading. Kept
    /// once it is open, as the mark of such a handle (`lower_flags`: its reads move to
    /// the upper copy after a copy-up).
    at: Option<(Arc<OwnedFd>, CString, i32)>,
}

impl RealFd {
    pub fn open(fd: Arc<OwnedFd>) -> Arc<Self> {
        Arc::new(RealFd {
            fd: OnceLock::from(fd),
            at: None,
        })
    }

    /// `name` in `dir`, opened with `flags` when first used.
    pub fn later(dir: Arc<OwnedFd>, name: CString, flags: i32) -> Arc<Self> {
        Arc::new(RealFd {
            fd: OnceLock::new(),
            at: Some((dir, name, flags)),
        })
    }

    /// The flags of a lower file opened for reading (opened, or to open, by name);
    /// `None` for any other file.
    pub fn lower_flags(&self) -> Option<i32> {
        self.at.as_ref().map(|a| a.2)
    }

    /// The fd, if it is open already.
    pub fn if_open(&self) -> Option<Arc<OwnedFd>> {
        self.fd.get().cloned()
    }

    pub fn get(&self) -> io::Result<Arc<OwnedFd>> {
        if let Some(fd) = self.fd.get() {
            return Ok(fd.clone());
        }
        let (dir, name, flags) = self
            .at
            .as_ref()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
        let fd = Arc::new(open_regular(dir.as_fd(), name, *flags)?.0);
        // A thread that raced us may have set it first: use that one.
        Ok(self.fd.get_or_init(|| fd).clone())
    }
}

/// Listings kept at most for readers that stopped halfway.
const MAX_LISTINGS: usize = 4096;

/// File and directory handles handed to the kernel.
pub struct Handles {
    next: AtomicU64,
    files: DashMap<u64, OpenFile>,
    /// Directory listings being read, by (directory inode, reading process): made at
    /// offset 0, read on from at later offsets (positions in it), dropped at the end
    /// or when the kernel forgets the directory.
    listings: DashMap<(u64, u32), Arc<Vec<Entry>>>,
    /// How the open files of each node do their I/O, while any is open (kept here,
    /// not in every node).
    io: DashMap<u64, Arc<Mutex<OpenState>>>,
    /// Released passthrough files, most recent first.
    kept: Mutex<std::collections::VecDeque<Kept>>,
    kept_len: std::sync::atomic::AtomicUsize,
}

impl Handles {
    pub fn new() -> Self {
        Handles {
            next: AtomicU64::new(1),
            files: DashMap::new(),
            listings: DashMap::new(),
            io: DashMap::new(),
            kept: Mutex::new(std::collections::VecDeque::new()),
            kept_len: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// (open files, directory listings being read, released passthrough files kept
    /// open): figures for `stratafs stats`.
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.files.len(),
            self.listings.len(),
            self.kept_len.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Keeps the released passthrough file `ino` open (see `Kept`).
    pub fn keep(&self, ino: u64, flags: i32, fd: Arc<OwnedFd>, backing: Arc<fuser::BackingId>) {
        let old = {
            let mut k = self.kept.lock();
            k.push_front(Kept {
                ino,
                flags,
                fd,
                backing,
            });
            let old = (k.len() > KEPT).then(|| k.pop_back());
            self.kept_len.store(k.len(), Ordering::Relaxed);
            old
        };
        drop(old); // (closed outside the lock)
    }

    /// Takes over a kept file of `ino` opened with `flags`.
    pub fn take_kept(&self, ino: u64, flags: i32) -> Option<(Arc<OwnedFd>, Arc<fuser::BackingId>)> {
        if self.kept_len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut k = self.kept.lock();
        let pos = k.iter().position(|e| e.ino == ino && e.flags == flags)?;
        let e = k.remove(pos)?;
        self.kept_len.store(k.len(), Ordering::Relaxed);
        Some((e.fd, e.backing))
    }

    /// Closes the kept files of `ino` (it lost its last name, or the kernel forgot it).
    pub fn drop_kept(&self, ino: u64) {
        if self.kept_len.load(Ordering::Relaxed) == 0 {
            return;
        }
        let gone: Vec<Kept> = {
            let mut k = self.kept.lock();
            let (gone, stay): (Vec<Kept>, Vec<Kept>) = k.drain(..).partition(|e| e.ino == ino);
            k.extend(stay);
            self.kept_len.store(k.len(), Ordering::Relaxed);
            gone
        };
        drop(gone);
    }

    fn alloc(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    pub fn add_file(
        &self,
        ino: u64,
        fd: Arc<RealFd>,
        backing: Option<Arc<fuser::BackingId>>,
        flags: i32,
    ) -> u64 {
        let fh = self.alloc();
        self.files.insert(
            fh,
            OpenFile {
                ino,
                fd,
                backing,
                flags,
            },
        );
        fh
    }

    /// The real fd of handle `fh` (opened now if it was left for later).
    pub fn file_fd(&self, fh: u64) -> io::Result<Arc<OwnedFd>> {
        self.handle(fh)?.1.get()
    }

    pub fn file(&self, fh: u64) -> Option<Arc<OwnedFd>> {
        self.file_fd(fh).ok()
    }

    /// Some open fd of node `ino` (for a file that has lost its last name).
    pub fn any_for(&self, ino: u64) -> Option<Arc<OwnedFd>> {
        let real = self
            .files
            .iter()
            .find(|e| e.value().ino == ino)
            .map(|e| e.value().fd.clone());
        real?.get().ok()
    }

    pub fn close_file(&self, fh: u64) -> Option<OpenFile> {
        self.files.remove(&fh).map(|(_, f)| f)
    }

    /// The listing of directory `ino` that process `pid` reads at `offset`: made anew
    /// by `make` at offset 0 or when none is kept.
    pub fn listing(
        &self,
        ino: u64,
        pid: u32,
        offset: u64,
        make: impl FnOnce() -> io::Result<Vec<Entry>>,
    ) -> io::Result<Arc<Vec<Entry>>> {
        if offset != 0 {
            if let Some(l) = self.listings.get(&(ino, pid)) {
                return Ok(l.clone());
            }
        }
        let l = Arc::new(make()?);
        if self.listings.len() >= MAX_LISTINGS {
            // Readers that stopped halfway: forget them all (one that goes on lists anew).
            self.listings.clear();
        }
        self.listings.insert((ino, pid), l.clone());
        Ok(l)
    }

    /// Process `pid` read the listing of `ino` to its end.
    pub fn listing_done(&self, ino: u64, pid: u32) {
        self.listings.remove(&(ino, pid));
    }

    /// The I/O state of node `ino`'s open files.
    pub fn io(&self, ino: u64) -> Arc<Mutex<OpenState>> {
        self.io.entry(ino).or_default().clone()
    }

    /// Forgets the I/O state of `ino` once no open file of it is left (nobody else
    /// holds the state, no daemon-served open, no live backing).
    pub fn io_idle(&self, ino: u64) {
        self.io.remove_if(&ino, |_, st| {
            Arc::strong_count(st) == 1 && {
                let s = st.lock();
                s.cached == 0 && s.backing.strong_count() == 0
            }
        });
    }

    /// The kernel forgot directory `ino`: no reader is left.
    pub fn drop_listings(&self, ino: u64) {
        if !self.listings.is_empty() {
            self.listings.retain(|(i, _), _| *i != ino);
        }
    }

    /// The node and real file of handle `fh`.
    pub fn handle(&self, fh: u64) -> io::Result<(u64, Arc<RealFd>)> {
        self.files
            .get(&fh)
            .map(|f| (f.ino, f.fd.clone()))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
    }

    /// Handle `fh` goes on with the real file `fd`.
    pub fn set_real(&self, fh: u64, fd: Arc<RealFd>) {
        if let Some(mut f) = self.files.get_mut(&fh) {
            f.fd = fd;
        }
    }
}

/// The open flags that matter to the real file.
pub fn real_flags(flags: i32) -> i32 {
    flags
        & (libc::O_ACCMODE
            | libc::O_APPEND
            | libc::O_TRUNC
            | libc::O_NONBLOCK
            | libc::O_DIRECT
            | libc::O_NOATIME
            | libc::O_SYNC
            | libc::O_DSYNC)
}
