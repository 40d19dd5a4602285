//! The whiteout and opaque formats that layers use, and how to recognise them.
//!
//! Read side, every format image layers and overlay implementations write:
//! - whiteout: a char device 0/0 (kernel overlayfs, fuse-overlayfs); an empty
//!   `.wh.NAME` file (AUFS/OCI image layers); a zero-size file with
//!   `trusted.overlay.whiteout` / `user.overlay.whiteout` inside a directory marked
//!   `opaque=x` (kernel xattr whiteouts);
//! - opaque directory: `trusted.overlay.opaque=y`, `user.overlay.opaque=y`,
//!   `user.fuseoverlayfs.opaque=y`, or a `.wh..wh..opq` file inside it.
//!
//! None of these objects is ever shown through the mount.

use std::ffi::CStr;
use std::os::fd::BorrowedFd;

use crate::sys::{self, At, Stat};

use crate::ondisk::{Ovl, FUSE_OVERLAYFS_OPAQUE, FUSE_OVERLAYFS_PREFIX, PREFIXES};
pub use crate::ondisk::{OPAQUE_MARKER, WH_PREFIX};

/// Is `name` one of the opaque xattrs (the overlay's, or fuse-overlayfs's)?
fn is_opaque_xattr(name: &[u8]) -> bool {
    Ovl::Opaque.is(name) || name == FUSE_OVERLAYFS_OPAQUE.to_bytes()
}

/// Is this stat a char device 0/0?
pub fn is_whiteout_dev(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

/// Is this name reserved by the AUFS format (a `.wh.` whiteout or marker)?
pub fn is_aufs_name(name: &[u8]) -> bool {
    name.starts_with(WH_PREFIX)
}

/// The `.wh.NAME` file name that whites out `name`.
pub fn aufs_whiteout_name(name: &[u8]) -> io::Result<std::ffi::CString> {
    let mut v = Vec::with_capacity(name.len() + WH_PREFIX.len());
    v.extend_from_slice(WH_PREFIX);
    v.extend_from_slice(name);
    std::ffi::CString::new(v).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opacity {
    /// Lower directories of the same name merge in.
    Transparent,
    /// Lower directories of the same name are hidden.
    Opaque,
    /// Transparent, but may hold xattr whiteouts (`opaque=x`).
    XWhiteouts,
}

/// The opacity of the directory (`dir`, `name`) (`dir` any fd, `O_PATH` is enough;
/// `name` empty for `dir` itself), whose xattr names the caller has listed.
pub fn opacity_with(dir: BorrowedFd, name: &CStr, names: &[Vec<u8>]) -> Opacity {
    let at = At { dir, name };
    let mut result = Opacity::Transparent;
    for attr in names.iter().filter(|n| is_opaque_xattr(n)) {
        let Ok(cattr) = std::ffi::CString::new(attr.clone()) else {
            continue;
        };
        match sys::getxattr(at, &cattr).as_deref() {
            Ok(b"y") => return Opacity::Opaque,
            Ok(b"x") => result = Opacity::XWhiteouts,
            _ => {}
        }
    }
    if name.is_empty() && sys::statat(dir, OPAQUE_MARKER).is_ok() {
        return Opacity::Opaque;
    }
    result
}

/// Is the zero-size regular file (`dir`, `name`) an xattr whiteout?
pub fn is_xattr_whiteout(dir: BorrowedFd, name: &CStr, st: &Stat) -> bool {
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_size != 0 {
        return false;
    }
    sys::listxattr(At { dir, name })
        .map(|names| names.iter().any(|n| Ovl::Whiteout.is(n)))
        .unwrap_or(false)
}

/// Real directories known to hold no `.wh.` name, by layer, device and inode number.
/// Listings find this out (readdir.rs) and a node's stack keeps it; this keeps it
/// past the node, which the kernel's forgetting frees, so lookups of missing names
/// after a `drop_caches` need not look for AUFS whiteouts again. A lower never
/// changes; for the upper, see readdir.rs.
#[derive(Default)]
pub struct AufsFreeDirs(dashmap::DashSet<(u16, u64, u64)>);

/// How many directories `AufsFreeDirs` remembers before it starts over (8 MiB).
const AUFS_FREE_MAX: usize = 1 << 18;

impl AufsFreeDirs {
    /// The directory of `layer` with stat `st` holds no `.wh.` name.
    pub fn note(&self, layer: u16, st: &Stat) {
        if self.0.len() >= AUFS_FREE_MAX {
            self.0.clear();
        }
        self.0.insert((layer, st.st_dev, st.st_ino));
    }

    /// Was the directory of `layer` with stat `st` found free of `.wh.` names?
    /// How many are known.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn contains(&self, layer: u16, st: &Stat) -> bool {
        self.0.contains(&(layer, st.st_dev, st.st_ino))
    }
}

/// Overlay-private xattr names, hidden from getxattr/listxattr through the mount.
pub fn is_private_xattr(name: &[u8]) -> bool {
    PREFIXES.iter().any(|p| name.starts_with(p.as_bytes()))
        || name.starts_with(FUSE_OVERLAYFS_PREFIX.as_bytes())
        || crate::override_stat::is_override_name(name)
}

// --- write side ---

use crate::work::{WhiteoutFormat, Work};
use std::io;
use std::os::fd::AsFd;

/// Makes a whiteout for `name` in the upper directory `dir`, where nothing is yet.
pub fn create(work: &Work, dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    crate::inject::at(crate::inject::Step::Whiteout)?;
    match work.whiteout {
        WhiteoutFormat::CharDev => work.link_whiteout(dir, name),
        WhiteoutFormat::Aufs => {
            let wh = aufs_whiteout_name(name.to_bytes())?;
            sys::openat(dir, &wh, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0).map(drop)
        }
    }
}

/// Builds a whiteout in the work dir (char format only); returns its temp name.
pub fn create_in_work(work: &Work) -> io::Result<std::ffi::CString> {
    crate::inject::at(crate::inject::Step::Whiteout)?;
    let tmp = work.tmp_name();
    work.link_whiteout(work.fd.as_fd(), &tmp)?;
    Ok(tmp)
}

/// After an upper object was put at `name` in `dir`, drops an AUFS `.wh.NAME` that
/// may still stand beside it (a char whiteout was replaced by the rename itself).
pub fn drop_aufs(dir: BorrowedFd, name: &CStr) {
    if let Ok(wh) = aufs_whiteout_name(name.to_bytes()) {
        let _ = sys::unlinkat(dir, &wh, false);
    }
}

/// Marks the directory (`dir`, `name`) opaque: the overlay xattr where the upper
/// filesystem allows one, else a `.wh..wh..opq` file inside it.
pub fn set_opaque(work: &Work, dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    crate::inject::at(crate::inject::Step::Opaque)?;
    if work.set_xattr(dir, name, Ovl::Opaque, b"y").is_ok() {
        return Ok(());
    }
    let d = sys::openat(dir, name, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    sys::openat(d.as_fd(), OPAQUE_MARKER, libc::O_CREAT | libc::O_WRONLY, 0).map(drop)
}

/// Is there a whiteout for `name` in the upper directory `dir` (either format)?
pub fn upper_has(dir: BorrowedFd, name: &CStr) -> bool {
    sys::statat(dir, name).is_ok_and(|st| is_whiteout_dev(&st)) || upper_has_aufs(dir, name)
}

/// Is there an AUFS whiteout `.wh.NAME` for `name` in the upper directory `dir`?
pub fn upper_has_aufs(dir: BorrowedFd, name: &CStr) -> bool {
    aufs_whiteout_name(name.to_bytes()).is_ok_and(|wh| sys::statat(dir, &wh).is_ok())
}
