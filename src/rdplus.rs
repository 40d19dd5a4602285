//! Which listings carry attributes (READDIRPLUS), learned from what callers do.
//!
//! With READDIRPLUS_AUTO the kernel asks for the first part of every listing with
//! READDIRPLUS (later parts too once a lookup happened in the directory), and what the
//! daemon puts in the reply decides. Attributes save a LOOKUP round trip for each entry
//! the caller then stats or opens (stat walks, tar, grep -r, git status), but cost a
//! stat of every entry where the caller wants only names (find, ls -f): on a cold
//! cache, an inode read each. So the daemon watches. A first part sent without
//! attributes (only `.` and `..`; the kernel then asks for the rest with plain
//! READDIRs) is a probe: if the caller goes on to look up a few of the listed
//! non-directories, it stats what it lists, and the next listings carry attributes;
//! if it does not within a few more listings, they don't. While listings carry
//! attributes the kernel sends no lookups to learn from, so every 8th is a probe.

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

/// When listings carry attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Never: the kernel is not offered READDIRPLUS.
    Off,
    /// As the probes say.
    Learn,
    /// Always (every listed entry is looked up).
    Always,
}

/// A probe: a listing sent without attributes, waiting for lookups in its directory.
#[derive(Default)]
struct Probe {
    /// The directory's node id; 0 when the slot is free.
    dir: AtomicU64,
    /// Lookups of non-directories that prove the caller stats what it lists.
    want: AtomicU32,
    seen: AtomicU32,
    /// The listing count when the probe started.
    at: AtomicU32,
}

const SLOTS: usize = 8;
/// In attribute mode, every this many listings is a probe.
const PROBE_EVERY: u32 = 8;
/// A probe with too few lookups after this many more listings counts against.
const PROBE_LIFE: u32 = 16;
/// How sure the policy may get either way (listings carry attributes while > 0).
const MAX_SCORE: i32 = 2;
const MIN_SCORE: i32 = 0;

pub struct Policy {
    mode: Mode,
    score: AtomicI32,
    listings: AtomicU32,
    probes: [Probe; SLOTS],
    next_slot: AtomicU32,
}

impl Policy {
    pub fn new(mode: Mode) -> Self {
        Policy {
            mode,
            score: AtomicI32::new(0),
            listings: AtomicU32::new(0),
            probes: Default::default(),
            next_slot: AtomicU32::new(0),
        }
    }

    /// The first part of a listing of `dir` (which has `nondirs` entries other than
    /// directories) is asked for with READDIRPLUS: should it carry attributes?
    pub fn first_part(&self, dir: u64, nondirs: usize) -> bool {
        match self.mode {
            Mode::Off => return false,
            Mode::Always => return true,
            Mode::Learn => {}
        }
        let now = self
            .listings
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        self.expire(now);
        let score = self.score.load(Ordering::Relaxed);
        let with_attrs = score > 0 && now % PROBE_EVERY != 0;
        if with_attrs || nondirs == 0 {
            return with_attrs; // (no non-directories: nothing to learn from)
        }
        let slot = &self.probes[self.next_slot.fetch_add(1, Ordering::Relaxed) as usize % SLOTS];
        if slot.dir.swap(0, Ordering::AcqRel) != 0 {
            self.adjust(-1); // pushed out before it saw enough lookups
        }
        slot.want
            .store((nondirs as u32 / 4).clamp(1, 4), Ordering::Relaxed);
        slot.seen.store(0, Ordering::Relaxed);
        slot.at.store(now, Ordering::Relaxed);
        slot.dir.store(dir, Ordering::Release);
        false
    }

    /// The kernel looked up a name in `dir` and found a non-directory.
    pub fn looked_up(&self, dir: u64) {
        if self.mode != Mode::Learn {
            return;
        }
        for slot in &self.probes {
            if slot.dir.load(Ordering::Acquire) != dir {
                continue;
            }
            let seen = slot.seen.fetch_add(1, Ordering::Relaxed) + 1;
            if seen >= slot.want.load(Ordering::Relaxed)
                && slot
                    .dir
                    .compare_exchange(dir, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                self.adjust(1);
            }
        }
    }

    /// Probes that saw too few lookups in their time count against.
    fn expire(&self, now: u32) {
        for slot in &self.probes {
            let dir = slot.dir.load(Ordering::Acquire);
            if dir != 0
                && now.wrapping_sub(slot.at.load(Ordering::Relaxed)) > PROBE_LIFE
                && slot
                    .dir
                    .compare_exchange(dir, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                self.adjust(-1);
            }
        }
    }

    fn adjust(&self, by: i32) {
        let _ = self
            .score
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some((s + by).clamp(MIN_SCORE, MAX_SCORE))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::{Mode, Policy, PROBE_EVERY, PROBE_LIFE};

    #[test]
    fn lookups_after_a_probe_turn_attributes_on() {
        let p = Policy::new(Mode::Learn);
        assert!(!p.first_part(10, 100), "the first listing is a probe");
        for _ in 0..4 {
            p.looked_up(10);
        }
        // A stat walker: after a listing without attributes, it looks entries up.
        let mut with = 0;
        for d in 100..100 + PROBE_EVERY as u64 * 4 {
            if p.first_part(d, 100) {
                with += 1;
            } else {
                (0..4).for_each(|_| p.looked_up(d));
            }
        }
        // every 8th is a probe; the lookups that follow keep the policy on
        assert_eq!(with, (PROBE_EVERY as usize - 1) * 4);
    }

    #[test]
    fn names_only_callers_keep_attributes_off() {
        let p = Policy::new(Mode::Learn);
        assert!(!p.first_part(10, 100));
        p.looked_up(10);
        p.looked_up(10);
        p.looked_up(10);
        p.looked_up(10);
        // Now on; listings follow with no lookups at all.
        let mut last_on = 0;
        for d in 0..200u64 {
            if p.first_part(100 + d, 100) {
                last_on = d;
            }
        }
        assert!(
            last_on < 2 * (PROBE_EVERY + PROBE_LIFE) as u64 + 8,
            "{last_on}"
        );
        assert!(!p.first_part(1000, 100));
    }

    #[test]
    fn fixed_modes() {
        assert!(Policy::new(Mode::Always).first_part(1, 0));
        assert!(!Policy::new(Mode::Off).first_part(1, 100));
    }
}
