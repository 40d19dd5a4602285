//! `stratafs explain` and `stratafs tree`: the union's rules made visible, for
//! teaching and for debugging a layer stack, without mounting. `explain` tells the
//! lookup story of one path layer by layer (`explain.rs`); `tree` draws the merged
//! tree with each entry marked by its layer (`tree.rs`), and, with `--svg`, the
//! layer stack as a picture for slides (`svg.rs` lays it out, `pic.rs` draws). Both
//! read the layers with the core's own lookup, listing and format code (`story.rs`
//! tells one name's story, `walk.rs` walks the tree); they sit above the core,
//! beside `inspect`, and change nothing.

mod explain;
mod pic;
mod story;
mod svg;
mod tree;
mod walk;

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use clap::{Args, ValueEnum};
use fuser::FileType;

use crate::inode::Node;
use crate::options::MountOptions;
use crate::overlay::{Overlay, Settings};

/// `stratafs explain`'s arguments.
#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// The same options a mount takes (lowerdir=, upperdir=).
    #[arg(short = 'o', value_name = "OPTS", action = clap::ArgAction::Append, required = true)]
    opts: Vec<String>,
    /// The path, relative to the merged root.
    path: PathBuf,
}

/// When `tree` colours its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

/// `stratafs tree`'s arguments.
#[derive(Args, Debug)]
pub struct TreeArgs {
    /// The same options a mount takes (lowerdir=, upperdir=).
    #[arg(short = 'o', value_name = "OPTS", action = clap::ArgAction::Append, required = true)]
    opts: Vec<String>,
    /// Where the tree starts, relative to the merged root (default: the root).
    path: Option<PathBuf>,
    /// Also show what whiteouts, opaque and renamed directories hide.
    #[arg(long)]
    hidden: bool,
    /// No colours (the same as --color never).
    #[arg(long)]
    no_color: bool,
    /// Colour by layer: auto (when the output is a terminal), always, never.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = ColorWhen::Auto)]
    color: ColorWhen,
    /// Go N levels down at most.
    #[arg(long, value_name = "N")]
    depth: Option<usize>,
    /// Also draw the layer stack as an SVG picture into FILE.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

/// Names of layers for people.
pub trait Label {
    /// `upper (DIR)` or `lower N (DIR)`, as `stratafs which` says it.
    fn label(&self, layer: u16) -> String;
    /// `U` for the upper, `N` for lower N.
    fn letter(&self, layer: u16) -> String;
    /// `upper` or `lower N`.
    fn short(&self, layer: u16) -> String;
    /// The layer's colour number: 0 for the upper, then 1.. for the lowers (cycling).
    fn hue(&self, layer: u16) -> usize;
}

impl Label for Overlay {
    fn label(&self, layer: u16) -> String {
        crate::inspect::layer_label(self, layer)
    }

    fn letter(&self, layer: u16) -> String {
        if self.layer(layer).is_upper {
            "U".into()
        } else {
            (layer as usize + usize::from(!self.has_upper())).to_string()
        }
    }

    fn short(&self, layer: u16) -> String {
        if self.layer(layer).is_upper {
            "upper".into()
        } else {
            format!("lower {}", self.letter(layer))
        }
    }

    fn hue(&self, layer: u16) -> usize {
        if self.layer(layer).is_upper {
            0
        } else {
            1 + (layer as usize + usize::from(!self.has_upper()) - 1) % (HUES - 1)
        }
    }
}

/// How many layer colours there are (the upper's and the lowers' cycle).
pub const HUES: usize = 7;

/// The layers, topmost first, labelled.
pub fn layer_list(ov: &Overlay) -> String {
    (0..ov.layers.len())
        .map(|l| ov.label(l as u16))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A name or path for output: invalid UTF-8 as U+FFFD, control characters as `?`
/// (they would garble a terminal, and XML forbids most of them).
pub fn clean(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The names of a path relative to the merged root (`/` and `.` skipped).
fn components(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.as_bytes().to_vec()),
            Component::RootDir | Component::CurDir => {}
            _ => return Err(format!("{}: '..' is not supported", path.display())),
        }
    }
    Ok(out)
}

/// The overlay the options name, opened read-only (as `stratafs which` does).
fn open(opts: &[String]) -> Result<Overlay, String> {
    let o = MountOptions::parse(opts.iter().map(String::as_str))?;
    if o.lowerdirs.is_empty() {
        return Err("no lowerdir specified".into());
    }
    let upper = o.upperdir.as_deref().map(|u| (u, u));
    Overlay::open(upper, &o.lowerdirs, Settings::unmounted(true))
}

/// The node the merged view shows at `comps`.
fn resolve(ov: &Overlay, path: &Path, comps: &[Vec<u8>]) -> Result<Arc<Node>, String> {
    let mut node = ov.table.root().ok_or("the overlay has no root")?;
    for c in comps {
        let not_found = || format!("{}: not in the merged view", path.display());
        if node.kind != FileType::Directory {
            return Err(not_found());
        }
        let story = story::Story::of(ov, &node, c).map_err(|_| not_found())?;
        node = story.node(&node).ok_or_else(not_found)?;
    }
    Ok(node)
}

/// `stratafs explain`.
pub fn explain_cmd(a: ExplainArgs) -> Result<(), String> {
    let ov = open(&a.opts)?;
    print!("{}", explain::explain(&ov, &a.path)?);
    Ok(())
}

/// `stratafs tree`.
pub fn tree_cmd(a: TreeArgs) -> Result<(), String> {
    use std::io::IsTerminal;
    let ov = open(&a.opts)?;
    let path = a.path.unwrap_or_else(|| PathBuf::from("/"));
    let comps = components(&path)?;
    let node = resolve(&ov, &path, &comps)?;
    let label = if comps.is_empty() {
        "/".to_string()
    } else {
        clean(&comps.join(&b'/'))
    };
    let entries = walk::walk(&ov, &node, &label, a.depth).map_err(|e| format!("{label}: {e}"))?;
    let color = !a.no_color
        && match a.color {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            ColorWhen::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        };
    print!("{}", tree::render(&ov, &entries, a.hidden, color));
    if let Some(file) = a.svg {
        let pic = svg::render(&ov, &entries, &label);
        std::fs::write(&file, pic).map_err(|e| format!("{}: {e}", file.display()))?;
        eprintln!("wrote {}", file.display());
    }
    Ok(())
}
