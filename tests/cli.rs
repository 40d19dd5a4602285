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

/// Layers that overlap are refused as the kernel refuses them, with one line and no
/// mount: upper and work must be separate subtrees, a lower may not be another layer
/// (or the work dir) again nor lie inside one, and a trailing `:` in lowerdir is an
/// error. A lower around the upper (the kernel allows it) still mounts.
#[test]
fn overlapping_layers_are_refused_like_the_kernel() {
    assert_root();
    let t = TempDir::new("overlap");
    let (l, l2, u, w, m) = (t.dir("l"), t.dir("l2"), t.dir("u"), t.dir("w"), t.dir("m"));
    let (u_sub, w_sub, l_sub) = (t.dir("u/sub"), t.dir("w/sub"), t.dir("l/sub"));
    write(&u.join("keep"), "the upper's own file");
    std::os::unix::fs::symlink(&l, t.join("l-link")).unwrap();
    let d = |p: &Path| p.display().to_string();
    let cases: Vec<(String, &str)> = vec![
        (
            format!("lowerdir={},upperdir={},workdir={}", d(&l), d(&u), d(&u)),
            "separate subtrees",
        ),
        (
            format!(
                "lowerdir={},upperdir={},workdir={}",
                d(&l),
                d(&u),
                d(&u_sub)
            ),
            "separate subtrees",
        ),
        (
            format!(
                "lowerdir={},upperdir={},workdir={}",
                d(&l),
                d(&w_sub),
                d(&w)
            ),
            "separate subtrees",
        ),
        (
            format!(
                "lowerdir={}:{},upperdir={},workdir={}",
                d(&l),
                d(&l),
                d(&u),
                d(&w)
            ),
            "conflicting lowerdir",
        ),
        // the same directory through a symlink is the same directory
        (
            format!("lowerdir={}:{}", d(&l), d(&t.join("l-link"))),
            "conflicting lowerdir",
        ),
        (
            format!("lowerdir={},upperdir={},workdir={}", d(&u), d(&u), d(&w)),
            "conflicting lowerdir",
        ),
        (
            format!("lowerdir={},upperdir={},workdir={}", d(&w), d(&u), d(&w)),
            "conflicting lowerdir",
        ),
        (
            format!(
                "lowerdir={},upperdir={},workdir={}",
                d(&u_sub),
                d(&u),
                d(&w)
            ),
            "overlapping lowerdir",
        ),
        (
            format!("lowerdir={}:{}", d(&l), d(&l_sub)),
            "overlapping lowerdir",
        ),
        (
            format!("lowerdir={}:{}", d(&l_sub), d(&l)),
            "overlapping lowerdir",
        ),
        (
            format!(
                "lowerdir={}:{}:,upperdir={},workdir={}",
                d(&l),
                d(&l2),
                d(&u),
                d(&w)
            ),
            "trailing colon",
        ),
    ];
    for (opts, expect) in &cases {
        refused(&[s("-o"), s(opts), m.as_os_str()], &m, expect);
    }
    // Nothing was emptied or made in the upper by a refused mount.
    assert_eq!(names(&u), vec!["keep", "sub"]);
    assert!(names(&u_sub).is_empty());
    // A lower around the upper and work dirs mounts, as with the kernel.
    let around = format!(
        "lowerdir={},upperdir={},workdir={}",
        d(&t.path),
        d(&u),
        d(&w)
    );
    let mount = Mount::new(&around, &m);
    assert!(m.join("keep").exists());
    mount.unmount();
}

/// A second mount of the same upper and work dirs is refused while the first lives
/// (naming the first), and leaves the first mount's work dir alone; once the first
/// is unmounted, the dirs mount again.
#[test]
fn a_workdir_in_use_is_refused() {
    assert_root();
    let t = TempDir::new("inuse");
    let (l, u, w, m1, m2) = (t.dir("l"), t.dir("u"), t.dir("w"), t.dir("m1"), t.dir("m2"));
    write(&l.join("f"), "lower");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        l.display(),
        u.display(),
        w.display()
    );
    let first = Mount::new(&opts, &m1);
    // Something in flight in the first mount's work dir stays where it is.
    write(&w.join("work/in-flight"), "a copy-up being built");
    refused(
        &[s("-o"), s(&opts), m2.as_os_str()],
        &m2,
        "in use by another mount",
    );
    let out = run(&[s("-o"), s(&opts), m2.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&m1.display().to_string()),
        "the first mount is not named: {err}"
    );
    assert!(
        w.join("work/in-flight").exists(),
        "the refused mount emptied work/"
    );
    write(&m1.join("new"), "through the first");
    first.unmount();
    drop(first);
    let again = Mount::new(&opts, &m2);
    assert_eq!(
        fs::read_to_string(m2.join("new")).unwrap(),
        "through the first"
    );
    again.unmount();
}

/// Device nodes in a layer are not usable through the mount unless `-o dev` is given
/// (as fuse-overlayfs 1.10 mounts: nodev): an image's device node never opens a host
/// device, even for root.
#[test]
fn device_nodes_are_not_usable_unless_dev_is_asked_for() {
    assert_root();
    let t = TempDir::new("nodev");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    mknod(&l.join("zero"), libc::S_IFCHR | 0o666, libc::makedev(1, 5));
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        l.display(),
        u.display(),
        w.display()
    );
    let m = t.dir("m");
    let mount = Mount::new(&opts, &m);
    let e = fs::File::open(m.join("zero")).map(drop);
    assert_eq!(
        errno_of(e),
        libc::EACCES,
        "a device node opened on a default mount"
    );
    mount.unmount();
    drop(mount);
    let mount = Mount::new(&format!("{opts},dev"), &m);
    let mut buf = [1u8; 4];
    std::io::Read::read_exact(&mut fs::File::open(m.join("zero")).unwrap(), &mut buf).unwrap();
    assert_eq!(buf, [0; 4]);
    mount.unmount();
}

/// `stratafs which` tells the layer of each path, with an upper too (it uses no
/// workdir, so the overlap check must not refuse it).
#[test]
fn which_names_the_layer_of_each_path() {
    assert_root();
    let t = TempDir::new("which");
    let (l, u) = (t.dir("l"), t.dir("u"));
    write(&l.join("low"), "l");
    write(&l.join("both"), "l");
    write(&u.join("both"), "u");
    let opts = format!("lowerdir={},upperdir={}", l.display(), u.display());
    let out = run(&[
        s("which"),
        s("-o"),
        s(&opts),
        s("low"),
        s("both"),
        s("none"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("low:") && lines[0].contains("lower 1"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("both:") && lines[1].contains("upper"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("none:") && lines[2].contains("not in the merged view"),
        "{text}"
    );
}

/// `stratafs floor` times an empty FUSE server of its own and a mount's file, by turns,
/// and leaves nothing behind: its mount is gone and so is its directory.
#[test]
fn floor_times_an_empty_server_and_a_mount() {
    assert_root();
    let t = TempDir::new("floor");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    write(&l.join("f"), "x");
    let m = Mount::new(&layer_opts(&[&l], Some((&u, &w))), &t.dir("m"));
    let tmp = t.dir("tmp");
    let out = std::process::Command::new(BIN)
        .args(["floor", "--calls", "200", "--rounds", "3"])
        .arg(m.p("f"))
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("a FUSE server that does nothing: "), "{text}");
    assert!(
        text.contains(&format!("getxattr on {}: ", m.p("f").display())),
        "{text}"
    );
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(tmp.to_str().unwrap()), "{mounts}");
    m.unmount();
}
