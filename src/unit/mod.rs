//! In-process tests of the union core: layers made in a temporary directory, an
//! overlay opened over them as `stratafs which` opens one, and the modules called
//! directly (lookup, listings, formats, copy-up, namespace changes). No mount and no
//! root: formats that need root to make (char 0/0 whiteouts, `trusted.` xattrs) are
//! covered by the integration tests; here the AUFS and `user.` formats stand in, and
//! an upper takes whichever the probe at open finds.

mod changes;
mod copy_up;
mod formats;
mod listing;
mod lookup;

use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::inode::Node;
use crate::overlay::{Overlay, Settings};
use crate::sys::{self, At};

/// A temporary directory, removed with everything in it when dropped.
pub struct Tree {
    pub root: PathBuf,
}

impl Tree {
    pub fn new(tag: &str) -> Tree {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "stratafs-unit-{}-{tag}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&root).unwrap();
        Tree { root }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Makes directory `rel` (and its parents).
    pub fn dir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// Writes file `rel` (making its parents).
    pub fn file(&self, rel: &str, data: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        p
    }

    /// Sets xattr `name` on `rel` (not following a symlink).
    pub fn xattr(&self, rel: &str, name: &str, value: &[u8]) {
        let p = self.path(rel);
        let parent = cpath(p.parent().unwrap());
        let dir = sys::open_path(&parent, libc::O_PATH | libc::O_DIRECTORY).unwrap();
        let leaf = CString::new(p.file_name().unwrap().as_bytes()).unwrap();
        let attr = CString::new(name).unwrap();
        let at = At {
            dir: dir.as_fd(),
            name: &leaf,
        };
        sys::setxattr(at, &attr, value, 0).unwrap();
    }

    /// An overlay of the lower directories `lowers` (topmost first), with `upper`
    /// (and a work dir beside it) when given.
    pub fn overlay(&self, lowers: &[&str], upper: Option<&str>) -> Overlay {
        let lowers: Vec<PathBuf> = lowers.iter().map(|l| self.dir(l)).collect();
        let up = upper.map(|u| (self.dir(u), self.dir(&format!("{u}.work"))));
        let upper_ref = up.as_ref().map(|(u, w)| (u.as_path(), w.as_path()));
        Overlay::open(upper_ref, &lowers, Settings::unmounted(upper.is_none())).unwrap()
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

pub fn cname(s: &str) -> CString {
    CString::new(s).unwrap()
}

/// The node of `path` (relative to the merged root), looked up one name at a time as
/// the kernel would, or the errno of the first lookup that fails.
pub fn resolve(ov: &Overlay, path: &str) -> Result<Arc<Node>, i32> {
    let mut node = ov.table.root().unwrap();
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        let name = cname(comp);
        let f = crate::namei::lookup(ov, &node, &name).map_err(errno)?;
        node = ov.table.lookup_ref(f.ino, f.kind, &node, &name, f.refs);
    }
    Ok(node)
}

pub fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// The names the merged listing of `path` shows, without `.` and `..`, sorted.
pub fn listing(ov: &Overlay, path: &str) -> Vec<String> {
    let node = resolve(ov, path).unwrap();
    let mut names: Vec<String> = crate::readdir::list(ov, &node)
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    names
}

/// The contents of the file at merged `path`, read through its node's real object.
pub fn read(ov: &Overlay, path: &str) -> String {
    let node = resolve(ov, path).unwrap();
    let (dir, name) = node.real(ov).unwrap();
    let (fd, _) = crate::real_io::open_regular(dir.as_fd(), &name, libc::O_RDONLY).unwrap();
    String::from_utf8(crate::real_io::read(&fd, 0, 1 << 20).unwrap()).unwrap()
}

/// The layer the node of merged `path` comes from (its topmost).
pub fn layer_of(ov: &Overlay, path: &str) -> u16 {
    resolve(ov, path).unwrap().stack().top()
}
