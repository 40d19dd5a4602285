//! The fuser `Filesystem` implementation: a thin dispatcher that turns FUSE requests
//! into calls on the modules that do the work, and their results into replies.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};
use log::debug;

use crate::file::{self, Handles};
use crate::inode::Node;
use crate::namei;
use crate::overlay::Overlay;
use crate::readdir;
use crate::xattr;

pub struct StrataFs {
    pub ov: Arc<Overlay>,
    handles: Handles,
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

impl StrataFs {
    pub fn new(ov: Arc<Overlay>) -> Self {
        StrataFs {
            ov,
            handles: Handles::new(),
        }
    }

    fn node(&self, ino: INodeNo) -> Result<Arc<Node>, Errno> {
        self.ov.table.get(ino.0).ok_or(Errno::ESTALE)
    }

    /// Every change is refused until the write path exists: EROFS.
    fn refuse_write(&self) -> Errno {
        Errno::EROFS
    }
}

impl Filesystem for StrataFs {
    fn init(&mut self, _req: &Request, _cfg: &mut KernelConfig) -> std::io::Result<()> {
        debug!(
            "init: {} layers, upper: {}",
            self.ov.layers.len(),
            self.ov.has_upper()
        );
        Ok(())
    }

    fn destroy(&mut self) {
        debug!("destroy: {} inodes still known", self.ov.table.len());
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let result = (|| {
            let parent = self.node(parent)?;
            if parent.kind != FileType::Directory {
                return Err(Errno::ENOTDIR);
            }
            let cname = namei::check_name(name.as_bytes()).map_err(errno)?;
            let found = namei::lookup(&self.ov, &parent, &cname).map_err(errno)?;
            let node = self
                .ov
                .table
                .lookup_ref(found.ino, found.kind, &parent, &cname, found.refs);
            Ok(node.attr(&found.stat))
        })();
        match result {
            Ok(attr) => reply.entry(&self.ov.settings.ttl, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.ov.table.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let result = self
            .node(ino)
            .and_then(|n| n.stat(&self.ov).map(|st| n.attr(&st)).map_err(errno));
        match result {
            Ok(attr) => reply.attr(&self.ov.settings.ttl, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let result = self.node(ino).and_then(|n| {
            let (dir, name) = n.real(&self.ov).map_err(errno)?;
            crate::sys::readlinkat(std::os::fd::AsFd::as_fd(&*dir), &name).map_err(errno)
        });
        match result {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let writing = flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        let result = self.node(ino).and_then(|n| {
            if writing {
                return Err(self.refuse_write());
            }
            let fd = file::open_read(&self.ov, &n, flags.0).map_err(errno)?;
            Ok((self.handles.add_file(fd), n.stack().top()))
        });
        match result {
            Ok((fh, layer)) => {
                // Lower layers never change under us, so their pages stay valid.
                let keep = if self.ov.layer(layer).is_upper {
                    FopenFlags::empty()
                } else {
                    FopenFlags::FOPEN_KEEP_CACHE
                };
                reply.opened(FileHandle(fh), keep)
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(fd) = self.handles.file(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        match file::read(&fd, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.handles.close_file(fh.0);
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.node(ino) {
            Ok(n) if n.kind == FileType::Directory => {
                reply.opened(FileHandle(self.handles.add_dir()), FopenFlags::empty())
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(dh) = self.handles.dir(fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let entries = {
            let mut cached = dh.entries.lock();
            // A read from offset 0 (opendir, rewinddir) takes a fresh snapshot.
            if offset == 0 || cached.is_none() {
                let listed = self
                    .node(ino)
                    .and_then(|n| readdir::list(&self.ov, &n).map_err(errno));
                match listed {
                    Ok(v) => *cached = Some(Arc::new(v)),
                    Err(e) => return reply.error(e),
                }
            }
            cached.clone().unwrap_or_default()
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(e.ino),
                i as u64 + 1,
                e.kind,
                OsStr::from_bytes(&e.name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.handles.close_dir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.ov.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.node(ino) {
            Ok(n) => xattr::reply(xattr::get(&self.ov, &n, name), size, reply),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.node(ino) {
            Ok(n) => xattr::reply(xattr::list(&self.ov, &n), size, reply),
            Err(e) => reply.error(e),
        }
    }

    // --- changes: refused until the write path lands ---

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(self.refuse_write());
    }

    fn mknod(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        _r: u32,
        reply: ReplyEntry,
    ) {
        reply.error(self.refuse_write());
    }

    fn mkdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _m: u32, _u: u32, reply: ReplyEntry) {
        reply.error(self.refuse_write());
    }

    fn unlink(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(self.refuse_write());
    }

    fn rmdir(&self, _req: &Request, _p: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(self.refuse_write());
    }

    fn symlink(&self, _req: &Request, _p: INodeNo, _n: &OsStr, _t: &Path, reply: ReplyEntry) {
        reply.error(self.refuse_write());
    }

    fn rename(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _np: INodeNo,
        _nn: &OsStr,
        _f: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(self.refuse_write());
    }

    fn link(&self, _req: &Request, _i: INodeNo, _np: INodeNo, _nn: &OsStr, reply: ReplyEntry) {
        reply.error(self.refuse_write());
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _wf: WriteFlags,
        _flags: OpenFlags,
        _lo: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(self.refuse_write());
    }

    fn create(
        &self,
        _req: &Request,
        _p: INodeNo,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        _f: i32,
        reply: ReplyCreate,
    ) {
        reply.error(self.refuse_write());
    }

    fn setxattr(
        &self,
        _req: &Request,
        _i: INodeNo,
        _n: &OsStr,
        _v: &[u8],
        _f: i32,
        _p: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(self.refuse_write());
    }

    fn removexattr(&self, _req: &Request, _i: INodeNo, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(self.refuse_write());
    }

    fn fallocate(
        &self,
        _req: &Request,
        _i: INodeNo,
        _fh: FileHandle,
        _o: u64,
        _l: u64,
        _m: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(self.refuse_write());
    }
}
