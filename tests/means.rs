//! The kernel-side means of speed, each turned off for diagnosis
//! (`STRATAFS_DISABLE`): the mount behaves the same with all of them off.

mod common;
use common::*;

use std::fs;
use std::io::ErrorKind;

/// Missing names, creates, a listing before and after a change, a symlink, and a
/// 3 MiB file written and read back, on a mount with `env`.
fn exercise(env: &[(&str, &str)]) {
    let t = TempDir::new("means");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    write(&l.join("low"), "lower");
    fs::create_dir(l.join("d")).unwrap();
    write(&l.join("d/a"), "a");
    let opts = layer_opts(&[&l], Some((&u, &w)));
    let m = Mount::with_env(&opts, &t.dir("m"), env);

    // A name looked up while missing shows up once it is made.
    let missing = fs::symlink_metadata(m.p("new"));
    assert_eq!(missing.unwrap_err().kind(), ErrorKind::NotFound);
    write(&m.p("new"), "made");
    assert_eq!(fs::read_to_string(m.p("new")).unwrap(), "made");

    // A listing read before a change shows the change after it.
    let names = |p: &str| {
        let mut v: Vec<String> = fs::read_dir(m.p(p))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("d"), ["a"]);
    write(&m.p("d/b"), "b");
    fs::remove_file(m.p("d/a")).unwrap();
    assert_eq!(names("d"), ["b"]);

    std::os::unix::fs::symlink("low", m.p("link")).unwrap();
    assert_eq!(fs::read_link(m.p("link")).unwrap().to_str(), Some("low"));
    assert_eq!(fs::read_to_string(m.p("link")).unwrap(), "lower");

    let data: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    fs::write(m.p("big"), &data).unwrap();
    assert!(
        fs::read(m.p("big")).unwrap() == data,
        "big read back differs"
    );
    // A lower file written through the mount: copied up, old data kept before it.
    append(&m.p("low"), "+");
    assert_eq!(fs::read_to_string(m.p("low")).unwrap(), "lower+");
    assert_eq!(fs::read_to_string(u.join("low")).unwrap(), "lower+");
}

#[test]
fn every_mean_off_behaves_the_same() {
    assert_root();
    exercise(&[(
        "STRATAFS_DISABLE",
        "passthrough,negative,keep_cache,cache_dir,parallel_dirops,symlink_cache,big_writes,killpriv,readdirplus,prefill,prefetch",
    )]);
}

#[test]
fn every_mean_on_and_readdirplus() {
    assert_root();
    exercise(&[]);
    exercise(&[("STRATAFS_READDIRPLUS", "1")]);
}

/// Walks every directory of `root`: names, and for each entry the type and the
/// inode number a listing gives against what a stat gives (`stat_files`: stat
/// non-directories too, as a stat walk does; else only descend, as find does).
fn walk(root: &std::path::Path, stat_files: bool, out: &mut Vec<String>) {
    use std::os::unix::fs::{DirEntryExt, MetadataExt};
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(root).unwrap().map(|e| e.unwrap()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let ft = e.file_type().unwrap();
        let rel = e.path();
        if ft.is_dir() || stat_files {
            let md = fs::symlink_metadata(&rel).unwrap();
            assert_eq!(
                e.ino(),
                md.ino(),
                "{}: listed and stat inode numbers",
                rel.display()
            );
            assert_eq!(ft, md.file_type(), "{}", rel.display());
            out.push(format!("{} {}", rel.display(), md.len()));
        } else {
            out.push(format!("{} ?", rel.display()));
        }
        if ft.is_dir() {
            walk(&rel, stat_files, out);
        }
    }
}

/// Listings carry attributes where callers stat what they list (rdplus.rs): walks
/// that stat, walks that only descend, and the two by turns, over small directories
/// and ones too big for one reply, give the same names, sizes and inode numbers as
/// with READDIRPLUS off or always on.
/// Held by the tests here that drop the page cache and by those that look at what
/// it holds, which run on threads of one process: a drop in the middle of a check
/// of read-ahead pages would make it fail for nothing.
static PAGE_CACHE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `PAGE_CACHE`, also after another test holding it failed.
fn page_cache() -> std::sync::MutexGuard<'static, ()> {
    PAGE_CACHE.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn listings_with_and_without_attributes_agree() {
    assert_root();
    let _cache = page_cache();
    let t = TempDir::new("rdplus");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    for d in 0..24 {
        let dir = l.join(format!("d{d:02}"));
        fs::create_dir(&dir).unwrap();
        // every fourth directory is too big for one reply
        let n = if d % 4 == 3 { 600 } else { 12 };
        for f in 0..n {
            write(
                &dir.join(format!("file-with-a-longish-name-{f:04}")),
                &"x".repeat(f % 7),
            );
        }
        fs::create_dir(dir.join("sub")).unwrap();
        write(&dir.join("sub/leaf"), "leaf");
    }
    fs::create_dir(u.join("d05")).unwrap();
    write(&u.join("d05/upper-only"), "up");
    whiteout(&u.join("d05/file-with-a-longish-name-0003"));
    let opts = layer_opts(&[&l], Some((&u, &w)));
    let mut want: Option<Vec<String>> = None;
    for env in [
        [("STRATAFS_DISABLE", "readdirplus")],
        [("STRATAFS_READDIRPLUS", "1")],
        [("STRATAFS_UNUSED", "")],
    ] {
        let m = Mount::with_env(&opts, &t.dir("m"), &env);
        // stat walk, find-like walk, stat walk again: the learning mount switches
        let mut full = Vec::new();
        walk(&m.p(""), true, &mut full);
        drop_caches();
        let mut names = Vec::new();
        walk(&m.p(""), false, &mut names);
        drop_caches();
        let mut again = Vec::new();
        walk(&m.p(""), true, &mut again);
        assert_eq!(full, again, "{env:?}");
        assert_eq!(full.len(), names.len(), "{env:?}");
        match &want {
            None => want = Some(full),
            Some(w) => assert_eq!(&full, w, "{env:?}"),
        }
        m.unmount();
    }
    let want = want.unwrap();
    assert!(want.iter().any(|e| e.ends_with("/d05/upper-only 2")));
    assert!(!want
        .iter()
        .any(|e| e.contains("/d05/file-with-a-longish-name-0003 ")));
    assert!(want
        .iter()
        .any(|e| e.ends_with("/d07/file-with-a-longish-name-0599 4")));
}

/// Has the daemon `pid` a file open at `path`?
fn open_in_daemon(pid: u32, path: &std::path::Path) -> bool {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| fs::read_link(e.unwrap().path()).ok())
        .any(|l| l == path)
}

/// Bytes `a` and `b` and the length of `path` as a shared read-only mapping shows
/// them ("A B LEN\n").
fn mapped(path: &std::path::Path, a: usize, b: usize) -> String {
    let script = format!(
        "import mmap,sys\nf=open(sys.argv[1],'rb')\nm=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ)\nprint(m[{a}], m[{b}], len(m))"
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The daemon's fds that point at deleted files.
fn deleted_fds(pid: u32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| fs::read_link(e.unwrap().path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p.ends_with("(deleted)"))
        .collect()
}

/// Released passthrough files are kept open for the next open with the same flags
/// (file.rs): appends through open-write-close land in order, other flags and
/// truncating opens get files of their own, and a file that loses its last name
/// (unlink, rename over it) is closed once the kernel forgets it, so its space goes
/// back.
#[test]
fn kept_files_never_outlive_their_names() {
    assert_root();
    let t = TempDir::new("kept");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    let opts = layer_opts(&[&l], Some((&u, &w)));
    let m = Mount::new(&opts, &t.dir("m"));
    let pid = daemon_pids(&t.dir("m"))[0];
    for name in ["a", "b", "c"] {
        write(&m.p(name), "");
        for i in 0..50 {
            append(&m.p(name), &format!("{i}\n"));
        }
    }
    let want: String = (0..50).map(|i| format!("{i}\n")).collect();
    for name in ["a", "b", "c"] {
        assert_eq!(fs::read_to_string(m.p(name)).unwrap(), want, "{name}");
        assert_eq!(fs::read_to_string(u.join(name)).unwrap(), want, "{name}");
    }
    // The released files are still open in the daemon, kept.
    assert!(open_in_daemon(pid, &u.join("a")) && open_in_daemon(pid, &u.join("c")));
    // A truncating open truncates, though a file like it is kept.
    fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.p("c"))
        .unwrap();
    append(&m.p("c"), "x\n");
    assert_eq!(fs::read_to_string(m.p("c")).unwrap(), "x\n");
    // Gone names leave no deleted file open in the daemon once the kernel forgot
    // them (until then the daemon pins the object, as kernel overlayfs holds the real
    // inode while its own lives: inode.rs).
    fs::remove_file(m.p("a")).unwrap();
    fs::rename(m.p("c"), m.p("b")).unwrap();
    assert!(
        wait_for(5, || deleted_fds(pid).is_empty()),
        "{:?}",
        deleted_fds(pid)
    );
    assert_eq!(fs::read_to_string(m.p("b")).unwrap(), "x\n");
    // Unlinked while open: closed with its last handle.
    let f = fs::OpenOptions::new().append(true).open(m.p("b")).unwrap();
    fs::remove_file(m.p("b")).unwrap();
    drop(f);
    assert!(
        wait_for(5, || deleted_fds(pid).is_empty()),
        "{:?}",
        deleted_fds(pid)
    );
}

/// On a read-only mount (no copy-up can come), big lower files are passthrough: read
/// and mapped right, and kept open by the daemon after their release like any
/// passthrough file; small ones stay daemon-served and are not.
#[test]
fn big_lower_files_of_a_read_only_mount_are_passthrough() {
    use std::os::unix::fs::FileExt;
    assert_root();
    let t = TempDir::new("ro-passthrough");
    let (l1, l2) = (t.dir("l1"), t.dir("l2"));
    let big: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
    fs::write(l1.join("big"), &big).unwrap();
    write(&l2.join("small"), "small\n");
    let m = Mount::layers(&[&l1, &l2], None, &t.dir("m"));
    let pid = daemon_pids(&t.dir("m"))[0];
    let f = fs::File::open(m.p("big")).unwrap();
    for off in [0usize, 4096 * 77, (3 << 20) - 4096, 12345] {
        let mut buf = vec![0u8; 4096];
        let n = f.read_at(&mut buf, off as u64).unwrap();
        assert_eq!(&buf[..n], &big[off..off + n], "at {off}");
    }
    drop(f);
    assert_eq!(fs::read(m.p("big")).unwrap(), big);
    assert_eq!(fs::read_to_string(m.p("small")).unwrap(), "small\n");
    assert!(
        open_in_daemon(pid, &l1.join("big")),
        "big is not kept (not passthrough?)"
    );
    assert!(
        wait_for(5, || !open_in_daemon(pid, &l2.join("small"))),
        "small is still open in the daemon"
    );
    // mmap goes to the backing file too.
    let want = format!("{} 0 {}\n", 3_000_000 % 251, 3 << 20);
    assert_eq!(mapped(&m.p("big"), 3_000_000, 0), want);
}

/// Small lower files have their pages handed to the kernel at their first open
/// (prefill.rs): what reads and maps show is the file, at every size around page and
/// limit boundaries, also after a copy-up wrote to it (through passthrough, or
/// through the daemon and the page cache).
#[test]
fn small_lower_files_read_right_when_their_pages_were_handed_over() {
    assert_root();
    for env in [vec![], vec![("STRATAFS_NO_PASSTHROUGH", "1")]] {
        let t = TempDir::new("prefill");
        let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
        let sizes = [0usize, 1, 4095, 4096, 4097, 65536, 65537, 100_000];
        let content = |n: usize| -> Vec<u8> { (0..n).map(|i| (i % 253) as u8 + 1).collect() };
        for n in sizes {
            fs::write(l.join(format!("f{n}")), content(n)).unwrap();
        }
        let opts = layer_opts(&[&l], Some((&u, &w)));
        let m = Mount::with_env(&opts, &t.dir("m"), &env);
        for n in sizes {
            let p = m.p(&format!("f{n}"));
            for _ in 0..2 {
                assert!(fs::read(&p).unwrap() == content(n), "f{n} {env:?}");
            }
            assert_eq!(fs::metadata(&p).unwrap().len(), n as u64);
        }
        let c = content(4097);
        assert_eq!(
            mapped(&m.p("f4097"), 4096, 4095),
            format!("{} {} 4097\n", c[4096], c[4095])
        );
        // Written after its pages were handed over: copied up, and read back new.
        let mut want = content(4097);
        want.extend_from_slice(b"tail");
        append(&m.p("f4097"), "tail");
        assert!(fs::read(m.p("f4097")).unwrap() == want, "{env:?}");
        assert!(fs::read(u.join("f4097")).unwrap() == want, "{env:?}");
        fs::write(m.p("f1"), b"x").unwrap();
        assert_eq!(fs::read(m.p("f1")).unwrap(), b"x");
    }
}

/// Are the first pages of `path` (a file of the test's own) in the page cache?
fn resident(path: &std::path::Path) -> bool {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        let mut vec = vec![0u8; len.div_ceil(4096)];
        assert_eq!(libc::mincore(p, len, vec.as_mut_ptr()), 0);
        libc::munmap(p, len);
        vec.iter().all(|b| b & 1 == 1)
    }
}

/// Drops the pages of `path` (a file of the test's own) from the page cache.
fn evict(path: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(path).unwrap();
    f.sync_all().unwrap();
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// The files of a listing are read ahead into their real files' page cache once
/// callers were seen to open the files they list, to read them or to write them (a
/// copy-up reads the lower file) (prefetch.rs), and only then: a walker that stats
/// what it lists reads nothing ahead, and no file of a directory nobody listed is
/// read.
#[test]
fn listed_files_are_read_ahead_only_for_callers_that_open_them() {
    assert_root();
    let _cache = page_cache();
    let t = TempDir::new("prefetch");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    let dirs = ["a", "b", "c", "d", "e"];
    for d in dirs {
        fs::create_dir(l.join(d)).unwrap();
        for i in 0..8 {
            fs::write(l.join(format!("{d}/f{i}")), vec![b'x' + i as u8; 9000]).unwrap();
        }
    }
    let opts = layer_opts(&[&l], Some((&u, &w)));
    let m = Mount::with_env(&opts, &t.dir("m"), &[("STRATAFS_READDIRPLUS", "1")]);
    let files = |d: &str| (0..8).map(|i| format!("{d}/f{i}")).collect::<Vec<_>>();
    for d in dirs {
        files(d).iter().for_each(|f| evict(&l.join(f)));
    }
    let in_cache = |d: &str| {
        files(d)
            .into_iter()
            .filter(|f| resident(&l.join(f)))
            .count()
    };
    let stat_all = |d: &str| {
        for e in fs::read_dir(m.p(d)).unwrap() {
            e.unwrap().metadata().unwrap();
        }
    };

    // A stat walk reads no file.
    stat_all("a");
    stat_all("b");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        (in_cache("a"), in_cache("b")),
        (0, 0),
        "a stat walk read files"
    );

    // Reading the files of a listing, then listing another directory: its files
    // are read ahead; those of a directory not listed are not.
    for f in files("a") {
        assert_eq!(fs::read(m.p(&f)).unwrap().len(), 9000);
    }
    stat_all("c");
    assert!(
        wait_for(5, || in_cache("c") == 8),
        "c's files were not read ahead: {} of 8",
        in_cache("c")
    );

    // Copying up the files of a listing (no read), then listing another directory.
    for f in files("c") {
        append(&m.p(&f), "+");
    }
    stat_all("e");
    assert!(
        wait_for(5, || in_cache("e") == 8),
        "e's files were not read ahead: {} of 8",
        in_cache("e")
    );
    assert_eq!(
        in_cache("d"),
        0,
        "files of a directory nobody listed were read"
    );
    for f in files("c") {
        let mut want = fs::read(l.join(&f)).unwrap();
        want.push(b'+');
        assert!(fs::read(m.p(&f)).unwrap() == want, "{f}");
    }
}

/// When was `path` (a directory of the test's own) last read, in seconds?
fn atime(path: &std::path::Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().atime()
}

/// A walker that descends has the subdirectories of each listing read ahead
/// (prefetch.rs): a lower directory is read (its atime moves, on this relatime
/// fs) before the walker lists it. A directory listed without its parent, as a
/// single `ls` does, has nothing read ahead.
#[test]
fn subdirectories_are_read_ahead_for_a_walker_that_descends() {
    assert_root();
    let _cache = page_cache();
    let t = TempDir::new("walkahead");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    for d in ["top/mid/x", "top/mid/y", "lone/deep/z"] {
        fs::create_dir_all(l.join(d)).unwrap();
        write(&l.join(format!("{d}/f")), "f");
    }
    let long_ago = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    for d in ["top/mid/x", "top/mid/y", "lone/deep/z"] {
        let f = fs::File::open(l.join(d)).unwrap();
        f.set_times(fs::FileTimes::new().set_accessed(long_ago))
            .unwrap();
        assert_eq!(atime(&l.join(d)), 1_000_000_000);
    }
    let opts = layer_opts(&[&l], Some((&u, &w)));
    let m = Mount::new(&opts, &t.dir("m"));
    let list = |p: &str| fs::read_dir(m.p(p)).unwrap().count();

    // A single directory listed, its parent never: nothing read ahead.
    assert_eq!(list("lone/deep"), 1);
    // A walk from the root down: mid's subdirectories are read before anyone lists them.
    assert_eq!(list(""), 2);
    assert_eq!(list("top"), 1);
    assert_eq!(list("top/mid"), 2);
    let read = |d: &str| atime(&l.join(d)) != 1_000_000_000;
    assert!(
        wait_for(5, || read("top/mid/x") && read("top/mid/y")),
        "the walker's next directories were not read ahead"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !read("lone/deep/z"),
        "a single listing had its subdirectories read"
    );
}

/// LOOKUPs the daemon has answered on the mount at `mnt` (its statistics).
fn lookups(mnt: &std::path::Path, rt: &std::path::Path) -> u64 {
    let out = stats_output(mnt, rt, &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    s["requests"]["lookup"]["count"].as_u64().unwrap_or(0)
}

/// A mount without an upper layer (podman's parent side of a build step's diff) has
/// every part of every listing carry attributes: a walk that lists each directory
/// whole before it stats the entries needs no LOOKUP. `readdirplus=auto` there, and
/// the default on a mount with an upper, learn instead: the parts after the first come
/// without attributes, and their entries are looked up.
#[test]
fn a_mount_without_upper_lists_with_attributes_throughout() {
    assert_root();
    let t = TempDir::new("rdplus-ro");
    let (l, u, w, rt) = (t.dir("l"), t.dir("u"), t.dir("w"), t.dir("rt"));
    for d in 0..3 {
        let dir = l.join(format!("d{d}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..400 {
            write(&dir.join(format!("a-file-with-a-long-name-{f:04}")), "x");
        }
    }
    let env = [("STRATAFS_RUNTIME_DIR", rt.to_str().unwrap())];
    let mut counts = Vec::new();
    for (opts, name) in [
        (layer_opts(&[&l], None), "no upper"),
        (
            layer_opts(&[&l], None) + ",readdirplus=auto",
            "no upper, auto",
        ),
        (layer_opts(&[&l], Some((&u, &w))), "upper"),
        (
            layer_opts(&[&l], Some((&u, &w))) + ",readdirplus=always",
            "upper, always",
        ),
    ] {
        let m = Mount::with_env(&opts, &t.dir("m"), &env);
        let mut seen = Vec::new();
        walk(&m.p(""), true, &mut seen);
        assert_eq!(seen.len(), 3 + 3 * 400, "{name}");
        counts.push((name, lookups(&m.mnt, &rt)));
        m.unmount();
    }
    assert!(counts[0].1 == 0 && counts[3].1 == 0, "{counts:?}");
    assert!(counts[1].1 >= 100 && counts[2].1 >= 100, "{counts:?}");
}
