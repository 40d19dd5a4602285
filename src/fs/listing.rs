//! Listings as replies: READDIR and READDIRPLUS (whose entries are lookups, with
//! attributes, and may ask for read-ahead), over the listing kept per directory and
//! reader (`handles::Handles::listing`).

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use fuser::{Errno, FileType, Generation, INodeNo, ReplyDirectory, ReplyDirectoryPlus, Request};

use super::{errno, negative_attr, StrataFs};
use crate::namei;
use crate::readdir;

impl StrataFs {
    /// READDIR: the entries of the caller's listing from `offset`.
    pub(super) fn reply_listing(
        &self,
        req: &Request,
        ino: INodeNo,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.dir_entries(req, ino, offset) {
            Ok(e) => e,
            Err(e) => return reply.error(e),
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            let name = OsStr::from_bytes(&e.name);
            if reply.add(INodeNo(e.ino), i as u64 + 1, e.kind, name) {
                break;
            }
        }
        reply.ok();
    }

    /// READDIRPLUS: each entry a lookup (the kernel takes a reference to it) with its
    /// attributes, up to where the policy ends the first part (rdplus.rs); the small
    /// files listed are read ahead where callers open what they list (prefetch.rs).
    pub(super) fn reply_listing_plus(
        &self,
        req: &Request,
        ino: INodeNo,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let (entries, dir) = match self
            .dir_entries(req, ino, offset)
            .and_then(|e| Ok((e, self.node(ino)?)))
        {
            Ok(v) => v,
            Err(e) => return reply.error(e),
        };
        let ttl = self.ov.settings.ttl;
        // The policy may end the first part early; the kernel asks for the rest with
        // plain READDIRs (unless a lookup in here advised otherwise).
        let end = match offset {
            0 => self.rdplus.first_part(dir.ino, &entries),
            _ => None,
        };
        let end = end.unwrap_or(entries.len());
        let read_ahead = self.prefetch.wanted(dir.ino, offset);
        let (mut files, mut jobs) = (0, Vec::new());
        for (i, e) in entries.iter().enumerate().take(end).skip(offset as usize) {
            let off = i as u64 + 1;
            let name = OsStr::from_bytes(&e.name);
            if e.name == b"." || e.name == b".." {
                // The kernel takes no reference and no attributes for these.
                let mut attr = negative_attr();
                attr.ino = INodeNo(e.ino);
                attr.kind = FileType::Directory;
                if reply.add(INodeNo(e.ino), off, name, &ttl, &attr, Generation(0)) {
                    break;
                }
                continue;
            }
            // Each entry is a lookup: the kernel takes a reference to it.
            let Ok(cname) = CString::new(e.name.clone()) else {
                continue;
            };
            let Ok(found) = namei::lookup(&self.ov, &dir, &cname) else {
                continue; // gone meanwhile
            };
            // Where a file to read ahead is: its layer, if at its own name there.
            let layer = match found.refs.first() {
                Some(top) if found.kind == FileType::RegularFile && top.path.is_none() => {
                    Some(top.layer)
                }
                _ => None,
            };
            let node = self
                .ov
                .table
                .lookup_ref(found.ino, found.kind, &dir, &cname, found.refs);
            let attr = self.shown(node.attr(&found.stat));
            if reply.add(attr.ino, off, name, &ttl, &attr, Generation(0)) {
                self.ov.table.forget(node.ino, 1); // did not fit: not handed out
                break;
            }
            if found.kind == FileType::RegularFile {
                files += 1;
                if let (true, Some(layer)) = (read_ahead, layer) {
                    jobs.extend(crate::prefetch::Prefetch::file_job(
                        &self.ov,
                        &dir,
                        &node,
                        layer,
                        found.stat.st_size,
                        cname,
                    ));
                }
            }
        }
        reply.ok();
        let first_with_files =
            offset == 0 && entries.iter().any(|e| e.kind == FileType::RegularFile);
        self.prefetch.listed(first_with_files, files, jobs);
    }

    /// The listing of directory `ino` that the caller reads at `offset` (a position
    /// in it; see `Handles::listing`); a reader at its end lets it go.
    fn dir_entries(
        &self,
        req: &Request,
        ino: INodeNo,
        offset: u64,
    ) -> Result<Arc<Vec<crate::handles::Entry>>, Errno> {
        let n = self.node(ino)?;
        if n.kind != FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        let handles = &self.ov.handles;
        let pid = req.pid();
        let l = handles
            .listing(ino.0, pid, offset, || {
                let l = readdir::list(&self.ov, &n)?;
                self.prefetch.read_subdirs_ahead(&self.ov, &n, &l);
                Ok(l)
            })
            .map_err(errno)?;
        if offset >= l.len() as u64 {
            handles.listing_done(ino.0, pid);
        }
        Ok(l)
    }
}
