//! Test harness: temp dirs, real mounts that always unmount, fixture helpers.
#![allow(dead_code)]

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_stratafs");

/// A directory of this test's own, removed (after any mount in it is gone) on drop.
pub struct TempDir {
    pub path: PathBuf,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let base = std::env::var_os("STRATAFS_TEST_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = base.join(format!("stratafs-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }

    /// Makes and returns a subdirectory.
    pub fn dir(&self, p: &str) -> PathBuf {
        let d = self.path.join(p);
        fs::create_dir_all(&d).expect("mkdir");
        d
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Never remove anything while a mount is still below us.
        for mnt in mounts_below(&self.path) {
            lazy_unmount(&mnt);
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Mount points (from /proc/self/mountinfo) at or below `dir`.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect()
}

pub fn is_mounted(dir: &Path) -> bool {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    mounts_below(&dir).contains(&dir)
}

pub fn lazy_unmount(dir: &Path) {
    let c = CString::new(dir.as_os_str().as_bytes()).unwrap();
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

/// Waits up to `secs` for `cond`.
pub fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Runs stratafs with `args` and a timeout, stdin from /dev/null.
pub fn run(args: &[&OsStr]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stratafs");
    wait_output(child, 60)
}

/// `stratafs stats [ARGS] MNT`, the control sockets in `runtime_dir`: what it printed
/// and how it exited (callers check what they need).
pub fn stats_output(mnt: &Path, runtime_dir: impl AsRef<OsStr>, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("stats")
        .args(args)
        .arg(mnt)
        .env("STRATAFS_RUNTIME_DIR", runtime_dir)
        .output()
        .unwrap()
}

/// Collects a child's output, failing the test if it takes longer than `secs`
/// (a daemon that kept our pipes open would make this hang).
pub fn wait_output(mut child: std::process::Child, secs: u64) -> Output {
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut o = Vec::new();
        let mut e = Vec::new();
        if let Some(s) = out.as_mut() {
            let _ = s.read_to_end(&mut o);
        }
        if let Some(s) = err.as_mut() {
            let _ = s.read_to_end(&mut e);
        }
        (o, e)
    });
    let end = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("stratafs did not exit within {secs}s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let end = Instant::now() + Duration::from_secs(secs);
    while !reader.is_finished() {
        assert!(
            Instant::now() < end,
            "stratafs's output pipes stayed open after it exited"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (stdout, stderr) = reader.join().expect("reader");
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Is process `pid` still running? A zombie is not: it has exited, and only waits for
/// its parent (here often pid 1, which may reap it seconds later) to collect it.
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Pids of stratafs processes whose command line names `mountpoint`.
pub fn daemon_pids(mountpoint: &Path) -> Vec<u32> {
    let needle = mountpoint.as_os_str().as_bytes().to_vec();
    let mut pids = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        if args.first().is_some_and(|a| a.ends_with(b"stratafs"))
            && args.contains(&needle.as_slice())
        {
            pids.push(pid);
        }
    }
    pids
}

/// A live stratafs mount, unmounted (and its daemon gone) on drop.
pub struct Mount {
    pub mnt: PathBuf,
}

impl Mount {
    /// Mounts in the background with the given `-o` options.
    pub fn new(opts: &str, mnt: &Path) -> Mount {
        Mount::with_env(opts, mnt, &[])
    }

    /// The same, with extra environment variables for the daemon.
    pub fn with_env(opts: &str, mnt: &Path, env: &[(&str, &str)]) -> Mount {
        let mut cmd = Command::new(BIN);
        cmd.args([OsStr::new("-o"), OsStr::new(opts), mnt.as_os_str()])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = wait_output(cmd.spawn().expect("spawn stratafs"), 60);
        // The guard exists before any assertion, so a half-done mount is cleaned up.
        let m = Mount {
            mnt: mnt.to_path_buf(),
        };
        assert!(
            out.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            is_mounted(mnt),
            "stratafs exited 0 but {} is not mounted",
            mnt.display()
        );
        m
    }

    /// lowerdir list (topmost first) and an optional (upper, work).
    pub fn layers(lowers: &[&Path], upper: Option<(&Path, &Path)>, mnt: &Path) -> Mount {
        Mount::new(&layer_opts(lowers, upper), mnt)
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.mnt.clone()
        } else {
            self.mnt.join(rel)
        }
    }

    /// Unmounts and waits for the daemon to exit. (A mount namespace made meanwhile
    /// by `unshare -m`, here or by a parallel test, holds a copy of the mount, and the
    /// session ends only when that namespace goes away: hence the generous wait.)
    pub fn unmount(&self) {
        let pids = daemon_pids(&self.mnt);
        if is_mounted(&self.mnt) {
            lazy_unmount(&self.mnt);
        }
        assert!(
            wait_for(90, || pids.iter().all(|p| !process_alive(*p))),
            "daemon did not exit after unmount"
        );
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            lazy_unmount(&self.mnt);
        }
    }
}

/// Another filesystem mounted for a test (kernel overlayfs, a tmpfs), lazily
/// unmounted on drop.
pub struct OtherMount(pub PathBuf);

impl OtherMount {
    /// `mount -t FSTYPE SOURCE -o OPTS MNT`, asserting it worked.
    pub fn new(fstype: &str, source: &str, opts: &str, mnt: &Path) -> OtherMount {
        let out = Command::new("mount")
            .args(["-t", fstype, source, "-o", opts])
            .arg(mnt)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t {fstype} -o {opts}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        OtherMount(mnt.to_path_buf())
    }

    /// Kernel overlayfs over `lowers` (topmost first), `upper` and `work`, plus `extra`
    /// options.
    pub fn kernel_overlay(
        lowers: &[&Path],
        upper: &Path,
        work: &Path,
        extra: &str,
        mnt: &Path,
    ) -> OtherMount {
        let l: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}{extra}",
            l.join(":"),
            upper.display(),
            work.display()
        );
        OtherMount::new("overlay", "overlay", &opts, mnt)
    }
}

impl Drop for OtherMount {
    fn drop(&mut self) {
        lazy_unmount(&self.0);
    }
}

pub fn layer_opts(lowers: &[&Path], upper: Option<(&Path, &Path)>) -> String {
    let l: Vec<String> = lowers
        .iter()
        .map(|p| p.display().to_string().replace(':', "\\:"))
        .collect();
    let mut s = format!("lowerdir={}", l.join(":"));
    if let Some((u, w)) = upper {
        s.push_str(&format!(
            ",upperdir={},workdir={}",
            u.display(),
            w.display()
        ));
    }
    s
}

// --- fixture helpers (all inside a test's own dirs) ---

pub fn write(path: &Path, data: &str) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, data).unwrap();
}

/// Opens `path` for appending, writes `data`, closes it.
pub fn append(path: &Path, data: &str) {
    let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
    std::io::Write::write_all(&mut f, data.as_bytes()).unwrap();
}

pub fn mknod(path: &Path, mode: u32, dev: u64) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let r = unsafe { libc::mknod(c.as_ptr(), mode, dev) };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// A kernel-style whiteout: char device 0/0.
pub fn whiteout(path: &Path) {
    mknod(path, libc::S_IFCHR | 0o600, 0);
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Returns the value, or the errno.
pub fn get_xattr(path: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 65536];
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    buf.truncate(r as usize);
    Ok(buf)
}

pub fn list_xattr(path: &Path) -> Vec<String> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 65536];
    let r = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        r >= 0,
        "listxattr {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    buf.truncate(r as usize);
    buf.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Sorted names in a directory (through readdir).
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub fn errno_of<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Drops the kernel's dentry and inode caches (the kernel forgets our inodes).
pub fn drop_caches() {
    let _ = fs::write("/proc/sys/vm/drop_caches", "2");
}

/// Ends the test run with one line (no panic, no backtrace) unless it runs as root.
pub fn assert_root() {
    use std::io::Write;
    if unsafe { libc::geteuid() } != 0 {
        let me = std::env::args().next().unwrap_or_default();
        let me = Path::new(&me)
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        // (Written to fd 2 itself: the test harness captures eprintln!.)
        let _ = writeln!(
            std::io::stderr(),
            "{me}: these tests mount for real and need root (run scripts/test.sh as root)"
        );
        std::process::exit(2);
    }
}

/// open(2) of `p` that never follows a symlink and never blocks (on a FIFO), with
/// mode 0644 for a file it creates.
pub fn open_nofollow(p: &Path, flags: i32) -> std::io::Result<fs::File> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// A small seeded xorshift generator, for repeatable random operations.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

/// What the tree under `root` shows, per path: mode, and for a file its size, link
/// count and a hash of its content, for a symlink its target. Follows no symlink.
pub fn tree_view(root: &Path) -> std::collections::BTreeMap<PathBuf, String> {
    use std::hash::Hasher;
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap() {
            let r = rel.join(e.unwrap().file_name());
            let p = root.join(&r);
            let md = fs::symlink_metadata(&p).unwrap();
            let mut s = format!("mode={:o}", md.mode());
            if md.is_file() {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                h.write(&fs::read(&p).unwrap());
                s += &format!(
                    " size={} nlink={} hash={:x}",
                    md.size(),
                    md.nlink(),
                    h.finish()
                );
            } else if md.file_type().is_symlink() {
                s += &format!(" target={:?}", fs::read_link(&p).unwrap());
            } else if md.is_dir() {
                stack.push(r.clone());
            }
            out.insert(r, s);
        }
    }
    out
}

/// `stratafs check UPPER --work WORK --lower LOWER [--repair]`: whether it exited 0,
/// and all it printed (stdout, then stderr).
pub fn run_check(upper: &Path, work: &Path, lower: &Path, repair: bool) -> (bool, String) {
    let mut args = vec![
        OsStr::new("check"),
        upper.as_os_str(),
        OsStr::new("--work"),
        work.as_os_str(),
        OsStr::new("--lower"),
        lower.as_os_str(),
    ];
    if repair {
        args.push(OsStr::new("--repair"));
    }
    let out = run(&args);
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

/// Whether `stratafs check` finds the upper clean, and what it printed.
pub fn check_upper(upper: &Path, work: &Path, lower: &Path) -> (bool, String) {
    let (ok, said) = run_check(upper, work, lower, false);
    (ok && said.contains("clean"), said)
}

/// What a run left, seen again: `mount` (of `opts` at `m`, showing `view`) is undone
/// and made anew, and shows `view` again; then `upper_is_sound`.
pub fn remount_and_check(
    mount: Mount,
    opts: &str,
    m: &Path,
    t: &TempDir,
    (l, u, w): (&Path, &Path, &Path),
    view: &std::collections::BTreeMap<PathBuf, String>,
) {
    mount.unmount();
    drop(mount);
    let again = Mount::new(opts, m);
    assert_eq!(&tree_view(m), view, "the tree differs after a remount");
    again.unmount();
    drop(again);
    upper_is_sound(t, l, u, w, view);
}

/// An upper left by a run (after a crash, a stress, ...): `stratafs check` finds
/// nothing, and the kernel mounting it (`redirect_dir=on,index=on`) shows `view`.
pub fn upper_is_sound(
    t: &TempDir,
    l: &Path,
    u: &Path,
    w: &Path,
    view: &std::collections::BTreeMap<PathBuf, String>,
) {
    let (clean, said) = check_upper(u, w, l);
    assert!(clean, "stratafs check: {said}");
    // (the kernel's work dir beside the upper, on the same filesystem; made anew, as
    // its index belongs to the upper it was made with)
    let kw = u.parent().unwrap().join("kw");
    let _ = fs::remove_dir_all(&kw);
    fs::create_dir_all(&kw).unwrap();
    let km = t.dir("km");
    let k = OtherMount::kernel_overlay(&[l], u, &kw, ",redirect_dir=on,index=on", &km);
    assert_eq!(
        &tree_view(&km),
        view,
        "the kernel reads another tree from the upper"
    );
    drop(k);
}
