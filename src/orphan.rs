//! Ends a mount that only its own daemon can still reach.
//!
//! A FUSE daemon learns that its mount is gone when the kernel ends the connection,
//! which it does when the last reference to the superblock goes. One reference the
//! kernel cannot see through is the daemon's own: the mount lives in a mount
//! namespace, and the daemon, a member of that namespace, keeps it alive. When every
//! other process of the namespace has exited (`unshare -m` whose shell ended, a
//! rootless podman whose pause process went away), nobody can ever enter it again,
//! but the mount stays and the daemon serves it forever (containers/storage#1654:
//! hundreds of such daemons). Kernel overlayfs has no daemon: its mount goes with the
//! namespace.
//!
//! So the daemon looks, every few seconds, for another member of its mount
//! namespace (usually found at once: pid 1 on a host, the pause process of rootless
//! podman). When there is none and nothing holds the namespace open (an nsfs file
//! open or bound somewhere), it unmounts its own mount in that namespace, lazily, as
//! the namespace's end would have. If nothing else holds the mount (an open file, a
//! copy in another namespace), the kernel then ends the connection and the daemon
//! exits; otherwise it goes on serving those holders until they let go.
//!
//! Only done in the initial pid namespace, where /proc shows every process: in a
//! nested pid namespace a member outside it would be invisible.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::{debug, info};

use crate::procfs;
use crate::sys;

/// The inode number of the initial pid namespace (the kernel's PROC_PID_INIT_INO).
const INITIAL_PID_NS: &str = "pid:[4026531836]";

/// Seconds between looks (`STRATAFS_ORPHAN_CHECK_SECS` overrides; 0 turns it off).
const DEFAULT_INTERVAL_SECS: u64 = 5;

/// Starts the watch of the mount whose device is `dev` ("MAJOR:MINOR", as in
/// /proc/self/mountinfo), if this process can tell when it is alone.
pub fn watch(dev: String) {
    let secs = std::env::var("STRATAFS_ORPHAN_CHECK_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(DEFAULT_INTERVAL_SECS);
    if secs == 0 {
        return;
    }
    let link = |p: &str| std::fs::read_link(p).ok().map(|l| l.into_os_string());
    if link("/proc/self/ns/pid").as_deref() != Some(std::ffi::OsStr::new(INITIAL_PID_NS)) {
        debug!("not in the initial pid namespace: no watch for an unreachable mount");
        return;
    }
    let Some(ns) = link("/proc/self/ns/mnt") else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("orphan-watch".into())
        .spawn(move || {
            let me = std::process::id();
            let mut seen: Option<u32> = None;
            loop {
                std::thread::sleep(Duration::from_secs(secs));
                if seen.is_some_and(|p| member(p, &ns)) {
                    continue;
                }
                seen = other_member(&ns, me);
                if seen.is_some() || held_open(&ns, me) {
                    continue;
                }
                unmount_all(&dev);
            }
        });
    if let Err(e) = spawned {
        debug!("orphan watch thread: {e}");
    }
}

/// Is process `pid` in the mount namespace `ns`?
fn member(pid: u32, ns: &std::ffi::OsStr) -> bool {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|l| l.as_os_str() == ns)
}

/// Another process in the mount namespace `ns` (a zombie has left it).
fn other_member(ns: &std::ffi::OsStr, me: u32) -> Option<u32> {
    procfs::pids().find(|&p| p != me && member(p, ns))
}

/// Is the namespace `ns` held by an nsfs file: open in another process, or bound
/// onto a path in some mount namespace (where `setns` can still enter it)?
fn held_open(ns: &std::ffi::OsStr, me: u32) -> bool {
    let ns_bytes = ns.as_bytes();
    let mut namespaces_read = std::collections::HashSet::new();
    for pid in procfs::pids().filter(|&p| p != me) {
        if procfs::holds(pid, ns) {
            return true;
        }
        // Each namespace's mount table once: an nsfs bind mount shows the
        // namespace as its root ("mnt:[N]").
        let Ok(their_ns) = std::fs::read_link(format!("/proc/{pid}/ns/mnt")) else {
            continue;
        };
        if !namespaces_read.insert(their_ns) {
            continue;
        }
        if crate::mountinfo::read(&pid.to_string())
            .iter()
            .any(|m| m.root == ns_bytes)
        {
            return true;
        }
    }
    false
}

/// Unmounts (lazily) every mount of device `dev` in this namespace, deepest first.
fn unmount_all(dev: &str) {
    let mut points: Vec<PathBuf> = crate::mountinfo::read("self")
        .into_iter()
        .filter(|m| m.dev == dev)
        .map(|m| m.point)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        unmount(&p);
    }
}

fn unmount(p: &Path) {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return;
    };
    match sys::umount_detach(&c) {
        Ok(()) => info!(
            "{}: no other process is in this mount namespace and none can enter it: unmounted",
            p.display()
        ),
        Err(e) => debug!("{}: unmount: {e}", p.display()),
    }
}
