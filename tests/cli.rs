//! The fuse-overlayfs command line, and the refusals that must leave nothing mounted.

mod common;
use common::*;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;

fn s(x: &str) -> &OsStr {
    OsStr::new(x)
}

#[test]
fn version_and_help() {
    let out = run(&[s("--version")]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("stratafs: version "));
    let out = run(&[s("-V")]);
    assert!(out.status.success());
    let out = run(&[s("--help")]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("MOUNTPOINT") && help.contains("-o"), "{help}");
}

#[test]
fn option_forms_glued_repeated_quoted_escaped_and_unknown() {
    assert_root();
    let t = TempDir::new("cli");
    // a layer whose path holds a colon and a comma, reached through a symlink entry
    let odd = t.dir("odd:name,x");
    write(&odd.join("from-odd"), "odd");
    let top = t.dir("top");
    write(&top.join("from-top"), "top");
    std::os::unix::fs::symlink(&top, t.join("top-link")).unwrap();
    let (u, w, m) = (t.dir("u"), t.dir("w"), t.dir("m"));
    let lower = format!(
        "lowerdir={}:{}",
        t.join("top-link").display(),
        odd.display()
            .to_string()
            .replace(':', "\\:")
            .replace(',', "\\,")
    );
    // -o glued and repeated, empty items, a quoted value with commas, unknown items and flags
    let out = run(&[
        s("-x"),
        s(&format!("-o{lower},,")),
        s("-o"),
        s(&format!("upperdir={},workdir={},", u.display(), w.display())),
        s("-o"),
        s("context=\"system_u:object_r:container_file_t:s0:c1,c2\",volatile,nodev,bogus_opt=1,threaded=1"),
        s("my-source"),
        m.as_os_str(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("unknown argument ignored: bogus_opt=1"),
        "{err}"
    );
    assert!(err.contains("unknown argument ignored: -x"), "{err}");
    assert!(
        !err.contains("c2"),
        "the quoted context must stay one item: {err}"
    );
    assert!(is_mounted(&m));
    assert_eq!(fs::read_to_string(m.join("from-top")).unwrap(), "top");
    assert_eq!(fs::read_to_string(m.join("from-odd")).unwrap(), "odd");
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.contains(&m.display().to_string()))
        .unwrap()
        .to_string();
    assert!(
        line.contains("fuse.stratafs") && line.contains("my-source"),
        "{line}"
    );
    lazy_unmount(&m);
}

#[test]
fn podman_argv_shapes_mount() {
    assert_root();
    let t = TempDir::new("podman");
    let (l1, l2) = (t.dir("l/A"), t.dir("l/B"));
    write(&l1.join("a"), "a");
    write(&l2.join("b"), "b");
    let (u, w) = (t.dir("diff"), t.dir("work"));
    for (i, opts) in [
        format!("lowerdir={}:{},upperdir={},workdir={},,volatile", l1.display(), l2.display(), u.display(), w.display()),
        format!("lowerdir={}:{},upperdir={},workdir={},", l1.display(), l2.display(), u.display(), w.display()),
        format!("lowerdir={}:{}", l1.display(), l2.display()),
        format!(
            "lowerdir={},upperdir={},workdir={},,volatile,uidmapping=:0:1:1001:1001:0:1,gidmapping=:0:1:1001:1001:0:1",
            l1.display(),
            u.display(),
            w.display()
        ),
    ]
    .iter()
    .enumerate()
    {
        let m = t.dir(&format!("m{i}"));
        let out = run(&[s("-o"), s(opts), m.as_os_str()]);
        assert!(out.status.success(), "{opts}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stderr.is_empty(), "{opts}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(m.join("a").exists());
        Mount { mnt: m }.unmount();
    }
}

/// Runs a mount that must be refused: non-zero exit, one line on stderr, no mount.
fn refused(args: &[&OsStr], mnt: &Path, expect: &str) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} was not refused");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert!(err.contains(expect), "{err:?} lacks {expect:?}");
    assert!(!is_mounted(mnt), "{args:?} left a mount");
}

#[test]
fn refusals_are_one_line_and_mount_nothing() {
    assert_root();
    let t = TempDir::new("refuse");
    let (l, u, w, m) = (t.dir("l"), t.dir("u"), t.dir("w"), t.dir("m"));
    write(&t.join("file"), "x");
    let o = |x: String| x;
    let lo = format!("lowerdir={}", l.display());
    refused(
        &[
            s("-o"),
            s(&format!("upperdir={},workdir={}", u.display(), w.display())),
            m.as_os_str(),
        ],
        &m,
        "no lowerdir",
    );
    refused(
        &[
            s("-o"),
            s(&o(format!("lowerdir={}", t.join("missing").display()))),
            m.as_os_str(),
        ],
        &m,
        "does not exist",
    );
    refused(
        &[
            s("-o"),
            s(&format!(
                "lowerdir={}:{}",
                l.display(),
                t.join("file").display()
            )),
            m.as_os_str(),
        ],
        &m,
        "not a directory",
    );
    refused(
        &[
            s("-o"),
            s(&format!("{lo},upperdir={}", u.display())),
            m.as_os_str(),
        ],
        &m,
        "workdir",
    );
    refused(
        &[
            s("-o"),
            s(&format!(
                "{lo},upperdir={},workdir={}",
                t.join("nope").display(),
                w.display()
            )),
            m.as_os_str(),
        ],
        &m,
        "does not exist",
    );
    refused(
        &[s("-o"), s(&lo), t.join("no-mnt").as_os_str()],
        &t.join("no-mnt"),
        "does not exist",
    );
    refused(&[s("-o"), s(&lo)], &m, "mountpoint");
    // workdir on another filesystem than upperdir: /dev/shm is a tmpfs
    let shm = Path::new("/dev/shm").join(format!("stratafs-work-{}", std::process::id()));
    fs::create_dir_all(&shm).unwrap();
    refused(
        &[
            s("-o"),
            s(&format!(
                "{lo},upperdir={},workdir={}",
                u.display(),
                shm.display()
            )),
            m.as_os_str(),
        ],
        &m,
        "same filesystem",
    );
    fs::remove_dir(&shm).unwrap();
}

#[test]
fn unopenable_dev_fuse_is_refused() {
    assert_root();
    // A private mount namespace where /dev/fuse is an empty file on a tmpfs.
    if !Path::new("/usr/bin/unshare").exists() {
        panic!("unshare (util-linux) is needed");
    }
    let t = TempDir::new("devfuse");
    let (l, m) = (t.dir("l"), t.dir("m"));
    let script = format!(
        "mount -t tmpfs none /dev && exec {} -o lowerdir={} {}",
        BIN,
        l.display(),
        m.display()
    );
    let child = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, 30);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("/dev/fuse"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!is_mounted(&m));
}
