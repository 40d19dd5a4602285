//! A union view without a mount: the lookup and listing code of the mount itself
//! (`namei`, `readdir`) run in-process on a container's layers, for `diff` and
//! `commit` to read the merged tree (and the image's) fd-relative.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::FileType;

use crate::inode::Node;
use crate::namei;
use crate::overlay::{Overlay, Settings};
use crate::sys::{self, Stat};

pub struct View {
    pub ov: Overlay,
}

/// One object of the view: its node and its stat as the mount shows it.
#[derive(Clone)]
pub struct Item {
    pub node: Arc<Node>,
    pub st: Stat,
}

impl Item {
    pub fn is_dir(&self) -> bool {
        self.node.kind == FileType::Directory
    }
}

impl View {
    /// The union of `lowers` (topmost first) and, if given, the upper `upper`.
    pub fn open(upper: Option<&Path>, lowers: &[PathBuf]) -> Result<View, String> {
        let settings = Settings::unmounted(true);
        let ov = Overlay::open(upper.map(|u| (u, u)), lowers, settings)?;
        Ok(View { ov })
    }

    pub fn root(&self) -> io::Result<Item> {
        let node = self
            .ov
            .table
            .root()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        let st = node.stat(&self.ov)?;
        Ok(Item { node, st })
    }

    /// The child `name` of the directory `parent`, if the view shows one.
    pub fn child(&self, parent: &Item, name: &[u8]) -> io::Result<Option<Item>> {
        let cname = match namei::check_name(name) {
            Ok(c) => c,
            Err(_) => return Ok(None),
        };
        match namei::lookup(&self.ov, &parent.node, &cname) {
            Ok(f) => {
                let node = Arc::new(Node::new(f.ino, f.kind, parent.node.clone(), cname, f.refs));
                let st = node.stat(&self.ov)?;
                Ok(Some(Item { node, st }))
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The item at `comps` from the root.
    pub fn at(&self, comps: &[Vec<u8>]) -> io::Result<Option<Item>> {
        let mut cur = self.root()?;
        for c in comps {
            if !cur.is_dir() {
                return Ok(None);
            }
            match self.child(&cur, c)? {
                Some(i) => cur = i,
                None => return Ok(None),
            }
        }
        Ok(Some(cur))
    }

    /// The names the directory shows, sorted.
    pub fn names(&self, dir: &Item) -> io::Result<Vec<Vec<u8>>> {
        let mut v: Vec<Vec<u8>> = crate::readdir::list(&self.ov, &dir.node)?
            .into_iter()
            .map(|e| e.name)
            .filter(|n| n != b"." && n != b"..")
            .collect();
        v.sort();
        Ok(v)
    }

    /// Does the item come (at least partly) from the upper layer?
    pub fn in_upper(&self, item: &Item) -> bool {
        self.ov.has_upper()
            && item
                .node
                .stack()
                .refs
                .iter()
                .any(|r| self.ov.layer(r.layer).is_upper)
    }

    /// Is the item a directory whose upper part is opaque (made over a deleted one)?
    pub fn upper_opaque(&self, item: &Item) -> bool {
        if !item.is_dir() || !self.in_upper(item) || item.node.stack().top() != 0 {
            return false;
        }
        let Ok((dir, _)) = item.node.real(&self.ov) else {
            return false;
        };
        let d = std::os::fd::AsFd::as_fd(&*dir);
        let names = sys::listxattr(sys::At { dir: d, name: c"" }).unwrap_or_default();
        crate::whiteout::opacity_with(d, c"", &names) == crate::whiteout::Opacity::Opaque
    }

    /// The file's contents.
    pub fn open_file(&self, item: &Item) -> io::Result<File> {
        let (dir, name) = item.node.real(&self.ov)?;
        Ok(File::from(sys::openat(
            std::os::fd::AsFd::as_fd(&*dir),
            &name,
            libc::O_RDONLY,
            0,
        )?))
    }

    pub fn readlink(&self, item: &Item) -> io::Result<Vec<u8>> {
        let (dir, name) = item.node.real(&self.ov)?;
        sys::readlinkat(std::os::fd::AsFd::as_fd(&*dir), &name)
    }

    /// The item's xattrs, but the overlay-private and override ones.
    pub fn xattrs(&self, item: &Item) -> Vec<(Vec<u8>, Vec<u8>)> {
        let Ok((dir, name)) = item.node.real(&self.ov) else {
            return Vec::new();
        };
        content_xattrs(sys::At {
            dir: std::os::fd::AsFd::as_fd(&*dir),
            name: &name,
        })
    }
}

/// The xattrs of the object `at` that are its content (not the union's bookkeeping),
/// sorted by name.
pub fn content_xattrs(at: sys::At) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for x in sys::listxattr(at).unwrap_or_default() {
        if crate::whiteout::is_private_xattr(&x) {
            continue;
        }
        let Ok(c) = CString::new(x.clone()) else {
            continue;
        };
        if let Ok(v) = sys::getxattr(at, &c) {
            out.push((x, v));
        }
    }
    out.sort();
    out
}
