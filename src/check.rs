//! `stratafs check UPPER --work WORK [--lower L1:L2...] [--repair]`: the consistency
//! check of an upper layer that is not mounted (after a crash, or before handing it to
//! the kernel), as fsck.overlay does for the kernel's format.
//!
//! It reports, one line each with its fix: leftovers in `WORK/work`; whiteouts and
//! opaque markers in a format this upper should not hold (the AUFS `.wh.` forms on a
//! filesystem that takes char 0/0 whiteouts and overlay xattrs, which the kernel would
//! not read); opaque marks and redirects on non-directories; redirects that leave the
//! layers (`..`, `.`, empty) or, with `--lower`, lead to no lower directory; origins of
//! the wrong size; directories holding copied-up entries (origins) without the impure
//! mark; entries of the kernel's index (`WORKDIR/index`) that no upper name links to,
//! or (with `--lower`) whose origin names no lower object; hard-link groups split: copies of one lower object that are separate files in
//! the upper, or, with `--lower`, another name of a lower hard link that the merged
//! view would still show from the lower beside its upper copy. `--repair` fixes each
//! in the upper and the work dir but the split groups, which need a choice of
//! contents and are left to do by hand; a lower is only read.
//! Every access is fd-relative and follows no symlink, like the mount's.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::sys::{self, At};
use crate::whiteout;

/// Where a check starts: the upper, its work dir, and the lowers (topmost first).
pub struct Request {
    pub upper: PathBuf,
    pub work: PathBuf,
    pub lowers: Vec<PathBuf>,
    pub repair: bool,
}

/// One problem found: where (relative to the upper, or `work/...`), what, and the fix.
struct Finding {
    path: String,
    what: String,
    fix: String,
    repaired: Option<io::Result<()>>,
}

use crate::ondisk::{Ovl, PREFIXES as OVERLAY_PREFIXES};

/// What this upper's filesystem takes: char 0/0 whiteouts, and overlay xattrs (the
/// namespace that works), probed in the work dir.
struct Formats {
    char_whiteouts: bool,
    xattr_ns: Option<&'static str>,
}

/// Runs the check; prints one line per problem and a summary. Ok(true) when the upper
/// is (now) clean.
pub fn run(req: &Request) -> Result<bool, String> {
    let open_dir = |p: &Path, what: &str| {
        let c = CString::new(p.as_os_str().as_bytes())
            .map_err(|_| format!("{what} {}: invalid path", p.display()))?;
        sys::open_path(&c, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| format!("{what} {}: {e}", p.display()))
    };
    let upper = open_dir(&req.upper, "upperdir")?;
    let workdir = open_dir(&req.work, "workdir")?;
    let lowers = req
        .lowers
        .iter()
        .map(|l| open_dir(l, "lowerdir"))
        .collect::<Result<Vec<_>, _>>()?;
    let work = match sys::openat(
        workdir.as_fd(),
        c"work",
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    ) {
        Ok(fd) => Some(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
        Err(e) => return Err(format!("workdir {}/work: {e}", req.work.display())),
    };
    // A mounted upper is not checked: the mount holds the work dir's lock. (A mount
    // just undone may take a moment to let go: its daemon ends after the kernel's
    // last request; a mount namespace made meanwhile keeps it a little longer.)
    let _lock = match &work {
        Some(w) => Some(
            crate::work::lock(w.as_fd(), std::time::Duration::from_secs(3)).map_err(|e| match e
                .raw_os_error()
            {
                Some(libc::EWOULDBLOCK) => format!(
                    "workdir {} is in use by a mount: unmount it first",
                    req.work.display()
                ),
                _ => format!("workdir {}/work: {e}", req.work.display()),
            })?,
        ),
        None => None,
    };
    let mut found = Vec::new();
    if let Some(w) = &work {
        check_work(w.as_fd(), req.repair, &mut found)?;
    }
    let formats = probe(work.as_ref().map(|w| w.as_fd()));
    let mut walk = Walk {
        formats: &formats,
        lowers: &lowers,
        repair: req.repair,
        found: &mut found,
        copies: HashMap::new(),
    };
    walk.dir(upper.as_fd(), &mut Vec::new())
        .map_err(|e| format!("upperdir {}: {e}", req.upper.display()))?;
    walk.hard_link_groups(upper.as_fd());
    if let Some(index) = crate::index::open(workdir.as_fd()) {
        walk.index(index.as_fd());
    }
    let mut left = 0;
    for f in &found {
        let state = match &f.repaired {
            None => {
                left += 1;
                String::new()
            }
            Some(Ok(())) => " [repaired]".to_string(),
            Some(Err(e)) => {
                left += 1;
                format!(" [repair failed: {e}]")
            }
        };
        println!("{}: {}; fix: {}{state}", f.path, f.what, f.fix);
    }
    match (found.len(), left) {
        (0, _) => println!("clean: nothing to report"),
        (n, 0) => println!("{n} problems found, all repaired"),
        (n, l) if req.repair => println!("{n} problems found, {l} not repaired"),
        (n, l) => println!("{n} problems found, {l} not repaired (run with --repair)"),
    }
    Ok(left == 0)
}

/// Leftovers in `WORK/work`: a copy-up, whiteout or new object that was being built
/// when the daemon stopped (the next mount empties it too).
fn check_work(work: BorrowedFd, repair: bool, found: &mut Vec<Finding>) -> Result<(), String> {
    let rd = sys::openat(work, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
        .map_err(|e| format!("work dir: {e}"))?;
    for e in sys::read_dir_all(rd.as_fd()).map_err(|e| format!("work dir: {e}"))? {
        let Ok(name) = CString::new(e.name) else {
            continue;
        };
        if sys::statat(work, &name).is_ok_and(|st| whiteout::is_whiteout_dev(&st)) {
            continue; // the shared whiteout new whiteouts are links to, by design
        }
        found.push(Finding {
            path: format!("work/{}", name.to_string_lossy()),
            what: "leftover in the work dir (being built when the daemon stopped)".into(),
            fix: "remove it".into(),
            repaired: repair.then(|| crate::work::remove_tree(work, &name)),
        });
    }
    Ok(())
}

/// What the upper's filesystem takes, tried in the work dir (without one: assume the
/// kernel's formats).
fn probe(work: Option<BorrowedFd>) -> Formats {
    let Some(w) = work else {
        return Formats {
            char_whiteouts: true,
            xattr_ns: Some(OVERLAY_PREFIXES[0]),
        };
    };
    let char_whiteouts = crate::work::takes_char_whiteouts(w);
    let xattr_ns = crate::work::probe_xattr_ns(w).prefix();
    Formats {
        char_whiteouts,
        xattr_ns,
    }
}

struct Walk<'a> {
    formats: &'a Formats,
    lowers: &'a [OwnedFd],
    repair: bool,
    found: &'a mut Vec<Finding>,
    /// Copied-up non-directories by the inode number they record (their origin):
    /// (path, the upper file's own inode number).
    copies: HashMap<u64, Vec<(Vec<u8>, u64)>>,
}

fn xattr_names(at: At) -> Vec<Vec<u8>> {
    sys::listxattr(at).unwrap_or_default()
}

/// The overlay xattr `what` among `names`, in either namespace.
fn overlay_xattr(names: &[Vec<u8>], what: Ovl) -> Option<CString> {
    what.names()
        .into_iter()
        .find(|full| names.iter().any(|n| n.as_slice() == full.to_bytes()))
        .map(CString::from)
}

impl Walk<'_> {
    fn report(
        &mut self,
        path: &[u8],
        what: String,
        fix: &str,
        repair: impl FnOnce() -> io::Result<()>,
    ) {
        let repaired = self.repair.then(repair);
        self.found.push(Finding {
            path: String::from_utf8_lossy(path).into_owned(),
            what,
            fix: fix.into(),
            repaired,
        });
    }

    /// A problem `--repair` does not touch: its fix (`by hand: ...`) needs a choice.
    fn report_by_hand(&mut self, path: &[u8], what: String, fix: String) {
        self.found.push(Finding {
            path: String::from_utf8_lossy(path).into_owned(),
            what,
            fix,
            repaired: None,
        });
    }

    /// Checks the upper directory open as `dir` (`path` from the upper's root) and
    /// everything below it.
    fn dir(&mut self, dir: BorrowedFd, path: &mut Vec<u8>) -> io::Result<()> {
        let rd = sys::openat(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let entries = sys::read_dir_all(rd.as_fd())?;
        let mut has_origin = false;
        for e in &entries {
            let Ok(name) = CString::new(e.name.clone()) else {
                continue;
            };
            let len = path.len();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&e.name);
            let st = sys::statat(dir, &name)?;
            let at = At { dir, name: &name };
            let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
            let is_link = st.st_mode & libc::S_IFMT == libc::S_IFLNK;
            let names = if is_link { Vec::new() } else { xattr_names(at) };
            self.aufs_forms(dir, &name, path);
            if let Some(origin) = overlay_xattr(&names, Ovl::StratafsOrigin) {
                match sys::getxattr(at, &origin) {
                    Ok(v) if v.len() == 8 => {
                        has_origin = true;
                        if !is_dir {
                            let ino = u64::from_le_bytes(v.try_into().unwrap_or_default());
                            let entry = self.copies.entry(ino).or_default();
                            entry.push((path.clone(), st.st_ino));
                        }
                    }
                    _ => self.report(
                        path,
                        format!("origin {} of the wrong size", origin.to_string_lossy()),
                        "remove it (the inode number is then the upper's own)",
                        || sys::removexattr(at, &origin),
                    ),
                }
            }
            if let (false, Some(x)) = (is_dir, overlay_xattr(&names, Ovl::Opaque)) {
                self.report(
                    path,
                    format!("{} on a non-directory", x.to_string_lossy()),
                    "remove it",
                    || sys::removexattr(at, &x),
                );
            }
            if let Some(x) = overlay_xattr(&names, Ovl::Redirect) {
                self.redirect(at, &x, is_dir, path);
            }
            if is_dir {
                let sub = sys::openat(dir, &name, libc::O_PATH | libc::O_DIRECTORY, 0)?;
                self.dir(sub.as_fd(), path)?;
            }
            path.truncate(len);
        }
        if has_origin {
            let here = At { dir, name: c"" };
            if overlay_xattr(&xattr_names(here), Ovl::Impure).is_none() {
                let shown = if path.is_empty() {
                    b".".to_vec()
                } else {
                    path.clone()
                };
                let ns = self.formats.xattr_ns;
                self.report(
                    &shown,
                    "holds copied-up entries (origins) but is not marked impure".into(),
                    "mark it impure",
                    || match ns {
                        Some(p) => {
                            let attr = CString::new(format!("{p}impure")).unwrap_or_default();
                            sys::setxattr(here, &attr, b"y", 0)
                        }
                        None => Err(io::Error::from_raw_os_error(libc::ENOTSUP)),
                    },
                );
            }
        }
        Ok(())
    }

    /// Hard-link groups split. Copies of one lower object (the same origin) must be
    /// one upper file; and each other name of a lower hard link whose copy is in the
    /// upper must be in the upper too (linked, replaced or whited out), or the merged
    /// view shows it from the lower as a different file. Neither is repaired: which
    /// contents are right is the owner's choice.
    fn hard_link_groups(&mut self, upper: BorrowedFd) {
        let copies = std::mem::take(&mut self.copies);
        let links = crate::links::Links::new(self.lowers.len());
        let mut origins: Vec<_> = copies.into_iter().collect();
        origins.sort();
        for (origin, names) in origins {
            let first = String::from_utf8_lossy(&names[0].0).into_owned();
            if let Some((path, _)) = names.iter().find(|(_, ino)| *ino != names[0].1) {
                self.report_by_hand(
                    path,
                    format!("a copy of lower inode {origin}, like {first}, but a separate file"),
                    format!("by hand: keep the right contents, and hard-link the other name to it ({first})"),
                );
                continue;
            }
            // The real inode number (the mount adds the filesystem's index above bit 56).
            let ino = origin & ((1 << 56) - 1);
            let group = self.lowers.iter().enumerate().find_map(|(i, l)| {
                let map = links.map(i as u16, l.as_fd());
                map.get(&ino).cloned()
            });
            for comps in group.unwrap_or_default() {
                let path = comps
                    .iter()
                    .map(|c| c.to_bytes())
                    .collect::<Vec<_>>()
                    .join(&b'/');
                if names.iter().any(|(p, _)| *p == path) || shows_in_upper(upper, &comps) {
                    continue;
                }
                self.report_by_hand(
                    &path,
                    format!("another name of lower inode {origin}, still shown from the lower beside its upper copy {first}"),
                    format!("by hand: hard-link it to {first} in the upper"),
                );
            }
        }
    }

    /// The kernel's index (`WORKDIR/index`, from a mount with `index=on`): an entry
    /// of a copied-up hard link that no upper name links to any more (the kernel
    /// removes those at mount; stratafs would adopt it); with `--lower`, one whose
    /// origin names no lower object. Directory entries and whiteouts there are the
    /// kernel's own business and left alone.
    fn index(&mut self, index: BorrowedFd) {
        let Ok(rd) = sys::openat(index, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0) else {
            return;
        };
        let lowers: Vec<(u16, BorrowedFd)> = self
            .lowers
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u16, l.as_fd()))
            .collect();
        for e in sys::read_dir_all(rd.as_fd()).unwrap_or_default() {
            let Ok(name) = CString::new(e.name.clone()) else {
                continue;
            };
            let Ok(st) = sys::statat(index, &name) else {
                continue;
            };
            if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                continue;
            }
            let mut path = b"index/".to_vec();
            path.extend_from_slice(&e.name);
            let at = At {
                dir: index,
                name: &name,
            };
            let origin = Ovl::Origin
                .names()
                .iter()
                .find_map(|a| sys::getxattr(at, a).ok());
            let lost = !lowers.is_empty()
                && origin.is_none_or(|fb| crate::index::origin_in(&lowers, &fb).is_none());
            let what = if st.st_nlink <= 1 {
                "an index entry of a hard link that no upper name links to any more"
            } else if lost {
                "an index entry whose origin names no object of the lowers"
            } else {
                continue;
            };
            self.report(&path, what.into(), "remove it", || {
                sys::unlinkat(index, &name, false)
            });
        }
    }

    /// `.wh.NAME` whiteouts and `.wh..wh..opq` markers where the upper takes the
    /// kernel's formats (which the kernel reads; these it would not).
    fn aufs_forms(&mut self, dir: BorrowedFd, name: &CStr, path: &[u8]) {
        let n = name.to_bytes();
        if !whiteout::is_aufs_name(n) {
            return;
        }
        if n == whiteout::OPAQUE_MARKER.to_bytes() {
            if let Some(p) = self.formats.xattr_ns {
                self.report(
                    path,
                    "an AUFS opaque marker where the upper takes overlay xattrs".into(),
                    "mark the directory opaque by xattr and remove the marker",
                    || {
                        let attr = CString::new(format!("{p}opaque")).unwrap_or_default();
                        sys::setxattr(At { dir, name: c"" }, &attr, b"y", 0)?;
                        sys::unlinkat(dir, name, false)
                    },
                );
            }
            return;
        }
        if !self.formats.char_whiteouts {
            return;
        }
        let Ok(target) = CString::new(&n[whiteout::WH_PREFIX.len()..]) else {
            return;
        };
        self.report(
            path,
            "an AUFS whiteout where the upper takes char 0/0 whiteouts".into(),
            "replace it with a char 0/0 whiteout",
            || {
                match sys::statat(dir, &target) {
                    // (a whiteout already there, or an object that the whiteout
                    // no longer hides: the AUFS file only goes)
                    Ok(_) => {}
                    Err(_) => sys::mknodat(dir, &target, libc::S_IFCHR, 0)?,
                }
                sys::unlinkat(dir, name, false)
            },
        );
    }

    /// A redirect (`x`) on `at`: on a directory only, never leaving the layers, and
    /// (when the lowers are given) leading to a directory in one of them.
    fn redirect(&mut self, at: At, x: &CString, is_dir: bool, path: &[u8]) {
        let remove = || sys::removexattr(at, x);
        if !is_dir {
            return self.report(
                path,
                "a redirect on a non-directory".into(),
                "remove it",
                remove,
            );
        }
        let target = sys::getxattr(at, x).unwrap_or_default();
        let rel = target.strip_prefix(b"/").unwrap_or(&target);
        let comps: Vec<&[u8]> = rel
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect();
        if comps.is_empty() || comps.iter().any(|c| *c == b"." || *c == b"..") {
            return self.report(
                path,
                format!(
                    "a redirect that leaves the layers ({:?})",
                    String::from_utf8_lossy(&target)
                ),
                "remove it",
                remove,
            );
        }
        if self.lowers.is_empty() || target.first() != Some(&b'/') {
            return; // (a relative redirect is resolved beside the parent: not checked)
        }
        let leads = self
            .lowers
            .iter()
            .any(|l| leads_somewhere(l.as_fd(), &comps));
        if !leads {
            self.report(
                path,
                format!(
                    "a redirect to {:?}, which no lower holds as a directory",
                    String::from_utf8_lossy(&target)
                ),
                "remove it (it adds nothing to the merged view)",
                remove,
            );
        }
    }
}

/// Does the path `comps` lead to a directory in the lower `root`? A directory on the
/// way that carries a redirect of its own sends the lookup elsewhere: then it may
/// lead somewhere, and the answer is yes (no repair ever drops a redirect in use).
fn leads_somewhere(root: BorrowedFd, comps: &[&[u8]]) -> bool {
    let mut cur: Option<OwnedFd> = None;
    for comp in comps {
        let Ok(name) = CString::new(*comp) else {
            return false;
        };
        let dir = cur.as_ref().map_or(root, |f| f.as_fd());
        let Ok(next) = sys::openat(dir, &name, libc::O_PATH | libc::O_DIRECTORY, 0) else {
            return false;
        };
        if overlay_xattr(
            &xattr_names(At {
                dir: next.as_fd(),
                name: c"",
            }),
            Ovl::Redirect,
        )
        .is_some()
        {
            return true;
        }
        cur = Some(next);
    }
    true
}

/// Does the upper decide what the merged view shows at `comps` (a path from the
/// root): an object or whiteout there, or above it a non-directory, a whiteout or an
/// opaque directory? When not, the lower shows through.
fn shows_in_upper(upper: BorrowedFd, comps: &[CString]) -> bool {
    let Some((last, dirs)) = comps.split_last() else {
        return true;
    };
    let mut cur: Option<OwnedFd> = None;
    for name in dirs {
        let dir = cur.as_ref().map_or(upper, |f| f.as_fd());
        let st = match sys::statat(dir, name) {
            Ok(st) => st,
            // (not in the upper: the lower shows through, unless a whiteout...)
            Err(_) => return whiteout::upper_has_aufs(dir, name),
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return true; // a whiteout or another object hides what is below
        }
        let Ok(next) = sys::openat(dir, name, libc::O_PATH | libc::O_DIRECTORY, 0) else {
            return true;
        };
        let names = xattr_names(At {
            dir: next.as_fd(),
            name: c"",
        });
        if whiteout::opacity_with(next.as_fd(), c"", &names) == whiteout::Opacity::Opaque {
            return true;
        }
        cur = Some(next);
    }
    let dir = cur.as_ref().map_or(upper, |f| f.as_fd());
    sys::statat(dir, last).is_ok() || whiteout::upper_has_aufs(dir, last)
}
