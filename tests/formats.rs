//! The upper formats stratafs falls back to, on real mounts: `.wh.NAME` whiteouts when
//! forced (STRATAFS_WHITEOUT=aufs), `user.overlay.*` xattrs where `trusted.*` is
//! refused (a user namespace; kernel overlayfs with `userxattr` must read the result),
//! and the `.wh..wh..opq` marker where no xattrs are allowed at all (a ramfs upper).
//! Whatever format was written, a later mount without any forcing must read it.

mod common;
use common::*;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Every path below `dir` (not following symlinks), relative to it, sorted.
fn walk(dir: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                todo.push(p.clone());
            }
            out.push((p.strip_prefix(dir).unwrap().to_path_buf(), md));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn char_devices(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|(_, md)| md.file_type().is_char_device())
        .map(|(p, _)| p)
        .collect()
}

fn is_whiteout_dev(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|md| md.file_type().is_char_device() && md.rdev() == 0)
}

/// Asserts no name anywhere in the merged tree is an AUFS name.
fn assert_no_aufs_names(mnt: &Path) {
    for (p, _) in walk(mnt) {
        assert!(
            !p.file_name().unwrap().to_string_lossy().starts_with(".wh."),
            "readdir shows the AUFS name {}",
            p.display()
        );
    }
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn aufs_whiteouts_when_forced() {
    assert_root();
    let t = TempDir::new("fmt-aufs");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    write(&l.join("f"), "f");
    write(&l.join("D/a"), "a");
    write(&l.join("D/b"), "b");
    write(&l.join("keep"), "keep");
    let m_dir = t.dir("m");
    let opts = layer_opts(&[&l], Some((&u, &w)));

    let m = Mount::with_env(&opts, &m_dir, &[("STRATAFS_WHITEOUT", "aufs")]);
    fs::remove_file(m.p("f")).unwrap();
    fs::remove_dir_all(m.p("D")).unwrap();
    fs::create_dir(m.p("D")).unwrap();
    fs::write(m.p("D/new"), "").unwrap();

    // The upper holds `.wh.f`, a regular (empty) file, and no char device at all.
    let wh = fs::symlink_metadata(u.join(".wh.f")).expect("no .wh.f in the upper");
    assert!(
        wh.file_type().is_file(),
        ".wh.f is not a regular file: {wh:?}"
    );
    assert_eq!(wh.len(), 0, ".wh.f is not empty");
    assert!(
        fs::symlink_metadata(u.join("f")).is_err(),
        "the upper still has f beside .wh.f"
    );
    assert_eq!(
        char_devices(&u),
        Vec::<PathBuf>::new(),
        "char devices in an upper forced to AUFS whiteouts"
    );
    // D was replaced by a new (opaque) directory: no `.wh.D` is left beside it, and
    // the old lower entries need no whiteouts inside it.
    assert!(u.join("D").is_dir());
    assert!(
        fs::symlink_metadata(u.join(".wh.D")).is_err(),
        ".wh.D stayed beside the new upper D"
    );
    assert_eq!(names(&u.join("D")), vec!["new"]);
    assert_eq!(
        get_xattr(&u.join("D"), "trusted.overlay.opaque").as_deref(),
        Ok(&b"y"[..]),
        "the new D is not marked opaque"
    );

    let check = |m: &Mount| {
        assert!(!m.p("f").exists(), "f shows through its .wh.f");
        assert_eq!(errno_of(fs::symlink_metadata(m.p("f"))), libc::ENOENT);
        assert_eq!(names(&m.p("D")), vec!["new"]);
        assert!(!m.p("D/a").exists() && !m.p("D/b").exists());
        assert_eq!(names(&m.p("")), vec!["D", "keep"]);
        // The whiteout itself is not reachable by name either.
        assert_eq!(errno_of(fs::symlink_metadata(m.p(".wh.f"))), libc::ENOENT);
        assert_no_aufs_names(&m.p(""));
    };
    check(&m);
    drop_caches();
    check(&m);
    m.unmount();
    drop(m);

    // Remount without the env: the char-format mount must read `.wh.` files too.
    let m = Mount::new(&opts, &m_dir);
    check(&m);
    m.unmount();
    drop(m);
    assert_eq!(names(&l.join("D")), vec!["a", "b"]);
    assert!(l.join("f").exists());
}

/// The script run inside `unshare -Urm`; paths come in through the environment.
/// Each result is printed as one `key=value` line.
const USERNS_SCRIPT: &str = r#"
set -u
cleanup() {
    mountpoint -q "$m" && umount -l "$m"
    mountpoint -q "$k" && umount -l "$k"
}
trap cleanup EXIT
lsl() { ls -A "$1" 2>&1 | tr '\n' ',' ; }
echo "uid=$(id -u)"

"$BIN" -o "lowerdir=$l,upperdir=$u,workdir=$w" "$m" 2>&1; echo "mount1=$?"
mountpoint -q "$m" && echo mounted1=yes || echo mounted1=no
rm -rf "$m/D" && mkdir "$m/D" && echo x > "$m/D/new" && rm "$m/f"; echo "ops=$?"
echo "ls1_D=$(lsl "$m/D")"
echo "ls1_root=$(lsl "$m")"
[ -e "$m/f" ] && echo f1=present || echo f1=absent
echo "upper_f=$(stat -c '%F|%t|%T' "$u/f" 2>&1)"
umount "$m"; echo "umount1=$?"

"$BIN" -o "lowerdir=$l,upperdir=$u,workdir=$w" "$m" 2>&1; echo "mount2=$?"
mountpoint -q "$m" && echo mounted2=yes || echo mounted2=no
echo "ls2_D=$(lsl "$m/D")"
echo "ls2_root=$(lsl "$m")"
[ -e "$m/f" ] && echo f2=present || echo f2=absent
echo "cat2=$(cat "$m/D/new" 2>&1)"
umount "$m"; echo "umount2=$?"

mount -t overlay overlay -o "lowerdir=$l,upperdir=$u,workdir=$w2,userxattr" "$k" 2>&1
echo "kmount=$?"
echo "kls_D=$(lsl "$k/D")"
echo "kls_root=$(lsl "$k")"
[ -e "$k/f" ] && echo kf=present || echo kf=absent
echo "kcat=$(cat "$k/D/new" 2>&1)"
umount "$k"; echo "kumount=$?"
echo done=yes
"#;

#[test]
fn user_xattrs_in_a_user_namespace() {
    assert_root();
    if !which("unshare") || !which("mountpoint") {
        eprintln!("SKIPPED: unshare or mountpoint (util-linux) is missing");
        return;
    }
    let t = TempDir::new("fmt-userns");
    let (l, u, w, w2) = (t.dir("l"), t.dir("u"), t.dir("w"), t.dir("w2"));
    write(&l.join("f"), "f");
    write(&l.join("D/a"), "a");
    write(&l.join("D/b"), "b");
    write(&l.join("keep"), "keep");
    let (m, k) = (t.dir("m"), t.dir("k"));

    let child = Command::new("unshare")
        .args([
            "-Urm",
            "--propagation",
            "private",
            "sh",
            "-c",
            USERNS_SCRIPT,
        ])
        .env("BIN", BIN)
        .env("l", &l)
        .env("u", &u)
        .env("w", &w)
        .env("w2", &w2)
        .env("m", &m)
        .env("k", &k)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn unshare");
    let out = wait_output(child, 120);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // A daemon is the only thing that keeps the namespace (and its mount) alive: it
    // must be gone once its mount is. Stop any we started that lingers, by pid.
    let gone = wait_for(20, || daemon_pids(&m).is_empty());
    if !gone {
        for pid in daemon_pids(&m) {
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }
    let ctx = format!("script stdout:\n{stdout}\nscript stderr:\n{stderr}");
    eprintln!("{ctx}");
    assert!(
        gone,
        "a stratafs daemon outlived the namespace's unmount\n{ctx}"
    );
    let r: BTreeMap<&str, &str> = stdout.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |key: &str| *r.get(key).unwrap_or(&"<missing>");
    let expect = |key: &str, want: &str| {
        assert_eq!(get(key), want, "{key}\n{ctx}");
    };

    expect("uid", "0");
    expect("mount1", "0");
    expect("mounted1", "yes");
    expect("ops", "0");
    expect("ls1_D", "new,");
    expect("ls1_root", "D,keep,");
    expect("f1", "absent");
    // mknod of a char 0/0 whiteout is allowed in a user namespace (Linux 5.8+).
    expect("upper_f", "character special file|0|0");
    expect("umount1", "0");
    expect("mount2", "0");
    expect("mounted2", "yes");
    expect("ls2_D", "new,");
    expect("ls2_root", "D,keep,");
    expect("f2", "absent");
    expect("cat2", "x");
    expect("umount2", "0");
    // Kernel overlayfs with `userxattr` reads what stratafs wrote.
    expect("kmount", "0");
    expect("kls_D", "new,");
    expect("kls_root", "D,keep,");
    expect("kf", "absent");
    expect("kcat", "x");
    expect("kumount", "0");
    expect("done", "yes");
    assert!(out.status.success(), "script failed\n{ctx}");

    // From the host: the opaque mark is in user.*, never trusted.* (refused in there).
    assert_eq!(
        get_xattr(&u.join("D"), "trusted.overlay.opaque"),
        Err(libc::ENODATA),
        "trusted.overlay.opaque on the upper D\n{ctx}"
    );
    assert_eq!(
        get_xattr(&u.join("D"), "user.overlay.opaque").as_deref(),
        Ok(&b"y"[..]),
        "user.overlay.opaque=y missing on the upper D\n{ctx}"
    );
    assert!(
        !list_xattr(&u.join("D"))
            .iter()
            .chain(list_xattr(&u).iter())
            .any(|n| n.starts_with("trusted.")),
        "trusted.* xattrs in the upper written from a user namespace\n{ctx}"
    );
    assert!(is_whiteout_dev(&u.join("f")));
    assert!(
        fs::symlink_metadata(u.join(".wh.f")).is_err()
            && fs::symlink_metadata(u.join("D/.wh..wh..opq")).is_err(),
        "AUFS objects in an upper that allows char whiteouts and user xattrs"
    );
    assert!(!is_mounted(&m) && !is_mounted(&k));

    // And a host mount (trusted.* allowed there) still reads the user.* format.
    let mh = Mount::new(&layer_opts(&[&l], Some((&u, &w))), &m);
    assert_eq!(names(&mh.p("D")), vec!["new"]);
    assert_eq!(names(&mh.p("")), vec!["D", "keep"]);
    mh.unmount();
}

/// A ramfs upper refuses every xattr (trusted.* and user.* alike) but allows mknod:
/// char whiteouts, and a `.wh..wh..opq` file marks an opaque directory.
#[test]
fn opaque_marker_when_no_xattrs_allowed() {
    assert_root();
    let t = TempDir::new("fmt-noxattr");
    let l = t.dir("l");
    write(&l.join("f"), "f");
    write(&l.join("D/a"), "a");
    write(&l.join("D/b"), "b");
    write(&l.join("E/c"), "c");
    write(&l.join("keep"), "keep");
    let r = t.dir("r");
    let (src, tgt, fst) = (
        CString::new("ramfs").unwrap(),
        CString::new(r.as_os_str().to_str().unwrap()).unwrap(),
        CString::new("ramfs").unwrap(),
    );
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fst.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        eprintln!(
            "SKIPPED: cannot mount a ramfs: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    // TempDir's drop unmounts the ramfs (and the overlay on m) before removing.
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            lazy_unmount(&self.0);
        }
    }
    let _ramfs = Unmount(r.clone());
    let (u, w) = (r.join("u"), r.join("w"));
    fs::create_dir(&u).unwrap();
    fs::create_dir(&w).unwrap();
    // Make sure this really is an upper without xattrs.
    let probe = r.join("probe");
    fs::create_dir(&probe).unwrap();
    let refused = |name: &str| {
        let c = CString::new(probe.as_os_str().to_str().unwrap()).unwrap();
        let n = CString::new(name).unwrap();
        unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), b"y".as_ptr().cast(), 1, 0) != 0 }
    };
    assert!(
        refused("trusted.overlay.opaque") && refused("user.overlay.opaque"),
        "ramfs accepts xattrs here: the test premise is wrong"
    );
    fs::remove_dir(&probe).unwrap();

    let m_dir = t.dir("m");
    let opts = layer_opts(&[&l], Some((&u, &w)));
    let m = Mount::new(&opts, &m_dir);
    fs::remove_file(m.p("f")).unwrap();
    fs::remove_dir_all(m.p("D")).unwrap();
    fs::create_dir(m.p("D")).unwrap();
    fs::write(m.p("D/new"), "new").unwrap();
    // A plain copy-up (no xattr for its origin or the parent's impure mark) works.
    fs::write(m.p("E/c"), "c2").unwrap();

    assert!(
        is_whiteout_dev(&u.join("f")),
        "f is no char whiteout in the upper"
    );
    let marker = u.join("D/.wh..wh..opq");
    assert!(
        fs::symlink_metadata(&marker).is_ok_and(|md| md.file_type().is_file()),
        "no .wh..wh..opq marker in the new upper D: {:?}",
        names(&u.join("D"))
    );
    assert_eq!(names(&u.join("D")), vec![".wh..wh..opq", "new"]);
    assert!(
        fs::symlink_metadata(u.join("E/.wh..wh..opq")).is_err(),
        "a copied-up (merged) dir was marked opaque"
    );

    let check = |m: &Mount| {
        assert!(!m.p("f").exists());
        assert_eq!(names(&m.p("D")), vec!["new"]);
        assert!(!m.p("D/a").exists() && !m.p("D/b").exists());
        assert_eq!(
            errno_of(fs::symlink_metadata(m.p("D/.wh..wh..opq"))),
            libc::ENOENT
        );
        assert_eq!(fs::read_to_string(m.p("D/new")).unwrap(), "new");
        assert_eq!(names(&m.p("E")), vec!["c"]);
        assert_eq!(fs::read_to_string(m.p("E/c")).unwrap(), "c2");
        assert_eq!(names(&m.p("")), vec!["D", "E", "keep"]);
        assert_no_aufs_names(&m.p(""));
    };
    check(&m);
    drop_caches();
    check(&m);
    m.unmount();
    drop(m);
    let m = Mount::new(&opts, &m_dir);
    check(&m);
    // rmdir of the now-empty merged view works although the marker is inside.
    fs::remove_file(m.p("D/new")).unwrap();
    fs::remove_dir(m.p("D")).unwrap();
    assert!(!m.p("D").exists());
    assert_eq!(names(&m.p("")), vec!["E", "keep"]);
    m.unmount();
    drop(m);
    assert_eq!(names(&l.join("D")), vec!["a", "b"]);
}

#[test]
fn whiteouts_are_links_to_one_shared_whiteout_that_the_kernel_reads() {
    assert_root();
    let t = TempDir::new("sharedwh");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    for n in ["a", "b", "c"] {
        write(&l.join(n), n);
    }
    fs::create_dir(l.join("d")).unwrap();
    write(&l.join("keep"), "k");
    let opts = layer_opts(&[&l], Some((&u, &w)));
    {
        let m = Mount::new(&opts, &t.dir("m"));
        fs::remove_file(m.p("a")).unwrap();
        fs::remove_file(m.p("b")).unwrap();
        fs::remove_dir(m.p("d")).unwrap();
        // An upper object replaced by a whiteout goes the same way.
        fs::write(m.p("c"), "changed").unwrap();
        fs::remove_file(m.p("c")).unwrap();
        assert_eq!(names(&m.mnt), ["keep"]);
    }
    let ino = |n: &str| fs::symlink_metadata(u.join(n)).unwrap().ino();
    for n in ["a", "b", "c", "d"] {
        assert!(is_whiteout_dev(&u.join(n)), "{n} is no whiteout");
    }
    assert!(
        ino("a") == ino("b") && ino("b") == ino("c") && ino("c") == ino("d"),
        "whiteouts are not one shared inode"
    );
    let k_dir = t.dir("k");
    let _k = OtherMount::kernel_overlay(&[&l], &u, &w, "", &k_dir);
    assert_eq!(names(&k_dir), ["keep"]);
}
