//! The merged tree as a flat list of entries (depth first, names sorted), for `tree`
//! and its picture: each entry with the layers the merged view takes it from and the
//! story of its name in its parent's layers, and also the entries the view does not
//! show (whited out, hidden below an opaque or renamed directory, covered), with why.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

use fuser::FileType;

use super::clean;
use super::story::{Role, Seen, Step, Story};
use crate::inode::{kind_of, Node};
use crate::overlay::Overlay;
use crate::sys;
use crate::whiteout::{self, OPAQUE_MARKER, WH_PREFIX};

/// One entry of the tree.
pub struct Entry {
    /// 0 for the tree's start, 1 for its children, ...
    pub depth: usize,
    /// The path from the tree's start ("" for the start itself).
    pub path: String,
    pub name: String,
    pub kind: FileType,
    /// The layers the merged view takes it from, topmost first; empty when hidden.
    pub layers: Vec<u16>,
    /// What each layer of the parent holds at the name.
    pub steps: Vec<Step>,
    /// For an entry the merged view does not show: why, and the layers holding it.
    pub hidden: Option<(String, Vec<u16>)>,
    /// The layer where the shown directory is opaque.
    pub opaque_in: Option<u16>,
    /// The layer where the shown directory was renamed, and from where.
    pub redirect: Option<(u16, String)>,
    /// Directories merged in through a redirect: (layer, path there).
    pub redirected: Vec<(u16, String)>,
    /// Objects at the name in other layers that the shown one hides: (layer, why).
    pub covers: Vec<(u16, String)>,
    /// A symlink's target.
    pub target: Option<String>,
}

/// The entries of the tree from `start` (shown as `label`), `depth` levels down at most.
pub fn walk(
    ov: &Overlay,
    start: &Arc<Node>,
    label: &str,
    depth: Option<usize>,
) -> io::Result<Vec<Entry>> {
    let mut out = vec![Entry {
        depth: 0,
        path: String::new(),
        name: label.to_string(),
        kind: start.kind,
        layers: start.stack().refs.iter().map(|r| r.layer).collect(),
        steps: Vec::new(),
        hidden: None,
        opaque_in: None,
        redirect: None,
        covers: Vec::new(),
        redirected: Vec::new(),
        target: None,
    }];
    if start.kind == FileType::Directory && depth != Some(0) {
        dir(ov, start, "", 1, depth, &mut out)?;
    }
    Ok(out)
}

/// The names the layers of `node` hold (AUFS whiteouts as the names they hide).
fn raw_names(ov: &Overlay, node: &Node) -> io::Result<BTreeSet<Vec<u8>>> {
    let mut names = BTreeSet::new();
    for r in node.stack().refs.iter() {
        let Ok(fd) = node.dir_fd(ov, r.layer) else {
            continue;
        };
        let rd = sys::openat(fd.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        for e in sys::read_dir_all(rd.as_fd())? {
            if e.name.as_slice() == OPAQUE_MARKER.to_bytes() {
                continue;
            }
            if whiteout::is_aufs_name(&e.name) {
                let hidden = &e.name[WH_PREFIX.len()..];
                if !hidden.is_empty() && !whiteout::is_aufs_name(hidden) {
                    names.insert(hidden.to_vec());
                }
                continue;
            }
            names.insert(e.name);
        }
    }
    Ok(names)
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

/// Adds the entries of the directory `node` (at `prefix`) and below.
fn dir(
    ov: &Overlay,
    node: &Arc<Node>,
    prefix: &str,
    depth: usize,
    max: Option<usize>,
    out: &mut Vec<Entry>,
) -> io::Result<()> {
    for name in raw_names(ov, node)? {
        let Ok(story) = Story::of(ov, node, &name) else {
            continue;
        };
        let shown = clean(&name);
        let path = join(prefix, &shown);
        let kind = story
            .found
            .as_ref()
            .map(|f| f.0)
            .or_else(|| {
                story.steps.iter().find_map(|s| match s.seen {
                    Seen::Object { kind, .. } => Some(kind),
                    _ => None,
                })
            })
            .unwrap_or(FileType::RegularFile);
        let mut e = Entry {
            depth,
            path: path.clone(),
            name: shown,
            kind,
            layers: story.layers(),
            steps: story.steps.clone(),
            hidden: None,
            opaque_in: None,
            redirect: None,
            covers: Vec::new(),
            redirected: story.redirected.clone(),
            target: None,
        };
        let Some(child) = story.node(node) else {
            let hidden = story.hidden();
            let why = match (hidden.first(), story.whiteout()) {
                (Some((_, _, why)), _) => why.clone(),
                (None, Some((l, k))) => format!(
                    "a whiteout ({}) in {} with nothing below to hide",
                    k.describe(),
                    super::Label::label(ov, l)
                ),
                (None, None) => continue,
            };
            e.hidden = Some((why, hidden.iter().map(|h| h.0).collect()));
            out.push(e);
            continue;
        };
        for s in &story.steps {
            if let (
                Seen::Object {
                    opaque, redirect, ..
                },
                Role::Top | Role::Merged,
            ) = (&s.seen, &s.role)
            {
                if opaque.is_some() {
                    e.opaque_in = Some(s.layer);
                }
                if let Some(t) = redirect {
                    e.redirect = Some((s.layer, t.clone()));
                }
            }
        }
        e.covers = story.hidden().into_iter().map(|h| (h.0, h.2)).collect();
        if kind == FileType::Symlink {
            e.target = child
                .real(ov)
                .and_then(|(d, n)| sys::readlinkat(d.as_fd(), &n))
                .ok()
                .map(|t| clean(&t));
        }
        let hidden_dirs: Vec<(u16, String)> = story
            .hidden()
            .into_iter()
            .filter(|h| h.1 == FileType::Directory)
            .map(|h| (h.0, h.2))
            .collect();
        out.push(e);
        if kind != FileType::Directory || max.is_some_and(|m| depth >= m) {
            continue;
        }
        let mut below = Vec::new();
        dir(ov, &child, &path, depth + 1, max, &mut below)?;
        let shown_names = crate::readdir::list(ov, &child)?;
        for (layer, why) in hidden_dirs {
            let at = (path.as_str(), depth + 1);
            hidden_contents(ov, node, &name, (layer, &why), at, &shown_names, &mut below)?;
        }
        out.extend(sorted(below, depth + 1));
    }
    Ok(())
}

/// `entries` with the groups of each entry at `depth` (it and what lies below it)
/// sorted by name, so that hidden entries sit among the shown ones.
fn sorted(entries: Vec<Entry>, depth: usize) -> Vec<Entry> {
    let mut groups: Vec<Vec<Entry>> = Vec::new();
    for e in entries {
        match groups.last_mut() {
            Some(g) if e.depth > depth => g.push(e),
            _ => groups.push(vec![e]),
        }
    }
    groups.sort_by(|a, b| a[0].name.cmp(&b[0].name));
    groups.into_iter().flatten().collect()
}

/// Adds the entries of the directory `name` of `parent` in `layer`, which the merged
/// view hides (`why`), but those the merged directory shows anyway.
fn hidden_contents(
    ov: &Overlay,
    parent: &Arc<Node>,
    name: &[u8],
    (layer, why): (u16, &str),
    (prefix, depth): (&str, usize),
    shown: &[crate::handles::Entry],
    out: &mut Vec<Entry>,
) -> io::Result<()> {
    let Ok(pfd) = parent.dir_fd(ov, layer) else {
        return Ok(());
    };
    let Ok(cname) = CString::new(name) else {
        return Ok(());
    };
    let Ok(d) = sys::openat(pfd.as_fd(), &cname, libc::O_RDONLY | libc::O_DIRECTORY, 0) else {
        return Ok(());
    };
    let mut entries = sys::read_dir_all(d.as_fd())?;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    for ent in entries {
        if whiteout::is_aufs_name(&ent.name) || shown.iter().any(|s| s.name == ent.name) {
            continue;
        }
        let Ok(c) = CString::new(ent.name.clone()) else {
            continue;
        };
        let Ok(st) = sys::statat(d.as_fd(), &c) else {
            continue;
        };
        let Some(kind) = kind_of(st.st_mode).filter(|_| !whiteout::is_whiteout_dev(&st)) else {
            continue;
        };
        let shown_name = clean(&ent.name);
        let step = Step {
            layer,
            parent_at: None,
            seen: Seen::Object {
                kind,
                opaque: None,
                redirect: None,
                stray_wh_xattr: false,
            },
            role: Role::Hidden(why.to_string()),
            reached: false,
        };
        // Hidden in a layer above too? One entry, with both layers.
        let same = out
            .iter_mut()
            .find(|e| e.depth == depth && e.hidden.is_some() && e.name == shown_name);
        if let Some(e) = same {
            if let Some((_, layers)) = e.hidden.as_mut() {
                layers.push(layer);
            }
            e.steps.push(step);
            continue;
        }
        out.push(Entry {
            depth,
            path: join(prefix, &shown_name),
            name: shown_name,
            kind,
            layers: Vec::new(),
            steps: vec![step],
            hidden: Some((why.to_string(), vec![layer])),
            opaque_in: None,
            redirect: None,
            covers: Vec::new(),
            redirected: Vec::new(),
            target: None,
        });
    }
    Ok(())
}
