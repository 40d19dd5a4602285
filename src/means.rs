//! The means of speed that the kernel side offers (issue: performance), each of which
//! can be turned off for diagnosis with `STRATAFS_DISABLE=name,name,...`:
//! `passthrough`, `negative` (negative entries), `keep_cache` (file pages kept across
//! opens), `cache_dir` (listings kept), `parallel_dirops`, `symlink_cache`,
//! `big_writes` (1 MiB writes; else the kernel's 4 KiB default), `killpriv` (the
//! daemon clears set-id bits itself, so the kernel may remember that a file has no
//! `security.capability` instead of asking before every write), `readdirplus`
//! (listings carry attributes where callers were seen to stat what they list,
//! rdplus.rs; always on a mount with no upper layer, and with `-o readdirplus=always`
//! or `STRATAFS_READDIRPLUS=1`), `prefill` (small lower files' pages
//! handed to the kernel at their first open, prefill.rs), `prefetch` (what walkers
//! will want next read ahead: subdirectories of a walker that descends, the files of
//! a listing where callers open what they list, prefetch.rs).

use fuser::KernelConfig;

use crate::overlay::Overlay;
use crate::rdplus::Mode;

/// Which means are on.
#[derive(Clone, Copy, Debug)]
pub struct Means {
    pub passthrough: bool,
    pub negative: bool,
    pub keep_cache: bool,
    pub cache_dir: bool,
    pub parallel_dirops: bool,
    pub symlink_cache: bool,
    pub big_writes: bool,
    pub killpriv: bool,
    pub readdirplus: crate::rdplus::Mode,
    pub prefill: bool,
    pub prefetch: bool,
}

const NAMES: [&str; 11] = [
    "passthrough",
    "negative",
    "keep_cache",
    "cache_dir",
    "parallel_dirops",
    "symlink_cache",
    "big_writes",
    "killpriv",
    "readdirplus",
    "prefill",
    "prefetch",
];

impl Means {
    /// From the environment (`STRATAFS_DISABLE`, `STRATAFS_NO_PASSTHROUGH`,
    /// `STRATAFS_READDIRPLUS`); unknown names are logged and ignored.
    pub fn from_env() -> Self {
        let off = std::env::var("STRATAFS_DISABLE").unwrap_or_default();
        let mut m = Self::parse(&off);
        if std::env::var_os("STRATAFS_NO_PASSTHROUGH").is_some() {
            m.passthrough = false;
        }
        if m.readdirplus != Mode::Off && std::env::var_os("STRATAFS_READDIRPLUS").is_some() {
            m.readdirplus = Mode::Always;
        }
        m
    }

    fn parse(off: &str) -> Self {
        let mut m = Means {
            passthrough: true,
            negative: true,
            keep_cache: true,
            cache_dir: true,
            parallel_dirops: true,
            symlink_cache: true,
            big_writes: true,
            killpriv: true,
            readdirplus: Mode::Learn,
            prefill: true,
            prefetch: true,
        };
        for name in off.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "passthrough" => m.passthrough = false,
                "negative" => m.negative = false,
                "keep_cache" => m.keep_cache = false,
                "cache_dir" => m.cache_dir = false,
                "parallel_dirops" => m.parallel_dirops = false,
                "symlink_cache" => m.symlink_cache = false,
                "big_writes" => m.big_writes = false,
                "killpriv" => m.killpriv = false,
                "readdirplus" => m.readdirplus = Mode::Off,
                "prefill" => m.prefill = false,
                "prefetch" => m.prefetch = false,
                other => log::warn!(
                    "STRATAFS_DISABLE: unknown name {other:?} (known: {})",
                    NAMES.join(", ")
                ),
            }
        }
        m
    }
}

impl Means {
    /// Which listings carry attributes on this mount: as `-o readdirplus=` says
    /// (`asked`) unless `STRATAFS_DISABLE=readdirplus`; else every listing on a mount
    /// with no upper layer, and as callers are seen to want them on the others. A
    /// mount with no upper layer is one to look at, not to work in: podman makes one
    /// only to walk it (the parent side of every build step's diff, `podman image
    /// mount`), and a walk that lists a directory whole before it stats the entries
    /// would otherwise look up every entry past the first reply.
    pub fn choose_listings(&mut self, asked: Option<Mode>, has_upper: bool) {
        if self.readdirplus == Mode::Off {
            return;
        }
        match asked {
            Some(mode) => self.readdirplus = mode,
            None if !has_upper => self.readdirplus = Mode::Always,
            None => {}
        }
    }

    /// Asks the kernel, at INIT, for the means that are on (and that the overlay's
    /// settings allow), and turns off those it refuses. Returns whether listings may
    /// carry attributes (READDIRPLUS).
    pub fn negotiate(&mut self, ov: &Overlay, cfg: &mut KernelConfig) -> bool {
        if ov.settings.acl
            && cfg
                .add_capabilities(
                    fuser::InitFlags::FUSE_POSIX_ACL | fuser::InitFlags::FUSE_DONT_MASK,
                )
                .is_ok()
        {
            ov.acl.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        // Lookups and listings of one directory may run side by side (every node has
        // its own locks); symlink targets may be cached (the layers change only
        // through us); large writes come in 1 MiB pieces.
        if self.parallel_dirops {
            let _ = cfg.add_capabilities(fuser::InitFlags::FUSE_PARALLEL_DIROPS);
        }
        // Directories open with no message (OPENDIR answers ENOSYS once); the kernel
        // then keeps their listings cached, as CACHE_DIR does.
        if self.cache_dir {
            let _ = cfg.add_capabilities(fuser::InitFlags::FUSE_NO_OPENDIR_SUPPORT);
        }
        if self.symlink_cache {
            let _ = cfg.add_capabilities(fuser::InitFlags::FUSE_CACHE_SYMLINKS);
        }
        // Set-id bits are cleared here on write, truncate and chown (KILLPRIV_V2): the
        // kernel then remembers which files have no `security.capability` (SB_NOSEC)
        // instead of asking before every write, and sends a chown without first
        // refreshing the mode. Not when owners and modes live in the override xattr.
        self.killpriv = self.killpriv
            && ov.layer(0).stat_override.is_none()
            && cfg
                .add_capabilities(fuser::InitFlags::FUSE_HANDLE_KILLPRIV_V2)
                .is_ok();
        // READDIRPLUS: listings carry attributes where callers stat what they list
        // (rdplus.rs); the kernel then asks for the first part of each listing with it.
        // Always: every part of every listing (no AUTO), so a walker that lists a whole
        // directory before it stats the entries needs no lookups.
        let plus = match self.readdirplus {
            crate::rdplus::Mode::Always => fuser::InitFlags::FUSE_DO_READDIRPLUS,
            _ => fuser::InitFlags::FUSE_DO_READDIRPLUS | fuser::InitFlags::FUSE_READDIRPLUS_AUTO,
        };
        if self.readdirplus != crate::rdplus::Mode::Off && cfg.add_capabilities(plus).is_err() {
            self.readdirplus = crate::rdplus::Mode::Off;
        }
        if self.big_writes {
            let _ = cfg.set_max_write(1 << 20);
        }
        // File data straight between the kernel and the upper files (root only; the
        // first refusal turns it off).
        if self.passthrough
            && crate::sys::geteuid() == 0
            && cfg
                .add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH)
                .is_ok()
            && cfg.set_max_stack_depth(1).is_ok()
        {
            ov.passthrough
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.readdirplus != crate::rdplus::Mode::Off
    }
}

#[cfg(test)]
mod tests {
    use super::{Means, Mode};

    #[test]
    fn names_turn_means_off() {
        let m = Means::parse("negative, cache_dir,bogus,killpriv,readdirplus,prefill,prefetch");
        assert!(!m.negative && !m.cache_dir && !m.killpriv && !m.prefill && !m.prefetch);
        assert_eq!(m.readdirplus, Mode::Off);
        assert!(m.passthrough && m.keep_cache && m.parallel_dirops && m.big_writes);
        let all = Means::parse("");
        assert!(all.negative && all.symlink_cache && all.readdirplus == Mode::Learn);
        assert!(all.prefill && all.prefetch);
    }

    #[test]
    fn listings_carry_attributes_on_a_mount_without_upper() {
        let chosen = |env: &str, asked, has_upper| {
            let mut m = Means::parse(env);
            m.choose_listings(asked, has_upper);
            m.readdirplus
        };
        assert_eq!(chosen("", None, true), Mode::Learn);
        assert_eq!(chosen("", None, false), Mode::Always);
        assert_eq!(chosen("", Some(Mode::Learn), false), Mode::Learn);
        assert_eq!(chosen("", Some(Mode::Always), true), Mode::Always);
        assert_eq!(chosen("", Some(Mode::Off), false), Mode::Off);
        // diagnosis wins
        assert_eq!(chosen("readdirplus", Some(Mode::Always), false), Mode::Off);
    }
}
