//! Namespace changes (the kernel's `dir.c`): create, mknod, mkdir, symlink, link,
//! unlink and rmdir, with the whiteouts and opaque markers that keep the merged view
//! right; rename is rename.rs's (and uses the helpers here).
//!
//! A new upper object is made right at its name where nothing stands in the way,
//! else built in the work directory and renamed into place. A
//! name that exists below the upper layer gets a whiteout when it goes away; a
//! directory made where such a name was is opaque; a lower or merged directory that
//! is renamed is copied up alone and records its old path as a redirect.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use fuser::FileType;

use crate::acl;
use crate::copy_up::copy_up;
use crate::events::What;
use crate::inode::Node;
use crate::namei::{self, Found};
use crate::overlay::Overlay;
use crate::readdir;
use crate::stack::{Known, LayerRef};
use crate::sys::{self, Stat};
use crate::whiteout;
use crate::work::{WhiteoutFormat, Work};

pub(crate) fn err(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

pub(crate) fn work(ov: &Overlay) -> io::Result<&Work> {
    if ov.settings.read_only {
        return Err(err(libc::EROFS));
    }
    ov.work.as_ref().ok_or_else(|| err(libc::EROFS))
}

/// Who asks: owner of what gets created.
#[derive(Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// The caller's umask; applied here (not by the kernel) when ACLs are on.
    pub umask: u32,
}

/// What to create.
pub enum New<'a> {
    File { mode: u32 },
    Dir { mode: u32 },
    Special { mode: u32, rdev: u64 },
    Symlink { target: &'a CString },
    Link { node: &'a Arc<Node> },
}

/// Looks `name` up, mapping ENOENT to `None`.
pub(crate) fn find(ov: &Overlay, parent: &Arc<Node>, name: &CString) -> io::Result<Option<Found>> {
    match namei::lookup(ov, parent, name) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The node the kernel knows for a found object, or a transient one.
pub(crate) fn node_for(ov: &Overlay, parent: &Arc<Node>, name: &CString, f: &Found) -> Arc<Node> {
    match ov.table.get(f.ino) {
        Some(n) if n.kind == f.kind => {
            n.add_alias(parent, name);
            n
        }
        _ => Arc::new(Node::new(
            f.ino,
            f.kind,
            parent.clone(),
            name.clone(),
            f.refs.clone(),
        )),
    }
}

pub(crate) fn is_upper(ov: &Overlay, f: &Found) -> bool {
    f.refs.first().is_some_and(|r| ov.layer(r.layer).is_upper)
}

/// Creates `name` in `parent`. Returns the new node, its stat, and for a regular file
/// an fd open read-write on it.
pub fn create(
    ov: &Overlay,
    parent: &Arc<Node>,
    name: &CString,
    caller: Caller,
    what: New,
) -> io::Result<(Arc<Node>, Stat, Option<OwnedFd>)> {
    let work = work(ov)?;
    if let New::Special { mode, rdev: 0 } = what {
        if mode & libc::S_IFMT == libc::S_IFCHR {
            // A char device 0/0 is a whiteout on an overlay: the kernel refuses it too.
            return Err(err(libc::EPERM));
        }
    }
    if let New::Link { node } = what {
        copy_up(ov, node)?;
    }
    copy_up(ov, parent)?;
    let up = parent.dir_fd(ov, 0)?;
    // The upper first: a char whiteout there hides every layer below, and in a
    // directory that is only in the upper, nothing there means nothing at all.
    let top = match sys::statat(up.as_fd(), name) {
        Ok(st) => Some(st),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => None,
        Err(e) => return Err(e),
    };
    let char_wh = top.as_ref().is_some_and(whiteout::is_whiteout_dev);
    let pstack = parent.stack();
    let upper_only = pstack.refs.len() == 1;
    if !char_wh && (top.is_some() || !upper_only) && find(ov, parent, name)?.is_some() {
        return Err(err(libc::EEXIST));
    }
    let aufs_wh = !char_wh
        && !pstack
            .pos(0)
            .is_some_and(|p| ov.aufs_free(&pstack, p, up.as_fd()))
        && whiteout::upper_has_aufs(up.as_fd(), name);
    let pst = sys::fstat(up.as_fd())?;
    let gid = if pst.st_mode & libc::S_ISGID != 0 {
        pst.st_gid
    } else {
        caller.gid
    };
    crate::inject::at(crate::inject::Step::Create)?;
    let acls = ov.acl.load(std::sync::atomic::Ordering::Relaxed);
    // (The kernel holds the parent locked across a create and across a change of its
    // xattrs, so what the stack knows of its default ACL cannot go stale meanwhile.)
    let default_acl = if acls && !pstack.knows(Known::NoDefaultAcl) {
        let acl = acl::parent_default(up.as_fd());
        if acl.is_none() {
            pstack.learn(Known::NoDefaultAcl);
        }
        acl
    } else {
        None
    };
    // With ACLs on, the kernel leaves the umask to us: the parent's default ACL
    // replaces it. Otherwise the mode comes masked already.
    let (access_acl, final_mode) = match &what {
        New::File { mode } | New::Dir { mode } | New::Special { mode, .. } if acls => {
            let (m, a) = acl::for_new(*mode, caller.umask, default_acl.as_deref());
            (a, Some(m))
        }
        New::File { mode } | New::Dir { mode } | New::Special { mode, .. } => (None, Some(*mode)),
        _ => (None, None),
    };
    let final_mode = final_mode.unwrap_or(0);
    let in_place = !char_wh
        && !aufs_wh
        && default_acl.is_none()
        && access_acl.is_none()
        && ov.layer(0).stat_override.is_none();
    if in_place {
        let (file, st) = create_in_place(ov, up.as_fd(), name, &what, final_mode, caller.uid, gid)?;
        created(ov, parent, name, &what, false);
        return finish_create(ov, parent, name, &what, up.as_fd(), file, st);
    }
    let w = work.fd.as_fd();
    let tmp = work.tmp_name();
    let mut file = None;
    let built: io::Result<()> = (|| {
        file = make_object(ov, w, &tmp, &what, final_mode & 0o7777)?;
        let (mode, is_dir) = match &what {
            New::Link { .. } => return Ok(()),
            New::Symlink { .. } => return sys::chownat(w, &tmp, caller.uid, gid),
            New::Dir { .. } if pst.st_mode & libc::S_ISGID != 0 => {
                (final_mode | libc::S_ISGID, true)
            }
            New::Dir { .. } => (final_mode, true),
            _ => (final_mode, false),
        };
        let kept_in_xattr = ov.layer(0).stat_override;
        match kept_in_xattr {
            // xattr_permissions: the owner is recorded, the real file stays ours.
            Some(x) => crate::override_stat::write(
                x,
                sys::At { dir: w, name: &tmp },
                caller.uid,
                gid,
                mode,
            )?,
            None => sys::chownat(w, &tmp, caller.uid, gid)?,
        }
        // chown may clear set-id bits, and mkdir/open masked nothing (umask 0): set the mode last.
        sys::chmodat(w, &tmp, mode & 0o7777)?;
        if acls {
            let inherit = if is_dir { default_acl.as_deref() } else { None };
            acl::set_inherited(w, &tmp, access_acl.as_deref(), inherit)?;
        }
        if is_dir && (char_wh || aufs_wh) {
            whiteout::set_opaque(work, w, &tmp)?;
        }
        Ok(())
    })();
    if let Err(e) = built.and_then(|_| publish(work, &tmp, up.as_fd(), name, char_wh)) {
        work.remove(&tmp);
        return Err(e);
    }
    if aufs_wh {
        whiteout::drop_aufs(up.as_fd(), name);
    }
    created(ov, parent, name, &what, char_wh || aufs_wh);
    finish_create(ov, parent, name, &what, up.as_fd(), file, None)
}

/// Tells what a create did to the layers: a new upper object, and where it replaced
/// a whiteout, the whiteout gone (and a directory made opaque).
fn created(ov: &Overlay, parent: &Node, name: &CString, what: &New, over_whiteout: bool) {
    let path = || parent.child_path(name);
    if over_whiteout {
        ov.happened(What::WhiteoutRemoved, path);
        if matches!(what, New::Dir { .. }) {
            ov.happened(What::Opaque, path);
        }
    }
    let kind = match what {
        New::File { .. } => "file",
        New::Dir { .. } => "directory",
        New::Special { .. } => "special file",
        New::Symlink { .. } => "symlink",
        New::Link { .. } => "hard link",
    };
    ov.happened(What::Create { kind }, path);
}

/// The new node for the object just made at (`up`, `name`), and its stat (`made`, if
/// the caller has it already).
fn finish_create(
    ov: &Overlay,
    parent: &Arc<Node>,
    name: &CString,
    what: &New,
    up: BorrowedFd,
    file: Option<OwnedFd>,
    made: Option<Stat>,
) -> io::Result<(Arc<Node>, Stat, Option<OwnedFd>)> {
    let mut st = match made {
        Some(st) => st,
        None => sys::statat(up, name)?,
    };
    ov.effective(0, sys::At { dir: up, name }, &mut st);
    let (kind, ino) = match what {
        New::Link { node } => (node.kind, node.ino),
        _ => {
            let kind = crate::inode::kind_of(st.st_mode).ok_or_else(|| err(libc::EIO))?;
            (kind, ov.inos.map(ov.layer(0), st.st_dev, st.st_ino))
        }
    };
    let node = ov
        .table
        .lookup_ref(ino, kind, parent, name, vec![LayerRef::new(0)]);
    if matches!(what, New::Dir { .. })
        && ov.work.as_ref().is_some_and(|w| w.upper_stays_aufs_free())
    {
        // A new directory has no `.wh.` names, and may stay so.
        node.stack().note_aufs_free(0);
    }
    Ok((node, st, file))
}

/// Makes the object right at its name in the upper directory `up`, as the kernel does
/// where no whiteout is in the way and nothing needs to be set before it shows: the
/// merged view shows the name only once the create returns (the kernel holds the
/// parent locked), and its type and inode number are final from the start. Owner and
/// mode are set after only where the create did not give them already. Returns the fd
/// of a new regular file.
fn create_in_place(
    ov: &Overlay,
    up: BorrowedFd,
    name: &CString,
    what: &New,
    mode: u32,
    uid: u32,
    gid: u32,
) -> io::Result<(Option<OwnedFd>, Option<Stat>)> {
    let perm = mode & 0o7777;
    let file = make_object(ov, up, name, what, perm)?;
    if let New::Link { .. } = what {
        return Ok((None, None));
    }
    // The stat of the new object, if nothing changed it after it was made.
    let set_owner_mode = || -> io::Result<Option<Stat>> {
        let made = match &file {
            Some(fd) => sys::fstat(fd.as_fd())?,
            None => sys::statat(up, name)?,
        };
        let chowned = made.st_uid != uid || made.st_gid != gid;
        if chowned {
            sys::chownat(up, name, uid, gid)?;
        }
        if made.st_mode & libc::S_IFMT == libc::S_IFLNK {
            return Ok((!chowned).then_some(made));
        }
        // A directory in a set-group-id directory keeps the bit it inherited.
        let want = match what {
            New::Dir { .. } => perm | (made.st_mode & libc::S_ISGID),
            _ => perm,
        };
        // chown may clear set-id bits; mkdir and mknod may drop some: set the mode last.
        let chmodded = made.st_mode & 0o7777 != want || (chowned && want & 0o6000 != 0);
        if chmodded {
            sys::chmodat(up, name, want)?;
        }
        Ok((!chowned && !chmodded).then_some(made))
    };
    match set_owner_mode() {
        Ok(st) => Ok((file, st)),
        Err(e) => {
            let _ = sys::unlinkat(up, name, matches!(what, New::Dir { .. }));
            Err(e)
        }
    }
}

/// Makes the object `what` at (`dir`, `name`) with permission bits `perm`; returns
/// the fd of a new regular file, open read-write.
fn make_object(
    ov: &Overlay,
    dir: BorrowedFd,
    name: &CString,
    what: &New,
    perm: u32,
) -> io::Result<Option<OwnedFd>> {
    match what {
        New::File { .. } => {
            let flags = libc::O_CREAT | libc::O_EXCL | libc::O_RDWR;
            return sys::openat(dir, name, flags, perm).map(Some);
        }
        New::Dir { .. } => sys::mkdirat(dir, name, perm)?,
        New::Special { mode, rdev } => {
            sys::mknodat(dir, name, (mode & libc::S_IFMT) | perm, *rdev)?
        }
        New::Symlink { target } => sys::symlinkat(target, dir, name)?,
        New::Link { node } => {
            // The node's object itself, whatever its name holds meanwhile.
            let (obj, _) = node.object(ov)?;
            sys::linkat(obj.as_fd(), c"", dir, name)?
        }
    }
    Ok(None)
}

/// Renames the finished object `tmp` from the work dir to (`dir`, `name`), replacing
/// a char whiteout there if `over_whiteout`.
fn publish(
    work: &Work,
    tmp: &CString,
    dir: BorrowedFd,
    name: &CString,
    over_whiteout: bool,
) -> io::Result<()> {
    let w = work.fd.as_fd();
    if !over_whiteout {
        return sys::renameat2(w, tmp, dir, name, libc::RENAME_NOREPLACE);
    }
    // Exchange, then drop the whiteout that came back: works for directories too,
    // which rename(2) cannot put over a char device.
    sys::renameat2(w, tmp, dir, name, libc::RENAME_EXCHANGE)?;
    work.remove(tmp);
    Ok(())
}

/// Replaces the upper object (`dir`, `name`) by a whiteout in one step.
pub(crate) fn replace_with_whiteout(
    work: &Work,
    dir: BorrowedFd,
    name: &CString,
    is_dir: bool,
) -> io::Result<()> {
    match work.whiteout {
        WhiteoutFormat::CharDev => {
            let tmp = whiteout::create_in_work(work)?;
            let flags = if is_dir { libc::RENAME_EXCHANGE } else { 0 };
            if let Err(e) = sys::renameat2(work.fd.as_fd(), &tmp, dir, name, flags) {
                work.remove(&tmp);
                return Err(e);
            }
            if is_dir {
                work.remove(&tmp);
            }
            Ok(())
        }
        WhiteoutFormat::Aufs => {
            // The whiteout first: while both stand, the real entry still wins.
            whiteout::create(work, dir, name)?;
            remove_upper(work, dir, name, is_dir)
        }
    }
}

/// Removes an upper object; a directory (which may still hold whiteouts) is moved
/// into the work dir first and removed there.
pub(crate) fn remove_upper(
    work: &Work,
    dir: BorrowedFd,
    name: &CString,
    is_dir: bool,
) -> io::Result<()> {
    if !is_dir {
        return sys::unlinkat(dir, name, false);
    }
    let tmp = work.tmp_name();
    sys::renameat2(dir, name, work.fd.as_fd(), &tmp, 0)?;
    work.remove(&tmp);
    Ok(())
}

/// A lower hard link about to lose a name is copied up first (with its other names,
/// see `links`), so those names see the link count drop, as with the kernel's
/// index=on. Returns what the name now is.
pub(crate) fn copy_up_lower_link(
    ov: &Overlay,
    parent: &Arc<Node>,
    name: &CString,
    found: Found,
    node: &Arc<Node>,
) -> io::Result<Found> {
    if found.kind == FileType::Directory || is_upper(ov, &found) || found.stat.st_nlink < 2 {
        return Ok(found);
    }
    copy_up(ov, node)?;
    find(ov, parent, name)?.ok_or_else(|| err(libc::ENOENT))
}

/// unlink or rmdir of `name` in `parent`.
pub fn remove(ov: &Overlay, parent: &Arc<Node>, name: &CString, rmdir: bool) -> io::Result<()> {
    let work = work(ov)?;
    let found = find(ov, parent, name)?.ok_or_else(|| err(libc::ENOENT))?;
    let is_dir = found.kind == FileType::Directory;
    if rmdir && !is_dir {
        return Err(err(libc::ENOTDIR));
    }
    if !rmdir && is_dir {
        return Err(err(libc::EISDIR));
    }
    let node = node_for(ov, parent, name, &found);
    if is_dir && !readdir::is_empty(ov, &node)? {
        return Err(err(libc::ENOTEMPTY));
    }
    let found = copy_up_lower_link(ov, parent, name, found, &node)?;
    copy_up(ov, parent)?;
    let up = parent.dir_fd(ov, 0)?;
    let lower = namei::lower_positive(ov, parent, name)?;
    pin_before_removal(ov, &node);
    let _changing = node.changing();
    match (is_upper(ov, &found), lower) {
        (true, true) => replace_with_whiteout(work, up.as_fd(), name, is_dir)?,
        (true, false) => remove_upper(work, up.as_fd(), name, is_dir)?,
        (false, _) => whiteout::create(work, up.as_fd(), name)?,
    }
    if lower || !is_upper(ov, &found) {
        ov.happened(What::Whiteout, || parent.child_path(name));
    }
    if node.remove_alias(parent, name) == 0 {
        ov.handles.drop_kept(node.ino); // its last name: nothing may keep it open
    }
    Ok(())
}

/// Before the object of `node` loses its name (removed, whited out or renamed
/// over): holds it open for as long as the kernel knows the node
/// (`InodeTable::pin`), so opens, stats and reads through the node still reach it,
/// and an upper object's inode number is not reused for a new object meanwhile.
/// (Taken before the node's change count moves: `Node::object` waits for that.)
pub(crate) fn pin_before_removal(ov: &Overlay, node: &Arc<Node>) {
    if !ov.table.knows(node) {
        return; // the kernel has no reference to it
    }
    match node.object(ov) {
        Ok((fd, _)) => ov.table.pin(node, fd),
        Err(e) => log::debug!("ino {} not pinned: {e}", node.ino),
    }
}
