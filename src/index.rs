//! Reading what kernel overlayfs left in `WORKDIR/index` (mounted with `index=on`).
//!
//! The kernel copies a lower hard link up into `index/<file handle>` and lets the
//! other names of it read that copy while they still point at the lower. stratafs
//! keeps hard links as plain upper links instead (see `links`), so at mount it adopts
//! each index entry: every name under which the merged tree still shows the lower
//! origin is linked to the indexed copy in the upper, and the index entry is removed
//! (it would count in st_nlink). The merged view stays what the kernel showed.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use log::{debug, info};

use crate::overlay::Overlay;
use crate::sys::{self, At};

/// `struct ovl_fb` header: version, magic, len, flags, type, then a 16-byte uuid.
const FB_HEADER: usize = 21;
const FB_MAGIC: u8 = 0xfb;

/// The lower origin a kernel file handle (`trusted.overlay.origin` value) names:
/// (layer, dev, ino).
fn decode_origin(ov: &Overlay, fb: &[u8]) -> Option<(u16, u64, u64)> {
    let lowers: Vec<(u16, BorrowedFd)> = ov
        .layers
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.is_upper)
        .map(|(i, l)| (i as u16, l.root.as_fd()))
        .collect();
    origin_in(&lowers, fb)
}

/// The object of the layers `lowers` (each with its index) that the kernel file
/// handle `fb` names: (layer, dev, ino); `None` when it names none.
pub fn origin_in(lowers: &[(u16, BorrowedFd)], fb: &[u8]) -> Option<(u16, u64, u64)> {
    if fb.len() <= FB_HEADER || fb[1] != FB_MAGIC || fb[2] as usize != fb.len() {
        return None;
    }
    let handle_type = fb[4] as i32;
    let fid = &fb[FB_HEADER..];
    for &(i, root) in lowers {
        let Ok(dir) = sys::openat(root, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0) else {
            continue;
        };
        let Ok(fd) = sys::open_by_handle(dir.as_fd(), handle_type, fid) else {
            continue;
        };
        let Ok(st) = sys::fstat(fd.as_fd()) else {
            continue;
        };
        // Several layers may share this filesystem: the caller asks each of them.
        return Some((i, st.st_dev, st.st_ino));
    }
    None
}

/// Adopts the kernel's index entries (see the module doc); `index` is
/// `WORKDIR/index`, opened `O_PATH`.
pub fn adopt(ov: &Overlay, index: BorrowedFd) {
    let Ok(rd) = sys::openat(index, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0) else {
        return;
    };
    let Ok(entries) = sys::read_dir_all(rd.as_fd()) else {
        return;
    };
    let mut adopted = 0;
    for e in entries {
        let Ok(name) = CString::new(e.name) else {
            continue;
        };
        if adopt_one(ov, index, &name) {
            adopted += 1;
        }
    }
    if adopted > 0 {
        info!("adopted {adopted} hard-link index entries of kernel overlayfs");
    }
}

fn adopt_one(ov: &Overlay, index: BorrowedFd, name: &CStr) -> bool {
    let Ok(st) = sys::statat(index, name) else {
        return false;
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return false; // directory index entries and index whiteouts: not ours to use
    }
    let origin = crate::ondisk::Ovl::Origin
        .names()
        .iter()
        .find_map(|a| sys::getxattr(At { dir: index, name }, a).ok());
    let Some((first_layer, dev, ino)) = origin.and_then(|fb| decode_origin(ov, &fb)) else {
        return false;
    };
    let name = name.to_owned();
    let mut linked = 0;
    for layer in first_layer as usize..ov.layers.len() {
        if ov.layers[layer].dev != dev {
            continue;
        }
        for (parent, alias) in crate::namei::live_names(ov, layer as u16, dev, ino) {
            match crate::copy_up::link_in_upper(ov, index, &name, &parent, &alias) {
                Ok(()) => linked += 1,
                Err(e) => debug!("index {name:?}: {alias:?} not linked: {e}"),
            }
        }
    }
    debug!("index {name:?}: linked {linked} lower names");
    // The entry itself would count in st_nlink of the upper names.
    sys::unlinkat(index, &name, false).is_ok()
}

/// Opens `WORKDIR/index` if the kernel made one.
pub fn open(workdir: BorrowedFd) -> Option<OwnedFd> {
    sys::openat(workdir, c"index", libc::O_PATH | libc::O_DIRECTORY, 0).ok()
}
