//! The mount lifecycle: check the request, mount, go to the background once the mount
//! is live, serve until the mount goes away, unmount cleanly on SIGTERM/SIGINT.

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{Config, Session, SessionACL};
use log::{debug, info, warn};

use crate::fs::StrataFs;
use crate::mountinfo;
use crate::options::MountOptions;
use crate::overlay::{Overlay, Settings};
use crate::sys;

/// A mount as the command line asked for it.
pub struct MountRequest {
    pub foreground: bool,
    pub source: Option<OsString>,
    pub mountpoint: PathBuf,
    pub opts: MountOptions,
}

/// Default entry/attribute timeout: the lowers are read-only and the upper changes
/// only through us, so the kernel may keep what it learnt (as fuse-overlayfs does).
const DEFAULT_TIMEOUT_SECS: f64 = 1e9;

fn cpath(p: &Path) -> Result<CString, String> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("{}: invalid path", p.display()))
}

/// Checks everything that can be checked before mounting and opens the layers.
pub fn prepare(req: &MountRequest) -> Result<Overlay, String> {
    let o = &req.opts;
    if o.lowerdirs.is_empty() {
        return Err("no lowerdir specified".into());
    }
    match std::fs::metadata(&req.mountpoint) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(format!(
                "mountpoint {}: not a directory",
                req.mountpoint.display()
            ))
        }
        // (ECONNABORTED: the connection was being torn down as the stat came)
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED)) => {
            clear_dead_mount(&req.mountpoint)?
        }
        Err(e) => {
            return Err(match e.raw_os_error() {
                Some(libc::ENOENT) => {
                    format!("mountpoint {}: does not exist", req.mountpoint.display())
                }
                _ => format!("mountpoint {}: {e}", req.mountpoint.display()),
            })
        }
    }
    if o.upperdir.is_some() && o.workdir.is_none() {
        return Err("upperdir given without workdir".into());
    }
    let timeout = o.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS);
    let settings = Settings {
        ttl: Duration::try_from_secs_f64(timeout).unwrap_or(Duration::from_secs(1_000_000_000)),
        read_only: o.read_only || o.upperdir.is_none(),
        volatile: o.volatile,
        acl: !o.noacl && !o.noxattrs,
        static_nlink: o.static_nlink,
        readdirplus: o.readdirplus,
        ino32: o.ino32,
        xattr_permissions: o.xattr_permissions,
        noxattrs: o.noxattrs,
        ids: crate::idmap::IdMap::new(
            o.uidmapping.as_deref(),
            o.gidmapping.as_deref(),
            o.squash_to_root,
            o.squash_to_uid,
            o.squash_to_gid,
        )?,
    };
    if let (Some(upper), Some(work)) = (&o.upperdir, &o.workdir) {
        let dev_of = |p: &Path, what: &str| {
            std::fs::metadata(p)
                .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::ENOENT) => format!("{what} {}: does not exist", p.display()),
                    _ => format!("{what} {}: {e}", p.display()),
                })
        };
        if dev_of(work, "workdir")? != dev_of(upper, "upperdir")? {
            return Err(format!(
                "workdir {} and upperdir {} must be on the same filesystem",
                work.display(),
                upper.display()
            ));
        }
    }
    let upper = o.upperdir.as_deref().zip(o.workdir.as_deref());
    let ov = Overlay::open(upper, &o.lowerdirs, settings)?;
    crate::inject::install(&o.inject)?;
    // An index left by kernel overlayfs (index=on): its hard links are taken over.
    if let Some(ix) = ov
        .work
        .as_ref()
        .and_then(|w| crate::index::open(w.dir.as_fd()))
    {
        crate::index::adopt(&ov, ix.as_fd());
    }
    Ok(ov)
}

fn open_dev_fuse() -> Result<OwnedFd, String> {
    sys::open_path(c"/dev/fuse", libc::O_RDWR).map_err(|e| format!("cannot open /dev/fuse: {e}"))
}

/// mount(2) of a FUSE filesystem served through `dev`.
fn mount_fuse(
    req: &MountRequest,
    target: &CString,
    dev: &OwnedFd,
    read_only: bool,
) -> Result<(), String> {
    let o = &req.opts;
    let root = sys::geteuid() == 0;
    let mut flags: libc::c_ulong = libc::MS_NOATIME;
    if !o.suid.unwrap_or(root) {
        flags |= libc::MS_NOSUID;
    }
    // Device nodes of the layers are not usable unless `dev` is asked for (as
    // fuse-overlayfs 1.10 mounts): an image layer's device node must not open a
    // device of the host.
    if !o.dev.unwrap_or(false) {
        flags |= libc::MS_NODEV;
    }
    if !o.exec.unwrap_or(true) {
        flags |= libc::MS_NOEXEC;
    }
    if read_only {
        flags |= libc::MS_RDONLY;
    }
    let mut data = format!(
        "fd={},rootmode=40000,user_id={},group_id={},default_permissions",
        dev.as_raw_fd(),
        sys::geteuid(),
        sys::getegid()
    );
    if root || o.allow_other || o.allow_root {
        data.push_str(",allow_other");
    }
    let source = CString::new(fs_name(req)).map_err(|_| "invalid fsname".to_string())?;
    let data = CString::new(data).map_err(|_| "invalid mount data".to_string())?;
    sys::mount(&source, target, c"fuse.stratafs", flags, &data)
        .map_err(|e| format!("mount {}: {e}", target.to_string_lossy()))
}

/// Mounts through fusermount3 (setuid root), which passes the /dev/fuse connection
/// back over a socket (`_FUSE_COMMFD`), as libfuse does for unprivileged users.
fn mount_with_fusermount(
    req: &MountRequest,
    target: &CString,
    read_only: bool,
) -> Result<OwnedFd, String> {
    let (ours, theirs) = sys::socketpair_for_child().map_err(|e| format!("socketpair: {e}"))?;
    let mut opts = format!(
        "fsname={},subtype=stratafs,default_permissions",
        fs_name(req).replace(',', "_")
    );
    if read_only {
        opts.push_str(",ro");
    }
    if req.opts.allow_other {
        opts.push_str(",allow_other");
    }
    let out = std::process::Command::new("fusermount3")
        .env("_FUSE_COMMFD", theirs.as_raw_fd().to_string())
        .args(["-o", &opts, "--"])
        .arg(std::ffi::OsStr::from_bytes(target.as_bytes()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run fusermount3: {e}"))?;
    drop(theirs);
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        return Err(msg.trim().replace('\n', "; "));
    }
    sys::recv_fd(std::os::fd::AsFd::as_fd(&ours))
        .map_err(|e| format!("no /dev/fuse connection from fusermount3: {e}"))
}

/// The mount's source name: `fsname=`, else a leading SOURCE argument, else "stratafs".
fn fs_name(req: &MountRequest) -> String {
    req.opts
        .fsname
        .clone()
        .or_else(|| {
            req.source
                .as_ref()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "stratafs".into())
}

/// Unmounts lazily, so busy files keep working and nothing is left half-connected.
pub fn unmount(target: &CString) {
    if let Err(e) = sys::umount_detach(target) {
        warn!(
            "unmount {}: {e}; trying fusermount3",
            target.to_string_lossy()
        );
        let _ = std::process::Command::new("fusermount3")
            .args(["-u", "-z", "--"])
            .arg(std::ffi::OsStr::from_bytes(target.as_bytes()))
            .status();
    }
}

/// Unmounts on SIGTERM, SIGINT and SIGHUP; the session then ends by itself.
fn watch_signals(target: CString) -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| format!("signal handlers: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                info!("signal {sig}: unmounting {}", target.to_string_lossy());
                unmount(&target);
            }
        })
        .map(drop)
        .map_err(|e| format!("signal thread: {e}"))
}

/// The mountpoint answers ENOTCONN (or ECONNABORTED): a FUSE mount whose daemon is gone is still
/// there. A dead stratafs mount is ours to clear (unmounted lazily, then the mount goes
/// on); any other is explained, with the command that clears it.
fn clear_dead_mount(mountpoint: &Path) -> Result<(), String> {
    let abs = std::env::current_dir()
        .map(|d| d.join(mountpoint))
        .unwrap_or_else(|_| mountpoint.to_path_buf());
    let dead = format!(
        "mountpoint {}: Transport endpoint is not connected (a FUSE mount whose daemon \
         is gone is still there; `umount {}` removes it)",
        mountpoint.display(),
        mountpoint.display()
    );
    let mounts = mountinfo::read("self");
    let ours = mountinfo::top_at(&mounts, &abs, "fuse")
        .is_some_and(|i| mounts[i].fstype == "fuse.stratafs");
    if !ours {
        return Err(dead);
    }
    let target = cpath(&abs)?;
    let cleared = sys::umount_detach(&target).is_ok()
        || std::process::Command::new("fusermount3")
            .args(["-u", "-z", "--"])
            .arg(&abs)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    match std::fs::metadata(mountpoint) {
        Ok(m) if cleared && m.is_dir() => {
            info!("cleared a dead stratafs mount at {}", abs.display());
            Ok(())
        }
        _ => Err(dead),
    }
}

/// Readahead of the mount, in KiB: one full 1 MiB read request (the kernel's default
/// of 128 KiB makes a sequential read of a lower file cost eight round trips per MiB).
const READAHEAD_KB: u32 = 1024;

/// The device ("MAJOR:MINOR") of the FUSE mount on top at `mountpoint`.
fn mount_dev(mountpoint: &Path) -> Option<String> {
    let mounts = mountinfo::read("self");
    mountinfo::top_at(&mounts, mountpoint, "fuse").map(|i| mounts[i].dev.clone())
}

/// Sets the readahead of this mount's own backing device info (`/sys/class/bdi/M:N`);
/// root only, and best effort.
fn raise_readahead(dev: &str) {
    let path = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    match std::fs::write(&path, READAHEAD_KB.to_string()) {
        Ok(()) => debug!("{path}: {READAHEAD_KB}"),
        Err(e) => debug!("{path}: {e}"),
    }
}

/// What serves a mount's control requests (the trace subsystem's socket), given the
/// mount's device (`M:N`) once it is live and before the daemon forks: it returns what
/// starts serving in the daemon, given the overlay; that returns a guard kept until
/// the mount ends. The core knows nothing more of it.
pub type Control<'a> = &'a dyn Fn(&str) -> Option<Serve>;
pub type Serve = Box<dyn FnOnce(Arc<crate::overlay::Overlay>) -> Box<dyn Send> + Send>;

/// How many threads serve a mount: two per core, at least four (a request that waits,
/// a copy-up or a second writer waiting for it, must not leave the rest of the mount
/// without a thread), or `STRATAFS_THREADS`.
pub fn default_threads() -> usize {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
    std::env::var("STRATAFS_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(threads.max(4))
}

/// Mounts and serves. Returns once the mount is gone (in the daemon), or never in the
/// foreground process of a background mount (it exits 0 once the mount is live).
pub fn run(req: MountRequest, control: Control) -> Result<(), String> {
    let ov = prepare(&req)?;
    let mountpoint = std::fs::canonicalize(&req.mountpoint)
        .map_err(|e| format!("mountpoint {}: {e}", req.mountpoint.display()))?;
    let target = cpath(&mountpoint)?;
    sys::clear_umask();
    let nofile = sys::raise_nofile_limit();
    crate::stack::set_fd_budget(nofile as i64 / 2);

    let read_only = ov.settings.read_only;
    let opened = open_dev_fuse();
    // Cloned fds reopen /dev/fuse, which a plain user may not be allowed to.
    let can_clone = opened.is_ok();
    let direct = opened.and_then(|dev| mount_fuse(&req, &target, &dev, read_only).map(|_| dev));
    let dev = match direct {
        Ok(dev) => dev,
        // Not allowed to mount (a plain user outside a user namespace): the setuid
        // helper mounts and hands us the connection.
        Err(e) if sys::geteuid() != 0 => mount_with_fusermount(&req, &target, read_only)
            .map_err(|e2| format!("{e}; and through fusermount3: {e2}"))?,
        Err(e) => return Err(e),
    };
    let threads = default_threads();
    let mut cfg = Config::default();
    cfg.n_threads = Some(threads);
    cfg.clone_fd = can_clone;
    let fs = StrataFs::new(Arc::new(ov));
    let ov = fs.ov.clone();
    let prefill = fs.prefill.clone();
    let session = match Session::from_fd(fs, dev, SessionACL::All, cfg) {
        Ok(s) => s,
        Err(e) => {
            unmount(&target);
            return Err(format!("FUSE handshake failed: {e}"));
        }
    };
    prefill.set_notifier(session.notifier());
    info!("mounted {} ({threads} threads)", mountpoint.display());
    // The control socket is bound before the fork, so it is there once the mount
    // command returns.
    let dev = mount_dev(&mountpoint);
    let serve = dev.as_deref().and_then(control);

    if !req.foreground {
        // Still single-threaded here: fuser starts its workers in run().
        match sys::fork().map_err(|e| format!("fork: {e}"))? {
            sys::Fork::Parent => sys::exit_now(0),
            sys::Fork::Child => {
                sys::setsid();
                let _ = std::env::set_current_dir("/");
                let _ = sys::detach_stdio();
            }
        }
    }
    // Room for the directory fd cache (half the fd limit, see stack.rs), made while
    // this is the daemon's only thread.
    sys::pregrow_fd_table((nofile / 2).min(1 << 14));
    // (In the daemon, after the command has returned: not every mount's cost.)
    if let Some(dev) = dev {
        if sys::geteuid() == 0 {
            raise_readahead(&dev);
        }
        crate::orphan::watch(dev);
    }
    let _control = serve.map(|s| s(ov));
    watch_signals(target)?;
    let result = session.run();
    debug!("session ended: {result:?}");
    result.map_err(|e| format!("session: {e}"))
}
