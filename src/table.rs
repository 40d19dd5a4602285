//! The inode table: node id (the inode number) to node, for every node the kernel
//! holds a reference to, and the objects pinned until the kernel forgets their node.
//! A sharded map: a lookup takes one shard's read lock and bumps an atomic count;
//! nothing on that path is global (the lock order is in docs/architecture.md).

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use fuser::FileType;

use crate::inode::{Node, ROOT_ID};
use crate::stack::LayerRef;
use crate::sys;

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
