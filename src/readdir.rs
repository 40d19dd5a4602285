//! Merged directory listings (the kernel's `readdir.c`).
//!
//! A listing is built at offset 0 and kept per directory and reading process
//! (`handles::Handles::listing`) until that reader reaches its end or the kernel forgets
//! the directory: the upper layer's entries first, then each lower's, a name never
//! twice, whiteouts and AUFS markers dropped. Offsets are positions in that snapshot,
//! so a reader that goes on at a later offset (telldir/seekdir) reads the same one.

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::fd::AsFd;

use fuser::FileType;

use crate::handles::Entry;
use crate::inode::{kind_of, Node};
use crate::overlay::Overlay;
use crate::sys;
use crate::whiteout;

fn dtype_kind(dtype: u8) -> Option<FileType> {
    Some(match dtype {
        libc::DT_REG => FileType::RegularFile,
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_SOCK => FileType::Socket,
        _ => return None,
    })
}

/// The merged listing of `node`, with `.` and `..` first.
pub fn list(ov: &Overlay, node: &Node) -> io::Result<Vec<Entry>> {
    list_with(ov, node, false)
}

/// Is the merged directory empty, as rmdir and rename over it judge? Like the
/// kernel, xattr whiteouts (in an `opaque=x` lower) count as entries here, though
/// listings hide them.
pub fn is_empty(ov: &Overlay, node: &Node) -> io::Result<bool> {
    Ok(list_with(ov, node, true)?.len() <= 2)
}

fn list_with(ov: &Overlay, node: &Node, xwhiteouts_count: bool) -> io::Result<Vec<Entry>> {
    let parent_ino = node.parent().map_or(node.ino, |p| p.ino);
    let mut out = vec![
        Entry {
            name: b".".to_vec(),
            ino: node.ino,
            kind: FileType::Directory,
        },
        Entry {
            name: b"..".to_vec(),
            ino: parent_ino,
            kind: FileType::Directory,
        },
    ];
    let stack = node.stack();
    let upper_stays_free = ov.work.as_ref().is_some_and(|w| w.upper_stays_aufs_free());
    // Names already shown, or whited out by a layer above.
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    for (pos, lref) in stack.refs.iter().enumerate() {
        let layer = ov.layer(lref.layer);
        let dir = match node.dir_fd(ov, lref.layer) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => continue,
            Err(e) => return Err(e),
        };
        let rd = sys::openat(dir.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        // Entries of an impure upper directory may carry the inode number they had
        // before copy-up.
        let impure = layer.is_upper && is_impure(dir.as_fd());
        let mut whited_out: Vec<Vec<u8>> = Vec::new();
        let mut aufs_names = false;
        for e in sys::read_dir_all(rd.as_fd())? {
            if whiteout::is_aufs_name(&e.name) {
                aufs_names = true;
                if e.name.as_slice() != whiteout::OPAQUE_MARKER.to_bytes() {
                    whited_out.push(e.name[whiteout::WH_PREFIX.len()..].to_vec());
                }
                continue;
            }
            if seen.contains(&e.name) {
                continue;
            }
            let mut kind = dtype_kind(e.dtype);
            let needs_stat = kind.is_none()
                || kind == Some(FileType::CharDevice)
                || (lref.xwhiteouts && kind == Some(FileType::RegularFile));
            if needs_stat {
                let Ok(cname) = CString::new(e.name.clone()) else {
                    continue;
                };
                let st = match sys::statat(dir.as_fd(), &cname) {
                    Ok(st) => st,
                    Err(_) => continue, // vanished meanwhile
                };
                if whiteout::is_whiteout_dev(&st)
                    || (lref.xwhiteouts
                        && !xwhiteouts_count
                        && whiteout::is_xattr_whiteout(dir.as_fd(), &cname, &st))
                {
                    whited_out.push(e.name);
                    continue;
                }
                kind = kind_of(st.st_mode);
            }
            let Some(kind) = kind else { continue };
            let origin = if impure {
                CString::new(e.name.clone())
                    .ok()
                    .and_then(|c| crate::namei::read_origin(dir.as_fd(), &c))
            } else {
                None
            };
            let ino = origin.unwrap_or_else(|| ov.inos.map(layer, layer.dev, e.ino));
            seen.insert(e.name.clone());
            out.push(Entry {
                name: e.name,
                ino,
                kind,
            });
        }
        seen.extend(whited_out);
        // A lower never changes; an upper directory gets no `.wh.` name from us
        // while whiteouts are char devices (such names cannot be made through the
        // mount), so what this listing found stays true for the life of the stack.
        if !aufs_names && (!layer.is_upper || upper_stays_free) {
            stack.note_aufs_free(pos);
            if let Ok(st) = sys::fstat(rd.as_fd()) {
                ov.aufs_free_dirs.note(lref.layer, &st);
            }
        }
    }
    Ok(out)
}

fn is_impure(dir: std::os::fd::BorrowedFd) -> bool {
    crate::ondisk::Ovl::Impure
        .names()
        .iter()
        .any(|a| sys::getxattr(sys::At { dir, name: c"" }, a).is_ok())
}
