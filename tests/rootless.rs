//! Mounting without root, on real mounts: as a plain user through fusermount3, and as
//! uid 0 of a user namespace made by a plain user (`unshare -Urm`, the way podman runs
//! it). The user is `nobody`; its layers are its own files in the test's temp dir.
//! /dev/fuse must be 0666 for both, which scripts/setup.sh makes sure of.

mod common;
use common::*;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Stdio};

const NOBODY: u32 = 65534;

/// Layers owned by nobody, and a copy of the binary it can run.
fn setup(t: &TempDir) -> String {
    for d in ["l", "u", "w", "m"] {
        t.dir(d);
    }
    write(&t.join("l/f"), "lower\n");
    write(&t.join("l/gone"), "gone\n");
    write(&t.join("l/D/a"), "a\n");
    write(&t.join("l/R/x"), "x\n");
    fs::copy(BIN, t.join("stratafs")).unwrap();
    let st = Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(&t.path)
        .status()
        .unwrap();
    assert!(st.success());
    chmod(&t.path, 0o755);
    format!(
        "lowerdir={0}/l,upperdir={0}/u,workdir={0}/w",
        t.path.display()
    )
}

/// Runs `script` as nobody (in `dir`), returning (success, output).
fn as_nobody(dir: &Path, args: &[&str], script: &str) -> (bool, String) {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .args(args)
        .args(["sh", "-c", script])
        .current_dir(dir)
        .stdin(Stdio::null());
    let out = wait_output(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        120,
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The read and write checks, run through the mount at `m`.
const CHECKS: &str = r#"
set -e
test "$(cat m/f)" = lower
echo more >> m/f
test "$(cat m/f)" = "$(printf 'lower\nmore')"
rm m/gone
test ! -e m/gone
rm -rf m/D
mkdir m/D
echo new > m/D/new
test "$(ls m/D)" = new
mv m/R m/R2
test "$(cat m/R2/x)" = x
ln m/f m/f2
test "$(stat -c %h m/f)" = 2
mkfifo m/fifo
echo ok
"#;

fn check_upper(t: &TempDir) {
    let u = t.join("u");
    assert_eq!(fs::read_to_string(u.join("f")).unwrap(), "lower\nmore\n");
    // a whiteout for "gone": a char 0/0 device where mknod is allowed, else .wh.gone
    let wh = fs::symlink_metadata(u.join("gone"))
        .map(|m| m.file_type().is_char_device() && m.rdev() == 0)
        .unwrap_or(false);
    assert!(
        wh || u.join(".wh.gone").exists(),
        "no whiteout for gone in the upper"
    );
    // trusted.* is out of reach: the opaque marker is a user.overlay xattr (or the
    // AUFS marker file)
    assert!(
        get_xattr(&u.join("D"), "user.overlay.opaque").as_deref() == Ok(b"y")
            || u.join("D/.wh..wh..opq").exists(),
        "D is not opaque"
    );
    assert!(get_xattr(&u.join("D"), "trusted.overlay.opaque").is_err());
    assert_eq!(fs::metadata(u.join("f")).unwrap().uid(), NOBODY);
}

fn fuse_usable_by_all() -> bool {
    fs::metadata("/dev/fuse").is_ok_and(|m| m.mode() & 0o006 == 0o006)
}

#[test]
fn a_plain_user_mounts_through_fusermount3() {
    assert_root();
    assert!(
        fuse_usable_by_all(),
        "/dev/fuse must be 0666 (scripts/setup.sh sets it)"
    );
    let t = TempDir::new("plainuser");
    let opts = setup(&t);
    let mnt = t.join("m");
    let script = format!("set -e\n./stratafs -o {opts} {}\n{CHECKS}", mnt.display());
    let (ok, out) = as_nobody(&t.path, &[], &script);
    let mounted = is_mounted(&mnt);
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let line = info
        .lines()
        .find(|l| l.contains(&*mnt.to_string_lossy()))
        .unwrap_or("")
        .to_string();
    let pids = daemon_pids(&mnt);
    let (uok, uout) = as_nobody(&t.path, &[], &format!("fusermount3 -u {}", mnt.display()));
    if !uok && is_mounted(&mnt) {
        lazy_unmount(&mnt);
    }
    assert!(ok, "as nobody: {out}");
    assert!(mounted && line.contains("fuse.stratafs"), "{line}");
    assert!(uok, "fusermount3 -u: {uout}");
    assert!(
        wait_for(60, || pids.iter().all(|p| !process_alive(*p))),
        "daemon did not exit after fusermount3 -u"
    );
    check_upper(&t);
}

#[test]
fn uid_0_of_a_user_namespace_mounts_directly() {
    assert_root();
    assert!(
        fuse_usable_by_all(),
        "/dev/fuse must be 0666 (scripts/setup.sh sets it)"
    );
    let t = TempDir::new("userns");
    let opts = setup(&t);
    let mnt = t.join("m");
    // The mount lives in the namespace; unmounting it there ends the daemon.
    let script = format!(
        "set -e\ntest \"$(id -u)\" = 0\n./stratafs -o {opts} {m}\n\
         pid=; for p in $(pgrep -x stratafs); do grep -q '{m}' /proc/$p/cmdline && pid=$p; done\n\
         test -n \"$pid\"\n{CHECKS}\numount {m}\n\
         for i in $(seq 1 300); do kill -0 $pid 2>/dev/null || exit 0; sleep 0.1; done\n\
         echo 'daemon still running'; exit 1",
        m = mnt.display()
    );
    let (ok, out) = as_nobody(&t.path, &["unshare", "-Urm"], &script);
    assert!(ok, "in unshare -Urm as nobody: {out}");
    assert!(out.contains("ok"), "{out}");
    check_upper(&t);
}
