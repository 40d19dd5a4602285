//! Crash runs: the daemon is killed (SIGKILL) at random moments during a big copy-up,
//! a storm of metadata copy-ups, and a storm of namespace operations, 10 times each.
//! After each kill the mount is made again over the same layers and checked against
//! the log of the operations that completed: each of them is there, the one in flight
//! is either done or not done (never half), and nothing else changed; `stratafs
//! check` finds nothing wrong in the upper, and kernel overlayfs mounts it and shows
//! the same tree. `STRATAFS_CRASH_KILLS` sets the kills per kind (default 10).

mod common;
use common::*;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn kills() -> usize {
    std::env::var("STRATAFS_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// Kills the daemon of the mount at `m` (SIGKILL) and waits until it is gone.
fn kill_daemon(m: &Path) {
    for pid in daemon_pids(m) {
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let gone = wait_for(10, || {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |s| s.contains(") Z ") || s.contains(") X "))
        });
        assert!(gone, "the daemon outlived SIGKILL");
    }
}

/// A 64 MiB lower file is opened for appending (a copy-up of all its data) and the
/// daemon is killed at a random moment: afterwards the file is the lower one, or the
/// whole copy with the append, never a part.
#[test]
fn a_killed_copy_up_is_all_or_nothing() {
    assert_root();
    let t = TempDir::new("crash-copy");
    let (l, u, w, m) = (t.dir("l"), t.dir("u"), t.dir("w"), t.dir("m"));
    let size = 64usize << 20;
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    fs::write(l.join("big"), &data).unwrap();
    let opts = layer_opts(&[&l], Some((&u, &w)));
    let mut rng = Rng(0x5eed_c0de_1234_5678);
    let mut outcomes = [0usize; 2];
    for round in 0..kills() {
        // A fresh upper each round: the append copies the whole file up again.
        for d in [&u, &w] {
            fs::remove_dir_all(d).unwrap();
            fs::create_dir(d).unwrap();
        }
        let mount = Mount::new(&opts, &m);
        let before = fs::read(m.join("big")).unwrap();
        assert_eq!(before, data, "round {round}: the lower file reads wrong");
        let appender = {
            let p = m.join("big");
            std::thread::spawn(move || {
                fs::OpenOptions::new()
                    .append(true)
                    .open(&p)
                    .and_then(|mut f| f.write_all(b"appended"))
            })
        };
        std::thread::sleep(Duration::from_millis(rng.below(120) as u64));
        kill_daemon(&m);
        let done = appender.join().expect("the appender panicked").is_ok();
        std::mem::forget(mount); // (dead: the next mount clears it)
        let mount = Mount::new(&opts, &m);
        let after = fs::read(m.join("big")).unwrap();
        let whole = {
            let mut v = before.clone();
            v.extend_from_slice(b"appended");
            v
        };
        assert!(
            after == before || after == whole,
            "round {round}: the file is {} bytes, neither the {} before nor the whole copy",
            after.len(),
            before.len()
        );
        assert_eq!(
            &after[..data.len()],
            &data[..],
            "round {round}: the data changed"
        );
        if done {
            assert_ne!(after, before, "round {round}: a completed append is lost");
        }
        outcomes[usize::from(after != before)] += 1;
        // After every kill: `stratafs check` finds nothing, the kernel reads the same.
        let view = tree_view(&m);
        mount.unmount();
        drop(mount);
        upper_is_sound(&t, &l, &u, &w, &view);
    }
    eprintln!(
        "copy-up crash: {} rounds untouched, {} with the append",
        outcomes[0], outcomes[1]
    );
}

/// One operation of a storm and the state it leaves, to check after a crash.
#[derive(Clone)]
enum Op {
    /// chmod of a lower file (a metadata copy-up).
    Chmod(PathBuf, u32),
    /// create of a file with this content.
    Create(PathBuf, String),
    /// rename of a file.
    Rename(PathBuf, PathBuf),
    /// unlink of a file (a whiteout where it is in the lower).
    Unlink(PathBuf),
}

impl Op {
    fn describe(&self) -> String {
        match self {
            Op::Chmod(p, m) => format!("chmod {p:?} {m:o}"),
            Op::Create(p, _) => format!("create {p:?}"),
            Op::Rename(a, b) => format!("rename {a:?} {b:?}"),
            Op::Unlink(p) => format!("unlink {p:?}"),
        }
    }

    fn apply(&self, m: &Path) -> std::io::Result<()> {
        match self {
            Op::Chmod(p, mode) => fs::set_permissions(m.join(p), fs::Permissions::from_mode(*mode)),
            Op::Create(p, c) => fs::write(m.join(p), c),
            Op::Rename(a, b) => fs::rename(m.join(a), m.join(b)),
            Op::Unlink(p) => fs::remove_file(m.join(p)),
        }
    }

    /// Applies the operation to the model of the tree (path -> "mode content").
    fn model(&self, tree: &mut BTreeMap<PathBuf, (u32, String)>) {
        match self {
            Op::Chmod(p, mode) => {
                if let Some(e) = tree.get_mut(p) {
                    e.0 = *mode;
                }
            }
            Op::Create(p, c) => {
                tree.insert(p.clone(), (0o644, c.clone()));
            }
            Op::Rename(a, b) => {
                if let Some(e) = tree.remove(a) {
                    tree.insert(b.clone(), e);
                }
            }
            Op::Unlink(p) => {
                tree.remove(p);
            }
        }
    }
}

/// The files under `m` (one directory level below `dirs`), as the model has them.
fn files(m: &Path, dirs: &[&str]) -> BTreeMap<PathBuf, (u32, String)> {
    let mut out = BTreeMap::new();
    for d in dirs {
        for e in fs::read_dir(m.join(d)).unwrap() {
            let e = e.unwrap();
            let rel = Path::new(d).join(e.file_name());
            let md = fs::symlink_metadata(m.join(&rel)).unwrap();
            let content = fs::read_to_string(m.join(&rel)).unwrap();
            out.insert(rel, (md.mode() & 0o7777, content));
        }
    }
    out
}

/// Runs `ops` from the first on through the mount on another thread and kills the
/// daemon at a random moment; returns how many completed.
fn storm_until_killed(m: &Path, ops: &[Op], rng: &mut Rng) -> usize {
    let done = Arc::new(AtomicUsize::new(0));
    let worker = {
        let (m, ops, done) = (m.to_path_buf(), ops.to_vec(), done.clone());
        std::thread::spawn(move || {
            for op in &ops {
                if op.apply(&m).is_err() {
                    return;
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(5 + rng.below(60) as u64));
    kill_daemon(m);
    worker.join().expect("the storm panicked");
    done.load(Ordering::SeqCst)
}

/// A storm of `ops` (made by `make` from the round's number and the model) is killed
/// at a random moment, `kills()` times; after each, the remounted tree is the model
/// after the completed operations, or after one more (the one in flight).
fn storm(tag: &str, make: impl Fn(usize, &BTreeMap<PathBuf, (u32, String)>) -> Vec<Op>) {
    assert_root();
    let t = TempDir::new(tag);
    let (l, u, w, m) = (t.dir("l"), t.dir("u"), t.dir("w"), t.dir("m"));
    let dirs = ["a", "b"];
    unsafe { libc::umask(0o022) }; // (the model's files are made 0644)
    for d in dirs {
        for i in 0..300 {
            write(&l.join(d).join(format!("f{i}")), &format!("lower {d}/f{i}"));
        }
    }
    let opts = layer_opts(&[&l], Some((&u, &w)));
    let mut rng = Rng(0x0dd_ba11_cafe_f00d ^ tag.len() as u64);
    let mount = Mount::new(&opts, &m);
    let mut model = files(&m, &dirs);
    mount.unmount();
    drop(mount);
    let mut total = 0;
    for round in 0..kills() {
        let ops = make(round, &model);
        let mount = Mount::new(&opts, &m);
        let n = storm_until_killed(&m, &ops, &mut rng);
        std::mem::forget(mount);
        let mount = Mount::new(&opts, &m);
        let seen = files(&m, &dirs);
        let mut after_n = model.clone();
        ops[..n].iter().for_each(|op| op.model(&mut after_n));
        let mut after_more = after_n.clone();
        if let Some(op) = ops.get(n) {
            op.model(&mut after_more);
        }
        // A create in flight is two calls (open with O_CREAT, then write): killed
        // between them, it leaves the file made and still empty, as on any filesystem.
        let mut after_made = after_n.clone();
        if let Some(Op::Create(p, _)) = ops.get(n) {
            Op::Create(p.clone(), String::new()).model(&mut after_made);
        }
        if seen != after_n && seen != after_more && seen != after_made {
            let diff = |a: &BTreeMap<PathBuf, (u32, String)>| {
                let mut d: Vec<String> = Vec::new();
                for (p, v) in &seen {
                    if a.get(p) != Some(v) {
                        d.push(format!("{p:?}: seen {v:?}, model {:?}", a.get(p)));
                    }
                }
                for p in a.keys().filter(|p| !seen.contains_key(*p)) {
                    d.push(format!("{p:?}: not seen, model {:?}", a[p]));
                }
                d.join("; ")
            };
            panic!(
                "{tag} round {round}: after {n} completed operations (next: {:?}) the tree \
                 is neither the model with them nor with the one in flight:\n  with them: \
                 {}\n  with one more: {}",
                ops.get(n).map(|o| o.describe()),
                diff(&after_n),
                diff(&after_more)
            );
        }
        model = seen;
        total += n;
        // After every kill: `stratafs check` finds nothing, the kernel reads the same.
        let view = tree_view(&m);
        mount.unmount();
        drop(mount);
        upper_is_sound(&t, &l, &u, &w, &view);
    }
    eprintln!("{tag}: {total} operations completed over {} kills", kills());
}

#[test]
fn a_killed_metadata_copy_up_storm_loses_nothing_completed() {
    storm("crash-meta", |round, _| {
        (0..300)
            .map(|i| {
                let d = if (i + round) % 2 == 0 { "a" } else { "b" };
                let mode = [0o600, 0o640, 0o755, 0o700][(i + round) % 4];
                Op::Chmod(PathBuf::from(format!("{d}/f{i}")), mode)
            })
            .collect()
    });
}

#[test]
fn a_killed_namespace_storm_loses_nothing_completed() {
    storm("crash-names", |round, model| {
        let names: Vec<&PathBuf> = model.keys().collect();
        let mut ops = Vec::new();
        for i in 0..200 {
            // (creates land in a/, renames move them to b/)
            let d = if i % 4 == 0 { "a" } else { "b" };
            match i % 4 {
                0 => ops.push(Op::Create(
                    PathBuf::from(format!("{d}/r{round}-n{i}")),
                    format!("round {round} op {i}"),
                )),
                1 => ops.push(Op::Rename(
                    PathBuf::from(format!("a/r{round}-n{}", i - 1)),
                    PathBuf::from(format!("{d}/r{round}-m{i}")),
                )),
                _ => {
                    // a name that is there before this round (lower or earlier rounds)
                    let p = names[(i * 7 + round * 13) % names.len()].clone();
                    if !ops.iter().any(|o| matches!(o, Op::Unlink(q) if *q == p)) {
                        ops.push(Op::Unlink(p));
                    }
                }
            }
        }
        ops
    });
}

/// An upper that runs out of space (a 16 MiB tmpfs): the copy-up of a 32 MiB lower
/// file fails with ENOSPC for the caller and leaves nothing of itself (the name shows
/// the lower file, the upper and work dir hold no part of the copy); creates that fill
/// the upper get ENOSPC; after deleting them the mount works on, and the upper is
/// sound (remount, `stratafs check`, kernel overlayfs).
#[test]
fn an_upper_out_of_space_gives_enospc_and_leaves_nothing_half_made() {
    assert_root();
    let t = TempDir::new("enospc");
    let (l, m, small) = (t.dir("l"), t.dir("m"), t.dir("small"));
    let data: Vec<u8> = (0..32usize << 20).map(|i| (i % 241) as u8).collect();
    fs::write(l.join("big"), &data).unwrap();
    write(&l.join("little"), "little");
    let fs_guard = OtherMount::new("tmpfs", "tmpfs", "size=16m,mode=0755", &small);
    let (u, w) = (small.join("u"), small.join("w"));
    fs::create_dir_all(&u).unwrap();
    fs::create_dir_all(&w).unwrap();
    let opts = layer_opts(&[&l], Some((&u, &w)));
    let mount = Mount::new(&opts, &m);

    let r = fs::OpenOptions::new().append(true).open(m.join("big"));
    assert_eq!(errno_of(r), libc::ENOSPC, "the copy-up that cannot fit");
    assert_eq!(
        fs::read(m.join("big")).unwrap(),
        data,
        "the lower file reads wrong"
    );
    assert!(
        !u.join("big").exists(),
        "a part of the copy is in the upper"
    );
    assert!(
        names(&w.join("work")).iter().all(|n| n.starts_with('#')),
        "work/: {:?}",
        names(&w.join("work"))
    );
    let used = |p: &Path| {
        let st = nix_statvfs(p);
        (st.0 - st.1) * st.2
    };
    assert!(
        used(&small) < 1 << 20,
        "the failed copy still takes {} bytes",
        used(&small)
    );

    let mut made = 0;
    let filled = loop {
        match fs::write(m.join(format!("fill{made}")), vec![7u8; 1 << 20]) {
            Ok(()) => made += 1,
            Err(e) => break e.raw_os_error(),
        }
        assert!(made < 64, "a 16 MiB upper took 64 MiB");
    };
    assert_eq!(filled, Some(libc::ENOSPC));
    for i in 0..=made {
        let _ = fs::remove_file(m.join(format!("fill{i}")));
    }
    // (the space comes back once the kernel forgot the removed files, which the
    // daemon holds until then)
    assert!(
        wait_for(10, || used(&small) < 1 << 20),
        "the removed files still take {} bytes",
        used(&small)
    );
    fs::set_permissions(m.join("little"), fs::Permissions::from_mode(0o600)).unwrap();
    write(&m.join("after"), "space again");
    let view = tree_view(&m);
    remount_and_check(mount, &opts, &m, &t, (&l, &u, &w), &view);
    drop(fs_guard);
}

/// (total blocks, free blocks, block size) of the filesystem at `p`.
fn nix_statvfs(p: &Path) -> (u64, u64, u64) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    (st.f_blocks, st.f_bfree, st.f_frsize)
}

/// The upper's filesystem shuts down under the mount (`EXT4_IOC_SHUTDOWN` on a loop
/// ext4, as a dying disk does): requests that need the upper fail with an errno and
/// never hang, the daemon lives on and still serves the lower, and it exits when
/// unmounted. After the filesystem is mounted again (journal replayed), the changes
/// synced before the shutdown are there, and the upper is sound (a remount,
/// `stratafs check`, kernel overlayfs).
#[test]
fn an_upper_that_shuts_down_gives_errors_and_recovers() {
    assert_root();
    for tool in ["mkfs.ext4", "losetup"] {
        assert!(
            std::process::Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success()),
            "{tool} is needed (e2fsprogs, util-linux: scripts/setup.sh installs them)"
        );
    }
    let t = TempDir::new("shutdown");
    let (l, m, disk) = (t.dir("l"), t.dir("m"), t.dir("disk"));
    for i in 0..20 {
        write(&l.join(format!("d/f{i}")), &format!("lower {i}"));
    }
    let img = t.join("upper.img");
    fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
    let mkfs = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        mkfs.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&mkfs.stderr)
    );
    let ext4 = OtherMount::new("ext4", &img.display().to_string(), "loop", &disk);
    let (u, w) = (disk.join("u"), disk.join("w"));
    fs::create_dir_all(&u).unwrap();
    fs::create_dir_all(&w).unwrap();
    let opts = layer_opts(&[&l], Some((&u, &w)));
    let mount = Mount::new(&opts, &m);
    for i in 0..10 {
        fs::set_permissions(m.join(format!("d/f{i}")), fs::Permissions::from_mode(0o600)).unwrap();
        write(&m.join(format!("new{i}")), &format!("new {i}"));
    }
    fs::remove_file(m.join("d/f10")).unwrap();
    let synced = tree_view(&m);
    unsafe { libc::sync() };

    // Shut the upper's filesystem down (no log flush: as a disk that stops).
    let dfd = fs::File::open(&disk).unwrap();
    const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587d;
    let flag: u32 = 2; // EXT4_GOING_FLAGS_NOLOGFLUSH
    let r = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&dfd),
            EXT4_IOC_SHUTDOWN,
            &flag,
        )
    };
    assert_eq!(
        r,
        0,
        "EXT4_IOC_SHUTDOWN: {}",
        std::io::Error::last_os_error()
    );
    drop(dfd);

    // Changes fail with an errno, in time; the lower is still served.
    let (tx, rx) = std::sync::mpsc::channel();
    let m2 = m.clone();
    std::thread::spawn(move || {
        let create = fs::write(m2.join("after"), "x").map_err(|e| e.raw_os_error());
        let chmod = fs::set_permissions(m2.join("d/f15"), fs::Permissions::from_mode(0o600))
            .map_err(|e| e.raw_os_error());
        let unlink = fs::remove_file(m2.join("new1")).map_err(|e| e.raw_os_error());
        let lower = fs::read_to_string(m2.join("d/f19"));
        let _ = tx.send((create, chmod, unlink, lower.ok()));
    });
    let (create, chmod, unlink, lower) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("requests hung on the shut-down upper");
    for (what, r) in [("create", create), ("chmod", chmod), ("unlink", unlink)] {
        assert!(r.is_err(), "{what} succeeded on a shut-down upper");
    }
    assert_eq!(
        lower.as_deref(),
        Some("lower 19"),
        "the lower is not served"
    );
    assert_eq!(daemon_pids(&m).len(), 1, "the daemon died");
    mount.unmount();
    drop(mount);

    // The filesystem back (its journal replayed): what was synced is there.
    drop(ext4);
    assert!(
        wait_for(10, || !is_mounted(&disk)),
        "the loop ext4 is still mounted"
    );
    let ext4 = OtherMount::new("ext4", &img.display().to_string(), "loop", &disk);
    let again = Mount::new(&opts, &m);
    let view = tree_view(&m);
    assert_eq!(
        view, synced,
        "the synced changes are not what the remount shows"
    );
    again.unmount();
    drop(again);
    upper_is_sound(&t, &l, &u, &w, &view);
    drop(ext4);
}
