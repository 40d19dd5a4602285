//! The `-o` option language of fuse-overlayfs, parsed into [`MountOptions`].
//!
//! Items split on commas except inside double quotes and after a backslash; empty
//! items are skipped; `lowerdir` is a `:`-separated list (topmost first) where `\:`
//! escapes a colon. Unknown items are reported and ignored, as fuse-overlayfs does.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// Everything the `-o` items say, after parsing.
#[derive(Debug, Clone, Default)]
pub struct MountOptions {
    pub lowerdirs: Vec<PathBuf>,
    pub upperdir: Option<PathBuf>,
    pub workdir: Option<PathBuf>,
    /// `ro`: mount read-only even with an upperdir.
    pub read_only: bool,
    /// Entry and attribute cache timeout in seconds (`timeout=`).
    pub timeout: Option<f64>,
    pub fsname: Option<String>,
    pub allow_other: bool,
    pub allow_root: bool,
    /// `suid`/`nosuid`, `dev`/`nodev`, `exec`/`noexec`: `None` keeps the default.
    pub suid: Option<bool>,
    pub dev: Option<bool>,
    pub exec: Option<bool>,
    pub noatime: bool,
    pub debug: bool,
    /// `volatile`, `fsync=0` or `sync=0`: copy-ups are not synced to disk.
    pub volatile: bool,
    /// `noacl`: no POSIX ACL support.
    pub noacl: bool,
    /// `xattr_permissions=1|2`: owner and mode kept in an xattr in the upper.
    pub xattr_permissions: u8,
    /// `ino32_t`: inode numbers fit 32 bits.
    pub ino32: bool,
    /// `static_nlink`: directories report one link.
    pub static_nlink: bool,
    /// `noxattrs=1`: extended attributes are not supported (ENOSYS).
    pub noxattrs: bool,
    /// Owner mapping and squashing (see `idmap`).
    pub uidmapping: Option<String>,
    pub gidmapping: Option<String>,
    pub squash_to_root: bool,
    pub squash_to_uid: Option<u32>,
    pub squash_to_gid: Option<u32>,
    /// `inject=RULE` (may repeat): fault injection (`inject`).
    pub inject: Vec<String>,
    /// `readdirplus=auto|always|off`: which listings carry attributes (`rdplus`).
    pub readdirplus: Option<crate::rdplus::Mode>,
    /// Items that are accepted and recorded but not acted on yet, as `(key, value)`.
    pub accepted: Vec<(String, Option<String>)>,
    /// Items nobody knows; each was reported as `unknown argument ignored`.
    pub unknown: Vec<String>,
}

/// Options fuse-overlayfs (1.x and 2.0) and mount(8) pass that stratafs accepts as they
/// are, recorded in `accepted`. Later work gives several of them a meaning.
const ACCEPTED_VALUE: &[&str] = &[
    "redirect_dir",
    "context",
    "fscontext",
    "defcontext",
    "rootcontext",
    "threaded",
    "fast_ino",
    "fast_ino_check",
    "writeback",
    "plugins",
    "xino",
    "max_write",
    "max_read",
    "index",
    "metacopy",
    "nfs_export",
    "uuid",
    "userxattr",
    "subtype",
    "blksize",
    "max_readahead",
];
const ACCEPTED_FLAG: &[&str] = &[
    "default_permissions",
    "kernel_cache",
    "auto_cache",
    "rw",
    "atime",
    "diratime",
    "nodiratime",
    "relatime",
    "norelatime",
    "strictatime",
    "lazytime",
    "nolazytime",
    "async",
    "dirsync",
    "userxattr",
    "nfs_export",
    "auto_unmount",
    "silent",
    "loud",
    "_netdev",
    "nofail",
    "defaults",
];

/// Splits one `-o` argument into items: commas separate, except inside double quotes
/// or right after a backslash. Backslashes are kept (values unescape them later);
/// quotes are removed. Empty items are dropped.
pub fn split_items(arg: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = arg.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push('\\');
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => quoted = !quoted,
            ',' if !quoted => items.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    items.push(cur);
    items.retain(|s| !s.is_empty());
    items
}

/// Removes backslash escapes: `\X` becomes `X`.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Splits a `lowerdir` value on unescaped colons, then unescapes each entry.
pub fn split_lowerdirs(value: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push('\\');
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ':' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .filter(|s| !s.is_empty())
        .map(|s| PathBuf::from(OsString::from_vec(unescape(&s).into_bytes())))
        .collect()
}

/// Does `value` end in a `:` that no backslash escapes (the kernel refuses that)?
fn ends_with_unescaped_colon(value: &str) -> bool {
    let Some(rest) = value.strip_suffix(':') else {
        return false;
    };
    rest.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 0
}

fn path_value(value: &str) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape(value).into_bytes()))
}

impl MountOptions {
    /// Applies every `-o` argument in order; later items override earlier ones.
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut o = MountOptions::default();
        for arg in args {
            for item in split_items(arg) {
                o.apply(&item)?;
            }
        }
        Ok(o)
    }

    fn apply(&mut self, item: &str) -> Result<(), String> {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (item, None),
        };
        match (key, value) {
            ("lowerdir", Some(v)) if ends_with_unescaped_colon(v) => {
                return Err(format!(
                    "unescaped trailing colons in lowerdir mount option: {v}"
                ))
            }
            ("lowerdir", Some(v)) => self.lowerdirs = split_lowerdirs(v),
            ("upperdir", Some(v)) => self.upperdir = Some(path_value(v)),
            ("workdir", Some(v)) => self.workdir = Some(path_value(v)),
            ("timeout", Some(v)) => {
                let t: f64 = v.parse().map_err(|_| format!("invalid timeout: {v}"))?;
                if !(t.is_finite() && t >= 0.0) {
                    return Err(format!("invalid timeout: {v}"));
                }
                self.timeout = Some(t);
            }
            ("fsname", Some(v)) => self.fsname = Some(v.to_string()),
            ("ro", None) => self.read_only = true,
            ("rw", None) => self.read_only = false,
            ("allow_other", None) => self.allow_other = true,
            ("allow_root", None) => self.allow_root = true,
            ("suid", None) => self.suid = Some(true),
            ("nosuid", None) => self.suid = Some(false),
            ("dev", None) => self.dev = Some(true),
            ("nodev", None) => self.dev = Some(false),
            ("exec", None) => self.exec = Some(true),
            ("noexec", None) => self.exec = Some(false),
            ("noatime", None) => self.noatime = true,
            ("debug", None) => self.debug = true,
            ("volatile", None) => self.volatile = true,
            ("noacl", None) => self.noacl = true,
            ("static_nlink", None) => self.static_nlink = true,
            ("ino32_t", None) => self.ino32 = true,
            ("xattr_permissions", Some(v)) => {
                self.xattr_permissions = match v {
                    "0" | "1" | "2" => v.parse().unwrap_or(0),
                    _ => return Err(format!("invalid value for xattr_permissions: {v}")),
                }
            }
            ("noxattrs", Some(v)) => self.noxattrs = v != "0",
            ("inject", Some(v)) => {
                crate::inject::check(v)?;
                self.inject.push(v.to_string());
            }
            ("readdirplus", Some(v)) => {
                self.readdirplus = Some(match v {
                    "auto" => crate::rdplus::Mode::Learn,
                    "always" => crate::rdplus::Mode::Always,
                    "off" => crate::rdplus::Mode::Off,
                    _ => {
                        return Err(format!(
                            "invalid value for readdirplus: {v} (auto, always, off)"
                        ))
                    }
                })
            }
            ("uidmapping", Some(v)) => self.uidmapping = Some(v.to_string()),
            ("gidmapping", Some(v)) => self.gidmapping = Some(v.to_string()),
            ("squash_to_root", None) => self.squash_to_root = true,
            ("squash_to_uid", Some(v)) => {
                self.squash_to_uid = Some(
                    v.parse()
                        .map_err(|_| format!("invalid squash_to_uid: {v}"))?,
                )
            }
            ("squash_to_gid", Some(v)) => {
                self.squash_to_gid = Some(
                    v.parse()
                        .map_err(|_| format!("invalid squash_to_gid: {v}"))?,
                )
            }
            ("fsync" | "sync", Some(v)) => self.volatile = v == "0",
            ("redirect_dir", Some(v)) if !matches!(v, "on" | "off" | "follow" | "nofollow") => {
                return Err(format!("invalid value for redirect_dir: {v}"));
            }
            (k, v) if k.starts_with("splice_") && v.is_none() => {
                self.accepted.push((k.to_string(), None));
            }
            (k, Some(v)) if ACCEPTED_VALUE.contains(&k) => {
                self.accepted.push((k.to_string(), Some(v.to_string())));
            }
            (k, None) if ACCEPTED_FLAG.contains(&k) => self.accepted.push((k.to_string(), None)),
            _ => {
                eprintln!("unknown argument ignored: {item}");
                self.unknown.push(item.to_string());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_commas_but_not_in_quotes_or_after_backslash() {
        assert_eq!(split_items("a,b,,c,"), vec!["a", "b", "c"]);
        assert_eq!(
            split_items(r#"context="x:y,c1,c2",ro"#),
            vec!["context=x:y,c1,c2", "ro"]
        );
        assert_eq!(
            split_items(r"lowerdir=a\,b,ro"),
            vec![r"lowerdir=a\,b", "ro"]
        );
    }

    #[test]
    fn a_trailing_colon_in_lowerdir_is_refused_unless_escaped() {
        assert!(MountOptions::parse(["lowerdir=/a:"]).is_err());
        assert!(MountOptions::parse(["lowerdir=/a:/b::"]).is_err());
        assert!(MountOptions::parse([r"lowerdir=/a\\:"]).is_err());
        let o = MountOptions::parse([r"lowerdir=/a\:"]).unwrap();
        assert_eq!(o.lowerdirs, vec![PathBuf::from("/a:")]);
    }

    #[test]
    fn lowerdir_colons_and_escapes() {
        let l = split_lowerdirs(r"/a:/b\:c:/d\,e");
        assert_eq!(
            l,
            vec![
                PathBuf::from("/a"),
                PathBuf::from("/b:c"),
                PathBuf::from("/d,e")
            ]
        );
    }

    #[test]
    fn podman_forms_parse() {
        let o = MountOptions::parse(["lowerdir=/l1:/l2,upperdir=/u,workdir=/w,,volatile"]).unwrap();
        assert_eq!(o.lowerdirs.len(), 2);
        assert_eq!(o.upperdir, Some(PathBuf::from("/u")));
        assert!(o.unknown.is_empty());
        let o = MountOptions::parse([
            "lowerdir=/a,upperdir=/u,workdir=/w,",
            "uidmapping=:0:1:5000",
        ])
        .unwrap();
        assert_eq!(o.uidmapping.as_deref(), Some(":0:1:5000"));
        assert!(o.unknown.is_empty());
    }

    #[test]
    fn unknown_is_kept_and_later_items_override() {
        let o = MountOptions::parse(["bogus=1,lowerdir=/a", "lowerdir=/b,ro"]).unwrap();
        assert_eq!(o.unknown, vec!["bogus=1"]);
        assert_eq!(o.lowerdirs, vec![PathBuf::from("/b")]);
        assert!(o.read_only);
        assert!(MountOptions::parse(["timeout=abc"]).is_err());
    }

    #[test]
    fn readdirplus_takes_three_values() {
        use crate::rdplus::Mode;
        let mode = |v: &str| MountOptions::parse([v]).map(|o| o.readdirplus);
        assert_eq!(mode("readdirplus=auto"), Ok(Some(Mode::Learn)));
        assert_eq!(mode("readdirplus=always"), Ok(Some(Mode::Always)));
        assert_eq!(mode("readdirplus=off"), Ok(Some(Mode::Off)));
        assert_eq!(mode("lowerdir=/a"), Ok(None));
        assert!(mode("readdirplus=yes").is_err());
    }
}
