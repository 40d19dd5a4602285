//! Layers and names that change under a live mount.
//!
//! - A lower file swapped (by whoever owns the lower directory) for a symlink to a
//!   file outside the layers: no change made through the mount (chmod, chown, utimes,
//!   truncate, setxattr, the set-id clearing of a chown) may reach that file. The
//!   daemon runs as root, so following the symlink would be a privilege escalation.
//! - A lower file swapped for a FIFO, a unix socket or a device node: opening it
//!   through the mount neither hangs (the caller nor the daemon) nor hands out the
//!   contents of something else, and the rest of the mount keeps answering.
//! - Churn: names created, checked and deleted thousands of times, so that inode
//!   numbers are reused; every check exact (a new symlink must never show a deleted
//!   one's target).
//! - Opens racing a writer that renames over the name (never an error, never a torn
//!   file), or unlinks and recreates it (ENOENT at most).
//!
//! Knobs: `STRATAFS_CHURN_ITERS` (iterations per churn thread, default 3000) and
//! `STRATAFS_RACE_SECS` (seconds per race run, default 10).

mod common;
use common::*;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `script` with `sh -c` (the paths in `args` are `$1`, `$2`, ...), as nobody
/// when `nobody`, failing the test if it takes more than `secs`. Returns (exit code,
/// stdout + stderr).
fn sh(nobody: bool, secs: u64, script: &str, args: &[&Path]) -> (i32, String) {
    let mut cmd = if nobody {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
        ]);
        c
    } else {
        let mut c = Command::new("sh");
        c.arg("-c");
        c
    };
    cmd.arg(script).arg("sh").args(args).current_dir("/");
    let out = wait_output(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sh"),
        secs,
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Opens the test's temp dir to nobody (0755) and checks that nobody reaches it (its
/// parents must be searchable already, as /tmp is).
fn open_to_nobody(t: &TempDir) {
    chmod(&t.path, 0o755);
    let (code, out) = sh(
        true,
        30,
        "test -x \"$1\" && ls \"$1\" >/dev/null",
        &[&t.path],
    );
    assert_eq!(
        code,
        0,
        "nobody cannot reach {} (set STRATAFS_TEST_TMP to a searchable dir): {out}",
        t.path.display()
    );
}

// ---------------------------------------------------------------------------------
// 1. A lower file swapped for a symlink to a file outside the layers
// ---------------------------------------------------------------------------------

/// Everything about a file a change could touch.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    content: Vec<u8>,
    xattrs: Vec<String>,
}

fn snapshot(p: &Path) -> Snapshot {
    let m = fs::symlink_metadata(p).unwrap();
    let mut xattrs = list_xattr(p);
    xattrs.sort();
    Snapshot {
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
        content: fs::read(p).unwrap(),
        xattrs,
    }
}

/// How the change is made through the mount after the swap.
enum Op {
    /// `sh -c SCRIPT` with `$1` = `M/f`, as nobody (true) or root (false)
    Sh(bool, &'static str),
    /// lsetxattr(M/f, user.x, "1") by root from this process (setfattr may be missing)
    SetXattr,
}

/// The repro: a lower directory owned by nobody holding `f` (made by nobody), the
/// mount, nobody stats `M/f` (the kernel now knows it as nobody's regular file), then
/// nobody replaces the lower `f` by a symlink to `sec/s` (root's, `sec_mode`), and
/// `op` runs on `M/f`. `sec/s` must be unchanged in every respect; the caller may get
/// an error or success.
fn lower_swapped_for_a_symlink(tag: &str, sec_mode: u32, op: Op) {
    assert_root();
    let t = TempDir::new(tag);
    open_to_nobody(&t);
    let (nl, u, w, mnt, sec) = (
        t.dir("NL"),
        t.dir("U"),
        t.dir("W"),
        t.dir("M"),
        t.dir("sec"),
    );
    let s = sec.join("s");
    write(&s, "S\n");
    chmod(&s, sec_mode);
    std::os::unix::fs::chown(&nl, Some(NOBODY), Some(NOBODY)).unwrap();
    let (code, out) = sh(true, 30, "echo m > \"$1/f\"", &[&nl]);
    assert_eq!(code, 0, "as nobody, make NL/f: {out}");

    let m = Mount::layers(&[&nl], Some((&u, &w)), &mnt);
    let mf = m.p("f");
    let (code, out) = sh(true, 30, "stat \"$1\" >/dev/null", &[&mf]);
    assert_eq!(code, 0, "as nobody, stat M/f: {out}");
    let before = snapshot(&s);
    let (code, out) = sh(true, 30, "rm \"$1/f\" && ln -s \"$2\" \"$1/f\"", &[&nl, &s]);
    assert_eq!(code, 0, "as nobody, swap NL/f for a symlink: {out}");
    // Whatever the op answers (it must not hang), only sec/s matters.
    let (what, outcome) = match op {
        Op::Sh(nobody, script) => {
            let (code, out) = sh(nobody, 30, script, &[&mf]);
            (
                format!("`{script}` as {}", if nobody { "nobody" } else { "root" }),
                format!("exit {code}: {}", out.trim()),
            )
        }
        Op::SetXattr => {
            // no following on our side (and user.* on a symlink is refused anyway)
            let c = CString::new(mf.as_os_str().as_bytes()).unwrap();
            let r = unsafe {
                libc::lsetxattr(c.as_ptr(), c"user.x".as_ptr(), b"1".as_ptr().cast(), 1, 0)
            };
            let e = std::io::Error::last_os_error();
            (
                "lsetxattr user.x=1 as root".to_string(),
                if r == 0 {
                    "success".to_string()
                } else {
                    e.to_string()
                },
            )
        }
    };
    let after = snapshot(&s);
    // Gone before any assertion: the mount must not stay behind a failed one.
    m.unmount();
    assert_eq!(
        before,
        after,
        "{what} on M/f ({outcome}) changed {}, a file outside the layers that the \
         swapped lower symlink points to",
        s.display()
    );
}

#[test]
fn chmod_never_follows_a_lower_swapped_for_a_symlink() {
    lower_swapped_for_a_symlink("swap-chmod", 0o600, Op::Sh(true, "chmod 666 \"$1\""));
}

#[test]
fn chown_never_follows_a_lower_swapped_for_a_symlink() {
    // -h: were the name looked up anew, the kernel would see the symlink, and root
    // following it here would be root's own doing, not the daemon's.
    lower_swapped_for_a_symlink("swap-chown", 0o600, Op::Sh(false, "chown -h 1234 \"$1\""));
}

#[test]
fn utimes_never_follows_a_lower_swapped_for_a_symlink() {
    lower_swapped_for_a_symlink(
        "swap-utimes",
        0o600,
        Op::Sh(true, "touch -h -d 2001-01-01 \"$1\""),
    );
}

#[test]
fn truncate_never_follows_a_lower_swapped_for_a_symlink() {
    lower_swapped_for_a_symlink("swap-trunc", 0o600, Op::Sh(true, "truncate -s 0 \"$1\""));
}

#[test]
fn setxattr_never_follows_a_lower_swapped_for_a_symlink() {
    lower_swapped_for_a_symlink("swap-xattr", 0o600, Op::SetXattr);
}

#[test]
fn setid_clearing_never_follows_a_lower_swapped_for_a_symlink() {
    // root chowns M/f: a chown clears set-id bits; done to sec/s it would drop its
    // setuid bit (and change its ctime).
    lower_swapped_for_a_symlink("swap-setid", 0o4755, Op::Sh(false, "chown -h 0:0 \"$1\""));
}

// ---------------------------------------------------------------------------------
// 2. A lower file swapped for a FIFO, a socket or a device node
// ---------------------------------------------------------------------------------

/// Unblocks anything (the daemon) stuck opening the FIFOs, on drop.
struct FifoUnblocker(Vec<PathBuf>);

impl Drop for FifoUnblocker {
    fn drop(&mut self) {
        for p in &self.0 {
            // O_RDWR on a FIFO never blocks and wakes every opener waiting for the
            // other side; O_NOFOLLOW|O_NONBLOCK in case it is no FIFO any more.
            if let Ok(c) = CString::new(p.as_os_str().as_bytes()) {
                let fd = unsafe {
                    libc::open(
                        c.as_ptr(),
                        libc::O_RDWR | libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    )
                };
                if fd >= 0 {
                    std::thread::sleep(Duration::from_millis(50));
                    unsafe { libc::close(fd) };
                }
            }
        }
    }
}

/// The test's own children (callers of the mount), killed by pid and reaped on drop.
/// One stuck in a request the daemon took cannot die before the daemon answers (or
/// dies): the reaping waits 10 s at most, then leaves it to init.
struct Children(Vec<Child>);

impl Children {
    fn reap(&mut self, secs: u64) {
        for c in &mut self.0 {
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
            }
        }
        let end = Instant::now() + Duration::from_secs(secs);
        self.0.retain_mut(|c| loop {
            match c.try_wait() {
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) => break true,
                _ => break false,
            }
        });
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.reap(10);
    }
}

/// A caller of the mount: `argv` + `args`, its stdout and stderr in files of `dir`
/// (no pipe a stuck process could hold open).
struct Caller {
    what: String,
    out: PathBuf,
    err: PathBuf,
    start: Instant,
    idx: usize,
}

fn spawn_caller(
    children: &mut Children,
    dir: &Path,
    what: &str,
    argv: &[&str],
    args: &[&Path],
) -> Caller {
    let n = children.0.len();
    let (out, err) = (dir.join(format!("out{n}")), dir.join(format!("err{n}")));
    let child = Command::new(argv[0])
        .args(&argv[1..])
        .args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    children.0.push(child);
    Caller {
        what: what.to_string(),
        out,
        err,
        start: Instant::now(),
        idx: n,
    }
}

/// Waits until `secs` after the caller started; Some((exit code, stdout, stderr)) if
/// it ended by then, None if it hung (it is then killed, and reaped later).
fn finish(children: &mut Children, c: &Caller, secs: u64) -> Option<(i32, Vec<u8>, String)> {
    let child = &mut children.0[c.idx];
    let end = c.start + Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some((
                st.code().unwrap_or(-1),
                fs::read(&c.out).unwrap_or_default(),
                fs::read_to_string(&c.err).unwrap_or_default(),
            ));
        }
        if Instant::now() > end {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGKILL to any daemon of `mnt` still alive `secs` after its unmount (one
/// stuck for good would otherwise outlive the test, and so would its callers).
fn reap_daemon(mnt: &Path, pids: &[u32], secs: u64) {
    if is_mounted(mnt) {
        lazy_unmount(mnt);
    }
    let gone = || pids.iter().all(|p| !process_alive(*p));
    if !wait_for(secs, gone) {
        for p in pids {
            unsafe { libc::kill(*p as i32, libc::SIGKILL) };
        }
        wait_for(10, gone);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Swap {
    Fifo,
    Socket,
    Null,
    Zero,
}

/// Four lower files f1..f4 ("p\n") are known to the kernel (`ls -l`), then each is
/// swapped in the lower for `kinds[i]` and a `head -c 64 M/fN` starts in the
/// background. Then the mount must go on answering within a few seconds: `ls` of the
/// root and of a directory never listed, stat and read of a lower file never looked
/// up, a create. The daemon never opens the new object in the file's place: each
/// reader ends within 5 s with an error or the file's old content, or it meets the
/// new object itself, through the kernel, as a reader of that name would after a
/// fresh lookup (the mount then shows the name as a FIFO or device: a FIFO's reader
/// waits in the kernel for a writer, a device's gets what the device gives).
fn lower_swapped_for_a_special_file(tag: &str, kinds: &[Swap]) {
    assert_root();
    let t = TempDir::new(tag);
    let (l, u, w, mnt, logs) = (
        t.dir("L"),
        t.dir("U"),
        t.dir("W"),
        t.dir("M"),
        t.dir("logs"),
    );
    let files: Vec<String> = (1..=4).map(|i| format!("f{i}")).collect();
    for f in &files {
        write(&l.join(f), "p\n");
    }
    write(&l.join("sub/inner"), "inner\n");
    let m = Mount::layers(&[&l], Some((&u, &w)), &mnt);
    let pids = daemon_pids(&mnt);
    // Dropped in reverse: the FIFOs are unblocked before the callers are reaped.
    let mut kids = Children(Vec::new());
    let fifos = FifoUnblocker(files.iter().map(|f| l.join(f)).collect());
    let c = spawn_caller(&mut kids, &logs, "ls -l M", &["ls", "-l"], &[&m.mnt]);
    let r = finish(&mut kids, &c, 10);
    assert!(
        r.as_ref().is_some_and(|r| r.0 == 0),
        "ls -l M before any swap: {r:?}"
    );

    let mut _sockets = Vec::new();
    let mut cats = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let p = l.join(f);
        fs::remove_file(&p).unwrap();
        let kind = kinds[i % kinds.len()];
        let name = match kind {
            Swap::Fifo => {
                let c = CString::new(p.as_os_str().as_bytes()).unwrap();
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
                "a FIFO"
            }
            Swap::Socket => {
                _sockets.push(std::os::unix::net::UnixListener::bind(&p).unwrap());
                "a unix socket"
            }
            Swap::Null => {
                mknod(&p, libc::S_IFCHR | 0o666, libc::makedev(1, 3));
                "char 1:3 (null)"
            }
            Swap::Zero => {
                mknod(&p, libc::S_IFCHR | 0o666, libc::makedev(1, 5));
                "char 1:5 (zero)"
            }
        };
        let what = format!("head M/{f} (lower swapped for {name})");
        let c = spawn_caller(&mut kids, &logs, &what, &["head", "-c", "64"], &[&m.p(f)]);
        cats.push((c, kind, m.p(f)));
    }
    // Time for the cats' opens to reach the daemon.
    std::thread::sleep(Duration::from_millis(300));
    write(&l.join("fresh"), "fresh\n");

    let mut problems = Vec::new();
    let mut check = |kids: &mut Children, c: Caller, secs: u64, want: Option<&[u8]>| match finish(
        kids, &c, secs,
    ) {
        None => problems.push(format!("{}: hung ({secs}s)", c.what)),
        Some((code, out, err)) => {
            if code != 0 || want.is_some_and(|w| w != out.as_slice()) {
                problems.push(format!(
                    "{}: exit {code}, output {:?} {}",
                    c.what,
                    String::from_utf8_lossy(&out),
                    err.trim()
                ));
            }
        }
    };
    let c = spawn_caller(&mut kids, &logs, "ls M", &["ls"], &[&m.mnt]);
    check(&mut kids, c, 10, None);
    let c = spawn_caller(&mut kids, &logs, "ls M/sub", &["ls"], &[&m.p("sub")]);
    check(&mut kids, c, 5, Some(b"inner\n"));
    let c = spawn_caller(
        &mut kids,
        &logs,
        "stat M/fresh",
        &["stat"],
        &[&m.p("fresh")],
    );
    check(&mut kids, c, 5, None);
    let c = spawn_caller(&mut kids, &logs, "cat M/fresh", &["cat"], &[&m.p("fresh")]);
    check(&mut kids, c, 5, Some(b"fresh\n"));
    let c = spawn_caller(
        &mut kids,
        &logs,
        "create M/new",
        &["sh", "-c", "echo new > \"$1\" && cat \"$1\"", "sh"],
        &[&m.p("new")],
    );
    check(&mut kids, c, 5, Some(b"new\n"));

    // The readers: each ended within its 5 s, with an error and no output, or with
    // the old content; or it met the new object through the kernel, which the mount
    // now shows at the name.
    for (c, kind, path) in cats {
        let shown = fs::symlink_metadata(&path).map(|m| m.file_type());
        let met_new = match kind {
            Swap::Fifo => shown.as_ref().is_ok_and(|t| t.is_fifo()),
            Swap::Null | Swap::Zero => shown.as_ref().is_ok_and(|t| t.is_char_device()),
            Swap::Socket => false,
        };
        match finish(&mut kids, &c, 5) {
            // A FIFO's reader waits in the kernel for a writer, not in the daemon.
            None if met_new && kind == Swap::Fifo => {}
            None => problems.push(format!("{}: hung (5s)", c.what)),
            Some((code, out, err)) => {
                let device = match kind {
                    Swap::Null => &b""[..],
                    Swap::Zero => &[0u8; 64][..],
                    _ => &b"-"[..],
                };
                let fine = if code == 0 {
                    out == b"p\n" || (met_new && out == device)
                } else {
                    out.is_empty() || out == b"p\n"
                };
                if !fine {
                    problems.push(format!(
                        "{}: exit {code}, output {:?} {}",
                        c.what,
                        String::from_utf8_lossy(&out[..out.len().min(64)]),
                        err.trim()
                    ));
                }
            }
        }
    }
    // Cleanup: the daemon unblocked, every caller gone, the mount gone, no daemon
    // left behind; only then the verdict.
    drop(fifos);
    kids.reap(5);
    reap_daemon(&mnt, &pids, 20);
    kids.reap(10);
    drop(m);
    assert!(
        problems.is_empty(),
        "with lower files swapped for special files:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn a_lower_swapped_for_a_fifo_never_hangs_the_mount() {
    lower_swapped_for_a_special_file("swap-fifo", &[Swap::Fifo]);
}

#[test]
fn a_lower_swapped_for_a_socket_never_hangs_the_mount() {
    lower_swapped_for_a_special_file("swap-sock", &[Swap::Socket]);
}

#[test]
fn a_lower_swapped_for_a_device_never_gives_its_contents() {
    lower_swapped_for_a_special_file("swap-dev", &[Swap::Null, Swap::Zero]);
}

// ---------------------------------------------------------------------------------
// 3. Churn: inode numbers reused under names made and removed many times
// ---------------------------------------------------------------------------------

/// One thread's loop in `dir` (which exists in the lower too): each iteration makes a
/// file, chmods, reads back, stats, symlinks, reads the link and through it, makes a
/// directory with one file and lists it, lists `dir`, then removes it all; every
/// check exact. Returns the count of mismatches, their count by step, and the first
/// 10 described.
fn churn(dir: &Path, k: usize, iters: u64) -> (u64, BTreeMap<String, u64>, Vec<String>) {
    let mut bad = 0u64;
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut notes = Vec::new();
    // "t0 #12: readlink l12: ..." is of kind "readlink l"
    let mut note = |bad: &mut u64, s: String| {
        *bad += 1;
        let what = s.split(": ").nth(1).unwrap_or("");
        let kind: String = what.chars().filter(|c| !c.is_ascii_digit()).collect();
        *kinds.entry(kind).or_default() += 1;
        if notes.len() < 10 {
            notes.push(s);
        }
    };
    for i in 0..iters {
        let (f, l, s) = (format!("f{i}"), format!("l{i}"), format!("s{i}"));
        let (fp, lp, sp) = (dir.join(&f), dir.join(&l), dir.join(&s));
        // distinct content, length varying with i
        let content = format!("{k}:{i}:{}\n", "z".repeat((i % 97) as usize));
        let mode = if i % 2 == 0 { 0o600 } else { 0o644 };
        let e = sp.join(format!("e{i}"));
        'it: {
            macro_rules! ok {
                ($e:expr, $what:expr) => {
                    match $e {
                        Ok(v) => v,
                        Err(e) => {
                            note(
                                &mut bad,
                                format!("t{k} #{}: error {}: {e}", $what.0, $what.1),
                            );
                            break 'it;
                        }
                    }
                };
            }
            ok!(fs::write(&fp, &content), (i, "create+write"));
            ok!(
                fs::set_permissions(&fp, fs::Permissions::from_mode(mode)),
                (i, "chmod")
            );
            let st = ok!(fs::symlink_metadata(&fp), (i, "stat f"));
            if !st.file_type().is_file()
                || st.mode() & 0o7777 != mode
                || st.len() != content.len() as u64
                || st.nlink() != 1
            {
                note(
                    &mut bad,
                    format!(
                        "t{k} #{i}: stat {f}: mode {:o} size {} nlink {} (want file {mode:o} {} 1)",
                        st.mode(),
                        st.len(),
                        st.nlink(),
                        content.len()
                    ),
                );
            }
            let got = ok!(fs::read_to_string(&fp), (i, "read f"));
            if got != content {
                note(
                    &mut bad,
                    format!("t{k} #{i}: read {f}: {got:?}, want {content:?}"),
                );
            }

            ok!(symlink(&f, &lp), (i, "symlink"));
            let target = ok!(fs::read_link(&lp), (i, "readlink"));
            if target != Path::new(&f) {
                note(
                    &mut bad,
                    format!("t{k} #{i}: readlink {l}: {target:?}, want {f:?}"),
                );
            }
            let lst = ok!(fs::symlink_metadata(&lp), (i, "lstat l"));
            if !lst.file_type().is_symlink() || lst.len() != f.len() as u64 {
                note(
                    &mut bad,
                    format!(
                        "t{k} #{i}: lstat {l}: symlink {} size {} (want symlink {})",
                        lst.file_type().is_symlink(),
                        lst.len(),
                        f.len()
                    ),
                );
            }
            let via = ok!(fs::read_to_string(&lp), (i, "read through l"));
            if via != content {
                note(
                    &mut bad,
                    format!("t{k} #{i}: read through {l}: {via:?}, want {content:?}"),
                );
            }

            ok!(fs::create_dir(&sp), (i, "mkdir"));
            ok!(fs::write(&e, &content), (i, "create in new dir"));
            let inner = ok!(
                fs::read_dir(&sp).and_then(|d| d
                    .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<Result<Vec<_>, _>>()),
                (i, "list new dir")
            );
            if inner != vec![format!("e{i}")] {
                note(&mut bad, format!("t{k} #{i}: ls {s}: {inner:?}"));
            }
            let mut all = ok!(
                fs::read_dir(dir).and_then(|d| d
                    .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<Result<Vec<_>, _>>()),
                (i, "list dir")
            );
            all.sort();
            let mut want = vec![f.clone(), l.clone(), s.clone(), "keep".to_string()];
            want.sort();
            if all != want {
                note(&mut bad, format!("t{k} #{i}: ls: {all:?}, want {want:?}"));
            }

            ok!(fs::remove_file(&lp), (i, "unlink l"));
            ok!(fs::remove_file(&fp), (i, "unlink f"));
            ok!(fs::remove_file(&e), (i, "unlink e"));
            ok!(fs::remove_dir(&sp), (i, "rmdir"));
        }
        // After a failed step, what it left (no cascade of listing mismatches).
        let _ = fs::remove_file(&lp);
        let _ = fs::remove_file(&fp);
        let _ = fs::remove_file(&e);
        let _ = fs::remove_dir(&sp);
        for p in [&fp, &lp, &sp] {
            let r = fs::symlink_metadata(p);
            if errno_of(r) != libc::ENOENT {
                note(
                    &mut bad,
                    format!("t{k} #{i}: {} still there after removal", p.display()),
                );
            }
        }
    }
    (bad, kinds, notes)
}

/// 4 threads churning in d0..d3 (lower directories, each with a file `keep`), over an
/// upper on the temp dir's filesystem, or on a tmpfs mounted in the temp dir.
fn churn_over(tag: &str, tmpfs: bool) {
    assert_root();
    let iters = env_num("STRATAFS_CHURN_ITERS", 3000);
    let t = TempDir::new(tag);
    let l = t.dir("L");
    for k in 0..4 {
        write(&l.join(format!("d{k}/keep")), "keep\n");
    }
    let _tmp = if tmpfs {
        let d = t.dir("tmp");
        Some(OtherMount::new("tmpfs", "tmpfs", "size=64m,mode=0755", &d))
    } else {
        None
    };
    let base = if tmpfs { t.join("tmp") } else { t.path.clone() };
    let (u, w) = (base.join("U"), base.join("W"));
    fs::create_dir_all(&u).unwrap();
    fs::create_dir_all(&w).unwrap();
    let m = Mount::layers(&[&l], Some((&u, &w)), &t.dir("M"));
    let start = Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|k| {
            let d = m.p(&format!("d{k}"));
            std::thread::spawn(move || churn(&d, k, iters))
        })
        .collect();
    let mut bad = 0;
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut notes = Vec::new();
    for h in handles {
        let (b, ks, n) = h.join().expect("churn thread panicked");
        bad += b;
        for (k, v) in ks {
            *kinds.entry(k).or_default() += v;
        }
        notes.extend(n);
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!("{tag}: 4 x {iters} iterations in {secs:.1}s");
    m.unmount();
    drop(_tmp);
    assert_eq!(
        bad,
        0,
        "{bad} mismatches in 4 x {iters} iterations (upper on {}), by step: {kinds:?}; \
         the first ones of each thread:\n  {}",
        if tmpfs { "tmpfs" } else { "the temp dir's fs" },
        notes.join("\n  ")
    );
}

#[test]
fn a_new_symlink_never_reads_a_deleted_ones_target() {
    churn_over("churn", false);
}

#[test]
fn a_new_symlink_never_reads_a_deleted_ones_target_on_tmpfs() {
    churn_over("churn-tmpfs", true);
}

// ---------------------------------------------------------------------------------
// 4. Opens racing a writer that replaces the name
// ---------------------------------------------------------------------------------

/// The writer's n-th content: a header, a body whose length varies with n, a trailer.
fn content(n: u64) -> String {
    format!(
        "BEGIN {n} {}END {n}\n",
        "x".repeat(((n * 37) % 6000) as usize)
    )
}

/// Whether `got` is exactly some `content(n)`.
fn is_whole(got: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(got) else {
        return false;
    };
    let Some(rest) = s.strip_prefix("BEGIN ") else {
        return false;
    };
    let Some(n) = rest.split(' ').next().and_then(|n| n.parse::<u64>().ok()) else {
        return false;
    };
    s == content(n)
}

/// Whether `got` is the start of some `content(n)` (a file being written).
fn is_start(got: &[u8]) -> bool {
    if got.is_empty() || is_whole(got) {
        return true;
    }
    let Ok(s) = std::str::from_utf8(got) else {
        return false;
    };
    if "BEGIN ".starts_with(s) {
        return true;
    }
    let Some(rest) = s.strip_prefix("BEGIN ") else {
        return false;
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.len() == rest.len() {
        return true; // the number itself is cut
    }
    match digits.parse::<u64>() {
        Ok(n) => content(n).starts_with(s),
        Err(_) => false,
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Writer {
    /// write `t`, rename `t` over `x`
    RenameOver,
    /// unlink `x`, create `x`, write it
    UnlinkRecreate,
}

fn errno_name(e: i32) -> String {
    match e {
        libc::ENOENT => "ENOENT".into(),
        libc::ESTALE => "ESTALE".into(),
        libc::ENXIO => "ENXIO".into(),
        libc::EIO => "EIO".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::EBADF => "EBADF".into(),
        libc::EBUSY => "EBUSY".into(),
        libc::EAGAIN => "EAGAIN".into(),
        _ => format!("errno {e}"),
    }
}

/// 2 readers open and read `x` in a loop for STRATAFS_RACE_SECS while the writer
/// replaces it. Every open must succeed (for `UnlinkRecreate`: or fail ENOENT) and
/// read a whole content (for `UnlinkRecreate`: the start of one).
fn race(tag: &str, writer: Writer, x_in_lower: bool, no_passthrough: bool) {
    assert_root();
    let secs = env_num("STRATAFS_RACE_SECS", 10);
    let t = TempDir::new(tag);
    let (l, u, w) = (t.dir("L"), t.dir("U"), t.dir("W"));
    write(&l.join("other"), "other\n");
    if x_in_lower {
        write(&l.join("x"), &content(0));
    } else {
        write(&u.join("x"), &content(0));
    }
    let env: &[(&str, &str)] = if no_passthrough {
        &[("STRATAFS_NO_PASSTHROUGH", "1")]
    } else {
        &[]
    };
    let m = Mount::with_env(&layer_opts(&[&l], Some((&u, &w))), &t.dir("M"), env);
    let stop = Arc::new(AtomicBool::new(false));
    let x = m.p("x");

    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (x, stop) = (x.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut errs: BTreeMap<String, u64> = BTreeMap::new();
                let mut torn: Vec<String> = Vec::new();
                let (mut reads, mut torn_n) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let r = fs::File::open(&x).and_then(|mut f| {
                        let mut v = Vec::new();
                        f.read_to_end(&mut v).map(|_| v)
                    });
                    match r {
                        Ok(v) => {
                            reads += 1;
                            let fine = match writer {
                                Writer::RenameOver => is_whole(&v),
                                Writer::UnlinkRecreate => is_start(&v),
                            };
                            if !fine {
                                torn_n += 1;
                                if torn.len() < 5 {
                                    let head =
                                        String::from_utf8_lossy(&v[..v.len().min(40)]).into_owned();
                                    torn.push(format!("{} bytes, starting {head:?}", v.len()));
                                }
                            }
                        }
                        Err(e) => {
                            let n = e.raw_os_error().unwrap_or(-1);
                            *errs.entry(errno_name(n)).or_default() += 1;
                        }
                    }
                }
                (reads, errs, torn_n, torn)
            })
        })
        .collect();

    let writer_thread = {
        let (dir, stop) = (m.mnt.clone(), stop.clone());
        std::thread::spawn(move || {
            let (x, tmp) = (dir.join("x"), dir.join("t"));
            let mut errs: BTreeMap<String, u64> = BTreeMap::new();
            let mut n = 1u64;
            let mut count = |r: std::io::Result<()>| {
                if let Err(e) = r {
                    *errs
                        .entry(errno_name(e.raw_os_error().unwrap_or(-1)))
                        .or_default() += 1;
                }
            };
            while !stop.load(Ordering::Relaxed) {
                match writer {
                    Writer::RenameOver => {
                        count(fs::write(&tmp, content(n)));
                        count(fs::rename(&tmp, &x));
                    }
                    Writer::UnlinkRecreate => {
                        count(fs::remove_file(&x));
                        count(
                            fs::File::create(&x)
                                .and_then(|mut f| f.write_all(content(n).as_bytes())),
                        );
                    }
                }
                n += 1;
            }
            (n - 1, errs)
        })
    };

    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let (writes, werrs) = writer_thread.join().expect("writer panicked");
    let mut reads = 0;
    let mut errs: BTreeMap<String, u64> = BTreeMap::new();
    let mut torn_n = 0;
    let mut torn = Vec::new();
    for r in readers {
        let (n, e, tn, t) = r.join().expect("reader panicked");
        reads += n;
        torn_n += tn;
        torn.extend(t);
        for (k, v) in e {
            *errs.entry(k).or_default() += v;
        }
    }
    // After the race, the name reads as the last content.
    let last = fs::read(&x);
    m.unmount();
    let what = format!(
        "{writer:?}, x {} the lower, passthrough {}: {writes} replacements, {reads} \
         good reads in {secs}s",
        if x_in_lower { "in" } else { "not in" },
        if no_passthrough { "off" } else { "on" },
    );
    eprintln!("{tag}: {what}; read errors {errs:?}");
    let allowed = |k: &str| writer == Writer::UnlinkRecreate && k == "ENOENT";
    let bad_errs: BTreeMap<_, _> = errs.iter().filter(|(k, _)| !allowed(k)).collect();
    let mut problems = Vec::new();
    if !bad_errs.is_empty() {
        problems.push(format!(
            "opens/reads of x failed: {bad_errs:?} (all errors: {errs:?})"
        ));
    }
    if torn_n > 0 {
        problems.push(format!(
            "{torn_n} reads of x gave no whole content, e.g. {torn:?}"
        ));
    }
    if !werrs.is_empty() {
        problems.push(format!("the writer failed: {werrs:?}"));
    }
    match &last {
        Ok(v) if *v == content(writes).as_bytes() => {}
        Ok(v) => problems.push(format!(
            "x reads {} bytes after the race, not the last content",
            v.len()
        )),
        Err(e) => problems.push(format!("x after the race: {e}")),
    }
    assert!(writes > 0 && reads > 0, "{what}: no progress");
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

#[test]
fn opens_never_fail_while_a_writer_renames_over_the_name() {
    race("race-ren", Writer::RenameOver, false, false);
}

#[test]
fn opens_never_fail_while_a_writer_renames_over_a_lower_name() {
    race("race-ren-low", Writer::RenameOver, true, false);
}

#[test]
fn opens_never_fail_while_a_writer_renames_over_the_name_without_passthrough() {
    race("race-ren-np", Writer::RenameOver, false, true);
}

#[test]
fn opens_never_fail_while_a_writer_renames_over_a_lower_name_without_passthrough() {
    race("race-ren-low-np", Writer::RenameOver, true, true);
}

#[test]
fn opens_see_only_enoent_while_a_writer_unlinks_and_recreates_the_name() {
    race("race-unl", Writer::UnlinkRecreate, true, false);
}

#[test]
fn opens_see_only_enoent_while_a_writer_unlinks_and_recreates_the_name_without_passthrough() {
    race("race-unl-np", Writer::UnlinkRecreate, true, true);
}
