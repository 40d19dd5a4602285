//! `stratafs which`: resolves paths over the layers without mounting, and tells which
//! layer each one comes from. Uses the same lookup code as the mount.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::sync::Arc;

use fuser::FileType;

use crate::inode::Node;
use crate::namei;
use crate::overlay::Overlay;

/// A layer's name for people: `upper` or `lower N` (1 = topmost), with its directory name.
pub fn layer_label(ov: &Overlay, layer: u16) -> String {
    let l = ov.layer(layer);
    let lower_no = layer as usize + usize::from(!ov.has_upper());
    let dir = l
        .path
        .file_name()
        .unwrap_or(l.path.as_os_str())
        .to_string_lossy();
    if l.is_upper {
        format!("upper ({dir})")
    } else {
        format!("lower {lower_no} ({dir})")
    }
}

/// One line saying where `path` (relative to the merged root) comes from.
pub fn which(ov: &Overlay, path: &Path) -> String {
    let Some(mut node) = ov.table.root() else {
        return format!("{}: the overlay has no root", path.display());
    };
    for comp in path.components() {
        let name = match comp {
            Component::Normal(n) => n,
            Component::RootDir | Component::CurDir => continue,
            _ => return format!("{}: '..' is not supported", path.display()),
        };
        if node.kind != FileType::Directory {
            return format!(
                "{}: not found (a parent is not a directory)",
                path.display()
            );
        }
        let cname = match namei::check_name(name.as_bytes()) {
            Ok(c) => c,
            Err(e) => return format!("{}: {e}", path.display()),
        };
        match namei::lookup(ov, &node, &cname) {
            Ok(f) => {
                node = Arc::new(Node::new(
                    f.ino,
                    f.kind,
                    node.clone(),
                    CString::clone(&cname),
                    f.refs,
                ));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                return format!(
                    "{}: not in the merged view (absent or whited out)",
                    path.display()
                )
            }
            Err(e) => return format!("{}: {e}", path.display()),
        }
    }
    let stack = node.stack();
    let from: Vec<String> = stack
        .refs
        .iter()
        .map(|r| layer_label(ov, r.layer))
        .collect();
    let kind = match node.kind {
        FileType::Directory if stack.is_merged() => "merged directory",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::RegularFile => "file",
        _ => "special file",
    };
    let ino = node.ino;
    format!(
        "{}: {kind}, inode {ino}, from {}",
        path.display(),
        from.join(" + ")
    )
}
