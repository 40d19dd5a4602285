//! Merged inodes and the inode table (the kernel's `inode.c`).
//!
//! A [`Node`] is one object of the merged tree as the kernel knows it: its inode
//! number (which is also its FUSE node id), its type, where it was found (parent node
//! and name) and its layer stack: for a directory every layer that contributes to the
//! merge, topmost first; for anything else the one layer that holds it. Directory
//! nodes cache an `O_PATH` fd per layer, within a process-wide budget.
//!
//! The table is a sharded map from inode number to node: a lookup takes one shard's
//! read lock and bumps an atomic count; nothing on that path is global.
//!
//! Locks (order and reasons in docs/architecture.md, "Locks"): a node's `place` lock
//! is a leaf, taken for its names and stack only; a table shard may take a node's
//! place lock or a pins shard inside it; `copy_lock` is copy_up.rs's.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use fuser::{FileAttr, FileType, INodeNo};
use parking_lot::{Mutex, RwLock};
use smallvec::{smallvec, SmallVec};

use crate::sys::{self, Stat};

pub const ROOT_ID: u64 = 1;

/// What a node needs of the overlay to reach its real objects. `overlay::Overlay`,
/// which holds the inode table, is the one implementation: through this trait the
/// nodes use it without this module importing the overlay's.
pub trait Reach {
    fn table(&self) -> &InodeTable;
    /// The root of `layer` (`O_PATH`).
    fn layer_root(&self, layer: u16) -> BorrowedFd<'_>;
    /// The inode number the mount gives the object `st` of lower `layer`; `None` for
    /// the upper layer (an upper object keeps its node whatever its number).
    fn lower_ino(&self, layer: u16, st: &Stat) -> Option<u64>;
    /// Some open fd of node `ino` (for a file that has lost its last name).
    fn open_fd(&self, ino: u64) -> Option<Arc<OwnedFd>>;
    /// Makes `st`, the stat of the object at `at` in `layer`, what the mount shows.
    fn shown_stat(&self, layer: u16, at: sys::At, st: &mut Stat);
}

/// One layer's part in a node: which layer, whether that directory is marked
/// `opaque=x` (it may hold xattr whiteouts), and, for a directory reached through a
/// redirect, its path from that layer's root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerRef {
    pub layer: u16,
    pub xwhiteouts: bool,
    pub path: Option<Arc<CString>>,
}

impl LayerRef {
    pub fn new(layer: u16) -> Self {
        LayerRef {
            layer,
            xwhiteouts: false,
            path: None,
        }
    }
}

/// The layers of a node, with the directory fds cached for each.
pub struct Stack {
    /// Inline for the common single-layer node: one allocation less per inode.
    pub refs: SmallVec<[LayerRef; 1]>,
    fds: Box<[OnceLock<Arc<OwnedFd>>]>,
    /// How many of `fds` count against the fd budget.
    budgeted: AtomicU32,
    /// Bits 0-29: layer positions whose directory is known free of `.wh.` names, so
    /// lookups there need not look for an AUFS whiteout (a listing found none in a
    /// lower, which never changes, or in the upper while whiteouts are char devices,
    /// readdir.rs; or copy-up just made the upper directory). Bits 32-61: positions
    /// whose directory was already looked for among those earlier listings found
    /// free (`whiteout::AufsFreeDirs`). Bits 31 and 63: the facts of [`Known`]. Only
    /// directories learn these: the stack of a file is shared (`Stack::of`).
    known: AtomicU64,
}

/// Layer positions below this have a `.wh.`-free bit in `Stack::known`.
const AUFS_BITS: usize = 30;
const AUFS_MASK: u64 = (1 << AUFS_BITS) - 1;
/// Where the "already asked" bits of `Stack::known` start.
const ASKED_SHIFT: usize = 32;

/// What a directory's stack may know of its upper directory, each a bit of
/// `Stack::known` (set with `Stack::learn`, tested with `Stack::knows`).
#[derive(Clone, Copy, Debug)]
pub enum Known {
    /// It carries the impure mark (copy_up.rs sets it once).
    Impure,
    /// It has no default ACL, so creates in it need not read one (dir.rs).
    NoDefaultAcl,
}

impl Known {
    fn bit(self) -> u64 {
        match self {
            Known::Impure => 1 << 31,
            Known::NoDefaultAcl => 1 << 63,
        }
    }
}

/// Directory fds cached by all nodes together, and how many may be.
static CACHED_FDS: AtomicI64 = AtomicI64::new(0);
static FD_BUDGET: AtomicI64 = AtomicI64::new(4096);

/// Sets how many directory fds nodes may keep open at once.
pub fn set_fd_budget(n: i64) {
    FD_BUDGET.store(n.max(0), Ordering::Relaxed);
}

impl Stack {
    /// The layers of a node; only a directory keeps fds (`is_dir`).
    pub fn new(refs: Vec<LayerRef>, is_dir: bool) -> Self {
        let fds = if is_dir {
            refs.iter().map(|_| OnceLock::new()).collect()
        } else {
            Box::default()
        };
        Stack {
            refs: refs.into_iter().collect(),
            fds,
            budgeted: AtomicU32::new(0),
            known: AtomicU64::new(0),
        }
    }

    /// The stack of a node with layers `refs`. Every file or other non-directory held
    /// in one layer with nothing more to say shares one stack per layer: it keeps no
    /// fds and learns nothing, and a walk of a big tree saves one allocation a file.
    pub fn of(refs: Vec<LayerRef>, is_dir: bool) -> Arc<Stack> {
        match refs.as_slice() {
            [r] if !is_dir && *r == LayerRef::new(r.layer) => shared_file_stack(r.layer),
            _ => Arc::new(Stack::new(refs, is_dir)),
        }
    }

    /// Is layer position `pos` free of `.wh.` names, as far as is known here or, the
    /// first time this is asked for `pos`, as `ask` says?
    pub fn aufs_free_or_ask(&self, pos: usize, ask: impl FnOnce() -> bool) -> bool {
        if pos >= AUFS_BITS {
            return false;
        }
        let known = self.known.load(Ordering::Relaxed);
        if known & (1 << pos) != 0 {
            return true;
        }
        if known & (1 << (pos + ASKED_SHIFT)) != 0 {
            return false;
        }
        let free = ask();
        let bits = (1 << (pos + ASKED_SHIFT)) | if free { 1 << pos } else { 0 };
        self.known.fetch_or(bits, Ordering::Relaxed);
        free
    }

    /// Layer position `pos` is free of `.wh.` names.
    pub fn note_aufs_free(&self, pos: usize) {
        if pos < AUFS_BITS {
            self.known.fetch_or(1 << pos, Ordering::Relaxed);
        }
    }

    /// The positions known free of `.wh.` names, as bits (for a stack that replaces
    /// this one with the same layers below a new upper: shift by one).
    pub fn aufs_free_bits(&self) -> u32 {
        (self.known.load(Ordering::Relaxed) & AUFS_MASK) as u32
    }

    /// Marks every position in `bits` free of `.wh.` names.
    pub fn note_aufs_free_bits(&self, bits: u32) {
        self.known
            .fetch_or(u64::from(bits) & AUFS_MASK, Ordering::Relaxed);
    }

    /// Does this directory's stack know `fact` of its upper directory?
    pub fn knows(&self, fact: Known) -> bool {
        self.known.load(Ordering::Relaxed) & fact.bit() != 0
    }

    /// This directory's stack learns `fact` of its upper directory.
    pub fn learn(&self, fact: Known) {
        self.known.fetch_or(fact.bit(), Ordering::Relaxed);
    }

    /// `fact` may no longer hold (the upper directory changed).
    pub fn unlearn(&self, fact: Known) {
        self.known.fetch_and(!fact.bit(), Ordering::Relaxed);
    }

    pub fn pos(&self, layer: u16) -> Option<usize> {
        self.refs.iter().position(|r| r.layer == layer)
    }

    pub fn top(&self) -> u16 {
        self.refs.first().map_or(0, |r| r.layer)
    }

    /// True when more than one layer contributes (a merged directory).
    pub fn is_merged(&self) -> bool {
        self.refs.len() > 1
    }

    /// Keeps `fd` for layer position `pos` if the budget allows; returns it either way.
    pub fn cache(&self, pos: usize, fd: OwnedFd) -> Arc<OwnedFd> {
        let fd = Arc::new(fd);
        if CACHED_FDS.fetch_add(1, Ordering::Relaxed) < FD_BUDGET.load(Ordering::Relaxed)
            && self
                .fds
                .get(pos)
                .is_some_and(|slot| slot.set(fd.clone()).is_ok())
        {
            self.budgeted.fetch_add(1, Ordering::Relaxed);
        } else {
            CACHED_FDS.fetch_sub(1, Ordering::Relaxed);
        }
        fd
    }
}

/// The shared stack of plain non-directory nodes in `layer`.
fn shared_file_stack(layer: u16) -> Arc<Stack> {
    static SHARED: RwLock<Vec<Arc<Stack>>> = RwLock::new(Vec::new());
    if let Some(s) = SHARED.read().get(layer as usize) {
        return s.clone();
    }
    let mut all = SHARED.write();
    while all.len() <= layer as usize {
        let l = all.len() as u16;
        all.push(Arc::new(Stack::new(vec![LayerRef::new(l)], false)));
    }
    all[layer as usize].clone()
}

impl Drop for Stack {
    fn drop(&mut self) {
        CACHED_FDS.fetch_sub(
            self.budgeted.load(Ordering::Relaxed) as i64,
            Ordering::Relaxed,
        );
    }
}

/// One name of a node: its parent directory and its name there.
#[derive(Clone)]
pub struct Loc {
    pub parent: Option<Arc<Node>>,
    pub name: CString,
}

impl Loc {
    fn is(&self, parent: &Node, name: &CStr) -> bool {
        self.name.as_c_str() == name && self.parent.as_ref().is_some_and(|p| p.ino == parent.ino)
    }
}

pub struct Node {
    pub ino: u64,
    pub kind: FileType,
    nlookup: AtomicU64,
    /// Its names and layers, under one lock (one lock word less per node).
    place: RwLock<Place>,
    /// Held while this node is copied up, so concurrent writers copy it once.
    pub copy_lock: Mutex<()>,
    /// Bit 0 (`PREFILLED`): the file's pages were handed to the kernel (prefill.rs).
    /// Bits 1-7: the change count, odd while one of the node's names is being
    /// renamed or removed in the upper layer (`Node::changing`): a request that
    /// reached the object by a name re-resolves it when the count moved meanwhile.
    flags: AtomicU8,
}

/// The bit of `Node::flags` that says a file's pages were handed to the kernel.
const PREFILLED: u8 = 1;
/// One step of the change count in `Node::flags`; its bit is set while a change runs.
const CHANGE_STEP: u8 = 2;
/// The change-count bits of `Node::flags`.
const CHANGE_MASK: u8 = !PREFILLED;
/// How often a request re-resolves a node whose name changed under it.
const RESOLVE_TRIES: u32 = 16;

/// A change of one of a node's names in progress (from `Node::changing` to drop).
pub struct Changing<'a>(&'a Node);

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        self.0.flags.fetch_add(CHANGE_STEP, Ordering::SeqCst);
    }
}

/// Where a node is and what it is made of.
struct Place {
    /// Every name the kernel knows the node by, the most recently used first. A
    /// directory has one; a hard-linked file may have several; an unlinked file none.
    aliases: SmallVec<[Loc; 1]>,
    stack: Arc<Stack>,
}

/// The kernel allows one way of I/O per FUSE inode at a time: all its open files go
/// through one shared backing file (passthrough), or all through the daemon.
#[derive(Default)]
pub struct OpenState {
    /// The backing file of the passthrough opens, while any is open.
    pub backing: std::sync::Weak<fuser::BackingId>,
    /// Open files served by the daemon.
    pub cached: u32,
}

impl Node {
    pub fn new(
        ino: u64,
        kind: FileType,
        parent: Arc<Node>,
        name: CString,
        refs: Vec<LayerRef>,
    ) -> Self {
        Node {
            ino,
            kind,
            nlookup: AtomicU64::new(0),
            place: RwLock::new(Place {
                aliases: smallvec![Loc {
                    parent: Some(parent),
                    name,
                }],
                stack: Stack::of(refs, kind == FileType::Directory),
            }),
            copy_lock: Mutex::new(()),
            flags: AtomicU8::new(0),
        }
    }

    pub fn new_root(refs: Vec<LayerRef>, root_fds: Vec<Arc<OwnedFd>>) -> Self {
        let stack = Stack::new(refs, true);
        for (slot, fd) in stack.fds.iter().zip(root_fds) {
            let _ = slot.set(fd);
        }
        Node {
            ino: ROOT_ID,
            kind: FileType::Directory,
            nlookup: AtomicU64::new(1),
            place: RwLock::new(Place {
                aliases: smallvec![Loc {
                    parent: None,
                    name: CString::default(),
                }],
                stack: Arc::new(stack),
            }),
            copy_lock: Mutex::new(()),
            flags: AtomicU8::new(0),
        }
    }

    pub fn stack(&self) -> Arc<Stack> {
        self.place.read().stack.clone()
    }

    pub fn set_stack(&self, stack: Arc<Stack>) {
        // The old stack is dropped after the lock.
        let _old = std::mem::replace(&mut self.place.write().stack, stack);
    }

    /// Were the file's pages handed to the kernel?
    pub fn prefilled(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & PREFILLED != 0
    }

    /// Marks the file's pages handed to the kernel; were they before?
    pub fn note_prefilled(&self) -> bool {
        self.flags.fetch_or(PREFILLED, Ordering::Relaxed) & PREFILLED != 0
    }

    /// Marks a change of one of this node's names in the upper layer (a rename or
    /// removal) until the guard drops: take it before the change on disk and drop it
    /// after the node's names are updated. Requests that reach the object by name
    /// meanwhile (`at_real`) resolve it again.
    pub fn changing(&self) -> Changing<'_> {
        self.flags.fetch_add(CHANGE_STEP, Ordering::SeqCst);
        Changing(self)
    }

    /// The change count once no change is running: waits for a running one to end
    /// (spinning a little, then sleeping), so that what is reached by name after it
    /// is judged against a count no change holds.
    fn settled(&self) -> u8 {
        let mut waited = 0u32;
        loop {
            let f = self.flags.load(Ordering::SeqCst);
            if f & CHANGE_STEP == 0 {
                return f & CHANGE_MASK;
            }
            if waited < 1000 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
            waited += 1;
        }
    }

    /// Runs `f` on the real object behind this node, addressed as (directory fd,
    /// name): a name may change under the call (a rename or unlink through the mount
    /// on another thread), so when the node's change count moved meanwhile, `f` runs
    /// again on what the node is now (a new name, or, once it has none, its pinned
    /// object). `f` must change nothing that a second run would regret: read, or
    /// open without side effects (`O_PATH`, `O_NONBLOCK`, no `O_TRUNC`).
    pub fn at_real<T>(
        &self,
        ov: &impl Reach,
        mut f: impl FnMut(BorrowedFd, &CStr) -> io::Result<T>,
    ) -> io::Result<T> {
        self.at_real_fd(ov, |dir, name| f(dir.as_fd(), name))
    }

    /// `at_real`, with the directory fd as it is kept.
    fn at_real_fd<T>(
        &self,
        ov: &impl Reach,
        mut f: impl FnMut(&Arc<OwnedFd>, &CStr) -> io::Result<T>,
    ) -> io::Result<T> {
        self.resolving(|| self.real(ov).and_then(|(dir, name)| f(&dir, &name)))
    }

    /// Runs `f`, which reaches the node's object through its names, again while the
    /// node's change count moved during the run; ESTALE (the kernel looks the name up
    /// again) when it still moves after `RESOLVE_TRIES` runs, never what `f` reached
    /// while a change ran (it may be the object that replaced the node's).
    fn resolving<T>(&self, mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        for _ in 0..=RESOLVE_TRIES {
            let seq = self.settled();
            let r = f();
            if self.flags.load(Ordering::SeqCst) & CHANGE_MASK == seq {
                return r;
            }
        }
        Err(io::Error::from_raw_os_error(libc::ESTALE))
    }

    /// Is `st` (the stat of what the node's name holds now) the object this node
    /// stands for? Its type must be the node's, and a lower object (lowers change only
    /// beneath the mount) must have the inode number the node was made for. ESTALE
    /// when not: the kernel then looks the name up again (path-based calls retry).
    pub fn check_object(&self, ov: &impl Reach, st: &Stat) -> io::Result<()> {
        let stale = || Err(io::Error::from_raw_os_error(libc::ESTALE));
        if kind_of(st.st_mode) != Some(self.kind) {
            return stale();
        }
        let top = self.stack().top();
        if self.ino != ROOT_ID && ov.lower_ino(top, st).is_some_and(|ino| ino != self.ino) {
            return stale();
        }
        Ok(())
    }

    /// An `O_PATH` fd of the real object itself (never a symlink followed) and its
    /// stat, checked to be the object this node stands for (`check_object`). Changes
    /// made through it reach that object whatever happens to its name meanwhile.
    pub fn object(&self, ov: &impl Reach) -> io::Result<(Arc<OwnedFd>, Stat)> {
        self.at_real_fd(ov, |dir, name| {
            let fd = if name.is_empty() {
                // A directory's own fd, or a file's pinned or open one.
                dir.clone()
            } else {
                Arc::new(sys::openat(dir.as_fd(), name, libc::O_PATH, 0)?)
            };
            let st = sys::fstat(fd.as_fd())?;
            self.check_object(ov, &st)?;
            Ok((fd, st))
        })
    }

    /// The node's current (parent, name), if it still has a name.
    pub fn loc(&self) -> Option<Loc> {
        self.place.read().aliases.first().cloned()
    }

    pub fn parent(&self) -> Option<Arc<Node>> {
        self.loc().and_then(|l| l.parent)
    }

    /// Records a name for this node and makes it the one used to reach it.
    pub fn add_alias(&self, parent: &Arc<Node>, name: &CStr) {
        let a = &mut self.place.write().aliases;
        if self.kind == FileType::Directory {
            a.clear();
        }
        a.retain(|l| !l.is(parent, name));
        a.insert(
            0,
            Loc {
                parent: Some(parent.clone()),
                name: name.to_owned(),
            },
        );
    }

    /// Records a further name for this node without making it the one used to reach it.
    pub fn add_alias_last(&self, parent: &Arc<Node>, name: &CStr) {
        let a = &mut self.place.write().aliases;
        if !a.iter().any(|l| l.is(parent, name)) {
            a.push(Loc {
                parent: Some(parent.clone()),
                name: name.to_owned(),
            });
        }
    }

    /// Forgets a name (unlinked or renamed away); returns how many are left.
    pub fn remove_alias(&self, parent: &Node, name: &CStr) -> usize {
        let a = &mut self.place.write().aliases;
        a.retain(|l| !l.is(parent, name));
        a.len()
    }

    /// Records the place and layers a fresh lookup found; the fd cache survives when
    /// the layers did not change.
    fn refresh(&self, parent: &Arc<Node>, name: &CString, refs: &[LayerRef]) {
        let cur_top = self.stack().top();
        let new_top = refs.first().map_or(cur_top, |r| r.layer);
        if new_top > cur_top {
            // Another name (a lower hard link) of a node already copied up: the node
            // stays in the upper; the name is remembered as a further alias.
            self.add_alias_last(parent, name);
            return;
        }
        let (known, same_layers) = {
            let p = self.place.read();
            let known = p.aliases.first().is_some_and(|l| l.is(parent, name));
            (known, p.stack.refs[..] == *refs)
        };
        if !known {
            self.add_alias(parent, name);
        }
        if !same_layers {
            self.set_stack(Stack::of(refs.to_vec(), self.kind == FileType::Directory));
        }
    }

    /// An fd for this directory in `layer` (`O_PATH`), opened one name at a time from
    /// the parent's fd in the same layer and cached when the budget allows.
    pub fn dir_fd(&self, ov: &impl Reach, layer: u16) -> io::Result<Arc<OwnedFd>> {
        let stack = self.stack();
        let pos = stack
            .pos(layer)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        if let Some(fd) = stack.fds.get(pos).and_then(|slot| slot.get()) {
            return Ok(fd.clone());
        }
        let fd = if let Some(path) = &stack.refs[pos].path {
            open_dir_path(ov.layer_root(layer), path)?
        } else {
            self.dir_fd_by_name(ov, layer, pos == 0)?
        };
        Ok(stack.cache(pos, fd))
    }

    /// Opens this directory in `layer` by its name in its parent's directory there,
    /// again when the name changed under the open; a removed directory (no name
    /// left) is reached through its pinned fd (`top`: `layer` is its topmost).
    fn dir_fd_by_name(&self, ov: &impl Reach, layer: u16, top: bool) -> io::Result<OwnedFd> {
        self.resolving(|| match self.loc() {
            None => match ov.table().pinned(self).filter(|_| top) {
                Some(pin) => sys::openat(pin.as_fd(), c".", libc::O_PATH | libc::O_DIRECTORY, 0),
                None => Err(io::Error::from_raw_os_error(libc::ESTALE)),
            },
            Some(Loc { parent: None, .. }) => sys::openat(
                ov.layer_root(layer),
                c".",
                libc::O_PATH | libc::O_DIRECTORY,
                0,
            ),
            Some(Loc {
                parent: Some(parent),
                name,
            }) => parent.dir_fd(ov, layer).and_then(|pfd| {
                sys::openat(pfd.as_fd(), &name, libc::O_PATH | libc::O_DIRECTORY, 0)
            }),
        })
    }

    /// This directory's path from the root of `layer` (no leading slash), as the
    /// redirect of a renamed directory records it.
    pub fn layer_path(&self, layer: u16) -> io::Result<Vec<u8>> {
        let stack = self.stack();
        if let Some(p) = stack
            .pos(layer)
            .and_then(|pos| stack.refs[pos].path.clone())
        {
            return Ok(p.to_bytes().to_vec());
        }
        let loc = self
            .loc()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESTALE))?;
        let Some(parent) = loc.parent else {
            return Ok(Vec::new());
        };
        let mut p = parent.layer_path(layer)?;
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(loc.name.to_bytes());
        Ok(p)
    }

    /// The real object behind this node, as (directory fd, name); the name is empty
    /// for a directory, which is addressed by its own fd.
    pub fn real(&self, ov: &impl Reach) -> io::Result<(Arc<OwnedFd>, CString)> {
        let top = self.stack().top();
        if self.kind == FileType::Directory {
            return Ok((self.dir_fd(ov, top)?, CString::default()));
        }
        let Some(loc) = self.loc() else {
            // No name left (unlinked or renamed over through the mount): the object
            // itself, pinned when it lost its last name, or through an open fd.
            return ov
                .table()
                .pinned(self)
                .or_else(|| ov.open_fd(self.ino))
                .map(|fd| (fd, CString::default()))
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ESTALE));
        };
        let parent = loc
            .parent
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESTALE))?;
        Ok((parent.dir_fd(ov, top)?, loc.name))
    }

    /// stat(2) of the real object, checked to be the one the node stands for.
    pub fn stat(&self, ov: &impl Reach) -> io::Result<Stat> {
        let top = self.stack().top();
        self.at_real(ov, |dir, name| {
            let mut st = sys::statat(dir, name)?;
            self.check_object(ov, &st)?;
            ov.shown_stat(top, sys::At { dir, name }, &mut st);
            Ok(st)
        })
    }

    /// The attributes the mount shows for this node, given its real stat.
    pub fn attr(&self, st: &Stat) -> FileAttr {
        let merged_dir = self.kind == FileType::Directory && self.stack().is_merged();
        make_attr(self.ino, st, merged_dir)
    }
}

/// Opens a directory by a path from a layer root, one name at a time, never
/// following a symlink.
pub fn open_dir_path(root: BorrowedFd, path: &CStr) -> io::Result<OwnedFd> {
    let mut cur: Option<OwnedFd> = None;
    for comp in path
        .to_bytes()
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
    {
        if comp == b"." || comp == b".." {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let name = CString::new(comp).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let dir = cur.as_ref().map_or(root, |f| f.as_fd());
        cur = Some(sys::openat(
            dir,
            &name,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?);
    }
    match cur {
        Some(fd) => Ok(fd),
        None => sys::openat(root, c".", libc::O_PATH | libc::O_DIRECTORY, 0),
    }
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::new(sec.unsigned_abs(), 0) + Duration::new(0, nsec as u32)
    }
}

pub fn kind_of(mode: u32) -> Option<FileType> {
    Some(match mode & libc::S_IFMT {
        libc::S_IFREG => FileType::RegularFile,
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => return None,
    })
}

/// Builds the FUSE attributes: the real object's metadata under the mount's inode
/// number. A merged directory reports nlink 1, as kernel overlayfs does.
pub fn make_attr(ino: u64, st: &Stat, merged_dir: bool) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: kind_of(st.st_mode).unwrap_or(FileType::RegularFile),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: if merged_dir { 1 } else { st.st_nlink as u32 },
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

/// The object of a node that lost its last name through the mount, held open
/// (`O_PATH`) until the kernel forgets the node.
struct Pin {
    node: std::sync::Weak<Node>,
    fd: Arc<OwnedFd>,
}

/// Inode number → node, for every node the kernel holds a reference to.
pub struct InodeTable {
    map: DashMap<u64, Arc<Node>>,
    /// Pinned objects, by node id. A node whose object is removed or renamed over
    /// through the mount keeps it open here: the kernel may still open, stat or read
    /// it through the node (as with kernel overlayfs, which holds the real inode),
    /// and while it is open the filesystem cannot give its inode number to a new
    /// object, so a node id never names two objects before the kernel's FORGET.
    pins: DashMap<u64, Pin>,
    /// The most nodes held since memory was last given back.
    peak: std::sync::atomic::AtomicUsize,
    /// Forgets since the table size was last looked at.
    forgets: AtomicU64,
}

impl InodeTable {
    pub fn new() -> Self {
        InodeTable {
            map: DashMap::new(),
            pins: DashMap::new(),
            peak: std::sync::atomic::AtomicUsize::new(0),
            forgets: AtomicU64::new(0),
        }
    }

    /// When the kernel has forgotten most of what the table once held (memory
    /// pressure, `drop_caches`), gives the freed memory back to the system.
    pub fn maybe_release_memory(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        // Counting the table visits every shard: look every few thousand forgets.
        if !self.forgets.fetch_add(1, Relaxed).is_multiple_of(4096) {
            return;
        }
        let len = self.map.len();
        let peak = self.peak.fetch_max(len, Relaxed).max(len);
        if peak >= 10_000 && len < peak / 4 {
            self.peak.store(len, Relaxed);
            self.map.shrink_to_fit();
            sys::release_free_memory();
        }
    }

    /// Pins `fd`, the object of `node`, which is about to lose its last name (see
    /// `pins`). Only a node the kernel knows (in the table) is pinned.
    pub fn pin(&self, node: &Arc<Node>, fd: Arc<OwnedFd>) {
        if self.knows(node) {
            let pin = Pin {
                node: Arc::downgrade(node),
                fd,
            };
            self.pins.insert(node.ino, pin);
        }
    }

    /// Is `node` the one the kernel knows by its id?
    pub fn knows(&self, node: &Arc<Node>) -> bool {
        self.get(node.ino).is_some_and(|n| Arc::ptr_eq(&n, node))
    }

    /// The pinned object of `node`, if it has one.
    pub fn pinned(&self, node: &Node) -> Option<Arc<OwnedFd>> {
        let p = self.pins.get(&node.ino)?;
        std::ptr::eq(p.node.as_ptr(), node).then(|| p.fd.clone())
    }

    /// Lets the pin of `node` go (it left the table).
    fn unpin(&self, node: &Arc<Node>) {
        self.pins
            .remove_if(&node.ino, |_, p| p.node.as_ptr() == Arc::as_ptr(node));
    }

    pub fn insert_root(&self, root: Node) {
        self.map.insert(ROOT_ID, Arc::new(root));
    }

    pub fn get(&self, ino: u64) -> Option<Arc<Node>> {
        self.map.get(&ino).map(|n| n.clone())
    }

    /// The root node (inserted when the overlay opens, never removed).
    pub fn root(&self) -> Option<Arc<Node>> {
        self.get(ROOT_ID)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Every node for which `f` gives a value, with it (visits the whole table).
    pub fn filter_map<T>(&self, f: impl Fn(&Arc<Node>) -> Option<T>) -> Vec<T> {
        self.map.iter().filter_map(|e| f(e.value())).collect()
    }

    /// Hands out one more kernel reference to the object `ino` just found at
    /// (`parent`, `name`) with layers `refs`: the known node, refreshed, or a new one.
    pub fn lookup_ref(
        &self,
        ino: u64,
        kind: FileType,
        parent: &Arc<Node>,
        name: &CString,
        refs: Vec<LayerRef>,
    ) -> Arc<Node> {
        if let Some(n) = self.map.get(&ino) {
            // Counted under the shard's read lock: forget() removes under the write
            // lock, so a node is never handed out after it left the table.
            if n.kind == kind {
                n.nlookup.fetch_add(1, Ordering::AcqRel);
                let n = n.clone();
                n.refresh(parent, name, &refs);
                return n;
            }
        }
        let mut entry = self.map.entry(ino).or_insert_with(|| {
            Arc::new(Node::new(
                ino,
                kind,
                parent.clone(),
                name.clone(),
                refs.clone(),
            ))
        });
        if entry.kind != kind {
            // The number now names an object of another type (deleted and reused).
            let old = entry.nlookup.load(Ordering::Acquire);
            let fresh = Node::new(ino, kind, parent.clone(), name.clone(), refs.clone());
            fresh.nlookup.store(old, Ordering::Release);
            let gone = std::mem::replace(&mut *entry, Arc::new(fresh));
            self.unpin(&gone);
        }
        entry.nlookup.fetch_add(1, Ordering::AcqRel);
        let n = entry.clone();
        drop(entry);
        n.refresh(parent, name, &refs);
        n
    }

    /// The kernel dropped `n` references; a node nobody references leaves the table
    /// (children keep their parents alive through `Loc`).
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_ID {
            return;
        }
        let gone = self.map.remove_if(&ino, |_, node| {
            let prev = node.nlookup.load(Ordering::Acquire);
            let next = prev.saturating_sub(n);
            node.nlookup.store(next, Ordering::Release);
            next == 0
        });
        if let Some((_, node)) = gone {
            self.unpin(&node);
        }
    }
}

#[cfg(test)]
mod size {
    /// Every directory node holds a stack in an `Arc`: 56 bytes keep that allocation in
    /// malloc's 80-byte chunks (the memory targets of docs/performance.md).
    #[test]
    fn a_stack_stays_small() {
        assert!(std::mem::size_of::<super::Stack>() <= 56);
    }

    /// A node of 72 bytes is a 96-byte malloc chunk inside its `Arc`; at 80 it was 112.
    #[test]
    fn a_node_stays_small() {
        assert!(std::mem::size_of::<super::Node>() <= 72);
    }

    /// Plain files of one layer share a stack; directories never do, nor does a
    /// file whose layer entry says more than its layer.
    #[test]
    fn plain_file_stacks_are_shared_per_layer() {
        use super::{LayerRef, Stack};
        use std::sync::Arc;
        let file = |l| Stack::of(vec![LayerRef::new(l)], false);
        assert!(Arc::ptr_eq(&file(3), &file(3)));
        assert!(!Arc::ptr_eq(&file(3), &file(2)));
        assert_eq!(file(2).top(), 2);
        let dir = |l| Stack::of(vec![LayerRef::new(l)], true);
        assert!(!Arc::ptr_eq(&dir(3), &dir(3)));
        let mut marked = LayerRef::new(3);
        marked.xwhiteouts = true;
        assert!(!Arc::ptr_eq(&Stack::of(vec![marked], false), &file(3)));
    }
}
