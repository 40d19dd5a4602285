//! Statistics of a mount, for `stratafs stats`: requests by operation (count and a
//! latency histogram, from which percentiles come), copy-ups (count and bytes by
//! method), whiteouts, opaque directories, redirects, linked-up hard links, new upper
//! objects. All plain atomics: counting costs a few nanoseconds per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::events::{Method, What};

/// The requests counted, by name; `Op` is an index into it.
pub const OPS: [&str; 36] = [
    "lookup",
    "forget",
    "getattr",
    "setattr",
    "readlink",
    "mknod",
    "mkdir",
    "unlink",
    "rmdir",
    "symlink",
    "rename",
    "link",
    "open",
    "read",
    "write",
    "statfs",
    "release",
    "fsync",
    "setxattr",
    "getxattr",
    "listxattr",
    "removexattr",
    "flush",
    "opendir",
    "readdir",
    "releasedir",
    "fsyncdir",
    "access",
    "create",
    "getlk",
    "setlk",
    "fallocate",
    "readdirplus",
    "lseek",
    "copy_file_range",
    "ioctl",
];

/// The index of a request name in `OPS`.
pub const fn op(name: &str) -> usize {
    let mut i = 0;
    while i < OPS.len() {
        if const_eq(OPS[i], name) {
            return i;
        }
        i += 1;
    }
    panic!("unknown op")
}

const fn const_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Latency buckets: bucket i holds requests of less than 2^i microseconds.
const BUCKETS: usize = 32;

struct OpStat {
    count: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
    max_us: AtomicU64,
}

impl Default for OpStat {
    fn default() -> Self {
        OpStat {
            count: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            max_us: AtomicU64::new(0),
        }
    }
}

pub struct Stats {
    ops: Vec<OpStat>,
    copy_ups: [AtomicU64; 4],
    copy_bytes: [AtomicU64; 4],
    whiteouts: AtomicU64,
    whiteouts_removed: AtomicU64,
    opaque: AtomicU64,
    redirects: AtomicU64,
    link_ups: AtomicU64,
    creates: AtomicU64,
    pub started: Instant,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            ops: (0..OPS.len()).map(|_| OpStat::default()).collect(),
            copy_ups: Default::default(),
            copy_bytes: Default::default(),
            whiteouts: AtomicU64::new(0),
            whiteouts_removed: AtomicU64::new(0),
            opaque: AtomicU64::new(0),
            redirects: AtomicU64::new(0),
            link_ups: AtomicU64::new(0),
            creates: AtomicU64::new(0),
            started: Instant::now(),
        }
    }
}

/// Counts one request when dropped (its latency from `begin`).
pub struct Timer<'a> {
    stats: &'a Stats,
    op: usize,
    /// None in a build without the statistics (`notrace`).
    t0: Option<Instant>,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        let Some(t0) = self.t0 else { return };
        let us = t0.elapsed().as_micros() as u64;
        let s = &self.stats.ops[self.op];
        s.count.fetch_add(1, Ordering::Relaxed);
        let b = (64 - us.leading_zeros() as usize).min(BUCKETS - 1);
        s.buckets[b].fetch_add(1, Ordering::Relaxed);
        s.max_us.fetch_max(us, Ordering::Relaxed);
    }
}

/// One request kind's figures.
pub struct OpFigures {
    pub name: &'static str,
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

fn method_index(m: Method) -> usize {
    Method::ALL.iter().position(|x| *x == m).unwrap_or(0)
}

impl Stats {
    /// A request of kind `op` from process `pid` begins (the caller of what it does
    /// to the layers, for the trace).
    pub fn begin(&self, op: usize, pid: u32) -> Timer<'_> {
        if cfg!(feature = "notrace") {
            return Timer {
                stats: self,
                op,
                t0: None,
            };
        }
        crate::events::set_caller(pid);
        Timer {
            stats: self,
            op,
            t0: Some(Instant::now()),
        }
    }

    /// Counts what an event says happened.
    pub fn note(&self, what: &What) {
        if cfg!(feature = "notrace") {
            return;
        }
        let c = match what {
            What::CopyUp { bytes, method, .. } => {
                let i = method_index(*method);
                self.copy_bytes[i].fetch_add(*bytes, Ordering::Relaxed);
                &self.copy_ups[i]
            }
            What::Whiteout => &self.whiteouts,
            What::WhiteoutRemoved => &self.whiteouts_removed,
            What::Opaque => &self.opaque,
            What::Redirect { .. } => &self.redirects,
            What::LinkUp => &self.link_ups,
            What::Create { .. } => &self.creates,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Figures of every request kind seen.
    pub fn ops(&self) -> Vec<OpFigures> {
        let mut out = Vec::new();
        for (i, s) in self.ops.iter().enumerate() {
            let count = s.count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let b: Vec<u64> = s
                .buckets
                .iter()
                .map(|x| x.load(Ordering::Relaxed))
                .collect();
            let pct = |p: f64| {
                let want = ((count as f64) * p).ceil() as u64;
                let mut seen = 0;
                for (i, n) in b.iter().enumerate() {
                    seen += n;
                    if seen >= want.max(1) {
                        return 1u64 << i;
                    }
                }
                1 << (BUCKETS - 1)
            };
            // (A bucket's bound, but never above the largest seen.)
            let max_us = s.max_us.load(Ordering::Relaxed);
            out.push(OpFigures {
                name: OPS[i],
                count,
                p50_us: pct(0.5).min(max_us),
                p99_us: pct(0.99).min(max_us),
                max_us,
            });
        }
        out
    }

    /// Copy-ups by method: (method, count, bytes).
    pub fn copy_ups(&self) -> Vec<(Method, u64, u64)> {
        Method::ALL
            .iter()
            .enumerate()
            .map(|(i, m)| {
                (
                    *m,
                    self.copy_ups[i].load(Ordering::Relaxed),
                    self.copy_bytes[i].load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// (whiteouts made, whiteouts removed, opaque dirs, redirects, link-ups, creates)
    pub fn changes(&self) -> [(&'static str, u64); 6] {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("whiteouts", l(&self.whiteouts)),
            ("whiteouts_removed", l(&self.whiteouts_removed)),
            ("opaque_dirs", l(&self.opaque)),
            ("redirects", l(&self.redirects)),
            ("link_ups", l(&self.link_ups)),
            ("creates", l(&self.creates)),
        ]
    }
}
