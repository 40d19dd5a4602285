//! A node's layer stack: which layers make it (topmost first, with what each says of
//! itself), the directory fds cached per layer within a process-wide budget, and
//! what a directory's stack has learnt of its layers (`.wh.`-free positions, the
//! facts of [`Known`]). The stack of a plain file is shared per layer.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use smallvec::SmallVec;

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
    /// The cached directory fd of each layer position (empty for a file).
    pub fn fd_slots(&self) -> &[OnceLock<Arc<OwnedFd>>] {
        &self.fds
    }

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

#[cfg(test)]
mod tests {
    use super::{LayerRef, Stack};
    use std::sync::Arc;

    /// Every directory node holds a stack in an `Arc`: 56 bytes keep that allocation in
    /// malloc's 80-byte chunks (the memory targets of docs/performance.md).
    #[test]
    fn a_stack_stays_small() {
        assert!(std::mem::size_of::<Stack>() <= 56);
    }

    /// Plain files of one layer share a stack; directories never do, nor does a
    /// file whose layer entry says more than its layer.
    #[test]
    fn plain_file_stacks_are_shared_per_layer() {
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
