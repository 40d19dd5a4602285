//! Where results become replies: `answer` replies a value or an errno, over the one
//! thing every reply type of fuser can do (`Fail`); the reply to a CREATE (its handle
//! and passthrough backing).

use fuser::{
    Errno, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
};

/// A FUSE reply, which can carry an errno (each of fuser's reply types has `error`).
pub(super) trait Fail {
    fn fail(self, e: Errno);
}

macro_rules! fail_by_error {
    ($($t:ty),*) => {
        $(impl Fail for $t {
            fn fail(self, e: Errno) {
                self.error(e)
            }
        })*
    };
}

fail_by_error!(
    ReplyAttr,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyEmpty,
    ReplyEntry,
    ReplyOpen,
    ReplyStatfs,
    ReplyWrite,
    ReplyXattr
);

/// Where results become replies: `ok` with the value, the errno otherwise.
pub(super) fn answer<R: Fail, T>(reply: R, result: Result<T, Errno>, ok: impl FnOnce(R, T)) {
    match result {
        Ok(v) => ok(reply, v),
        Err(e) => reply.fail(e),
    }
}

impl super::StrataFs {
    /// The reply to a CREATE: the new file's handle, its I/O through a passthrough
    /// backing where it can, else daemon-served with the file cache flags.
    pub(super) fn reply_created(
        &self,
        reply: fuser::ReplyCreate,
        node: std::sync::Arc<crate::inode::Node>,
        a: fuser::FileAttr,
        fd: std::sync::Arc<std::os::fd::OwnedFd>,
    ) {
        let fd = crate::handles::RealFd::open(fd);
        let backing = crate::file::io_mode(&self.ov, &node, &fd, |fd| reply.open_backing(fd));
        // (-1: never kept; its fd was made read-write, not with the caller's flags.)
        let fh = fuser::FileHandle(self.ov.handles.add_file(node.ino, fd, backing.clone(), -1));
        // (KEEP_CACHE is for daemon-served files: with passthrough the kernel refuses it.)
        let ttl = self.ov.settings.ttl;
        let generation = fuser::Generation(0);
        match backing {
            Some(id) => {
                reply.created_passthrough(&ttl, &a, generation, fh, fuser::FopenFlags::empty(), &id)
            }
            None => reply.created(&ttl, &a, generation, fh, self.file_cache_flags()),
        }
    }
}
