//! Fault injection for copy-up testers (`-o inject=RULE`, may repeat; docs/options.md):
//! a named step fails with a chosen errno on its Nth call, from its Nth call on, with a
//! probability under a seed, or every time; or it is delayed. Off by default, and then
//! free: each step asks one relaxed atomic load.
//!
//! ```text
//! RULE  = STEP ":" WHAT [ "@" WHEN ]
//! STEP  = copy-data | copy-meta | copy-rename | whiteout | opaque | redirect | create | fsync
//! WHAT  = EIO | ENOSPC | EDQUOT | EPERM | EACCES | EROFS | ENOMEM | delay=MILLISECONDS
//! WHEN  = N (the Nth call only) | N+ (from the Nth call on) | P% [~SEED] (each call with
//!         probability P percent, seeded; default seed 1); no WHEN: every call
//! ```

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use parking_lot::Mutex;

/// The steps that can be made to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Copying a file's data into the work dir.
    CopyData,
    /// Owner, mode, xattrs and times of a copy.
    CopyMeta,
    /// The rename of a finished copy into place.
    CopyRename,
    /// Making a whiteout.
    Whiteout,
    /// Marking a directory opaque.
    Opaque,
    /// Setting a redirect on a moved directory.
    Redirect,
    /// Making a new object in the upper.
    Create,
    /// An fsync of an open file.
    Fsync,
}

const STEPS: [(&str, Step); 8] = [
    ("copy-data", Step::CopyData),
    ("copy-meta", Step::CopyMeta),
    ("copy-rename", Step::CopyRename),
    ("whiteout", Step::Whiteout),
    ("opaque", Step::Opaque),
    ("redirect", Step::Redirect),
    ("create", Step::Create),
    ("fsync", Step::Fsync),
];

const ERRNOS: [(&str, i32); 7] = [
    ("EIO", libc::EIO),
    ("ENOSPC", libc::ENOSPC),
    ("EDQUOT", libc::EDQUOT),
    ("EPERM", libc::EPERM),
    ("EACCES", libc::EACCES),
    ("EROFS", libc::EROFS),
    ("ENOMEM", libc::ENOMEM),
];

#[derive(Debug)]
enum Action {
    Fail(i32),
    Delay(Duration),
}

#[derive(Debug)]
enum When {
    Always,
    Nth(u64),
    From(u64),
    Chance { percent: u32, rng: Mutex<u64> },
}

#[derive(Debug)]
struct Rule {
    step: Step,
    action: Action,
    when: When,
    calls: AtomicU64,
}

impl Rule {
    fn parse(spec: &str) -> Result<Rule, String> {
        let bad = |why: &str| format!("inject={spec}: {why} (see docs/options.md)");
        let (step, rest) = spec
            .split_once(':')
            .ok_or_else(|| bad("STEP:WHAT expected"))?;
        let step = STEPS
            .iter()
            .find(|(n, _)| *n == step)
            .map(|(_, s)| *s)
            .ok_or_else(|| bad("unknown step"))?;
        let (what, when) = match rest.split_once('@') {
            Some((a, b)) => (a, Some(b)),
            None => (rest, None),
        };
        let action = match what.strip_prefix("delay=") {
            Some(ms) => Action::Delay(Duration::from_millis(
                ms.trim_end_matches("ms")
                    .parse()
                    .map_err(|_| bad("bad delay"))?,
            )),
            None => Action::Fail(
                ERRNOS
                    .iter()
                    .find(|(n, _)| *n == what)
                    .map(|(_, e)| *e)
                    .ok_or_else(|| bad("unknown errno"))?,
            ),
        };
        let when = match when {
            None => When::Always,
            Some(w) if w.contains('%') => {
                let (p, seed) = w.split_once('%').unwrap_or((w, ""));
                let seed = match seed.strip_prefix('~') {
                    Some(s) => s.parse().map_err(|_| bad("bad seed"))?,
                    None if seed.is_empty() => 1,
                    None => return Err(bad("bad probability")),
                };
                let percent: u32 = p.parse().map_err(|_| bad("bad probability"))?;
                if percent > 100 {
                    return Err(bad("a probability is at most 100%"));
                }
                When::Chance {
                    percent,
                    rng: Mutex::new(seed | 1),
                }
            }
            Some(w) => match w.strip_suffix('+') {
                Some(n) => When::From(n.parse().map_err(|_| bad("bad call number"))?),
                None => When::Nth(w.parse().map_err(|_| bad("bad call number"))?),
            },
        };
        Ok(Rule {
            step,
            action,
            when,
            calls: AtomicU64::new(0),
        })
    }

    fn fires(&self) -> bool {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        match &self.when {
            When::Always => true,
            When::Nth(k) => n == *k,
            When::From(k) => n >= *k,
            When::Chance { percent, rng } => {
                let mut x = rng.lock();
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                (*x % 100) < *percent as u64
            }
        }
    }
}

static ACTIVE: AtomicBool = AtomicBool::new(false);
static RULES: OnceLock<Vec<Rule>> = OnceLock::new();

/// Checks the rules (`inject=` items) and turns them on for this process.
pub fn install(specs: &[String]) -> Result<(), String> {
    if specs.is_empty() {
        return Ok(());
    }
    let rules = specs
        .iter()
        .map(|s| Rule::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let _ = RULES.set(rules);
    ACTIVE.store(true, Ordering::Release);
    log::warn!("fault injection on: {}", specs.join(", "));
    Ok(())
}

/// Checks the rules without installing them (option parsing).
pub fn check(spec: &str) -> Result<(), String> {
    Rule::parse(spec).map(drop)
}

/// A step is about to run: fails it or delays it if a rule says so.
#[inline]
pub fn at(step: Step) -> io::Result<()> {
    if !ACTIVE.load(Ordering::Relaxed) {
        return Ok(());
    }
    at_slow(step)
}

#[cold]
fn at_slow(step: Step) -> io::Result<()> {
    for r in RULES.get().map(Vec::as_slice).unwrap_or_default() {
        if r.step == step && r.fires() {
            match r.action {
                Action::Fail(e) => {
                    log::info!("inject: {step:?} fails with errno {e}");
                    return Err(io::Error::from_raw_os_error(e));
                }
                Action::Delay(d) => std::thread::sleep(d),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_fire_as_documented() {
        let r = Rule::parse("copy-data:ENOSPC@2").unwrap();
        assert_eq!(r.step, Step::CopyData);
        assert_eq!([r.fires(), r.fires(), r.fires()], [false, true, false]);
        let r = Rule::parse("whiteout:EIO@2+").unwrap();
        assert_eq!([r.fires(), r.fires(), r.fires()], [false, true, true]);
        let r = Rule::parse("create:EPERM").unwrap();
        assert!(r.fires() && r.fires());
        let r = Rule::parse("fsync:EIO@50%~7").unwrap();
        let n = (0..1000).filter(|_| r.fires()).count();
        assert!((400..600).contains(&n), "{n}");
        assert!(matches!(
            Rule::parse("copy-meta:delay=5").unwrap().action,
            Action::Delay(_)
        ));
        for bad in [
            "nope:EIO",
            "copy-data:EWHAT",
            "copy-data",
            "create:EIO@x",
            "create:EIO@101%",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad}");
        }
    }
}
