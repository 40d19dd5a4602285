//! Which listings carry attributes (READDIRPLUS), learned from what callers do.
//!
//! With READDIRPLUS_AUTO the kernel asks for the first part of every listing with
//! READDIRPLUS (later parts too once a lookup happened in the directory), and what the
//! daemon puts in the reply decides. Attributes save a LOOKUP round trip for each entry
//! the caller then stats or opens (stat walks, tar, grep -r, git status), but cost a
//! stat of every entry where the caller wants only names (find, ls -f): on a cold
//! cache, an inode read each. So the daemon watches, with probes: a first part that
//! stops short, after which the kernel asks for the rest with plain READDIRs, so a
//! caller that stats what it lists must look up what came without attributes. If it
//! does (a few of those non-directories, soon), the next listings carry attributes;
//! if not, they don't. While they don't, every listing is a probe that stops at its
//! first non-directory (the directories before it carry attributes: a walker that
//! wants only names still looks up every directory, to descend into it). While they
//! do, the kernel sends no lookups to learn from, so every 4th listing is a probe that
//! leaves out only its last few non-directories. A mount can also have every listing
//! carry attributes, or none (`Mode`, chosen in means.rs).

use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

use fuser::FileType;

use crate::handles::Entry;

/// When listings carry attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Never: the kernel is not offered READDIRPLUS.
    Off,
    /// As the probes say.
    Learn,
    /// Always: every listed entry is looked up, and the kernel is offered READDIRPLUS
    /// without AUTO, so it asks for every part of a listing with attributes (with
    /// AUTO, only the first part, and the rest only after a lookup in the directory).
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
const PROBE_EVERY: u32 = 4;
/// How many non-directories an attribute-mode probe leaves without attributes.
const PROBE_TAIL: usize = 4;
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

    /// The first part of the listing `entries` of `dir` (`.` and `..` first) is asked
    /// for with READDIRPLUS: how many entries from the start carry attributes (the
    /// reply stops after them); `None`: as many as fit.
    pub fn first_part(&self, dir: u64, entries: &[Entry]) -> Option<usize> {
        match self.mode {
            Mode::Off => return Some(2),
            Mode::Always => return None,
            Mode::Learn => {}
        }
        let now = self
            .listings
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        self.expire(now);
        let on = self.score.load(Ordering::Relaxed) > 0;
        if on && !now.is_multiple_of(PROBE_EVERY) {
            return None;
        }
        let is_nondir = |e: &Entry| e.kind != FileType::Directory;
        let nondirs = entries.iter().filter(|e| is_nondir(e)).count();
        // Attributes on: all but the last few non-directories; off: none.
        let (cut, left_out) = if on {
            let left_out = nondirs.min(PROBE_TAIL);
            let mut seen = 0;
            let cut = (2..entries.len())
                .rev()
                .find(|&i| {
                    seen += usize::from(is_nondir(&entries[i]));
                    seen == left_out
                })
                .unwrap_or(entries.len());
            (cut, left_out)
        } else {
            // Directories before the first non-directory keep theirs: a walker that
            // wants only names still looks up every directory, to descend into it.
            let first = entries.iter().skip(2).position(is_nondir);
            (first.map_or(entries.len(), |i| i + 2), nondirs)
        };
        if left_out > 0 {
            // (nothing left out: nothing to learn from)
            let want = (left_out / 4).clamp(1, 4) as u32;
            self.start_probe(dir, now, want);
        }
        Some(cut)
    }

    fn start_probe(&self, dir: u64, now: u32, want: u32) {
        let slot = &self.probes[self.next_slot.fetch_add(1, Ordering::Relaxed) as usize % SLOTS];
        if slot.dir.swap(0, Ordering::AcqRel) != 0 {
            self.adjust(-1); // pushed out before it saw enough lookups
        }
        slot.want.store(want, Ordering::Relaxed);
        slot.seen.store(0, Ordering::Relaxed);
        slot.at.store(now, Ordering::Relaxed);
        slot.dir.store(dir, Ordering::Release);
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
    use super::{Mode, Policy, PROBE_EVERY, PROBE_LIFE, PROBE_TAIL};
    use crate::handles::Entry;
    use fuser::FileType;

    /// `.`, `..`, then `dirs` directories and `files` files, by turns.
    fn listing(dirs: usize, files: usize) -> Vec<Entry> {
        let e = |name: &str, kind| Entry {
            name: name.as_bytes().to_vec(),
            ino: 1,
            kind,
        };
        let mut v = vec![e(".", FileType::Directory), e("..", FileType::Directory)];
        for i in 0..dirs.max(files) {
            if i < files {
                v.push(e(&format!("f{i}"), FileType::RegularFile));
            }
            if i < dirs {
                v.push(e(&format!("d{i}"), FileType::Directory));
            }
        }
        v
    }

    #[test]
    fn lookups_after_a_probe_turn_attributes_on() {
        let p = Policy::new(Mode::Learn);
        let l = listing(3, 100);
        assert_eq!(
            p.first_part(10, &l),
            Some(2),
            "the first listing is a probe"
        );
        for _ in 0..4 {
            p.looked_up(10);
        }
        // A stat walker: it looks up what came without attributes.
        let mut full = 0;
        for d in 100..100 + PROBE_EVERY as u64 * 4 {
            match p.first_part(d, &l) {
                None => full += 1,
                Some(cut) => {
                    // all but the last few files
                    let left: Vec<_> = l[cut..].iter().filter(|e| e.name[0] == b'f').collect();
                    assert_eq!(left.len(), PROBE_TAIL, "{cut}");
                    assert_eq!(l[cut].name, b"f96");
                    (0..left.len()).for_each(|_| p.looked_up(d));
                }
            }
        }
        assert_eq!(full, (PROBE_EVERY as usize - 1) * 4);
    }

    #[test]
    fn names_only_callers_keep_attributes_off() {
        let p = Policy::new(Mode::Learn);
        let l = listing(3, 100);
        assert_eq!(p.first_part(10, &l), Some(2));
        (0..4).for_each(|_| p.looked_up(10));
        // Now on; listings follow with no lookups at all.
        let mut last_on = 0;
        for d in 0..200u64 {
            if p.first_part(100 + d, &l) != Some(2) {
                last_on = d;
            }
        }
        assert!(
            last_on < 2 * (PROBE_EVERY + PROBE_LIFE) as u64 + 8,
            "{last_on}"
        );
        assert_eq!(p.first_part(1000, &l), Some(2));
    }

    #[test]
    fn listings_without_files_teach_nothing() {
        let p = Policy::new(Mode::Learn);
        // directories only: all of them, with attributes
        assert_eq!(p.first_part(10, &listing(5, 0)), Some(7));
        // directories first: up to the first file
        let mut l = listing(0, 2);
        l.insert(2, listing(1, 0).pop().unwrap());
        assert_eq!(p.first_part(13, &l), Some(3));
        assert_eq!(p.first_part(11, &listing(0, 0)), Some(2));
        assert_eq!(p.first_part(12, &listing(1, 3)), Some(2));
        p.looked_up(12);
        // on now; a probe of a listing with fewer files than the tail leaves all out
        let l = listing(2, 2);
        let cuts: Vec<_> = (0..PROBE_EVERY as u64)
            .map(|d| p.first_part(20 + d, &l))
            .collect();
        assert!(cuts.contains(&Some(2)) && cuts.contains(&None), "{cuts:?}");
    }

    #[test]
    fn fixed_modes() {
        let l = listing(1, 1);
        assert_eq!(Policy::new(Mode::Always).first_part(1, &l), None);
        assert_eq!(Policy::new(Mode::Off).first_part(1, &l), Some(2));
    }
}
