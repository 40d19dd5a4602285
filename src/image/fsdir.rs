//! `Dir`: a directory of the store reached by fd, and the few things the image tools
//! do in one: open a child (never through a symlink), create, read, replace a file
//! atomically (a temporary name, fsync, rename), rename, remove a tree. Names are
//! single components; no path is ever joined into a string.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use crate::sys;

/// A directory, by an `O_PATH` fd.
pub struct Dir {
    pub fd: OwnedFd,
}

/// A name as a C string (names come from the store itself or are checked before).
pub fn cname(name: &str) -> io::Result<CString> {
    cbytes(name.as_bytes())
}

pub fn cbytes(name: &[u8]) -> io::Result<CString> {
    if name.is_empty() || name.contains(&b'/') || name == b"." || name == b".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad name '{}'", String::from_utf8_lossy(name)),
        ));
    }
    CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn exists_err(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EEXIST)
}

impl Dir {
    /// Opens a directory named on the command line (the store root, a target).
    pub fn open_path(path: &Path) -> io::Result<Dir> {
        use std::os::unix::ffi::OsStrExt;
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        Ok(Dir {
            fd: sys::open_path(&c, libc::O_PATH | libc::O_DIRECTORY)?,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The child directory `name`, never through a symlink.
    pub fn sub(&self, name: &str) -> io::Result<Dir> {
        self.sub_c(&cname(name)?)
    }

    pub fn sub_c(&self, name: &CStr) -> io::Result<Dir> {
        Ok(Dir {
            fd: sys::openat(self.fd(), name, libc::O_PATH | libc::O_DIRECTORY, 0)?,
        })
    }

    /// Makes the child directory `name` (if missing) and opens it.
    pub fn make_sub(&self, name: &str, mode: u32) -> io::Result<Dir> {
        let c = cname(name)?;
        match sys::mkdirat(self.fd(), &c, mode) {
            Err(e) if !exists_err(&e) => return Err(e),
            _ => {}
        }
        self.sub_c(&c)
    }

    pub fn exists(&self, name: &str) -> bool {
        cname(name).is_ok_and(|c| sys::statat(self.fd(), &c).is_ok())
    }

    /// The names in this directory (not `.` and `..`).
    pub fn names(&self) -> io::Result<Vec<String>> {
        let rd = sys::openat(self.fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        Ok(sys::read_dir_all(rd.as_fd())?
            .into_iter()
            .filter_map(|e| String::from_utf8(e.name).ok())
            .collect())
    }

    /// The whole contents of the file `name`.
    pub fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        self.open(name)?.read_to_end(&mut v)?;
        Ok(v)
    }

    /// The file `name`, opened for reading.
    pub fn open(&self, name: &str) -> io::Result<File> {
        Ok(File::from(sys::openat(
            self.fd(),
            &cname(name)?,
            libc::O_RDONLY,
            0,
        )?))
    }

    /// A new file `name` (it must not exist), opened for writing.
    pub fn create(&self, name: &str, mode: u32) -> io::Result<File> {
        Ok(File::from(sys::openat(
            self.fd(),
            &cname(name)?,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            mode,
        )?))
    }

    /// Replaces (or creates) the file `name` with `data`: written under a temporary
    /// name, synced, renamed over; a reader sees the old or the new contents, whole.
    pub fn write_atomic(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let tmp = format!(".tmp-{}-{name}", std::process::id());
        let _ = self.remove(&tmp);
        let mut f = self.create(&tmp, 0o644)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        self.rename(&tmp, self, name)?;
        self.sync()
    }

    /// fsync of the directory itself (after renames into it).
    pub fn sync(&self) -> io::Result<()> {
        let f = sys::openat(self.fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        sys::fsync(f.as_fd(), false)
    }

    pub fn rename(&self, from: &str, to_dir: &Dir, to: &str) -> io::Result<()> {
        sys::renameat2(self.fd(), &cname(from)?, to_dir.fd(), &cname(to)?, 0)
    }

    pub fn symlink(&self, target: &str, name: &str) -> io::Result<()> {
        let t = CString::new(target).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        sys::symlinkat(&t, self.fd(), &cname(name)?)
    }

    /// Removes `name`, recursively if it is a directory; absent is fine.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        match crate::work::remove_tree(self.fd(), &cname(name)?) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other,
        }
    }

    /// The size of the tree under this directory: its files' sizes (holes counted, as
    /// docker and podman count a layer), each inode once.
    pub fn disk_usage(&self) -> u64 {
        let mut seen = std::collections::HashSet::new();
        du(self.fd(), &mut seen)
    }
}

fn du(dir: BorrowedFd, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
    let Ok(rd) = sys::openat(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0) else {
        return 0;
    };
    let Ok(entries) = sys::read_dir_all(rd.as_fd()) else {
        return 0;
    };
    let mut total = 0;
    for e in entries {
        let Ok(c) = CString::new(e.name) else {
            continue;
        };
        let Ok(st) = sys::statat(dir, &c) else {
            continue;
        };
        if st.st_mode & libc::S_IFMT == libc::S_IFREG && seen.insert((st.st_dev, st.st_ino)) {
            total += st.st_size as u64;
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            if let Ok(sub) = sys::openat(dir, &c, libc::O_PATH | libc::O_DIRECTORY, 0) {
                total += du(sub.as_fd(), seen);
            }
        }
    }
    total
}
