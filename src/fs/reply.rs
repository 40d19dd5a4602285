//! Where results become replies: `answer` replies a value or an errno, over the one
//! thing every reply type of fuser can do (`Fail`).

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
