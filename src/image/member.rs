//! A tar member as the unpacker takes it: its path cleaned into components (a
//! leading `/` or `./` dropped, `..` resolved and never above the root), names as C
//! strings, PAX times, and its data written with holes where whole blocks are zero.

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::fsdir::Dir;
use crate::sys;

/// A path inside the layer: its components, none empty, `.` or `..`.
pub type Comps = Vec<Vec<u8>>;

/// Splits an archive path: a leading `/` or `./` is dropped, `..` is resolved and
/// must not leave the root.
pub fn clean_path(raw: &[u8]) -> Result<Comps, String> {
    let mut out: Comps = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(format!(
                        "'{}' leaves the layer's root",
                        String::from_utf8_lossy(raw)
                    ));
                }
            }
            c => {
                if c.contains(&0) || c.len() > 255 {
                    return Err(format!("bad name in '{}'", String::from_utf8_lossy(raw)));
                }
                out.push(c.to_vec());
            }
        }
    }
    Ok(out)
}

pub fn show(c: &[Vec<u8>]) -> String {
    let v: Vec<String> = c
        .iter()
        .map(|x| String::from_utf8_lossy(x).into())
        .collect();
    v.join("/")
}

pub fn cstr(b: &[u8]) -> Result<CString, String> {
    CString::new(b).map_err(|_| "a name with a NUL byte".to_string())
}

/// Opens a regular file at `comps` in `layer` read-only, never through a symlink.
pub fn open_in(layer: &Dir, comps: &Comps) -> Option<(OwnedFd, sys::Stat)> {
    let (name, parents) = comps.split_last()?;
    let mut fd = sys::openat(layer.fd(), c"", libc::O_PATH | libc::O_DIRECTORY, 0).ok()?;
    for c in parents {
        fd = sys::openat(
            fd.as_fd(),
            &CString::new(c.clone()).ok()?,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )
        .ok()?;
    }
    let f = sys::openat(
        fd.as_fd(),
        &CString::new(name.clone()).ok()?,
        libc::O_RDONLY,
        0,
    )
    .ok()?;
    let st = sys::fstat(f.as_fd()).ok()?;
    Some((f, st))
}

/// `SECONDS[.FRACTION]` of a PAX time.
pub fn parse_time(s: &str) -> Option<libc::timespec> {
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let tv_sec = sec.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let tv_nsec = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    Some(libc::timespec { tv_sec, tv_nsec })
}

/// Copies `src` into the new file `fd`, leaving holes where whole blocks are zero;
/// fails past `limit` bytes. Returns the size.
pub fn write_sparse(src: &mut impl Read, fd: BorrowedFd, limit: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 16];
    let mut off = 0u64;
    loop {
        let mut n = 0;
        while n < buf.len() {
            match src.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 {
            break;
        }
        if off + n as u64 > limit {
            return Err(io::Error::other("larger than the size limit"));
        }
        for chunk in buf[..n].chunks(4096) {
            if chunk.iter().any(|b| *b != 0) {
                let mut done = 0;
                while done < chunk.len() {
                    done += sys::pwrite(fd, &chunk[done..], off + done as u64)?;
                }
            }
            off += chunk.len() as u64;
        }
    }
    sys::ftruncate(fd, off)?;
    Ok(off)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Vec<String>, String> {
        clean_path(s.as_bytes()).map(|v| {
            v.into_iter()
                .map(|c| String::from_utf8(c).unwrap())
                .collect()
        })
    }

    #[test]
    fn paths_are_cleaned_and_never_leave_the_root() {
        assert_eq!(p("/etc/./motd").unwrap(), ["etc", "motd"]);
        assert_eq!(p("./a//b/").unwrap(), ["a", "b"]);
        assert_eq!(p("a/b/../c").unwrap(), ["a", "c"]);
        assert!(p("../x").is_err());
        assert!(p("a/../../x").is_err());
        assert!(p("/..").is_err());
        assert_eq!(p("./").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn pax_times_keep_their_fraction() {
        let t = parse_time("1700000000.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 500_000_000));
        let t = parse_time("12").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (12, 0));
        assert!(parse_time("x").is_none());
    }
}
