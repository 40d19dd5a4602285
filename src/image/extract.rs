//! Unpacks one layer tar into a fresh `diff/` directory, safe by construction: every
//! entry's parent is reached from the layer root one name at a time, `O_NOFOLLOW |
//! O_DIRECTORY`, so a symlink or `..` in the archive can never lead outside; nothing
//! is unpacked by the `tar` crate itself (it only parses).
//!
//! Whiteouts become the upper-layer format of the mount: `.wh.NAME` a char 0/0 device
//! (which a plain user may make too), `.wh..wh..opq` the opaque xattr
//! (`trusted.overlay.opaque` as root, `user.overlay.opaque` otherwise). Hard links are
//! made once the whole layer is there; one to a file of a lower layer copies it in.
//! As a plain user, owners, modes and device nodes go into
//! `user.containers.override_stat`, which the mount reads. Runs of zeros become holes.

use std::ffi::{CStr, CString};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use tar::EntryType;

use super::fsdir::Dir;
use super::member::{clean_path, cstr, open_in, parse_time, show, write_sparse, Comps};
use crate::override_stat;
use crate::sys::{self, At};

/// How a layer is unpacked.
pub struct Options {
    /// A plain user: owners, modes and devices go into the override xattr.
    pub rootless: bool,
    /// The most bytes a layer may unpack to (its files' sizes, holes included).
    pub max_bytes: u64,
}

/// What unpacking a layer met on its way.
#[derive(Default)]
pub struct Report {
    pub warnings: Vec<String>,
    pub entries: u64,
    pub bytes: u64,
}

impl Report {
    fn warn(&mut self, w: String) {
        if self.warnings.len() < 50 {
            log::debug!("{w}");
            self.warnings.push(w);
        }
    }
}

/// The metadata an entry asks for.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: libc::timespec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    /// Records this owner and mode, and the type `kind` (`file`, `char-1-3`, ...), in
    /// user.containers.override_stat on `at`.
    fn record(&self, at: At, kind: &str) -> io::Result<()> {
        override_stat::write_typed(
            override_stat::CONTAINERS,
            at,
            self.uid,
            self.gid,
            self.mode,
            kind,
        )
    }
}

struct Unpacker<'a> {
    root: &'a Dir,
    lowers: &'a [Dir],
    opt: &'a Options,
    report: &'a mut Report,
    /// Directories whose metadata is set at the end (their entries change mtime).
    dirs: Vec<(Comps, Meta)>,
    /// Hard links, made at the end: (link, target).
    links: Vec<(Comps, Comps)>,
    /// The last parent reached, kept for its siblings.
    last: Option<(Comps, OwnedFd)>,
}

/// Unpacks the tar stream `src` into `root` (an empty `diff/`). `lowers` are the
/// `diff/` directories of the layers below, topmost first (for hard links into them).
/// `progress` is told the bytes unpacked so far.
pub fn unpack(
    src: impl Read,
    root: &Dir,
    lowers: &[Dir],
    opt: &Options,
    report: &mut Report,
    progress: &mut dyn FnMut(u64),
) -> Result<(), String> {
    let mut u = Unpacker {
        root,
        lowers,
        opt,
        report,
        dirs: Vec::new(),
        links: Vec::new(),
        last: None,
    };
    let mut ar = tar::Archive::new(src);
    let entries = ar.entries().map_err(|e| format!("not a tar stream: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("corrupt or truncated layer: {e}"))?;
        u.entry(&mut entry)?;
        u.report.entries += 1;
        progress(u.report.bytes);
    }
    let links = std::mem::take(&mut u.links);
    for (link, target) in links {
        u.hard_link(&link, &target)?;
    }
    let dirs = std::mem::take(&mut u.dirs);
    for (comps, meta) in dirs.iter().rev() {
        let (parent, name) = u.locate(comps)?;
        u.apply_meta(parent.as_fd(), &name, meta, libc::S_IFDIR, comps)?;
    }
    if opt.rootless && !dirs.iter().any(|(c, _)| c.is_empty()) {
        // The root's own marker, which tells the mount the layer keeps owners in xattrs.
        let _ = override_stat::write_typed(
            override_stat::CONTAINERS,
            At {
                dir: root.fd(),
                name: c"",
            },
            0,
            0,
            0o755,
            "dir",
        );
    }
    Ok(())
}

impl Unpacker<'_> {
    /// The directory holding `comps`' last component (made if missing, as an archive
    /// may leave parents out), and that name.
    fn locate(&mut self, comps: &[Vec<u8>]) -> Result<(OwnedFd, CString), String> {
        let (name, parents) = match comps.split_last() {
            Some(x) => x,
            None => {
                let fd = sys::openat(self.root.fd(), c"", libc::O_PATH | libc::O_DIRECTORY, 0)
                    .map_err(|e| format!("layer root: {e}"))?;
                return Ok((fd, CString::default()));
            }
        };
        let name = cstr(name)?;
        if let Some((p, fd)) = &self.last {
            if p.as_slice() == parents {
                let fd = fd.try_clone().map_err(|e| e.to_string())?;
                return Ok((fd, name));
            }
        }
        let mut fd = sys::openat(self.root.fd(), c"", libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(|e| format!("layer root: {e}"))?;
        for (i, c) in parents.iter().enumerate() {
            let cn = cstr(c)?;
            let next = match sys::openat(fd.as_fd(), &cn, libc::O_PATH | libc::O_DIRECTORY, 0) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    sys::mkdirat(fd.as_fd(), &cn, 0o755)
                        .map_err(|e| format!("{}: {e}", show(&parents[..=i])))?;
                    sys::openat(fd.as_fd(), &cn, libc::O_PATH | libc::O_DIRECTORY, 0)
                        .map_err(|e| format!("{}: {e}", show(&parents[..=i])))?
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => {
                    return Err(format!(
                        "refused: '{}' goes through '{}', which is not a directory (a symlink is never followed)",
                        show(comps),
                        show(&parents[..=i])
                    ))
                }
                Err(e) => return Err(format!("{}: {e}", show(&parents[..=i]))),
            };
            fd = next;
        }
        self.last = Some((parents.to_vec(), fd.try_clone().map_err(|e| e.to_string())?));
        Ok((fd, name))
    }

    fn meta<R: Read>(&mut self, e: &mut tar::Entry<R>, comps: &Comps) -> Result<Meta, String> {
        let h = e.header();
        let bad = |what: &str, err: io::Error| format!("'{}': bad {what}: {err}", show(comps));
        let mut m = Meta {
            uid: h.uid().map_err(|x| bad("uid", x))? as u32,
            gid: h.gid().map_err(|x| bad("gid", x))? as u32,
            mode: h.mode().map_err(|x| bad("mode", x))? & 0o7777,
            mtime: libc::timespec {
                tv_sec: h.mtime().map_err(|x| bad("mtime", x))? as i64,
                tv_nsec: 0,
            },
            xattrs: Vec::new(),
        };
        if let Ok(Some(exts)) = e.pax_extensions() {
            for ext in exts.flatten() {
                let key = ext.key_bytes();
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    if crate::whiteout::is_private_xattr(name) {
                        self.report.warn(format!(
                            "dropped xattr {} on '{}' (it would change what the union shows)",
                            String::from_utf8_lossy(name),
                            show(comps)
                        ));
                    } else {
                        m.xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
                    }
                } else if key == b"mtime" {
                    if let Some(t) = std::str::from_utf8(ext.value_bytes())
                        .ok()
                        .and_then(parse_time)
                    {
                        m.mtime = t;
                    }
                } else if key == b"uid" || key == b"gid" {
                    if let Some(v) = std::str::from_utf8(ext.value_bytes())
                        .ok()
                        .and_then(|s| s.parse().ok())
                    {
                        if key == b"uid" {
                            m.uid = v
                        } else {
                            m.gid = v
                        }
                    }
                }
            }
        }
        Ok(m)
    }

    fn entry<R: Read>(&mut self, e: &mut tar::Entry<R>) -> Result<(), String> {
        let raw = e.path_bytes().into_owned();
        let comps = clean_path(&raw).map_err(|m| format!("refused: {m}"))?;
        let kind = e.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let Some(last) = comps.last() else {
            // The root itself ("./"): only its metadata.
            if kind.is_dir() {
                let m = self.meta(e, &comps)?;
                self.dirs.push((comps, m));
            }
            return Ok(());
        };
        if let Some(hidden) = last.strip_prefix(whiteout_prefix()) {
            return self.whiteout(&comps, hidden);
        }
        let meta = self.meta(e, &comps)?;
        let (parent, name) = self.locate(&comps)?;
        let p = parent.as_fd();
        let existing = sys::statat(p, &name).ok();
        let here = show(&comps);
        let io = |what: &str, err: io::Error| format!("'{here}': {what}: {err}");
        if kind.is_dir() {
            match existing {
                Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {}
                other => {
                    if other.is_some() {
                        crate::work::remove_tree(p, &name).map_err(|x| io("replacing it", x))?;
                    }
                    sys::mkdirat(p, &name, 0o700).map_err(|x| io("mkdir", x))?;
                }
            }
            self.dirs.push((comps, meta));
            return Ok(());
        }
        if existing.is_some() {
            // An entry over another of this layer: the later one wins.
            crate::work::remove_tree(p, &name).map_err(|x| io("replacing it", x))?;
        }
        let ftype = match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let size = e.header().size().unwrap_or(0);
                if self.report.bytes.saturating_add(size) > self.opt.max_bytes {
                    return Err(format!(
                        "refused: the layer unpacks to more than {} bytes (at '{here}'; set STRATAFS_MAX_LAYER_BYTES to allow more)",
                        self.opt.max_bytes
                    ));
                }
                if size >= 1 << 20 {
                    // A clean abort before the disk fills (holes may make it fit after
                    // all, but a layer that large and that empty is not worth the risk).
                    if let Ok(vfs) = sys::fstatfs(p) {
                        let avail = vfs.f_bavail.saturating_mul(vfs.f_frsize);
                        if size > avail {
                            return Err(format!("'{here}' needs {size} bytes, the store's filesystem has {avail} free"));
                        }
                    }
                }
                let fd = sys::openat(
                    p,
                    &name,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                    0o600,
                )
                .map_err(|x| io("create", x))?;
                let n = write_sparse(e, fd.as_fd(), self.opt.max_bytes - self.report.bytes)
                    .map_err(|x| io("writing", x))?;
                self.report.bytes += n;
                libc::S_IFREG
            }
            EntryType::Symlink => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| format!("'{here}': a symlink without a target"))?;
                sys::symlinkat(&cstr(&target)?, p, &name).map_err(|x| io("symlink", x))?;
                libc::S_IFLNK
            }
            EntryType::Link => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| format!("'{here}': a hard link without a target"))?;
                if target.first() == Some(&b'/') {
                    return Err(format!(
                        "refused: hard link '{here}' to the absolute path '{}'",
                        String::from_utf8_lossy(&target)
                    ));
                }
                let t =
                    clean_path(&target).map_err(|m| format!("refused: hard link '{here}': {m}"))?;
                self.links.push((comps, t));
                return Ok(());
            }
            EntryType::Char | EntryType::Block => {
                let major = e.header().device_major().ok().flatten().unwrap_or(0);
                let minor = e.header().device_minor().ok().flatten().unwrap_or(0);
                let is_char = kind == EntryType::Char;
                if is_char && major == 0 && minor == 0 {
                    return Err(format!(
                        "refused: '{here}' is a char device 0/0, which would read as a whiteout"
                    ));
                }
                let t = if is_char {
                    libc::S_IFCHR
                } else {
                    libc::S_IFBLK
                };
                let dev = libc::makedev(major, minor);
                let made = if self.opt.rootless {
                    Err(io::Error::from_raw_os_error(libc::EPERM))
                } else {
                    sys::mknodat(p, &name, t | 0o600, dev)
                };
                match made {
                    Ok(()) => t,
                    Err(x) if x.raw_os_error() == Some(libc::EPERM) => {
                        // A plain user: an empty file standing for the device.
                        let tname =
                            format!("{}-{major}-{minor}", if is_char { "char" } else { "block" });
                        stand_in(p, &name, &meta, &tname)
                            .map_err(|x| io("a device stand-in", x))?;
                        self.report.warn(format!("'{here}': device node kept as a file with user.containers.override_stat (no root)"));
                        self.set_xattrs_times(p, &name, &meta, &comps);
                        return Ok(());
                    }
                    Err(x) => return Err(io("mknod", x)),
                }
            }
            EntryType::Fifo if self.opt.rootless => {
                // A plain user cannot put an xattr on a fifo: an empty file stands for
                // it, its owner, mode and type in user.containers.override_stat.
                empty_file(p, &name).map_err(|x| io("create", x))?;
                libc::S_IFIFO
            }
            EntryType::Fifo => {
                sys::mknodat(p, &name, libc::S_IFIFO | 0o600, 0).map_err(|x| io("mkfifo", x))?;
                libc::S_IFIFO
            }
            other => {
                self.report
                    .warn(format!("'{here}': entry type {other:?} skipped"));
                return Ok(());
            }
        };
        self.apply_meta(p, &name, &meta, ftype, &comps)
    }

    fn whiteout(&mut self, comps: &Comps, hidden: &[u8]) -> Result<(), String> {
        let here = show(comps);
        let (parent, _) = self.locate(comps)?;
        let p = parent.as_fd();
        if hidden == b".wh..opq" {
            // trusted.* needs CAP_SYS_ADMIN (not had in a user namespace either): the
            // user.overlay form then, which the rootless mount reads.
            let at = At { dir: p, name: c"" };
            let done =
                !self.opt.rootless && sys::setxattr(at, c"trusted.overlay.opaque", b"y", 0).is_ok();
            if !done {
                sys::setxattr(at, c"user.overlay.opaque", b"y", 0)
                    .map_err(|e| format!("'{here}': marking the directory opaque: {e}"))?;
            }
            return Ok(());
        }
        if hidden.starts_with(whiteout_prefix()) {
            // Other AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): not content.
            return Ok(());
        }
        if hidden.is_empty() {
            return Err(format!("refused: '{here}' is a whiteout without a name"));
        }
        let name = cstr(hidden)?;
        if sys::statat(p, &name).is_ok() {
            // A whiteout applies to the layers below, never to this layer's own entry.
            return Ok(());
        }
        sys::mknodat(p, &name, libc::S_IFCHR, 0)
            .map_err(|e| format!("'{here}': making the whiteout: {e}"))
    }

    fn set_xattrs_times(&mut self, p: BorrowedFd, name: &CStr, meta: &Meta, comps: &Comps) {
        for (k, v) in &meta.xattrs {
            let Ok(kc) = CString::new(k.clone()) else {
                continue;
            };
            if let Err(e) = sys::setxattr(At { dir: p, name }, &kc, v, 0) {
                self.report.warn(format!(
                    "'{}': xattr {} not kept: {e}",
                    show(comps),
                    String::from_utf8_lossy(k)
                ));
            }
        }
        let t = [meta.mtime, meta.mtime];
        let _ = sys::utimensat(p, name, &t);
    }

    fn apply_meta(
        &mut self,
        p: BorrowedFd,
        name: &CStr,
        meta: &Meta,
        ftype: u32,
        comps: &Comps,
    ) -> Result<(), String> {
        let here = show(comps);
        if self.opt.rootless {
            if ftype != libc::S_IFLNK {
                let keep = if ftype == libc::S_IFDIR { 0o700 } else { 0o600 };
                sys::chmodat(p, name, meta.mode | keep)
                    .map_err(|e| format!("'{here}': chmod: {e}"))?;
                meta.record(At { dir: p, name }, kind_name(ftype))
                    .map_err(|e| format!("'{here}': user.containers.override_stat: {e}"))?;
            }
        } else {
            match sys::chownat(p, name, meta.uid, meta.gid) {
                Ok(()) => {}
                // An owner this user namespace does not map: kept in the override xattr.
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EPERM))
                        && matches!(ftype, libc::S_IFDIR | libc::S_IFREG) =>
                {
                    meta.record(At { dir: p, name }, kind_name(ftype))
                        .map_err(|x| {
                            format!("'{here}': chown: {e}; user.containers.override_stat: {x}")
                        })?;
                    self.report.warn(format!(
                        "'{here}': owner {}:{} kept in user.containers.override_stat ({e})",
                        meta.uid, meta.gid
                    ));
                }
                Err(e) => return Err(format!("'{here}': chown: {e}")),
            }
            if ftype != libc::S_IFLNK {
                sys::chmodat(p, name, meta.mode).map_err(|e| format!("'{here}': chmod: {e}"))?;
            }
        }
        self.set_xattrs_times(p, name, meta, comps);
        Ok(())
    }

    /// Makes the hard link `link` to `target`, both paths of this layer; a target in
    /// a lower layer only is copied in.
    fn hard_link(&mut self, link: &Comps, target: &Comps) -> Result<(), String> {
        let here = show(link);
        let (tp, tname) = self
            .locate(target)
            .map_err(|m| format!("refused: hard link '{here}': {m}"))?;
        let (lp, lname) = self.locate(link)?;
        match sys::statat(tp.as_fd(), &tname) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                return Err(format!(
                    "refused: hard link '{here}' to the directory '{}'",
                    show(target)
                ))
            }
            Ok(_) => {
                if sys::statat(lp.as_fd(), &lname).is_ok() {
                    crate::work::remove_tree(lp.as_fd(), &lname)
                        .map_err(|e| format!("'{here}': {e}"))?;
                }
                return sys::linkat(tp.as_fd(), &tname, lp.as_fd(), &lname)
                    .map_err(|e| format!("'{here}': link: {e}"));
            }
            Err(_) => {}
        }
        // Not in this layer: a file of a lower layer (image-spec issue 1204).
        for lower in self.lowers {
            if let Some((src, st)) = open_in(lower, target) {
                if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                    continue;
                }
                let fd = sys::openat(
                    lp.as_fd(),
                    &lname,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                    0o600,
                )
                .map_err(|e| format!("'{here}': {e}"))?;
                let mut from = std::fs::File::from(src);
                write_sparse(&mut from, fd.as_fd(), u64::MAX)
                    .map_err(|e| format!("'{here}': {e}"))?;
                let _ = sys::fchmod(fd.as_fd(), st.st_mode & 0o7777);
                self.report.warn(format!(
                    "'{here}': hard link to '{}' of a lower layer; copied in",
                    show(target)
                ));
                return Ok(());
            }
        }
        Err(format!(
            "refused: hard link '{here}' to '{}', which is not in the image",
            show(target)
        ))
    }
}

/// An empty file standing for a device a plain user cannot make: its owner, mode
/// and type (`char-1-3`) in user.containers.override_stat.
fn stand_in(dir: BorrowedFd, name: &CStr, meta: &Meta, kind: &str) -> io::Result<()> {
    empty_file(dir, name)?;
    meta.record(At { dir, name }, kind)
}

/// Makes the empty regular file (`dir`, `name`), readable and writable by the daemon only.
fn empty_file(dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    sys::openat(
        dir,
        name,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
        0o600,
    )
    .map(drop)
}

/// The TYPE field of an override value for a directory, a fifo or a file.
fn kind_name(ftype: u32) -> &'static str {
    match ftype {
        libc::S_IFDIR => "dir",
        libc::S_IFIFO => "pipe",
        _ => "file",
    }
}

fn whiteout_prefix() -> &'static [u8] {
    crate::ondisk::WH_PREFIX
}
