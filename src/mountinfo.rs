//! /proc/PID/mountinfo read into entries: the mounts of one mount namespace.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One line of mountinfo (the fields this daemon uses).
pub struct Entry {
    /// "MAJOR:MINOR" of the mounted filesystem.
    pub dev: String,
    /// The path within the filesystem that is mounted ("mnt:[N]" for an nsfs file).
    pub root: Vec<u8>,
    /// Where it is mounted.
    pub point: PathBuf,
    pub fstype: String,
    /// The mount's source (a FUSE mount's `fsname`).
    pub source: Vec<u8>,
}

/// The mounts of the namespace of process `pid` ("self" for ours), in mount order.
pub fn read(pid: &str) -> Vec<Entry> {
    let text = std::fs::read(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    text.split(|&b| b == b'\n').filter_map(parse).collect()
}

/// The last mount at `point` whose type starts with `fstype` (the one on top).
pub fn top_at(entries: &[Entry], point: &Path, fstype: &str) -> Option<usize> {
    entries
        .iter()
        .rposition(|e| e.point == point && e.fstype.starts_with(fstype))
}

fn parse(line: &[u8]) -> Option<Entry> {
    let line = std::str::from_utf8(line).ok()?;
    let f: Vec<&str> = line.split(' ').collect();
    let mut after_dash = f.iter().skip_while(|x| **x != "-").skip(1);
    let fstype = after_dash.next()?;
    let source = after_dash.next().map(|s| unescape(s)).unwrap_or_default();
    Some(Entry {
        dev: f.get(2)?.to_string(),
        root: unescape(f.get(3)?),
        point: PathBuf::from(OsStr::from_bytes(&unescape(f.get(4)?))),
        fstype: fstype.to_string(),
        source,
    })
}

/// A mountinfo path field with its octal escapes (`\040` for a space, ...) undone.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                out.push(d.iter().fold(0u8, |v, c| v.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_undone() {
        assert_eq!(unescape(r"/tmp/a\040b\134c"), b"/tmp/a b\\c");
        assert_eq!(unescape(r"/x\04"), b"/x\\04");
        assert_eq!(unescape("/plain"), b"/plain");
    }

    #[test]
    fn a_line_is_parsed() {
        let e = parse(
            b"36 27 0:40 / /tmp/a\\040b rw,nodev,noatime shared:1 - fuse.stratafs stratafs rw",
        )
        .unwrap();
        assert_eq!(e.dev, "0:40");
        assert_eq!(e.root, b"/");
        assert_eq!(e.point, Path::new("/tmp/a b"));
        assert_eq!(e.fstype, "fuse.stratafs");
    }
}
