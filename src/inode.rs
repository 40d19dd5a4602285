//! Merged inodes (the kernel's `inode.c`): a [`Node`] is one object of the merged
//! tree as the kernel knows it: its inode number (which is also its FUSE node id),
//! its type, where it was found (its names: parent node and name) and its layer stack
//! (stack.rs). How a node reaches its real object while its names change, and the
//! attributes it shows. The table of nodes is table.rs's.
//!
//! Locks (order and reasons in docs/architecture.md, "Locks"): a node's `place` lock
//! is a leaf, taken for its names and stack only; a table shard may take a node's
//! place lock or a pins shard inside it; `copy_lock` is copy_up.rs's.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};
use parking_lot::{Mutex, RwLock};
use smallvec::{smallvec, SmallVec};

use crate::stack::{LayerRef, Stack};
use crate::sys::{self, Stat};

pub const ROOT_ID: u64 = 1;

/// What a node needs of the overlay to reach its real objects. `overlay::Overlay`,
/// which holds the inode table, is the one implementation: through this trait the
/// nodes use it without this module importing the overlay's.
pub trait Reach {
    /// The object of `node` pinned when it lost its last name (`InodeTable::pin`).
    fn pinned(&self, node: &Node) -> Option<Arc<OwnedFd>>;
    /// The root of `layer` (`O_PATH`).
    fn layer_root(&self, layer: u16) -> BorrowedFd<'_>;
    /// The inode number the mount gives the object `st` of lower `layer`; `None` for
    /// the upper layer (an upper object keeps its node whatever its number).
    fn lower_ino(&self, layer: u16, st: &Stat) -> Option<u64>;
    /// Some open fd of node `ino` (for a file that has lost its last name).
    fn open_fd(&self, ino: u64) -> Option<Arc<OwnedFd>>;
    /// Makes `st`, the stat of the object at `at` in `layer`, what the mount shows.
    fn effective(&self, layer: u16, at: sys::At, st: &mut Stat);
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
    pub(crate) nlookup: AtomicU64,
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
        for (slot, fd) in stack.fd_slots().iter().zip(root_fds) {
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

    /// Its path in the merged tree by its first name (no leading slash), for people.
    pub fn path(&self) -> String {
        let mut names = Vec::new();
        let mut loc = self.loc();
        while let Some(l) = loc {
            let Some(parent) = l.parent else { break };
            names.push(l.name.to_string_lossy().into_owned());
            loc = parent.loc();
            if names.len() > 4096 {
                break;
            }
        }
        names.reverse();
        names.join("/")
    }

    /// The path of the entry `name` in this directory, for people.
    pub fn child_path(&self, name: &std::ffi::CStr) -> String {
        let p = self.path();
        let n = name.to_string_lossy();
        if p.is_empty() {
            n.into_owned()
        } else {
            format!("{p}/{n}")
        }
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
    pub(crate) fn refresh(&self, parent: &Arc<Node>, name: &CString, refs: &[LayerRef]) {
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
        if let Some(fd) = stack.fd_slots().get(pos).and_then(|slot| slot.get()) {
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
            None => match ov.pinned(self).filter(|_| top) {
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
            ov.effective(top, sys::At { dir, name }, &mut st);
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

#[cfg(test)]
mod size {
    /// A node of 72 bytes is a 96-byte malloc chunk inside its `Arc`; at 80 it was 112.
    #[test]
    fn a_node_stays_small() {
        assert!(std::mem::size_of::<super::Node>() <= 72);
    }
}
