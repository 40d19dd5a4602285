//! The fuser `Filesystem` implementation: a thin dispatcher that turns FUSE requests
//! into calls on the modules that do the work, and their results into replies.

use std::ffi::{CString, OsStr};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};
use log::debug;

use crate::attr;
use crate::dir::{self, New};
use crate::file;
use crate::means::Means;
use crate::namei;
use crate::overlay::Overlay;
use crate::xattr;

mod args;
mod listing;
mod reply;

use reply::answer;

pub struct StrataFs {
    pub ov: Arc<Overlay>,
    means: Means,
    /// Which listings carry attributes.
    rdplus: crate::rdplus::Policy,
    /// Small lower files handed to the kernel at their first open.
    pub prefill: Arc<crate::prefill::Prefill>,
    /// What walkers will want next (subdirectories, listed files), read ahead.
    prefetch: crate::prefetch::Prefetch,
}

/// The attributes of a negative entry (node id 0).
pub(super) fn negative_attr() -> fuser::FileAttr {
    crate::inode::make_attr(0, &crate::sys::zeroed_stat(), false)
}

pub(super) fn errno(e: std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

impl StrataFs {
    pub fn new(ov: Arc<Overlay>) -> Self {
        let mut means = Means::from_env();
        means.choose_listings(ov.settings.readdirplus, ov.has_upper());
        debug!("means: {means:?}");
        let rdplus = crate::rdplus::Policy::new(means.readdirplus);
        // (Pages handed over survive the open only with KEEP_CACHE.)
        let prefill = Arc::new(crate::prefill::Prefill::new(
            means.prefill && means.keep_cache,
        ));
        let prefetch = crate::prefetch::Prefetch::new(means.prefetch);
        StrataFs {
            ov,
            means,
            rdplus,
            prefill,
            prefetch,
        }
    }

    /// Counts the request (kind `op`) when the returned timer goes, and notes its
    /// caller for the events it causes.
    fn timer(&self, op: usize, req: &Request) -> crate::stats::Timer<'_> {
        self.ov.stats.begin(op, req.pid())
    }

    /// Open flags of a daemon-served file: its pages stay cached across opens.
    fn file_cache_flags(&self) -> FopenFlags {
        if self.means.keep_cache {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        }
    }
}

impl Filesystem for StrataFs {
    fn init(&mut self, _req: &Request, cfg: &mut KernelConfig) -> std::io::Result<()> {
        if !self.means.negotiate(&self.ov, cfg) {
            self.rdplus = crate::rdplus::Policy::new(crate::rdplus::Mode::Off);
        }
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

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _t = self.timer(const { crate::stats::op("lookup") }, req);
        let result = (|| {
            let parent = self.node(parent)?;
            if parent.kind != FileType::Directory {
                return Err(Errno::ENOTDIR);
            }
            let cname = namei::check_name(name.as_bytes()).map_err(errno)?;
            let found = namei::lookup(&self.ov, &parent, &cname).map_err(errno)?;
            if found.kind != FileType::Directory {
                self.rdplus.looked_up(parent.ino);
            }
            let node = self
                .ov
                .table
                .lookup_ref(found.ino, found.kind, &parent, &cname, found.refs);
            Ok(self.shown(node.attr(&found.stat)))
        })();
        match result {
            Ok(attr) => reply.entry(&self.ov.settings.ttl, &attr, Generation(0)),
            // A missing name stays missing until it is made through us: the kernel
            // may remember that (a negative entry: node id 0).
            Err(Errno::ENOENT) if self.means.negative => {
                reply.entry(&self.ov.settings.ttl, &negative_attr(), Generation(0))
            }
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, req: &Request, ino: INodeNo, nlookup: u64) {
        let _t = self.timer(const { crate::stats::op("forget") }, req);
        self.ov.table.forget(ino.0, nlookup);
        if self.ov.table.get(ino.0).is_none() {
            self.ov.handles.drop_listings(ino.0);
            self.ov.handles.drop_kept(ino.0);
        }
        self.ov.table.maybe_release_memory();
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let _t = self.timer(const { crate::stats::op("getattr") }, req);
        let result = self.node(ino).and_then(|n| {
            // A file that lost its last name is reached through an open fd
            // (Node::real), the one this request names if any.
            let st = match fh.and_then(|fh| self.ov.handles.file(fh.0)) {
                Some(fd) if n.loc().is_none() => crate::sys::fstat(fd.as_fd()),
                _ => n.stat(&*self.ov),
            };
            st.map(|st| self.shown(n.attr(&st))).map_err(errno)
        });
        answer(reply, result, |reply, attr| {
            reply.attr(&self.ov.settings.ttl, &attr)
        })
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let _t = self.timer(const { crate::stats::op("readlink") }, req);
        let result = self.node(ino).and_then(|n| {
            n.at_real(&*self.ov, crate::sys::readlinkat)
                .map_err(|e| match e.raw_os_error() {
                    // Not a symlink any more: something else was put at its name
                    // beneath the mount.
                    Some(libc::EINVAL) => Errno::ESTALE,
                    _ => errno(e),
                })
        });
        answer(reply, result, |reply, target| reply.data(&target))
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _t = self.timer(const { crate::stats::op("open") }, req);
        // A passthrough file of this node released lately with these flags is taken
        // over (its backing stays registered while `_kept` holds it).
        let key = crate::handles::keep_flags(flags.0);
        let kept = match flags.0 & libc::O_TRUNC {
            0 => self.ov.handles.take_kept(ino.0, key),
            _ => None,
        };
        let result = self.node(ino).and_then(|n| {
            let fd = match &kept {
                Some((fd, _)) => crate::handles::RealFd::open(fd.clone()),
                None => file::open_handle(&self.ov, &n, flags.0).map_err(errno)?,
            };
            Ok((n, fd))
        });
        let (n, fd) = match result {
            Ok(v) => v,
            Err(e) => return reply.error(e),
        };
        self.prefetch.note_open();
        let backing = file::io_mode(&self.ov, &n, &fd, |fd| reply.open_backing(fd));
        let _kept = kept;
        if backing.is_none() {
            self.prefill.first_open(&self.ov, &n, &fd, flags.0);
        }
        let fh = self.ov.handles.add_file(n.ino, fd, backing.clone(), key);
        match backing {
            Some(id) => reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id),
            None => reply.opened(FileHandle(fh), self.file_cache_flags()),
        }
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _t = self.timer(const { crate::stats::op("read") }, req);
        let read = file::read_fd(&self.ov, fh.0)
            .and_then(|fd| crate::real_io::read(&fd, offset, size))
            .map_err(errno);
        answer(reply, read, |reply, data| reply.data(&data))
    }

    fn release(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _t = self.timer(const { crate::stats::op("release") }, req);
        file::release(&self.ov, fh.0);
        reply.ok();
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _t = self.timer(const { crate::stats::op("flush") }, req);
        // Nothing to do on close (no locks, data goes straight to the real file): the
        // kernel stops sending FLUSH, saving a round trip per close(2).
        reply.error(Errno::ENOSYS);
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _t = self.timer(const { crate::stats::op("opendir") }, req);
        match self.node(ino) {
            // No per-open state (listings are kept per directory): the kernel may
            // stop asking (ENOSYS with FUSE_NO_OPENDIR_SUPPORT) and keep listings in
            // its cache, as it then does by default; a directory changes only through
            // this mount, which invalidates them.
            Ok(n) if n.kind == FileType::Directory && self.means.cache_dir => {
                reply.error(Errno::ENOSYS)
            }
            Ok(n) if n.kind == FileType::Directory => {
                reply.opened(FileHandle(0), FopenFlags::empty())
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let _t = self.timer(const { crate::stats::op("readdir") }, req);
        self.reply_listing(req, ino, offset, reply)
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let _t = self.timer(const { crate::stats::op("readdirplus") }, req);
        self.reply_listing_plus(req, ino, offset, reply)
    }

    fn releasedir(
        &self,
        req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _t = self.timer(const { crate::stats::op("releasedir") }, req);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _t = self.timer(const { crate::stats::op("fsyncdir") }, req);
        reply.ok();
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _t = self.timer(const { crate::stats::op("statfs") }, req);
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

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _t = self.timer(const { crate::stats::op("getxattr") }, req);
        match self.node(ino) {
            Ok(n) => xattr::reply(xattr::get(&self.ov, &n, name), size, reply),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _t = self.timer(const { crate::stats::op("listxattr") }, req);
        match self.node(ino) {
            Ok(n) => xattr::reply(xattr::list(&self.ov, &n), size, reply),
            Err(e) => reply.error(e),
        }
    }

    // --- changes ---

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _t = self.timer(const { crate::stats::op("setattr") }, req);
        let changes = self.setattr_changes(req, mode, uid, gid, size, atime, mtime);
        let result = self.node(ino).and_then(|n| {
            let fd = fh.and_then(|fh| self.ov.handles.file(fh.0));
            let st = attr::setattr(&self.ov, &n, fd, changes).map_err(errno)?;
            Ok(self.shown(n.attr(&st)))
        });
        answer(reply, result, |reply, a| {
            reply.attr(&self.ov.settings.ttl, &a)
        })
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _t = self.timer(const { crate::stats::op("mknod") }, req);
        self.make(
            req,
            parent,
            name,
            umask,
            New::Special {
                mode,
                rdev: rdev as u64,
            },
            reply,
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _t = self.timer(const { crate::stats::op("mkdir") }, req);
        self.make(req, parent, name, umask, New::Dir { mode }, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _t = self.timer(const { crate::stats::op("symlink") }, req);
        match CString::new(target.as_os_str().as_bytes()) {
            Ok(t) => self.make(req, parent, name, 0, New::Symlink { target: &t }, reply),
            Err(_) => reply.error(Errno::EINVAL),
        }
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _t = self.timer(const { crate::stats::op("link") }, req);
        match self.node(ino) {
            Ok(n) if n.kind == FileType::Directory => reply.error(Errno::EPERM),
            Ok(n) => self.make(req, newparent, newname, 0, New::Link { node: &n }, reply),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.timer(const { crate::stats::op("unlink") }, req);
        self.remove(parent, name, false, reply);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.timer(const { crate::stats::op("rmdir") }, req);
        self.remove(parent, name, true, reply);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _t = self.timer(const { crate::stats::op("rename") }, req);
        let result = (|| {
            let (p1, n1) = self.dir_and_name(parent, name)?;
            let (p2, n2) = self.dir_and_name(newparent, newname)?;
            crate::rename::rename(&self.ov, &p1, &n1, &p2, &n2, flags.bits()).map_err(errno)
        })();
        answer(reply, result, |reply, _| reply.ok());
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _t = self.timer(const { crate::stats::op("create") }, req);
        let result = (|| {
            let (p, cname) = self.dir_and_name(parent, name)?;
            let caller = self.caller(req, umask);
            let (node, st, made) =
                dir::create(&self.ov, &p, &cname, caller, New::File { mode }).map_err(errno)?;
            // The new file is already open read-write; the kernel enforces the access
            // mode asked for (and a passthrough open reopens it with those flags).
            let fd = match made {
                Some(fd) => fd,
                None => file::open(
                    &self.ov,
                    &node,
                    flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC),
                )
                .map_err(errno)?,
            };
            let attr = self.shown(node.attr(&st));
            Ok((node, attr, Arc::new(fd)))
        })();
        match result {
            Ok((node, a, fd)) => self.reply_created(reply, node, a, fd),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        wf: WriteFlags,
        _flags: OpenFlags,
        _lo: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _t = self.timer(const { crate::stats::op("write") }, req);
        let kill = self.means.killpriv && wf.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        answer(
            reply,
            self.on_file(fh, |fd| {
                if kill {
                    attr::kill_suidgid(fd.as_fd())?;
                }
                crate::real_io::write(fd, offset, data)
            }),
            |reply, n| reply.written(n as u32),
        );
    }

    fn fsync(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _t = self.timer(const { crate::stats::op("fsync") }, req);
        answer(
            reply,
            self.on_file(fh, |fd| {
                crate::inject::at(crate::inject::Step::Fsync)?;
                crate::sys::fsync(fd.as_fd(), datasync)
            }),
            |reply, _| reply.ok(),
        );
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _t = self.timer(const { crate::stats::op("fallocate") }, req);
        answer(
            reply,
            self.on_file(fh, |fd| {
                crate::sys::fallocate(fd.as_fd(), mode, offset, length)
            }),
            |reply, _| reply.ok(),
        );
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _pos: u32,
        reply: ReplyEmpty,
    ) {
        let _t = self.timer(const { crate::stats::op("setxattr") }, req);
        answer(
            reply,
            self.node(ino)
                .and_then(|n| xattr::set(&self.ov, &n, name, value, flags).map_err(errno)),
            |reply, _| reply.ok(),
        );
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.timer(const { crate::stats::op("removexattr") }, req);
        answer(
            reply,
            self.node(ino)
                .and_then(|n| xattr::remove(&self.ov, &n, name).map_err(errno)),
            |reply, _| reply.ok(),
        );
    }
}
