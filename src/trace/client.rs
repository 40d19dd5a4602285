//! `stratafs trace MOUNTPOINT|CONTAINER [--json]` and `stratafs stats
//! MOUNTPOINT|CONTAINER [--json]`: the client side of the control socket.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::control::socket_path;
use super::format;

/// The mount point `target` names: a directory, or else a container of the store.
fn mount_point(target: &str, store: Option<&Path>) -> Result<PathBuf, String> {
    let p = Path::new(target);
    if p.is_dir() {
        return Ok(p.to_path_buf());
    }
    crate::image::container_mount_point(store, target)
        .map_err(|e| format!("{target}: not a directory, and as a container: {e}"))
}

fn connect(target: &str, store: Option<&Path>, request: &str) -> Result<UnixStream, String> {
    let mp = mount_point(target, store)?;
    let st = std::fs::metadata(&mp).map_err(|e| format!("{}: {e}", mp.display()))?;
    let dev = format!("{}:{}", libc::major(st.dev()), libc::minor(st.dev()));
    let sock = socket_path(&dev);
    let mut s = UnixStream::connect(&sock).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ECONNREFUSED) => format!(
            "{}: no stratafs mount of yours there (no control socket {})",
            mp.display(),
            sock.display()
        ),
        _ => format!("{}: {e}", sock.display()),
    })?;
    // (A refused peer finds the connection closed: the refusal is read, not this.)
    let _ = writeln!(s, "{request}");
    Ok(s)
}

fn refused(v: &serde_json::Value) -> Result<(), String> {
    match v["error"].as_str() {
        Some(e) => Err(e.to_string()),
        None => Ok(()),
    }
}

pub fn trace_cmd(target: &str, json: bool, store: Option<&Path>) -> Result<(), String> {
    let s = connect(target, store, "trace")?;
    let colours = std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(s).lines() {
        let line = line.map_err(|e| format!("reading the trace: {e}"))?;
        if line.is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("a bad trace line: {e}"))?;
        refused(&v)?;
        if v["tracing"].as_bool() == Some(true) {
            eprintln!("tracing {target} (Ctrl-C ends)");
            continue;
        }
        let text = if json {
            line
        } else {
            format::event_line(&v, colours)
        };
        if writeln!(out, "{text}").and_then(|_| out.flush()).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

pub fn stats_cmd(target: &str, json: bool, store: Option<&Path>) -> Result<(), String> {
    let s = connect(target, store, "stats")?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| format!("reading the statistics: {e}"))?;
    if line.is_empty() {
        return Err(format!("{target}: the mount closed the connection"));
    }
    let v: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| format!("bad statistics: {e}"))?;
    refused(&v)?;
    if json {
        println!("{}", line.trim_end());
    } else {
        println!("{}", format::stats_text(&v));
    }
    Ok(())
}
