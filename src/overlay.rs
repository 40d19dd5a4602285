//! The mounted overlay as a whole (the kernel's `super.c`): the layer stack, the
//! inode-number mapping, the inode table and the settings every operation reads.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::RwLock;

use crate::inode::{Node, ROOT_ID};
use crate::stack::{LayerRef, Stack};
use crate::sys::{self, At};
use crate::table::InodeTable;
use crate::whiteout;
use crate::work::Work;

/// One layer directory. Index 0 of [`Overlay::layers`] is the upper layer when there is
/// one, then the lowers, topmost first.
pub struct Layer {
    /// `O_PATH | O_DIRECTORY` fd of the layer root; every access to the layer starts here.
    pub root: Arc<OwnedFd>,
    pub dev: u64,
    /// Index of this layer's filesystem among the distinct filesystems of the stack.
    pub fsidx: u64,
    pub is_upper: bool,
    /// The xattr that keeps owner and mode of this layer's files, if it uses one
    /// (`override_stat`).
    pub stat_override: Option<&'static std::ffi::CStr>,
    /// The path given on the command line, for messages only.
    pub path: PathBuf,
}

/// Settings fixed at mount time.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long the kernel may cache entries and attributes.
    pub ttl: Duration,
    /// Refuse every change (no upperdir, or `ro`).
    pub read_only: bool,
    /// Skip the fsync that makes a copy-up durable before it is renamed into place.
    pub volatile: bool,
    /// Ask the kernel for POSIX ACL support (off with `noacl`).
    pub acl: bool,
    /// `ino32_t`: inode numbers fit 32 bits.
    pub ino32: bool,
    /// `xattr_permissions=1|2`: the upper keeps owner and mode in an xattr.
    pub xattr_permissions: u8,
    /// Directories report one link (`static_nlink`).
    pub static_nlink: bool,
    /// Extended attributes answer ENOSYS (`noxattrs=1`).
    pub noxattrs: bool,
    /// Owner mapping between the layers and the mount.
    pub ids: crate::idmap::IdMap,
    /// `readdirplus=`, when given (`Means::choose_listings` decides otherwise).
    pub readdirplus: Option<crate::rdplus::Mode>,
}

impl Settings {
    /// Plain settings for opening the layers without a mount (`stratafs which`, the
    /// unit tests): no caching, no ACLs, no id mapping; `read_only` unless an upper
    /// is to be changed.
    pub fn unmounted(read_only: bool) -> Settings {
        Settings {
            ttl: Default::default(),
            read_only,
            volatile: true,
            acl: false,
            static_nlink: false,
            ino32: false,
            xattr_permissions: 0,
            noxattrs: false,
            ids: Default::default(),
            readdirplus: None,
        }
    }
}

/// Maps (device, real inode number) to the inode number the mount shows, like the
/// kernel's xino: objects of the first filesystem keep their inode number, others get
/// their filesystem's index in bits 56..63. What does not fit gets a number from a
/// synthetic range (top bit set), remembered for the life of the mount.
pub struct InoMap {
    /// `ino32_t`: every number fits 32 bits (objects of the first filesystem whose
    /// number is below 2^31 keep it; the rest count down from 2^32-1).
    ino32: bool,
    base_devs: Vec<u64>,
    extra_devs: RwLock<Vec<u64>>,
    synthetic: DashMap<(u64, u64), u64>,
    next_synthetic: AtomicU64,
}

const FS_SHIFT: u32 = 56;
const MAX_FS: u64 = 128;
const SYNTHETIC_BASE: u64 = 1 << 63;

impl InoMap {
    fn new(base_devs: Vec<u64>, ino32: bool) -> Self {
        InoMap {
            ino32,
            base_devs,
            extra_devs: RwLock::new(Vec::new()),
            synthetic: DashMap::new(),
            next_synthetic: AtomicU64::new(if ino32 {
                u32::MAX as u64
            } else {
                SYNTHETIC_BASE
            }),
        }
    }

    fn dev_index(&self, dev: u64) -> u64 {
        if let Some(i) = self.base_devs.iter().position(|&d| d == dev) {
            return i as u64;
        }
        let base = self.base_devs.len();
        if let Some(i) = self.extra_devs.read().iter().position(|&d| d == dev) {
            return (base + i) as u64;
        }
        let mut extra = self.extra_devs.write();
        if let Some(i) = extra.iter().position(|&d| d == dev) {
            return (base + i) as u64;
        }
        extra.push(dev);
        (base + extra.len() - 1) as u64
    }

    /// The mount's inode number for an object found in `layer`.
    pub fn map(&self, layer: &Layer, dev: u64, ino: u64) -> u64 {
        let idx = if dev == layer.dev {
            layer.fsidx
        } else {
            self.dev_index(dev)
        };
        if self.ino32 {
            if idx == 0 && ino != 0 && ino != ROOT_ID && ino < (1 << 31) {
                return ino;
            }
            return *self
                .synthetic
                .entry((dev, ino))
                .or_insert_with(|| self.next_synthetic.fetch_sub(1, Ordering::Relaxed));
        }
        if idx < MAX_FS && ino != 0 && ino < (1 << FS_SHIFT) {
            let v = (idx << FS_SHIFT) | ino;
            if v != ROOT_ID {
                return v;
            }
        }
        *self
            .synthetic
            .entry((dev, ino))
            .or_insert_with(|| self.next_synthetic.fetch_add(1, Ordering::Relaxed))
    }
}

/// The whole mounted overlay.
pub struct Overlay {
    pub layers: Vec<Layer>,
    /// The work directory, when there is an upper layer.
    pub work: Option<Work>,
    pub inos: InoMap,
    pub table: InodeTable,
    /// Lower hard links, found when one of them is copied up.
    pub links: crate::links::Links,
    pub settings: Settings,
    /// FUSE passthrough is on (negotiated at init, off after a refusal).
    pub passthrough: std::sync::atomic::AtomicBool,
    /// Open file and directory handles.
    pub handles: crate::handles::Handles,
    /// POSIX ACLs are on (negotiated with the kernel at init).
    pub acl: std::sync::atomic::AtomicBool,
    /// Layer directories that listings found free of `.wh.` names.
    pub aufs_free_dirs: whiteout::AufsFreeDirs,
    /// What the union does to the layers, for listeners (`stratafs trace`).
    pub events: Arc<crate::events::Events>,
    /// Requests and changes counted (`stratafs stats`).
    pub stats: crate::stats::Stats,
}

fn open_layer_dir(path: &Path, what: &str) -> Result<OwnedFd, String> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{what} {}: invalid path", path.display()))?;
    // Entries may be symlinks to the layer directories (podman's l/ links), so the
    // given path itself is followed; everything beneath it never is.
    sys::open_path(&c, libc::O_PATH | libc::O_DIRECTORY).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTDIR) => format!("{what} {}: not a directory", path.display()),
        Some(libc::ENOENT) => format!("{what} {}: does not exist", path.display()),
        _ => format!("{what} {}: {e}", path.display()),
    })
}

/// Marks an upper root as keeping owners and modes in `xattr` (so it is read that way
/// as a lower later), with the root's own.
fn mark_override_root(root: BorrowedFd, xattr: &std::ffi::CStr, st: &sys::Stat) {
    let at = sys::At {
        dir: root,
        name: c"",
    };
    if sys::getxattr(at, xattr).is_err() {
        let _ = crate::override_stat::write(xattr, at, st.st_uid, st.st_gid, st.st_mode);
    }
}

/// Refuses layers that overlap, as the kernel does: the workdir and the upperdir
/// must be separate subtrees (neither the same directory nor one inside the other),
/// and a lowerdir may be neither the same directory as another layer or the workdir
/// ("conflicting") nor inside one or around another lowerdir ("overlapping"). Paths
/// are compared as the kernel resolved them (the layer roots' `/proc/self/fd`
/// links), sorted, so that a directory's subdirectories follow it: one pass over
/// neighbours finds every pair, even with thousands of layers.
fn check_separate(layers: &[Layer], workdir: Option<&Path>) -> Result<(), String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Role {
        Upper,
        Work,
        Lower,
    }
    let work_fd = match workdir {
        Some(w) => {
            let c = CString::new(w.as_os_str().as_bytes())
                .map_err(|_| format!("workdir {}: invalid path", w.display()))?;
            let fd = sys::open_path(&c, libc::O_PATH | libc::O_DIRECTORY)
                .map_err(|e| format!("workdir {}: {e}", w.display()))?;
            Some((fd, w))
        }
        None => None,
    };
    let mut fds: Vec<BorrowedFd> = layers.iter().map(|l| l.root.as_fd()).collect();
    fds.extend(work_fd.as_ref().map(|(fd, _)| fd.as_fd()));
    let reals = sys::dir_paths(&fds).map_err(|e| format!("cannot resolve the layer paths: {e}"))?;
    let roles = layers
        .iter()
        .map(|l| {
            (
                if l.is_upper { Role::Upper } else { Role::Lower },
                l.path.as_path(),
            )
        })
        .chain(work_fd.as_ref().map(|(_, w)| (Role::Work, *w)));
    let mut all: Vec<(PathBuf, Role, &Path)> = reals
        .into_iter()
        .zip(roles)
        .map(|(real, (role, p))| (real, role, p))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let name = |r: Role| match r {
        Role::Upper => "upperdir",
        Role::Work => "workdir",
        Role::Lower => "lowerdir",
    };
    // The entries that are ancestors of (or the same as) the current one: in sorted
    // order a directory's subdirectories follow it, so these are a stack.
    let mut around: Vec<&(PathBuf, Role, &Path)> = Vec::new();
    for cur in &all {
        while around.last().is_some_and(|a| !cur.0.starts_with(&a.0)) {
            around.pop();
        }
        for (outer, ro, po) in around.iter().map(|a| (&a.0, a.1, a.2)) {
            let (inner, ri, pi) = (&cur.0, cur.1, cur.2);
            let same = inner == outer;
            let what = format!(
                "{} {} {} {} {}",
                name(ri),
                pi.display(),
                if same {
                    "is the same directory as"
                } else {
                    "is inside"
                },
                name(ro),
                po.display()
            );
            match (ro, ri) {
                (Role::Upper, Role::Work) | (Role::Work, Role::Upper) => {
                    return Err(format!(
                        "workdir and upperdir must be separate subtrees: {what}"
                    ))
                }
                // A lowerdir around the upper or work dir is allowed, as by the kernel.
                (Role::Lower, Role::Upper | Role::Work) if !same => {}
                _ if same => return Err(format!("conflicting lowerdir path: {what}")),
                _ => return Err(format!("overlapping lowerdir path: {what}")),
            }
        }
        around.push(cur);
    }
    Ok(())
}

impl Overlay {
    /// Owner and mode as the mount shows them for the real object `at` of `layer`.
    pub fn effective(&self, layer: u16, at: sys::At, st: &mut sys::Stat) {
        crate::override_stat::apply(self.layer(layer).stat_override, at, st);
    }

    /// Opens the layers (upper first, then lowers topmost first) and builds the root.
    pub fn open(
        upper: Option<(&Path, &Path)>,
        lowers: &[PathBuf],
        settings: Settings,
    ) -> Result<Overlay, String> {
        // (A read-only overlay never uses its workdir: `which` passes the upper again.)
        let workdir = upper.map(|(_, w)| w).filter(|_| !settings.read_only);
        let upper = upper.map(|(u, _)| u);
        let mut specs: Vec<(&Path, bool)> = Vec::new();
        if let Some(u) = upper {
            specs.push((u, true));
        }
        specs.extend(lowers.iter().map(|l| (l.as_path(), false)));
        let mut layers = Vec::with_capacity(specs.len());
        let mut devs: Vec<u64> = Vec::new();
        let mut root_opacity = Vec::with_capacity(specs.len());
        for (path, is_upper) in specs {
            let what = if is_upper { "upperdir" } else { "lowerdir" };
            let fd = open_layer_dir(path, what)?;
            let st =
                sys::fstat(fd.as_fd()).map_err(|e| format!("{what} {}: {e}", path.display()))?;
            let dev = st.st_dev;
            let fsidx = match devs.iter().position(|&d| d == dev) {
                Some(i) => i as u64,
                None => {
                    devs.push(dev);
                    (devs.len() - 1) as u64
                }
            };
            // (Listed once: the override and the root's opacity both come from it.)
            let root_xattrs = sys::listxattr(At {
                dir: fd.as_fd(),
                name: c"",
            })
            .unwrap_or_default();
            let stat_override = match crate::override_stat::for_setting(settings.xattr_permissions)
            {
                Some(x) if is_upper => {
                    mark_override_root(fd.as_fd(), x, &st);
                    Some(x)
                }
                _ => crate::override_stat::detect(&root_xattrs),
            };
            root_opacity.push(whiteout::opacity_with(fd.as_fd(), c"", &root_xattrs));
            layers.push(Layer {
                root: Arc::new(fd),
                dev,
                fsidx,
                is_upper,
                stat_override,
                path: path.to_path_buf(),
            });
        }
        if layers.len() > u16::MAX as usize {
            return Err("too many layers".into());
        }
        let t0 = std::time::Instant::now();
        check_separate(&layers, workdir)?;
        log::debug!("layers checked for overlaps in {:?}", t0.elapsed());
        // (Opened only now: it empties `work/`, which must not be inside a layer.)
        let work = workdir.map(Work::open).transpose()?;
        let ov = Overlay {
            links: crate::links::Links::new(layers.len()),
            layers,
            work,
            inos: InoMap::new(devs, settings.ino32),
            table: InodeTable::new(),
            settings,
            acl: std::sync::atomic::AtomicBool::new(false),
            handles: crate::handles::Handles::new(),
            passthrough: std::sync::atomic::AtomicBool::new(false),
            aufs_free_dirs: whiteout::AufsFreeDirs::default(),
            events: Default::default(),
            stats: Default::default(),
        };
        let root_refs = root_opacity
            .into_iter()
            .enumerate()
            .map(|(i, o)| LayerRef {
                layer: i as u16,
                xwhiteouts: o == whiteout::Opacity::XWhiteouts,
                path: None,
            })
            .collect();
        let root_fds = ov.layers.iter().map(|l| l.root.clone()).collect();
        ov.table.insert_root(Node::new_root(root_refs, root_fds));
        Ok(ov)
    }

    pub fn has_upper(&self) -> bool {
        self.layers.first().is_some_and(|l| l.is_upper)
    }

    /// Is the directory at position `pos` of `stack`, open as `dir`, free of `.wh.`
    /// names (so a lookup there need not look for an AUFS whiteout)? Known to the
    /// stack, or found so by a listing before this node was made.
    pub fn aufs_free(&self, stack: &Stack, pos: usize, dir: BorrowedFd) -> bool {
        stack.aufs_free_or_ask(pos, || {
            stack.refs.get(pos).is_some_and(|r| {
                sys::fstat(dir).is_ok_and(|st| self.aufs_free_dirs.contains(r.layer, &st))
            })
        })
    }

    pub fn layer(&self, idx: u16) -> &Layer {
        &self.layers[idx as usize]
    }

    /// The filesystem whose numbers statfs reports: the upper's, else the top lower's.
    pub fn statfs(&self) -> io::Result<libc::statvfs64> {
        sys::fstatfs(self.layers[0].root.as_fd())
    }
}

impl Overlay {
    /// Something was done to the layers at `path` (computed only for a listener):
    /// counted, and told to whoever traces the mount.
    pub fn happened(&self, what: crate::events::What, path: impl FnOnce() -> String) {
        self.stats.note(&what);
        self.events.emit(what, path);
    }
}

impl crate::inode::Reach for Overlay {
    fn pinned(&self, node: &Node) -> Option<Arc<OwnedFd>> {
        self.table.pinned(node)
    }

    fn layer_root(&self, layer: u16) -> BorrowedFd<'_> {
        self.layer(layer).root.as_fd()
    }

    fn lower_ino(&self, layer: u16, st: &sys::Stat) -> Option<u64> {
        let l = self.layer(layer);
        (!l.is_upper).then(|| self.inos.map(l, st.st_dev, st.st_ino))
    }

    fn open_fd(&self, ino: u64) -> Option<Arc<OwnedFd>> {
        self.handles.any_for(ino)
    }

    fn effective(&self, layer: u16, at: sys::At, st: &mut sys::Stat) {
        Overlay::effective(self, layer, at, st)
    }
}
