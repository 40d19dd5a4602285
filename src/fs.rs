//! The fuser `Filesystem` implementation: a thin dispatcher that turns FUSE requests
//! into calls on the modules that do the work, and their results into replies.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, OwnedFd};
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
use crate::dir::{self, Caller, New};
use crate::file;
use crate::inode::Node;
use crate::means::Means;
use crate::namei;
use crate::overlay::Overlay;
use crate::readdir;
use crate::xattr;

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
fn negative_attr() -> fuser::FileAttr {
    crate::inode::make_attr(0, &crate::sys::zeroed_stat(), false)
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

impl StrataFs {
    pub fn new(ov: Arc<Overlay>) -> Self {
        let means = Means::from_env();
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

    /// Open flags of a daemon-served file: its pages stay cached across opens.
    fn file_cache_flags(&self) -> FopenFlags {
        if self.means.keep_cache {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        }
    }

    /// A listed file to read ahead: a small one, at its own name in its layer, whose
    /// pages were not handed to the kernel yet.
    fn prefetch_job(
        &self,
        dir: &Node,
        node: &Node,
        layer: u16,
        size: i64,
        name: std::ffi::CString,
    ) -> Option<crate::prefetch::Job> {
        if size <= 0 || size > crate::prefetch::MAX_SIZE || node.prefilled() {
            return None;
        }
        let dir = dir.dir_fd(&*self.ov, layer).ok()?;
        let what = crate::prefetch::What::File { size };
        Some(crate::prefetch::Job { dir, name, what })
    }

    /// After a new listing of `dir`: where a walker descends, its subdirectories are
    /// read ahead in every layer of `dir` (prefetch.rs).
    fn read_subdirs_ahead(&self, dir: &Node, entries: &[crate::handles::Entry]) {
        let parent = dir.parent().map_or(dir.ino, |p| p.ino);
        if !self.prefetch.descending(dir.ino, parent) {
            return;
        }
        let names: Vec<_> = entries
            .iter()
            .skip(2)
            .filter(|e| e.kind == FileType::Directory)
            .filter_map(|e| std::ffi::CString::new(e.name.clone()).ok())
            .collect();
        if names.is_empty() {
            return;
        }
        let fds: Vec<_> = dir
            .stack()
            .refs
            .iter()
            .filter_map(|r| dir.dir_fd(&*self.ov, r.layer).ok())
            .collect();
        let mut jobs = Vec::new();
        for name in names {
            for fd in &fds {
                jobs.push(crate::prefetch::Job {
                    dir: fd.clone(),
                    name: name.clone(),
                    what: crate::prefetch::What::Dir,
                });
            }
        }
        self.prefetch.queue(jobs);
    }

    fn node(&self, ino: INodeNo) -> Result<Arc<Node>, Errno> {
        self.ov.table.get(ino.0).ok_or(Errno::ESTALE)
    }
}

impl Filesystem for StrataFs {
    fn init(&mut self, _req: &Request, cfg: &mut KernelConfig) -> std::io::Result<()> {
        if self.ov.settings.acl
            && cfg
                .add_capabilities(
                    fuser::InitFlags::FUSE_POSIX_ACL | fuser::InitFlags::FUSE_DONT_MASK,
                )
                .is_ok()
        {
            self.ov
                .acl
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        // Lookups and listings of one directory may run side by side (every node has
        // its own locks); symlink targets may be cached (the layers change only
        // through us); large writes come in 1 MiB pieces.
        if self.means.parallel_dirops {
            let _ = cfg.add_capabilities(fuser::InitFlags::FUSE_PARALLEL_DIROPS);
        }
        // Directories open with no message (OPENDIR answers ENOSYS once); the kernel
        // then keeps their listings cached, as CACHE_DIR does.
        if self.means.cache_dir {
            let _ = cfg.add_capabilities(fuser::InitFlags::FUSE_NO_OPENDIR_SUPPORT);
        }
        if self.means.symlink_cache {
            let _ = cfg.add_capabilities(fuser::InitFlags::FUSE_CACHE_SYMLINKS);
        }
        // Set-id bits are cleared here on write, truncate and chown (KILLPRIV_V2): the
        // kernel then remembers which files have no `security.capability` (SB_NOSEC)
        // instead of asking before every write, and sends a chown without first
        // refreshing the mode. Not when owners and modes live in the override xattr.
        self.means.killpriv = self.means.killpriv
            && self.ov.layer(0).stat_override.is_none()
            && cfg
                .add_capabilities(fuser::InitFlags::FUSE_HANDLE_KILLPRIV_V2)
                .is_ok();
        // READDIRPLUS: listings carry attributes where callers stat what they list
        // (rdplus.rs); the kernel then asks for the first part of each listing with it.
        if self.means.readdirplus != crate::rdplus::Mode::Off
            && cfg
                .add_capabilities(
                    fuser::InitFlags::FUSE_DO_READDIRPLUS | fuser::InitFlags::FUSE_READDIRPLUS_AUTO,
                )
                .is_err()
        {
            self.means.readdirplus = crate::rdplus::Mode::Off;
            self.rdplus = crate::rdplus::Policy::new(crate::rdplus::Mode::Off);
        }
        if self.means.big_writes {
            let _ = cfg.set_max_write(1 << 20);
        }
        // File data straight between the kernel and the upper files (root only; the
        // first refusal turns it off).
        if self.means.passthrough
            && crate::sys::geteuid() == 0
            && cfg
                .add_capabilities(fuser::InitFlags::FUSE_PASSTHROUGH)
                .is_ok()
            && cfg.set_max_stack_depth(1).is_ok()
        {
            self.ov
                .passthrough
                .store(true, std::sync::atomic::Ordering::Relaxed);
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

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
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

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.ov.table.forget(ino.0, nlookup);
        if self.ov.table.get(ino.0).is_none() {
            self.ov.handles.drop_listings(ino.0);
            self.ov.handles.drop_kept(ino.0);
        }
        self.ov.table.maybe_release_memory();
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let result = self.node(ino).and_then(|n| {
            // A file that lost its last name is reached through an open fd
            // (Node::real), the one this request names if any.
            let st = match fh.and_then(|fh| self.ov.handles.file(fh.0)) {
                Some(fd) if n.loc().is_none() => crate::sys::fstat(fd.as_fd()),
                _ => n.stat(&*self.ov),
            };
            st.map(|st| self.shown(n.attr(&st))).map_err(errno)
        });
        match result {
            Ok(attr) => reply.attr(&self.ov.settings.ttl, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let result = self.node(ino).and_then(|n| {
            n.at_real(&*self.ov, crate::sys::readlinkat)
                .map_err(|e| match e.raw_os_error() {
                    // Not a symlink any more: something else was put at its name
                    // beneath the mount.
                    Some(libc::EINVAL) => Errno::ESTALE,
                    _ => errno(e),
                })
        });
        match result {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
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
        let backing = self.passthrough(&n, &fd, |fd| reply.open_backing(fd));
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
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let read = file::read_fd(&self.ov, fh.0)
            .and_then(|fd| crate::real_io::read(&fd, offset, size))
            .map_err(errno);
        match read {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
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
        if let Some(f) = self.ov.handles.close_file(fh.0) {
            let ino = f.ino;
            if f.backing.is_none() {
                let io = self.ov.handles.io(ino);
                let mut io = io.lock();
                io.cached = io.cached.saturating_sub(1);
            }
            // A passthrough file that still has a name is kept open for the next open
            // like it (file.rs).
            if let (Some(backing), Some(fd)) = (&f.backing, f.fd.if_open()) {
                if f.flags >= 0 && self.ov.table.get(ino).is_some_and(|n| n.loc().is_some()) {
                    self.ov.handles.keep(ino, f.flags, fd, backing.clone());
                }
            }
            // A passthrough backing goes away with its last handle (dropped here).
            drop(f);
            self.ov.handles.io_idle(ino);
        }
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
        // Nothing to do on close (no locks, data goes straight to the real file): the
        // kernel stops sending FLUSH, saving a round trip per close(2).
        reply.error(Errno::ENOSYS);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
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

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
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
                    jobs.extend(self.prefetch_job(&dir, &node, layer, found.stat.st_size, cname));
                }
            }
        }
        reply.ok();
        let first_with_files =
            offset == 0 && entries.iter().any(|e| e.kind == FileType::RegularFile);
        self.prefetch.listed(first_with_files, files, jobs);
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
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
        // With KILLPRIV_V2 the kernel leaves clearing set-id bits to us: on chown
        // always, on truncate by a caller without CAP_FSETID, and on the empty
        // setattr it sends when such a caller writes through passthrough
        // (`file_remove_privs`). fuser 0.18 does not pass FATTR_KILL_SUIDGID on, so
        // "without CAP_FSETID" is taken as "not root" (tests/setid.rs).
        let empty = mode.is_none()
            && size.is_none()
            && atime.is_none()
            && mtime.is_none()
            && uid.is_none()
            && gid.is_none();
        let kill_suidgid = self.means.killpriv
            && (uid.is_some() || gid.is_some() || (req.uid() != 0 && (size.is_some() || empty)));
        let result = self.node(ino).and_then(|n| {
            let fd = fh.and_then(|fh| self.ov.handles.file(fh.0));
            // Owners given through the mount are stored through the id mapping; with
            // squashing, owner changes succeed and change nothing.
            let ids = &self.ov.settings.ids;
            let (uid, gid) = if ids.squashing() {
                (None, None)
            } else {
                (uid.map(|u| ids.store_uid(u)), gid.map(|g| ids.store_gid(g)))
            };
            let changes = attr::Changes {
                mode,
                uid,
                gid,
                size,
                atime,
                mtime,
                kill_suidgid,
            };
            let st = attr::setattr(&self.ov, &n, fd, changes).map_err(errno)?;
            Ok(self.shown(n.attr(&st)))
        });
        match result {
            Ok(a) => reply.attr(&self.ov.settings.ttl, &a),
            Err(e) => reply.error(e),
        }
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
        match self.node(ino) {
            Ok(n) if n.kind == FileType::Directory => reply.error(Errno::EPERM),
            Ok(n) => self.make(req, newparent, newname, 0, New::Link { node: &n }, reply),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, false, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, true, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = (|| {
            let (p1, n1) = self.dir_and_name(parent, name)?;
            let (p2, n2) = self.dir_and_name(newparent, newname)?;
            dir::rename(&self.ov, &p1, &n1, &p2, &n2, flags.bits()).map_err(errno)
        })();
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
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
        let result = (|| {
            let (p, cname) = self.dir_and_name(parent, name)?;
            let caller = Caller {
                uid: self.ov.settings.ids.store_uid(req.uid()),
                gid: self.ov.settings.ids.store_gid(req.gid()),
                umask,
            };
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
        let (node, a, fd) = match result {
            Ok(v) => v,
            Err(e) => return reply.error(e),
        };
        let fd = crate::handles::RealFd::open(fd);
        let backing = self.passthrough(&node, &fd, |fd| reply.open_backing(fd));
        // (-1: never kept; its fd was made read-write, not with the caller's flags.)
        let fh = FileHandle(self.ov.handles.add_file(node.ino, fd, backing.clone(), -1));
        // (KEEP_CACHE is for daemon-served files: with passthrough the kernel refuses it.)
        let ttl = self.ov.settings.ttl;
        match backing {
            Some(id) => {
                reply.created_passthrough(&ttl, &a, Generation(0), fh, FopenFlags::empty(), &id)
            }
            None => reply.created(&ttl, &a, Generation(0), fh, self.file_cache_flags()),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        wf: WriteFlags,
        _flags: OpenFlags,
        _lo: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let kill = self.means.killpriv && wf.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        match self.on_file(fh, |fd| {
            if kill {
                attr::kill_suidgid(fd.as_fd())?;
            }
            crate::real_io::write(fd, offset, data)
        }) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.on_file(fh, |fd| crate::sys::fsync(fd.as_fd(), datasync)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        match self.on_file(fh, |fd| {
            crate::sys::fallocate(fd.as_fd(), mode, offset, length)
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _pos: u32,
        reply: ReplyEmpty,
    ) {
        match self
            .node(ino)
            .and_then(|n| xattr::set(&self.ov, &n, name, value, flags).map_err(errno))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self
            .node(ino)
            .and_then(|n| xattr::remove(&self.ov, &n, name).map_err(errno))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

impl StrataFs {
    /// Attributes as the mount shows them: owners through the id mapping.
    fn shown(&self, mut a: fuser::FileAttr) -> fuser::FileAttr {
        (a.uid, a.gid) = self.ov.settings.ids.show(a.uid, a.gid);
        if self.ov.settings.static_nlink && a.kind == FileType::Directory {
            a.nlink = 1;
        }
        a
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
                self.read_subdirs_ahead(&n, &l);
                Ok(l)
            })
            .map_err(errno)?;
        if offset >= l.len() as u64 {
            handles.listing_done(ino.0, pid);
        }
        Ok(l)
    }

    /// Runs `f` on the open file behind handle `fh` (EBADF for an unknown handle).
    fn on_file<T>(
        &self,
        fh: FileHandle,
        f: impl FnOnce(&OwnedFd) -> std::io::Result<T>,
    ) -> Result<T, Errno> {
        let fd = self.ov.handles.file_fd(fh.0).map_err(errno)?;
        f(&fd).map_err(errno)
    }

    /// A directory node and a checked name in it.
    fn dir_and_name(&self, parent: INodeNo, name: &OsStr) -> Result<(Arc<Node>, CString), Errno> {
        let p = self.node(parent)?;
        if p.kind != FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        let c = namei::check_name(name.as_bytes()).map_err(|e| match e.raw_os_error() {
            // a name the AUFS format reserves cannot be made through the mount
            Some(libc::ENOENT) => Errno::EINVAL,
            _ => errno(e),
        })?;
        Ok((p, c))
    }

    fn make(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        umask: u32,
        what: New,
        reply: ReplyEntry,
    ) {
        let result = (|| {
            let (p, cname) = self.dir_and_name(parent, name)?;
            let caller = Caller {
                uid: self.ov.settings.ids.store_uid(req.uid()),
                gid: self.ov.settings.ids.store_gid(req.gid()),
                umask,
            };
            let (node, st, _) = dir::create(&self.ov, &p, &cname, caller, what).map_err(errno)?;
            Ok(self.shown(node.attr(&st)))
        })();
        match result {
            Ok(a) => reply.entry(&self.ov.settings.ttl, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn remove(&self, parent: INodeNo, name: &OsStr, rmdir: bool, reply: ReplyEmpty) {
        let result = self
            .dir_and_name(parent, name)
            .and_then(|(p, c)| dir::remove(&self.ov, &p, &c, rmdir).map_err(errno));
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// Chooses how a new open file of `n` (real file `fd`) does its I/O: through the
    /// node's passthrough backing (registered with `open_backing` on first use) when
    /// passthrough is on, the file is in the upper layer (or the mount is read-only)
    /// and no daemon-served file of the node is open; else through the daemon. Lower
    /// files of a writable mount are never passthrough: a later copy-up could not
    /// switch their backing to the upper file.
    fn passthrough(
        &self,
        n: &Node,
        fd: &crate::handles::RealFd,
        open_backing: impl FnOnce(&OwnedFd) -> std::io::Result<fuser::BackingId>,
    ) -> Option<Arc<fuser::BackingId>> {
        use std::sync::atomic::Ordering::Relaxed;
        let io = self.ov.handles.io(n.ino);
        let mut io = io.lock();
        // (A handle left to open later is a lower file's: daemon-served.)
        if let (true, 0, true, Some(real)) = (
            self.ov.passthrough.load(Relaxed),
            io.cached,
            self.ov.settings.read_only || self.ov.layer(n.stack().top()).is_upper,
            fd.if_open(),
        ) {
            if let Some(id) = io.backing.upgrade() {
                return Some(id);
            }
            match open_backing(&real) {
                Ok(id) => {
                    let id = Arc::new(id);
                    io.backing = Arc::downgrade(&id);
                    return Some(id);
                }
                Err(e) => {
                    // Not permitted here (no CAP_SYS_ADMIN in the initial namespace):
                    // the daemon serves I/O from now on.
                    log::info!("FUSE passthrough refused ({e}); the daemon serves file I/O");
                    self.ov.passthrough.store(false, Relaxed);
                }
            }
        }
        io.cached += 1;
        None
    }
}
