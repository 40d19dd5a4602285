//! rename(2) across the layers (the kernel's `ovl_rename`, in its dir.c): what moves
//! is copied up first, files whole and directories alone with a redirect to their
//! lower parts; the object renamed over is pinned and whited out where a lower name
//! would show through; RENAME_EXCHANGE and RENAME_NOREPLACE.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use fuser::FileType;

use crate::copy_up::copy_up;
use crate::dir::{copy_up_lower_link, err, find, is_upper, node_for, pin_before_removal, work};
use crate::events::What;
use crate::inode::Node;
use crate::namei;
use crate::ondisk::Ovl;
use crate::overlay::Overlay;
use crate::readdir;
use crate::stack::{LayerRef, Stack};
use crate::sys;
use crate::whiteout;
use crate::work::{WhiteoutFormat, Work};

/// Prepares a directory about to move: copied up alone, with a redirect to where its
/// lower parts are when it has any. Returns its lower paths (layer, path) to keep.
fn prepare_dir_move(
    ov: &Overlay,
    work: &Work,
    node: &Arc<Node>,
) -> io::Result<Vec<(u16, Arc<CString>)>> {
    let stack = node.stack();
    if work.xattr(Ovl::Redirect).is_none() && stack.refs.iter().any(|r| !ov.layer(r.layer).is_upper)
    {
        // No xattr can record a redirect on this upper: mv copies, as with the kernel's
        // redirect_dir=off.
        return Err(err(libc::EXDEV));
    }
    let mut lower_paths = Vec::new();
    for r in stack.refs.iter().filter(|r| !ov.layer(r.layer).is_upper) {
        let p = node.layer_path(r.layer)?;
        lower_paths.push((
            r.layer,
            Arc::new(CString::new(p).map_err(|_| err(libc::EINVAL))?),
        ));
    }
    copy_up(ov, node)?;
    if !lower_paths.is_empty() {
        let v = redirect_path(ov, node)?;
        let (dir, _) = node.real(ov)?;
        crate::inject::at(crate::inject::Step::Redirect)?;
        work.set_xattr(dir.as_fd(), c"", Ovl::Redirect, &v)?;
    }
    Ok(lower_paths)
}

/// The redirect a directory about to move records, made as the kernel's
/// `ovl_get_redirect` makes it: its absolute path before the move, where the directory
/// itself or an ancestor that already carries a redirect in the upper layer (moved
/// before) contributes that redirect instead of its name. Lookup resolves it layer by
/// layer, following the redirects it meets on the way.
fn redirect_path(ov: &Overlay, node: &Arc<Node>) -> io::Result<Vec<u8>> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut cur = node.clone();
    loop {
        let loc = cur.loc().ok_or_else(|| err(libc::ESTALE))?;
        let Some(parent) = loc.parent else {
            break; // the root
        };
        let own = if cur.stack().top() == 0 {
            cur.dir_fd(ov, 0)
                .ok()
                .and_then(|fd| namei::redirect_of(fd.as_fd()))
        } else {
            None
        };
        match own {
            Some(r) if r.first() == Some(&b'/') => {
                parts.push(r[1..].to_vec());
                break;
            }
            Some(r) => parts.push(r),
            None => parts.push(loc.name.to_bytes().to_vec()),
        }
        cur = parent;
    }
    parts.reverse();
    let mut v = b"/".to_vec();
    v.extend_from_slice(&parts.join(&b'/'));
    Ok(v)
}

/// After a move: the node answers to its new name, and its lower parts stay where
/// they were (recorded as paths, since its name no longer leads to them).
fn moved(
    node: &Arc<Node>,
    from: (&Arc<Node>, &CString),
    to: (&Arc<Node>, &CString),
    lower_paths: Vec<(u16, Arc<CString>)>,
) {
    node.remove_alias(from.0, from.1);
    node.add_alias(to.0, to.1);
    if node.kind == FileType::Directory && !lower_paths.is_empty() {
        let refs: Vec<LayerRef> = node
            .stack()
            .refs
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if let Some((_, p)) = lower_paths.iter().find(|(l, _)| *l == r.layer) {
                    r.path = Some(p.clone());
                }
                r
            })
            .collect();
        node.set_stack(Stack::of(refs, true));
    }
}

/// rename(2) with RENAME_NOREPLACE and RENAME_EXCHANGE. Directories of any layer move.
pub fn rename(
    ov: &Overlay,
    p1: &Arc<Node>,
    n1: &CString,
    p2: &Arc<Node>,
    n2: &CString,
    flags: u32,
) -> io::Result<()> {
    let work = work(ov)?;
    if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0
        || flags & libc::RENAME_NOREPLACE != 0 && flags & libc::RENAME_EXCHANGE != 0
    {
        return Err(err(libc::EINVAL));
    }
    let exchange = flags & libc::RENAME_EXCHANGE != 0;
    let src = find(ov, p1, n1)?.ok_or_else(|| err(libc::ENOENT))?;
    let dst = find(ov, p2, n2)?;
    if exchange && dst.is_none() {
        return Err(err(libc::ENOENT));
    }
    if flags & libc::RENAME_NOREPLACE != 0 && dst.is_some() {
        return Err(err(libc::EEXIST));
    }
    if dst.as_ref().is_some_and(|d| d.ino == src.ino) {
        return Ok(()); // the same file: nothing to do
    }
    let src_dir = src.kind == FileType::Directory;
    let src_node = node_for(ov, p1, n1, &src);
    let dst_node = dst.as_ref().map(|d| node_for(ov, p2, n2, d));
    let dst = match (dst, &dst_node) {
        (Some(d), Some(dn)) if !exchange => Some(copy_up_lower_link(ov, p2, n2, d, dn)?),
        (d, _) => d,
    };
    if let (Some(d), false) = (&dst, exchange) {
        let dst_dir = d.kind == FileType::Directory;
        if src_dir && !dst_dir {
            return Err(err(libc::ENOTDIR));
        }
        if !src_dir && dst_dir {
            return Err(err(libc::EISDIR));
        }
        if let (true, Some(dn)) = (dst_dir, &dst_node) {
            if !readdir::is_empty(ov, dn)? {
                return Err(err(libc::ENOTEMPTY));
            }
        }
    }
    copy_up(ov, p1)?;
    copy_up(ov, p2)?;
    let up1 = p1.dir_fd(ov, 0)?;
    let up2 = p2.dir_fd(ov, 0)?;
    let src_lower = namei::lower_positive(ov, p1, n1)?;
    let dst_lower = namei::lower_positive(ov, p2, n2)?;

    // Bring the moving objects up: files whole, directories alone with a redirect.
    let prepare = |node: &Arc<Node>| -> io::Result<Vec<(u16, Arc<CString>)>> {
        if node.kind == FileType::Directory {
            prepare_dir_move(ov, work, node)
        } else {
            copy_up(ov, node).map(|_| Vec::new())
        }
    };
    let src_paths = prepare(&src_node)?;
    // An entry that carries an origin makes the directory it moves into impure (as
    // the kernel's ovl_rename), so that listings there show the inode number it has.
    let samedir = Arc::ptr_eq(p1, p2);
    let carry_origin = |up: BorrowedFd, name: &CString, into: &Arc<Node>, into_up: BorrowedFd| {
        if !samedir && namei::read_origin(up, name).is_some() {
            crate::copy_up::mark_impure(work, into, into_up);
        }
    };
    carry_origin(up1.as_fd(), n1, p2, up2.as_fd());
    // A directory without lower parts that lands on a name with lower entries must
    // hide them.
    if src_dir && src_paths.is_empty() && dst_lower {
        whiteout::set_opaque(work, up1.as_fd(), n1)?;
        ov.happened(What::Opaque, || p2.child_path(n2));
    }

    if exchange {
        let dst_node = dst_node.ok_or_else(|| err(libc::ENOENT))?;
        let dst_paths = prepare(&dst_node)?;
        if dst_node.kind == FileType::Directory && dst_paths.is_empty() && src_lower {
            whiteout::set_opaque(work, up2.as_fd(), n2)?;
            ov.happened(What::Opaque, || p1.child_path(n1));
        }
        carry_origin(up2.as_fd(), n2, p1, up1.as_fd());
        let _changing = (src_node.changing(), dst_node.changing());
        sys::renameat2(up1.as_fd(), n1, up2.as_fd(), n2, libc::RENAME_EXCHANGE)?;
        redirected(ov, &src_paths, || p2.child_path(n2));
        redirected(ov, &dst_paths, || p1.child_path(n1));
        moved(&src_node, (p1, n1), (p2, n2), src_paths);
        moved(&dst_node, (p2, n2), (p1, n1), dst_paths);
        return Ok(());
    }

    // From here on names change: requests that reach either object by name meanwhile
    // resolve it again, and the object renamed over stays reachable through its node.
    if let Some(dn) = &dst_node {
        pin_before_removal(ov, dn);
    }
    let _changing = (src_node.changing(), dst_node.as_ref().map(|n| n.changing()));
    // An upper directory being replaced may still hold whiteouts: swap in an empty one.
    if let Some(d) = &dst {
        if d.kind == FileType::Directory && is_upper(ov, d) {
            let tmp = work.tmp_name();
            sys::mkdirat(work.fd.as_fd(), &tmp, 0o700)?;
            if let Err(e) = sys::renameat2(
                work.fd.as_fd(),
                &tmp,
                up2.as_fd(),
                n2,
                libc::RENAME_EXCHANGE,
            ) {
                work.remove(&tmp);
                return Err(e);
            }
            work.remove(&tmp);
        }
    }
    let char_wh_at_dst =
        sys::statat(up2.as_fd(), n2).is_ok_and(|st| whiteout::is_whiteout_dev(&st));
    let aufs_at_dst = whiteout::upper_has(up2.as_fd(), n2) && !char_wh_at_dst;
    if src_dir && char_wh_at_dst {
        // rename(2) cannot put a directory over a char device: exchange, and the
        // whiteout lands on the old name, where it is needed or dropped.
        sys::renameat2(up1.as_fd(), n1, up2.as_fd(), n2, libc::RENAME_EXCHANGE)?;
        if !src_lower {
            sys::unlinkat(up1.as_fd(), n1, false)?;
        }
    } else if src_lower && work.whiteout == WhiteoutFormat::CharDev {
        crate::inject::at(crate::inject::Step::Whiteout)?;
        match sys::renameat2(up1.as_fd(), n1, up2.as_fd(), n2, libc::RENAME_WHITEOUT) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                sys::renameat2(up1.as_fd(), n1, up2.as_fd(), n2, 0)?;
                whiteout::create(work, up1.as_fd(), n1)?;
            }
            Err(e) => return Err(e),
        }
    } else {
        sys::renameat2(up1.as_fd(), n1, up2.as_fd(), n2, 0)?;
        if src_lower {
            whiteout::create(work, up1.as_fd(), n1)?;
        }
    }
    if aufs_at_dst {
        whiteout::drop_aufs(up2.as_fd(), n2);
    }
    if char_wh_at_dst || aufs_at_dst {
        ov.happened(What::WhiteoutRemoved, || p2.child_path(n2));
    }
    if src_lower {
        ov.happened(What::Whiteout, || p1.child_path(n1));
    }
    if let Some(dn) = &dst_node {
        if dn.remove_alias(p2, n2) == 0 {
            ov.handles.drop_kept(dn.ino);
        }
    }
    redirected(ov, &src_paths, || p2.child_path(n2));
    moved(&src_node, (p1, n1), (p2, n2), src_paths);
    Ok(())
}

/// Tells of the redirect a moved directory got (it has lower parts at `paths`), at
/// its new name.
fn redirected(ov: &Overlay, paths: &[(u16, Arc<CString>)], new_path: impl FnOnce() -> String) {
    if let Some((_, from)) = paths.first() {
        let from = from.to_string_lossy().into_owned();
        ov.happened(What::Redirect { from }, new_path);
    }
}
