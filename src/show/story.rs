//! One name's story across the layers of its parent directory, for `explain` and
//! `tree`: what each layer of the parent's stack holds at the name (an object, a
//! whiteout in one of its formats, an opaque or renamed directory, nothing), read
//! with the core's format tests (`whiteout`, `namei::redirect_of`), and the verdict
//! of the core's own lookup (`namei::lookup`). Which layers the merged object takes
//! is always the lookup's answer; this module only tells why the others are left out.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use fuser::FileType;

use crate::inode::{kind_of, Node};
use crate::namei;
use crate::ondisk::{Ovl, FUSE_OVERLAYFS_OPAQUE, OPAQUE_MARKER};
use crate::overlay::Overlay;
use crate::stack::LayerRef;
use crate::sys::{self, At};
use crate::whiteout::{self, Opacity};

/// The whiteout formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhKind {
    /// A char device 0/0 (kernel overlayfs).
    CharDev,
    /// An empty `.wh.NAME` file beside the name (AUFS, OCI layers).
    Aufs,
    /// A zero-size file with an overlay whiteout xattr, in an `opaque=x` directory.
    Xattr,
}

impl WhKind {
    pub fn describe(self) -> &'static str {
        match self {
            WhKind::CharDev => "char 0/0",
            WhKind::Aufs => ".wh. file",
            WhKind::Xattr => "xattr whiteout",
        }
    }

    /// The format in a word or two, for the picture.
    pub fn brief(self) -> &'static str {
        match self {
            WhKind::CharDev => "0/0",
            WhKind::Aufs => ".wh.",
            WhKind::Xattr => "xattr",
        }
    }
}

/// What one layer holds at the name.
#[derive(Clone, Debug)]
pub enum Seen {
    /// The parent directory itself is missing in this layer.
    NoParent,
    Absent,
    Whiteout(WhKind),
    Object {
        kind: FileType,
        /// For an opaque directory: which marker makes it so.
        opaque: Option<String>,
        /// For a renamed directory: the path its redirect xattr records.
        redirect: Option<String>,
        /// A zero-size file with a whiteout xattr in a directory not marked
        /// `opaque=x`: an ordinary file, as the kernel reads it.
        stray_wh_xattr: bool,
    },
}

/// The part a layer plays in the name's lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// The merged object comes from here (its topmost layer).
    Top,
    /// A directory merged in below the top one.
    Merged,
    /// Holds an object the merged view does not show; why.
    Hidden(String),
    /// Nothing of its own shows (absent, a whiteout).
    Nothing,
}

/// One layer's line of the story.
#[derive(Clone, Debug)]
pub struct Step {
    pub layer: u16,
    /// The parent's path in this layer when it differs from the merged one (reached
    /// through a redirect).
    pub parent_at: Option<String>,
    pub seen: Seen,
    pub role: Role,
    /// Did the search for the name reach this layer (nothing above stopped it)?
    pub reached: bool,
}

/// The name's story: one step per layer of the parent, topmost first, the layers a
/// redirect brought in, and the lookup's verdict.
pub struct Story {
    pub name: Vec<u8>,
    pub steps: Vec<Step>,
    /// Directories merged in through a redirect: (layer, path in that layer).
    pub redirected: Vec<(u16, String)>,
    /// The lookup's verdict: the object's kind, inode number and layers; None when
    /// the merged view does not show the name.
    pub found: Option<(FileType, u64, Vec<LayerRef>)>,
}

pub fn kind_word(kind: FileType) -> &'static str {
    match kind {
        FileType::Directory => "directory",
        FileType::RegularFile => "file",
        FileType::Symlink => "symlink",
        FileType::CharDevice => "char device",
        FileType::BlockDevice => "block device",
        FileType::NamedPipe => "fifo",
        FileType::Socket => "socket",
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Which marker makes the directory open as `dir` (its xattr names in `names`) opaque.
fn opaque_marker(dir: BorrowedFd, names: &[Vec<u8>]) -> String {
    let candidates = Ovl::Opaque
        .names()
        .into_iter()
        .chain([FUSE_OVERLAYFS_OPAQUE]);
    for attr in candidates {
        if names.iter().any(|n| n.as_slice() == attr.to_bytes())
            && sys::getxattr(At { dir, name: c"" }, attr).is_ok_and(|v| v == b"y")
        {
            return format!("{}=y", attr.to_string_lossy());
        }
    }
    format!("a {} marker inside", OPAQUE_MARKER.to_string_lossy())
}

/// What layer `r` (a layer of `parent`'s stack, open there as `dir`) holds at `name`.
fn observe(ov: &Overlay, r: &LayerRef, dir: BorrowedFd, name: &CString) -> io::Result<Seen> {
    let st = match sys::statat(dir, name) {
        Ok(st) => st,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            let wh = whiteout::aufs_whiteout_name(name.as_bytes())?;
            return Ok(if sys::statat(dir, &wh).is_ok() {
                Seen::Whiteout(WhKind::Aufs)
            } else {
                Seen::Absent
            });
        }
        Err(e) => return Err(e),
    };
    if whiteout::is_whiteout_dev(&st) {
        return Ok(Seen::Whiteout(WhKind::CharDev));
    }
    let xattr_wh = whiteout::is_xattr_whiteout(dir, name, &st);
    if xattr_wh && r.xwhiteouts {
        return Ok(Seen::Whiteout(WhKind::Xattr));
    }
    let kind = kind_of(st.st_mode).ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))?;
    let (mut opaque, mut redirect) = (None, None);
    // (Opacity and redirects count only where a layer lies below, as in namei.)
    if kind == FileType::Directory && (r.layer as usize) + 1 < ov.layers.len() {
        let sub = sys::openat(dir, name, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        let names = sys::listxattr(At {
            dir: sub.as_fd(),
            name: c"",
        })
        .unwrap_or_default();
        if whiteout::opacity_with(sub.as_fd(), c"", &names) == Opacity::Opaque {
            opaque = Some(opaque_marker(sub.as_fd(), &names));
        }
        redirect = namei::redirect_of(sub.as_fd()).map(|t| lossy(&t));
    }
    Ok(Seen::Object {
        kind,
        opaque,
        redirect,
        stray_wh_xattr: xattr_wh,
    })
}

/// Why the layers below a step are not searched for the name, if they are not.
fn stops_below(seen: &Seen, label: &str, above_is_dir: bool) -> Option<String> {
    match seen {
        Seen::Whiteout(k) => Some(format!(
            "hidden by the whiteout ({}) in {label}",
            k.describe()
        )),
        Seen::Object { kind, .. } if *kind != FileType::Directory => Some(if above_is_dir {
            format!(
                "a directory above ends the merge at the {} in {label}",
                kind_word(*kind)
            )
        } else {
            format!("covered by the {} in {label}", kind_word(*kind))
        }),
        Seen::Object {
            opaque: Some(_), ..
        } => Some(format!("hidden by the opaque directory in {label}")),
        Seen::Object {
            redirect: Some(t), ..
        } => Some(format!(
            "the directory in {label} was renamed from {t}: its lower parts are found there"
        )),
        _ => None,
    }
}

impl Story {
    /// The story of `name` in the directory `parent`.
    pub fn of(ov: &Overlay, parent: &Arc<Node>, name: &[u8]) -> io::Result<Story> {
        let cname = namei::check_name(name)?;
        let found = match namei::lookup(ov, parent, &cname) {
            Ok(f) => Some((f.kind, f.ino, f.refs)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => None,
            Err(e) => return Err(e),
        };
        let empty = Vec::new();
        let refs = found.as_ref().map_or(&empty, |f| &f.2);
        let pstack = parent.stack();
        let mut steps = Vec::with_capacity(pstack.refs.len());
        // Why the layers from here down are not searched, once something stops it.
        let mut stop: Option<String> = None;
        let mut above_is_dir = false;
        for r in pstack.refs.iter() {
            let seen = match parent.dir_fd(ov, r.layer) {
                Ok(dir) => observe(ov, r, dir.as_fd(), &cname)?,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                    Seen::NoParent
                }
                Err(e) => return Err(e),
            };
            let label = crate::inspect::layer_label(ov, r.layer);
            let pos = refs
                .iter()
                .position(|x| x.layer == r.layer && x.path.is_none());
            let role = match (&seen, pos) {
                (_, Some(0)) => Role::Top,
                (_, Some(_)) => Role::Merged,
                (Seen::Object { .. }, None) => Role::Hidden(
                    stop.clone()
                        .unwrap_or_else(|| "not merged (no reason found)".into()),
                ),
                _ => Role::Nothing,
            };
            let reached = stop.is_none();
            if reached {
                stop = stops_below(&seen, &label, above_is_dir);
            }
            above_is_dir |=
                matches!(&seen, Seen::Object { kind, .. } if *kind == FileType::Directory);
            steps.push(Step {
                layer: r.layer,
                parent_at: r.path.as_ref().map(|p| format!("/{}", p.to_string_lossy())),
                seen,
                role,
                reached,
            });
        }
        let redirected = refs
            .iter()
            .filter_map(|r| {
                let p = r.path.as_ref()?;
                Some((r.layer, format!("/{}", p.to_string_lossy())))
            })
            .collect();
        Ok(Story {
            name: name.to_vec(),
            steps,
            redirected,
            found,
        })
    }

    /// The layers of the merged object (empty when hidden or absent).
    pub fn layers(&self) -> Vec<u16> {
        self.found
            .as_ref()
            .map(|f| f.2.iter().map(|r| r.layer).collect())
            .unwrap_or_default()
    }

    /// The node of the merged object, as a child of `parent`.
    pub fn node(&self, parent: &Arc<Node>) -> Option<Arc<Node>> {
        let (kind, ino, refs) = self.found.as_ref()?;
        let cname = CString::new(self.name.clone()).ok()?;
        Some(Arc::new(Node::new(
            *ino,
            *kind,
            parent.clone(),
            cname,
            refs.clone(),
        )))
    }

    /// The step of the topmost layer holding a whiteout for the name, if any.
    pub fn whiteout(&self) -> Option<(u16, WhKind)> {
        self.steps.iter().find_map(|s| match s.seen {
            Seen::Whiteout(k) => Some((s.layer, k)),
            _ => None,
        })
    }

    /// The layers holding an object the merged view leaves out, with why.
    pub fn hidden(&self) -> Vec<(u16, FileType, String)> {
        self.steps
            .iter()
            .filter_map(|s| match (&s.seen, &s.role) {
                (Seen::Object { kind, .. }, Role::Hidden(why)) => {
                    Some((s.layer, *kind, why.clone()))
                }
                _ => None,
            })
            .collect()
    }
}
