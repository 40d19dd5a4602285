//! The daemon's control socket: `<runtime dir>/stratafs/<M:N>.sock`, named by the
//! mount's device number (which `stat` of the mount point gives a client), in a
//! directory only its owner can enter, mode 0600, and each peer's uid checked against
//! the daemon's. A connection sends one line: `trace` (then reads events, a JSON
//! object per line, as they happen) or `stats` (then reads one JSON object).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::events::{Event, What};
use crate::mount::Serve;
use crate::overlay::Overlay;
use crate::sys;

/// The directory of the control sockets of this user's mounts.
/// (`STRATAFS_RUNTIME_DIR` puts them elsewhere: tests, several test mounts at once.)
pub fn socket_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STRATAFS_RUNTIME_DIR") {
        return PathBuf::from(d);
    }
    let uid = sys::geteuid();
    if uid == 0 {
        return PathBuf::from("/run/stratafs");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("stratafs"),
        _ => PathBuf::from(format!("/tmp/stratafs-{uid}")),
    }
}

/// The socket of the mount on device `dev` (`M:N`).
pub fn socket_path(dev: &str) -> PathBuf {
    socket_dir().join(format!("{dev}.sock"))
}

/// Makes the socket directory, or checks the one there: a real directory, ours, 0700.
fn own_dir() -> Result<PathBuf, String> {
    let dir = socket_dir();
    let _ = std::fs::create_dir_all(&dir);
    let m = std::fs::symlink_metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !m.is_dir() || m.uid() != sys::geteuid() {
        return Err(format!("{}: not a directory of ours", dir.display()));
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// Removes the socket when the mount ends, unless it is another one by then: device
/// numbers are reused, and the next mount on this one may have bound its socket at the
/// same path before this daemon ended.
struct Cleanup(PathBuf, Option<(u64, u64)>);

/// The device and inode number at `path`.
fn identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.1.is_some() && identity(&self.0) == self.1 {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Binds the control socket of the mount on `dev`; what it returns serves it.
/// (A mount without one still works: the reason is logged.)
pub fn listen(dev: &str) -> Option<Serve> {
    let bound = own_dir().and_then(|_| {
        let path = socket_path(dev);
        // A socket left by a mount gone before (device numbers are reused).
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((l, path))
    });
    let (listener, path) = match bound {
        Ok(x) => x,
        Err(e) => {
            log::warn!("no control socket (trace, stats): {e}");
            return None;
        }
    };
    let id = identity(&path);
    Some(Box::new(move |ov: Arc<Overlay>| {
        let _ = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || accept(listener, ov));
        Box::new(Cleanup(path, id)) as Box<dyn Send>
    }))
}

fn accept(listener: UnixListener, ov: Arc<Overlay>) {
    let me = sys::geteuid();
    for conn in listener.incoming().flatten() {
        match sys::peer_uid(conn.as_fd()) {
            Ok(uid) if uid == me => {}
            other => {
                log::warn!("control socket: refused a connection from uid {other:?}");
                let mut c = conn;
                let _ = writeln!(c, "{}", json!({"error": "refused: not the mount's owner"}));
                continue;
            }
        }
        let ov = ov.clone();
        let _ = std::thread::Builder::new()
            .name("control-conn".into())
            .spawn(move || serve(conn, &ov));
    }
}

fn serve(conn: UnixStream, ov: &Overlay) {
    let mut line = String::new();
    let Ok(read) = conn.try_clone() else { return };
    let _ = conn.set_write_timeout(Some(Duration::from_secs(30)));
    if BufReader::new(read).read_line(&mut line).is_err() {
        return;
    }
    let mut out = std::io::BufWriter::new(conn);
    match line.trim() {
        "stats" => {
            let _ = writeln!(out, "{}", stats_json(ov));
        }
        "trace" => {
            let mut sub = ov.events.subscribe();
            let _ = writeln!(out, "{}", json!({"tracing": true}));
            loop {
                let (events, lost) = sub.next(Duration::from_secs(1));
                let sent = (|| {
                    if lost > 0 {
                        writeln!(out, "{}", json!({"lost": lost}))?;
                    }
                    for e in &events {
                        writeln!(out, "{}", event_json(ov, e))?;
                    }
                    if lost == 0 && events.is_empty() {
                        // Nothing to say: an empty line finds out, within a second,
                        // that the listener went away.
                        out.write_all(b"\n")?;
                    }
                    out.flush()
                })();
                if sent.is_err() {
                    return;
                }
            }
        }
        other => {
            let _ = writeln!(
                out,
                "{}",
                json!({"error": format!("unknown request '{other}'")})
            );
        }
    }
}

fn event_json(ov: &Overlay, e: &Event) -> Value {
    let mut v = json!({
        "seq": e.seq,
        "time_ms": e.time_ms,
        "event": e.what.tag(),
        "path": e.path,
        "pid": e.pid,
        "comm": e.comm,
    });
    match &e.what {
        What::CopyUp {
            from_layer,
            bytes,
            method,
            micros,
        } => {
            v["from"] = json!(crate::inspect::layer_label(ov, *from_layer));
            v["bytes"] = json!(bytes);
            v["method"] = json!(method.name());
            v["micros"] = json!(micros);
        }
        What::Redirect { from } => v["redirect_from"] = json!(from),
        What::Create { kind } => v["kind"] = json!(kind),
        _ => {}
    }
    v
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn stats_json(ov: &Overlay) -> Value {
    let s = &ov.stats;
    let ops: serde_json::Map<String, Value> = s
        .ops()
        .into_iter()
        .map(|o| {
            (
                o.name.to_string(),
                json!({"count": o.count, "p50_us": o.p50_us, "p99_us": o.p99_us, "max_us": o.max_us}),
            )
        })
        .collect();
    let mut by_method = serde_json::Map::new();
    let (mut n, mut bytes) = (0, 0);
    for (m, c, b) in s.copy_ups() {
        by_method.insert(m.name().into(), json!({"count": c, "bytes": b}));
        n += c;
        bytes += b;
    }
    let mut changes = serde_json::Map::new();
    for (k, v) in s.changes() {
        changes.insert(k.into(), json!(v));
    }
    json!({
        "requests": ops,
        "copy_ups": {"count": n, "bytes": bytes, "by_method": by_method},
        "changes": changes,
        "nodes": ov.table.len(),
        "caches": {
            "open_files": ov.handles.counts().0,
            "listings_being_read": ov.handles.counts().1,
            "passthrough_files_kept_open": ov.handles.counts().2,
            "directories_known_free_of_wh": ov.aufs_free_dirs.len(),
        },
        "rss_kib": rss_kib(),
        "uptime_s": s.started.elapsed().as_secs_f64(),
    })
}
