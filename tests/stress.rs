//! A bounded stress: 8 workers doing random operations on one shared tree (files,
//! directories and symlinks that start in the lower layer), all at once on one mount,
//! with every means of speed on, while a probe stats the root every 0.1 s.
//!
//! It passes when no operation fails with an errno the operation cannot give on a
//! plain directory tree (ENOENT, EEXIST, ENOTEMPTY, ... are expected as workers race;
//! EIO, ESTALE, ENXIO, EBADF, ... never are), the probe never waits a second, the
//! daemon's open files are back to their baseline once the kernel forgot what it
//! learnt (`drop_caches`), and the tree is the same after a remount and through kernel
//! overlayfs reading the upper. `STRATAFS_STRESS_SECS` sets how long (default 60).

mod common;
use common::*;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WORKERS: usize = 8;
const DIRS: [&str; 6] = ["d0", "d1", "d2", "d3", "d0/s", "d1/s"];
const NAMES: [&str; 8] = ["f0", "f1", "f2", "n0", "n1", "n2", "n3", "n4"];

fn lower_tree(l: &Path) {
    for d in DIRS {
        for f in ["f0", "f1", "f2"] {
            write(&l.join(d).join(f), &format!("lower {d}/{f}\n"));
        }
        symlink("f0", l.join(d).join("n0")).unwrap();
    }
}

/// Errnos an operation may give on a plain tree while other workers change it.
fn expected(e: i32) -> bool {
    matches!(
        e,
        libc::ENOENT
            | libc::EEXIST
            | libc::ENOTEMPTY
            | libc::ENOTDIR
            | libc::EISDIR
            | libc::EINVAL // rename of a directory into itself
            | libc::ELOOP // O_NOFOLLOW open of a symlink
            | libc::EPERM // link of a directory
            | libc::ENODATA // getxattr of an absent name
    )
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn check(r: i32) -> Result<(), i32> {
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1))
    } else {
        Ok(())
    }
}

fn io_errno<T>(r: std::io::Result<T>) -> Result<(), i32> {
    r.map(drop).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// One random operation on the shared tree under `m`; its name and result.
fn one_op(m: &Path, rng: &mut Rng) -> (&'static str, Result<(), i32>) {
    let pick = |rng: &mut Rng| {
        m.join(DIRS[rng.below(DIRS.len())])
            .join(NAMES[rng.below(NAMES.len())])
    };
    let a = pick(rng);
    let b = pick(rng);
    match rng.below(16) {
        0 => (
            "create",
            io_errno(
                open_nofollow(&a, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)
                    .and_then(|mut f| f.write_all(b"created\n")),
            ),
        ),
        1 => (
            "append",
            io_errno(
                open_nofollow(&a, libc::O_WRONLY | libc::O_APPEND)
                    .and_then(|mut f| f.write_all(b"+\n")),
            ),
        ),
        2 | 3 => (
            "read",
            io_errno(open_nofollow(&a, libc::O_RDONLY).and_then(|mut f| {
                let mut v = Vec::new();
                f.read_to_end(&mut v)
            })),
        ),
        4 => ("stat", io_errno(fs::symlink_metadata(&a))),
        5 => (
            "chmod",
            check(unsafe { libc::fchmodat(libc::AT_FDCWD, cpath(&a).as_ptr(), 0o640, 0) }),
        ),
        6 => ("unlink", io_errno(fs::remove_file(&a))),
        7 => (
            "rename",
            check(unsafe { libc::rename(cpath(&a).as_ptr(), cpath(&b).as_ptr()) }),
        ),
        8 => (
            "mkdir",
            check(unsafe { libc::mkdir(cpath(&a).as_ptr(), 0o755) }),
        ),
        9 => ("rmdir", io_errno(fs::remove_dir(&a))),
        10 => ("symlink", io_errno(symlink("f1", &a))),
        11 => ("readlink", io_errno(fs::read_link(&a))),
        12 => (
            "list",
            io_errno(
                fs::read_dir(m.join(DIRS[rng.below(DIRS.len())])).and_then(|rd| {
                    rd.map(|e| e.and_then(|e| e.file_type()))
                        .collect::<std::io::Result<Vec<_>>>()
                }),
            ),
        ),
        13 => (
            "truncate",
            io_errno(open_nofollow(&a, libc::O_WRONLY).and_then(|f| f.set_len(3))),
        ),
        14 => ("link", io_errno(fs::hard_link(&a, &b))),
        _ => {
            let k = CString::new("user.stress").unwrap();
            (
                "setxattr",
                check(unsafe {
                    libc::lsetxattr(cpath(&a).as_ptr(), k.as_ptr(), b"1".as_ptr().cast(), 1, 0)
                }),
            )
        }
    }
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn eight_workers_on_one_shared_tree() {
    assert_root();
    let secs: u64 = std::env::var("STRATAFS_STRESS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let t = TempDir::new("stress");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    lower_tree(&l);
    let m = t.dir("m");
    let opts = layer_opts(&[&l], Some((&u, &w)));
    let mount = Mount::new(&opts, &m);
    let pid = daemon_pids(&m)[0];
    let _ = fs::read_dir(&m).map(|d| d.count());
    let (fds_before, rss_before) = (open_fds(pid), rss_kib(pid));

    let stop = Arc::new(AtomicBool::new(false));
    let bad: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let ops = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|i| {
            let (m, stop, bad, ops) = (m.clone(), stop.clone(), bad.clone(), ops.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((i as u64 + 1) * 0x1234_5678_9abc));
                while !stop.load(Ordering::Relaxed) {
                    let (what, r) = one_op(&m, &mut rng);
                    ops.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = r {
                        if !expected(e) {
                            let key = format!("{what}: {}", std::io::Error::from_raw_os_error(e));
                            *bad.lock().unwrap().entry(key).or_default() += 1;
                        }
                    }
                }
            })
        })
        .collect();
    let probe = {
        let (m, stop) = (m.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let _ = fs::metadata(&m);
                worst = worst.max(start.elapsed());
                std::thread::sleep(Duration::from_millis(100));
            }
            worst
        })
    };
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for wk in workers {
        wk.join().expect("a worker panicked");
    }
    let worst = probe.join().expect("the probe panicked");
    let n = ops.load(Ordering::Relaxed);
    eprintln!("stress: {n} operations by {WORKERS} workers in {secs} s; probe worst {worst:?}");
    let bad = bad.lock().unwrap().clone();
    assert!(
        bad.is_empty(),
        "unexpected errors in {n} operations: {bad:?}"
    );
    assert!(
        worst < Duration::from_secs(1),
        "a stat of the root waited {worst:?}"
    );

    // Once the kernel forgot what it learnt, nothing of the run stays open.
    let view = tree_view(&m);
    let settled = wait_for(20, || {
        drop_caches();
        open_fds(pid) <= fds_before + 8
    });
    let (fds_after, rss_after) = (open_fds(pid), rss_kib(pid));
    eprintln!(
        "stress: daemon fds {fds_before} -> {fds_after}, RSS {rss_before} -> {rss_after} KiB"
    );
    assert!(
        settled,
        "the daemon holds {fds_after} fds after drop_caches, {fds_before} before the run"
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "the daemon's RSS grew from {rss_before} to {rss_after} KiB"
    );

    // The same tree after a remount, `stratafs check` finds nothing wrong in the
    // upper, and the kernel reads the same tree from it.
    remount_and_check(mount, &opts, &m, &t, (&l, &u, &w), &view);
}
