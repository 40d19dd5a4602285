//! Mount lifecycle: background only once live, detached stdio, foreground mode,
//! exit on external unmount, clean unmount on signals, several worker threads.

mod common;
use common::*;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

fn layer(t: &TempDir) -> std::path::PathBuf {
    let l = t.dir("l");
    write(&l.join("hello"), "world\n");
    l
}

fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
        || fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

#[test]
fn background_mount_is_live_when_the_command_returns_and_stdio_is_detached() {
    assert_root();
    let t = TempDir::new("bg");
    let (l, m) = (layer(&t), t.dir("m"));
    // stderr and stdout are pipes we read to EOF: wait_output fails if the daemon keeps them.
    let child = Command::new(BIN)
        .args([
            OsStr::new("-o"),
            OsStr::new(&format!("lowerdir={}", l.display())),
            m.as_os_str(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let parent = child.id();
    let out = wait_output(child, 30);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No waiting: the mount must already be usable.
    assert!(is_mounted(&m));
    assert_eq!(fs::read_to_string(m.join("hello")).unwrap(), "world\n");
    let pids = daemon_pids(&m);
    assert_eq!(pids.len(), 1, "one daemon expected: {pids:?}");
    assert_ne!(pids[0], parent, "the daemon is a forked child");
    let fds: Vec<String> = (0..3)
        .map(|i| {
            fs::read_link(format!("/proc/{}/fd/{i}", pids[0]))
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        })
        .collect();
    assert!(
        fds.iter().all(|f| f == "/dev/null"),
        "daemon stdio: {fds:?}"
    );
    // several request threads (fuser-N): two per core, at least four
    let cores = std::thread::available_parallelism().unwrap().get();
    let workers = fs::read_dir(format!("/proc/{}/task", pids[0]))
        .unwrap()
        .filter(|e| {
            let p = e.as_ref().unwrap().path().join("comm");
            fs::read_to_string(p)
                .unwrap_or_default()
                .starts_with("fuser-")
        })
        .count();
    assert!(
        workers >= (2 * cores).max(4),
        "{workers} worker threads for {cores} cores"
    );
    Mount { mnt: m }.unmount();
}

#[test]
fn daemon_exits_when_unmounted_from_outside() {
    assert_root();
    let t = TempDir::new("ext");
    let l = layer(&t);
    for (i, how) in ["umount", "fusermount3"].iter().enumerate() {
        let m = t.dir(&format!("m{i}"));
        let mount = Mount::layers(&[&l], None, &m);
        let pids = daemon_pids(&m);
        assert_eq!(pids.len(), 1);
        let status = match *how {
            "umount" => Command::new("umount").arg(&m).status().unwrap(),
            _ => Command::new("fusermount3")
                .arg("-u")
                .arg(&m)
                .status()
                .unwrap(),
        };
        assert!(status.success(), "{how} failed");
        assert!(
            wait_for(20, || gone(pids[0])),
            "daemon still running after {how}"
        );
        assert!(!is_mounted(&m));
        drop(mount);
    }
}

#[test]
fn sigterm_and_sigint_unmount_cleanly() {
    assert_root();
    let t = TempDir::new("sig");
    let l = layer(&t);
    for (i, sig) in [libc::SIGTERM, libc::SIGINT].iter().enumerate() {
        let m = t.dir(&format!("m{i}"));
        let mount = Mount::layers(&[&l], None, &m);
        let pid = daemon_pids(&m)[0];
        unsafe { libc::kill(pid as i32, *sig) };
        assert!(wait_for(20, || gone(pid)), "daemon survived signal {sig}");
        assert!(!is_mounted(&m), "signal {sig} left the mount");
        // no dead "Transport endpoint is not connected" mount: the dir is plain again
        assert!(fs::read_dir(&m).is_ok());
        drop(mount);
    }
}

#[test]
fn foreground_mode_stays_and_debug_logs() {
    assert_root();
    let t = TempDir::new("fg");
    let (l, m) = (layer(&t), t.dir("m"));
    let opts = format!("lowerdir={}", l.display());
    let mut child = Command::new(BIN)
        .args([
            OsStr::new("-d"),
            OsStr::new("-o"),
            OsStr::new(&opts),
            m.as_os_str(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = Mount { mnt: m.clone() };
    assert!(
        wait_for(20, || is_mounted(&m)),
        "foreground mount never came up"
    );
    assert_eq!(fs::read_to_string(m.join("hello")).unwrap(), "world\n");
    assert!(
        child.try_wait().unwrap().is_none(),
        "-d must stay in the foreground"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "foreground exit: {status:?}");
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("DEBUG"), "no debug log on stderr: {err}");
    assert!(!is_mounted(&m));
}

/// A mount whose daemon was killed answers ENOTCONN; mounting stratafs there again
/// clears the dead stratafs mount and mounts (with the same upper and work: the dead
/// daemon's workdir lock went with it).
#[test]
fn a_dead_stratafs_mount_is_cleared_by_the_next_mount() {
    assert_root();
    let t = TempDir::new("dead");
    let l = layer(&t);
    let (u, w, m) = (t.dir("u"), t.dir("w"), t.dir("m"));
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        l.display(),
        u.display(),
        w.display()
    );
    let first = Mount::new(&opts, &m);
    write(&m.join("kept"), "before the kill");
    let pids = daemon_pids(&m);
    assert_eq!(pids.len(), 1);
    unsafe { libc::kill(pids[0] as i32, libc::SIGKILL) };
    assert!(
        wait_for(10, || gone(pids[0])),
        "the daemon outlived SIGKILL"
    );
    // (ECONNABORTED while the kernel is still tearing the connection down)
    let e = errno_of(fs::metadata(&m).map(drop));
    assert!(
        e == libc::ENOTCONN || e == libc::ECONNABORTED,
        "a killed daemon's mount should be dead, not errno {e}"
    );
    std::mem::forget(first); // (its mount is the dead one the next mount clears)
    let again = Mount::new(&opts, &m);
    assert_eq!(
        fs::read_to_string(m.join("kept")).unwrap(),
        "before the kill"
    );
    assert_eq!(
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some(m.to_str().unwrap()))
            .count(),
        1,
        "the dead mount is still stacked under the new one"
    );
    again.unmount();
}

/// Mounts stratafs at `m` over `l` (with an upper and work dir in `t`) inside a new
/// private mount namespace, then runs `then` there (a shell command; `$M` is the
/// mountpoint). The namespace's only other member is that shell; the daemon looks
/// for members every second.
fn mount_in_private_namespace(t: &TempDir, l: &Path, m: &Path, then: &str) -> std::process::Child {
    let (u, w) = (t.dir("u"), t.dir("w"));
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        l.display(),
        u.display(),
        w.display()
    );
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!("\"$0\" -o \"$1\" \"$2\" && M=\"$2\" && {then}"))
        .arg(BIN)
        .arg(opts)
        .arg(m)
        .env("STRATAFS_ORPHAN_CHECK_SECS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) is needed")
}

#[test]
fn a_mount_left_alone_in_its_namespace_ends_with_its_daemon() {
    assert_root();
    let t = TempDir::new("alone");
    let (l, m) = (layer(&t), t.dir("m"));
    // The shell reads through the mount and exits: then only the daemon is in the
    // namespace, which nothing can enter any more (before: it served it forever).
    let child = mount_in_private_namespace(&t, &l, &m, "cat \"$M/hello\"");
    let out = wait_output(child, 30);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "world\n");
    assert!(
        wait_for(15, || daemon_pids(&m).is_empty()),
        "the daemon still serves a mount that no process can reach: {:?}",
        daemon_pids(&m)
    );
}

#[test]
fn a_mount_held_from_outside_its_namespace_is_served_until_let_go() {
    use std::os::fd::AsRawFd;
    assert_root();
    let t = TempDir::new("held");
    let (l, m) = (layer(&t), t.dir("m"));
    let child = mount_in_private_namespace(&t, &l, &m, "exec sleep 3");
    // The mount as the namespace's member sees it, reached from here.
    let inside = Path::new("/proc")
        .join(child.id().to_string())
        .join("root")
        .join(m.strip_prefix("/").unwrap());
    assert!(
        wait_for(10, || inside.join("hello").exists()),
        "the mount did not come up"
    );
    let root = fs::File::open(&inside).unwrap();
    let out = wait_output(child, 30);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The member is gone; the daemon, alone, unmounts in its namespace within a
    // second or so. The open directory still holds the mount: it is served.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(daemon_pids(&m).len(), 1, "the daemon left a held mount");
    let held = format!("/proc/self/fd/{}", root.as_raw_fd());
    assert_eq!(names(Path::new(&held)), ["hello"]);
    assert_eq!(
        fs::read_to_string(Path::new(&held).join("hello")).unwrap(),
        "world\n"
    );
    drop(root);
    assert!(
        wait_for(15, || daemon_pids(&m).is_empty()),
        "the daemon outlived the last holder: {:?}",
        daemon_pids(&m)
    );
}
