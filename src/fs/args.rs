//! From a request's arguments to the objects it names: the node of an id, a directory
//! and a checked name in it, the open file of a handle, the attributes as the mount
//! shows them; and the replies of the calls that make or remove a name.

use std::ffi::{CString, OsStr};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use fuser::{Errno, FileHandle, FileType, Generation, INodeNo, ReplyEmpty, ReplyEntry, Request};

use super::{answer, errno, StrataFs};
use crate::dir::{self, Caller, New};
use crate::inode::Node;
use crate::namei;

impl StrataFs {
    /// The node of `ino` (ESTALE when the kernel's id is not known any more).
    pub(super) fn node(&self, ino: INodeNo) -> Result<Arc<Node>, Errno> {
        self.ov.table.get(ino.0).ok_or(Errno::ESTALE)
    }

    /// Attributes as the mount shows them: owners through the id mapping.
    pub(super) fn shown(&self, mut a: fuser::FileAttr) -> fuser::FileAttr {
        (a.uid, a.gid) = self.ov.settings.ids.show(a.uid, a.gid);
        if self.ov.settings.static_nlink && a.kind == FileType::Directory {
            a.nlink = 1;
        }
        a
    }

    /// Runs `f` on the open file behind handle `fh` (EBADF for an unknown handle).
    pub(super) fn on_file<T>(
        &self,
        fh: FileHandle,
        f: impl FnOnce(&OwnedFd) -> std::io::Result<T>,
    ) -> Result<T, Errno> {
        let fd = self.ov.handles.file_fd(fh.0).map_err(errno)?;
        f(&fd).map_err(errno)
    }

    /// A directory node and a checked name in it.
    pub(super) fn dir_and_name(
        &self,
        parent: INodeNo,
        name: &OsStr,
    ) -> Result<(Arc<Node>, CString), Errno> {
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

    /// Who asks, as the layers store owners (through the id mapping).
    pub(super) fn caller(&self, req: &Request, umask: u32) -> Caller {
        Caller {
            uid: self.ov.settings.ids.store_uid(req.uid()),
            gid: self.ov.settings.ids.store_gid(req.gid()),
            umask,
        }
    }

    pub(super) fn make(
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
            let caller = self.caller(req, umask);
            let (node, st, _) = dir::create(&self.ov, &p, &cname, caller, what).map_err(errno)?;
            Ok(self.shown(node.attr(&st)))
        })();
        answer(reply, result, |reply, a| {
            reply.entry(&self.ov.settings.ttl, &a, Generation(0))
        })
    }

    pub(super) fn remove(&self, parent: INodeNo, name: &OsStr, rmdir: bool, reply: ReplyEmpty) {
        let result = self
            .dir_and_name(parent, name)
            .and_then(|(p, c)| dir::remove(&self.ov, &p, &c, rmdir).map_err(errno));
        answer(reply, result, |reply, _| reply.ok());
    }
}

impl StrataFs {
    /// What a SETATTR asks for. With KILLPRIV_V2 the kernel leaves clearing set-id
    /// bits to us: on chown always, on truncate by a caller without CAP_FSETID, and on
    /// the empty setattr it sends when such a caller writes through passthrough
    /// (`file_remove_privs`). fuser 0.18 does not pass FATTR_KILL_SUIDGID on, so
    /// "without CAP_FSETID" is taken as "not root" (tests/setid.rs). Owners given
    /// through the mount are stored through the id mapping; with squashing, owner
    /// changes succeed and change nothing.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn setattr_changes(
        &self,
        req: &Request,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<fuser::TimeOrNow>,
        mtime: Option<fuser::TimeOrNow>,
    ) -> crate::attr::Changes {
        let empty = mode.is_none()
            && size.is_none()
            && atime.is_none()
            && mtime.is_none()
            && uid.is_none()
            && gid.is_none();
        let kill_suidgid = self.means.killpriv
            && (uid.is_some() || gid.is_some() || (req.uid() != 0 && (size.is_some() || empty)));
        let ids = &self.ov.settings.ids;
        let (uid, gid) = if ids.squashing() {
            (None, None)
        } else {
            (uid.map(|u| ids.store_uid(u)), gid.map(|g| ids.store_gid(g)))
        };
        crate::attr::Changes {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
            kill_suidgid,
        }
    }
}
