//! What /proc tells of other processes: their ids, the files they hold open, their
//! command lines. Only looked at to find a holder (a second mount's, a mount
//! namespace's); a process that goes away meanwhile is simply not found.

use std::ffi::OsStr;

/// The process ids /proc lists, in its (ascending) order.
pub fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
}

/// Does process `pid` hold an fd whose /proc link reads `target` (a path, or
/// "mnt:[N]" for a mount namespace)?
pub fn holds(pid: u32, target: &OsStr) -> bool {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"));
    fds.into_iter()
        .flatten()
        .flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target))
}

/// The command line of process `pid`, its arguments joined by spaces.
pub fn cmdline(pid: u32) -> String {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmd
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    args.join(" ")
}
