//! Reading an image archive: an OCI directory, or a tar (docker-archive, oci-archive)
//! read in place through an index of its members, never unpacked to disk as it is.
//! A member that is a symlink (`podman save` writes the legacy `<id>/layer.tar` so)
//! is resolved inside the archive only. Standard input is first spooled to a file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use super::fsdir::{cbytes, Dir};
use super::member::clean_path;
use crate::sys;

/// Where a member's data lies in the tar, or where a symlink member points.
pub enum Member {
    Data { offset: u64, size: u64 },
    Link(Vec<u8>),
}

pub enum Source {
    Dir(Dir),
    Tar {
        file: File,
        members: HashMap<Vec<u8>, (Vec<u8>, Member)>,
    },
}

/// The most a JSON member (manifest, config, index) may be.
const JSON_LIMIT: u64 = 16 << 20;

fn key(comps: &[Vec<u8>]) -> Vec<u8> {
    comps.join(&b'/')
}

impl Source {
    /// Opens `path`: a directory, a tar file, or `-` (stdin, spooled into `spool`).
    pub fn open(path: &str, spool: &Dir) -> Result<Source, String> {
        let file = if path == "-" {
            let mut f = spool
                .create("stdin.tar", 0o600)
                .map_err(|e| format!("spooling standard input: {e}"))?;
            io::copy(&mut io::stdin().lock(), &mut f)
                .map_err(|e| format!("reading standard input: {e}"))?;
            spool.open("stdin.tar").map_err(|e| e.to_string())?
        } else {
            let p = std::path::Path::new(path);
            let meta = std::fs::metadata(p).map_err(|e| format!("{path}: {e}"))?;
            if meta.is_dir() {
                return Ok(Source::Dir(
                    Dir::open_path(p).map_err(|e| format!("{path}: {e}"))?,
                ));
            }
            File::open(p).map_err(|e| format!("{path}: {e}"))?
        };
        Self::index_tar(file).map_err(|e| format!("{path}: not a readable tar archive: {e}"))
    }

    fn index_tar(file: File) -> io::Result<Source> {
        let mut members = HashMap::new();
        {
            let mut ar = tar::Archive::new(&file);
            for entry in ar.entries()? {
                let e = entry?;
                let raw = e.path_bytes().into_owned();
                let Ok(comps) = clean_path(&raw) else {
                    continue;
                };
                let kind = e.header().entry_type();
                let m = if kind.is_symlink() || kind.is_hard_link() {
                    let Some(t) = e.link_name_bytes() else {
                        continue;
                    };
                    if kind.is_hard_link() {
                        // A hard link names a member from the archive root.
                        let mut abs = b"/".to_vec();
                        abs.extend_from_slice(&t);
                        Member::Link(abs)
                    } else {
                        Member::Link(t.into_owned())
                    }
                } else if kind.is_file() || kind == tar::EntryType::Continuous {
                    Member::Data {
                        offset: e.raw_file_position(),
                        size: e.size(),
                    }
                } else {
                    continue;
                };
                let dir = comps[..comps.len().saturating_sub(1)].join(&b'/');
                members.insert(key(&comps), (dir, m));
            }
        }
        Ok(Source::Tar { file, members })
    }

    /// Is there a member (or file) `name`?
    pub fn has(&self, name: &str) -> bool {
        self.reader(name).is_ok()
    }

    /// A member's bytes (a JSON document: at most 16 MiB).
    pub fn read_small(&self, name: &str) -> Result<Vec<u8>, String> {
        let (r, size) = self.reader(name)?;
        if size > JSON_LIMIT {
            return Err(format!("{name} is too large ({size} bytes)"));
        }
        let mut v = Vec::with_capacity(size as usize);
        r.take(JSON_LIMIT)
            .read_to_end(&mut v)
            .map_err(|e| format!("{name}: {e}"))?;
        Ok(v)
    }

    /// A reader of the member `name` and its size.
    pub fn reader(&self, name: &str) -> Result<(Box<dyn Read + '_>, u64), String> {
        let comps = clean_path(name.as_bytes()).map_err(|e| format!("member {name}: {e}"))?;
        match self {
            Source::Dir(d) => {
                let (last, parents) = comps
                    .split_last()
                    .ok_or_else(|| format!("member {name}: empty name"))?;
                let mut fd = sys::openat(d.fd(), c"", libc::O_PATH | libc::O_DIRECTORY, 0)
                    .map_err(|e| e.to_string())?;
                for c in parents {
                    let cn = cbytes(c).map_err(|e| e.to_string())?;
                    fd = sys::openat(
                        std::os::fd::AsFd::as_fd(&fd),
                        &cn,
                        libc::O_PATH | libc::O_DIRECTORY,
                        0,
                    )
                    .map_err(|e| {
                        if e.raw_os_error() == Some(libc::ENOENT) {
                            format!("the archive has no member {name}")
                        } else {
                            format!("{name}: {e}")
                        }
                    })?;
                }
                let cn = cbytes(last).map_err(|e| e.to_string())?;
                let f = File::from(
                    sys::openat(std::os::fd::AsFd::as_fd(&fd), &cn, libc::O_RDONLY, 0).map_err(
                        |e| {
                            if e.raw_os_error() == Some(libc::ENOENT) {
                                format!("the archive has no member {name}")
                            } else {
                                format!("{name}: {e}")
                            }
                        },
                    )?,
                );
                let size = f.metadata().map_err(|e| e.to_string())?.len();
                if !f.metadata().map_err(|e| e.to_string())?.is_file() {
                    return Err(format!("{name} is not a file"));
                }
                Ok((Box::new(f), size))
            }
            Source::Tar { file, members } => {
                let mut k = key(&comps);
                for _ in 0..40 {
                    match members.get(&k) {
                        None => return Err(format!("the archive has no member {name}")),
                        Some((_, Member::Data { offset, size })) => {
                            return Ok((
                                Box::new(MemberReader {
                                    file,
                                    pos: *offset,
                                    end: offset + size,
                                }),
                                *size,
                            ))
                        }
                        Some((dir, Member::Link(t))) => {
                            // Resolved inside the archive: relative to the link's
                            // directory, or from the archive's root; never outside.
                            let mut joined = if t.first() == Some(&b'/') {
                                Vec::new()
                            } else {
                                dir.clone()
                            };
                            joined.push(b'/');
                            joined.extend_from_slice(t);
                            let c = clean_path(&joined).map_err(|e| {
                                format!("member {name} links outside the archive: {e}")
                            })?;
                            k = key(&c);
                        }
                    }
                }
                Err(format!("member {name}: too many levels of links"))
            }
        }
    }
}

/// Reads one member of a tar file in place.
struct MemberReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for MemberReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = (self.end - self.pos) as usize;
        if left == 0 {
            return Ok(0);
        }
        let n = buf.len().min(left);
        let k = self.file.read_at(&mut buf[..n], self.pos)?;
        if k == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive is truncated",
            ));
        }
        self.pos += k as u64;
        Ok(k)
    }
}
