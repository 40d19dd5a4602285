//! `stratafs floor`: what one FUSE round trip costs on this host when the server does
//! no work at all, the floor under any FUSE file system's requests.
//!
//! It mounts an empty file system (one file; every answer comes from memory) on a
//! private temporary directory, served by as many threads as a stratafs mount, and
//! times `getxattr(security.capability)` on its file: a request the kernel never caches,
//! answered ENODATA. Given a file on another mount, it times the same call there, the
//! two by turns, and prints the medians; the difference is what that mount's server
//! adds to the floor. (podman's naive diff makes two such calls per entry and tree.)

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, MountOption,
    ReplyAttr, ReplyEntry, ReplyXattr, Request, Session,
};

use crate::sys::At;

/// The file system that does nothing: a root and one empty file, `f`.
struct Empty;

const TTL: Duration = Duration::from_secs(3600);

fn attr(ino: u64) -> FileAttr {
    let dir = ino == 1;
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: if dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: if dir { 0o755 } else { 0o644 },
        nlink: if dir { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for Empty {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent.0 == 1 && name.as_bytes() == b"f" {
            reply.entry(&TTL, &attr(2), Generation(0));
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&TTL, &attr(ino.0));
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENODATA);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }
}

/// A file to time: its directory (`O_PATH`) and name.
struct Target {
    dir: std::os::fd::OwnedFd,
    name: CString,
}

impl Target {
    fn open(path: &Path) -> Result<Target, String> {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .ok_or(format!("{}: not a file", path.display()))?;
        let cpath = CString::new(parent.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        let dir = crate::sys::open_path(&cpath, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| format!("{}: {e}", parent.display()))?;
        let name = CString::new(name.as_bytes()).map_err(|e| e.to_string())?;
        Ok(Target { dir, name })
    }

    /// Microseconds per call, over `calls` calls.
    fn time(&self, calls: u32) -> f64 {
        use std::os::fd::AsFd;
        let at = At {
            dir: self.dir.as_fd(),
            name: &self.name,
        };
        let attr = c"security.capability";
        let start = Instant::now();
        for _ in 0..calls {
            let _ = crate::sys::getxattr(at, attr);
        }
        start.elapsed().as_secs_f64() * 1e6 / f64::from(calls.max(1))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Mounts the empty file system, times it (and `against`) in `rounds` rounds of
/// `calls` calls each, unmounts, prints the medians.
pub fn run(against: Option<&Path>, calls: u32, rounds: u32) -> Result<(), String> {
    if crate::sys::geteuid() != 0 {
        return Err("floor mounts a FUSE file system of its own: run it as root".into());
    }
    let other = against.map(Target::open).transpose()?;
    let dir = std::env::temp_dir().join(format!("stratafs-floor.{}", std::process::id()));
    std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut cfg = Config::default();
    // As many threads as a stratafs mount: here, a lone caller's round trips are
    // faster with several threads waiting than with one (the kernel hands each request
    // to the longest waiter), so the floor is taken the way stratafs serves.
    cfg.n_threads = Some(crate::mount::default_threads());
    cfg.clone_fd = true;
    cfg.mount_options = vec![
        MountOption::FSName("stratafs-floor".into()),
        MountOption::RO,
    ];
    let measured = Session::new(Empty, &dir, &cfg)
        .and_then(Session::spawn)
        .map_err(|e| format!("mount on {}: {e}", dir.display()))
        .and_then(|session| {
            let times = Target::open(&dir.join("f")).map(|empty| {
                let mut floor = Vec::new();
                let mut there = Vec::new();
                for _ in 0..rounds.max(1) {
                    floor.push(empty.time(calls));
                    if let Some(o) = &other {
                        there.push(o.time(calls));
                    }
                }
                (median(floor), median(there))
            });
            let _ = session.umount_and_join();
            times
        });
    let _ = std::fs::remove_dir(&dir);
    let (floor, there) = measured?;
    println!("getxattr round trip, a FUSE server that does nothing: {floor:.1} µs");
    if let Some(p) = against {
        println!(
            "getxattr on {}: {there:.1} µs ({:+.1} µs over the floor)",
            p.display(),
            there - floor
        );
    }
    Ok(())
}
