//! What the union does to the layers, as events: a copy-up (from which layer, how
//! many bytes, how, how long), a whiteout made or removed, a directory made opaque, a
//! redirect set, a hard link linked up, a new object in the upper; each with the
//! process that asked. `stratafs trace` listens (the trace subsystem serves them).
//!
//! Nothing is built while nobody listens: `emit` is one relaxed load then. Events go
//! into a bounded ring; a listener that falls behind loses the oldest and is told how
//! many; a request never waits for a listener.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Condvar, Mutex};

/// How a copy-up copied the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Reflink,
    CopyFileRange,
    ReadWrite,
    /// No data: a directory, a symlink, a special file, or a file about to be truncated.
    MetadataOnly,
}

impl Method {
    pub const ALL: [Method; 4] = [
        Method::Reflink,
        Method::CopyFileRange,
        Method::ReadWrite,
        Method::MetadataOnly,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::Reflink => "reflink",
            Method::CopyFileRange => "copy_file_range",
            Method::ReadWrite => "read-write",
            Method::MetadataOnly => "metadata only",
        }
    }
}

/// What happened.
#[derive(Clone, Debug)]
pub enum What {
    CopyUp {
        from_layer: u16,
        bytes: u64,
        method: Method,
        micros: u64,
    },
    Whiteout,
    WhiteoutRemoved,
    Opaque,
    Redirect {
        from: String,
    },
    LinkUp,
    Create {
        kind: &'static str,
    },
}

impl What {
    /// The event's name, as the trace prints it.
    pub fn tag(&self) -> &'static str {
        match self {
            What::CopyUp { .. } => "COPY-UP",
            What::Whiteout => "WHITEOUT",
            What::WhiteoutRemoved => "UNWHITEOUT",
            What::Opaque => "OPAQUE",
            What::Redirect { .. } => "REDIRECT",
            What::LinkUp => "LINK-UP",
            What::Create { .. } => "CREATE",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Event {
    pub seq: u64,
    /// Milliseconds since the epoch.
    pub time_ms: u64,
    pub what: What,
    /// The path in the merged tree, from its root (no leading slash).
    pub path: String,
    pub pid: u32,
    pub comm: String,
}

thread_local! {
    static CALLER: Cell<u32> = const { Cell::new(0) };
}

/// Records the process whose request this thread serves (set by the dispatcher).
pub fn set_caller(pid: u32) {
    CALLER.with(|c| c.set(pid));
}

pub fn caller() -> u32 {
    CALLER.with(|c| c.get())
}

fn comm_of(pid: u32) -> String {
    if pid == 0 {
        return String::new();
    }
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// Events kept for listeners that fall behind.
const RING: usize = 8192;

#[derive(Default)]
struct Ring {
    next: u64,
    q: VecDeque<Arc<Event>>,
}

#[derive(Default)]
pub struct Events {
    listeners: AtomicUsize,
    ring: Mutex<Ring>,
    cond: Condvar,
}

impl Events {
    /// Is anyone listening? (Nothing else is done when not.)
    #[inline]
    pub fn listening(&self) -> bool {
        !cfg!(feature = "notrace") && self.listeners.load(Ordering::Relaxed) > 0
    }

    /// Records an event; `path` is only computed when someone listens.
    pub fn emit(&self, what: What, path: impl FnOnce() -> String) {
        if !self.listening() {
            return;
        }
        let pid = caller();
        let ev = Event {
            seq: 0,
            time_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            what,
            path: path(),
            pid,
            comm: comm_of(pid),
        };
        let mut r = self.ring.lock();
        let ev = Event { seq: r.next, ..ev };
        r.next += 1;
        if r.q.len() == RING {
            r.q.pop_front();
        }
        r.q.push_back(Arc::new(ev));
        drop(r);
        self.cond.notify_all();
    }

    /// Starts listening: the events from now on.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        self.listeners.fetch_add(1, Ordering::SeqCst);
        let cursor = self.ring.lock().next;
        Subscription {
            events: self.clone(),
            cursor,
        }
    }
}

/// One listener's place in the ring.
pub struct Subscription {
    events: Arc<Events>,
    cursor: u64,
}

impl Subscription {
    /// The events after the last ones taken (waiting up to `timeout` for one), and
    /// how many were lost because the listener fell behind.
    pub fn next(&mut self, timeout: Duration) -> (Vec<Arc<Event>>, u64) {
        let mut r = self.events.ring.lock();
        if r.next == self.cursor {
            self.events.cond.wait_for(&mut r, timeout);
        }
        let oldest = r.q.front().map_or(r.next, |e| e.seq);
        let lost = oldest.saturating_sub(self.cursor);
        let out: Vec<Arc<Event>> =
            r.q.iter()
                .filter(|e| e.seq >= self.cursor)
                .cloned()
                .collect();
        self.cursor = r.next;
        (out, lost)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.events.listeners.fetch_sub(1, Ordering::SeqCst);
    }
}
