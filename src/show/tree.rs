//! `stratafs tree`'s text: the merged tree drawn with branch lines, each entry marked
//! with the layers it comes from (`[U]`, `[1]`, `[U+1]` for a directory merged from
//! the upper and lower 1), coloured by layer on a terminal, under a legend; with
//! `--hidden`, also what the merged view hides (`~ name (why)`).

use std::fmt::Write as _;

use fuser::FileType;

use super::walk::Entry;
use super::Label;
use crate::overlay::Overlay;

/// The ANSI colour of each hue (the upper's first).
const ANSI: [&str; super::HUES] = ["35", "34", "32", "33", "36", "31", "94"];

struct Paint {
    on: bool,
}

impl Paint {
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    fn layer(&self, ov: &Overlay, layer: u16, bold: bool, s: &str) -> String {
        let code = ANSI[ov.hue(layer) % ANSI.len()];
        if bold {
            self.wrap(&format!("1;{code}"), s)
        } else {
            self.wrap(code, s)
        }
    }

    fn dim(&self, s: &str) -> String {
        self.wrap("2", s)
    }
}

/// `[U+1]`: the layers, each letter in its colour.
fn tag(ov: &Overlay, p: &Paint, layers: &[u16]) -> String {
    let letters: Vec<String> = layers
        .iter()
        .map(|&l| p.layer(ov, l, true, &ov.letter(l)))
        .collect();
    format!("[{}]", letters.join("+"))
}

fn shorts(ov: &Overlay, layers: &[u16]) -> String {
    layers
        .iter()
        .map(|&l| ov.short(l))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The text after the branch lines for one entry.
fn line(ov: &Overlay, p: &Paint, e: &Entry, show_hidden: bool) -> String {
    let slash = if e.kind == FileType::Directory && e.depth > 0 {
        "/"
    } else {
        ""
    };
    let name = format!("{}{slash}", e.name);
    if let Some((why, in_layers)) = &e.hidden {
        let text = if in_layers.is_empty() {
            format!("~ {name}  ({why})")
        } else {
            format!("~ {name}  (in {}: {why})", shorts(ov, in_layers))
        };
        return p.dim(&text);
    }
    let Some(&top) = e.layers.first() else {
        return name;
    };
    let mut s = p.layer(ov, top, e.kind == FileType::Directory, &name);
    if let Some(t) = &e.target {
        s.push_str(&format!(" -> {t}"));
    }
    s.push_str("  ");
    s.push_str(&tag(ov, p, &e.layers));
    let mut notes: Vec<String> = Vec::new();
    if e.kind == FileType::Directory && e.layers.len() > 1 {
        notes.push("merged".into());
    }
    if let Some(l) = e.opaque_in {
        notes.push(format!("opaque in {}", ov.short(l)));
    }
    if let Some((l, from)) = &e.redirect {
        notes.push(format!("renamed from {from} in {}", ov.short(*l)));
    }
    if show_hidden && !e.covers.is_empty() {
        let layers: Vec<u16> = e.covers.iter().map(|c| c.0).collect();
        notes.push(format!("hides what {} hold here", shorts(ov, &layers)));
    }
    if !notes.is_empty() {
        s.push(' ');
        s.push_str(&notes.join(", "));
    }
    s
}

/// The legend and the tree.
pub fn render(ov: &Overlay, entries: &[Entry], show_hidden: bool, color: bool) -> String {
    let p = Paint { on: color };
    let mut out = String::from("layers, topmost first:");
    for l in 0..ov.layers.len() as u16 {
        let _ = write!(
            out,
            "  {} {}",
            p.layer(ov, l, true, &ov.letter(l)),
            ov.label(l)
        );
    }
    out.push('\n');
    if show_hidden {
        let _ = writeln!(
            out,
            "{}",
            p.dim("~ hidden: whited out, below an opaque or renamed directory, or covered")
        );
    }
    let shown: Vec<&Entry> = entries
        .iter()
        .filter(|e| show_hidden || e.hidden.is_none())
        .collect();
    // Whether each level's current entry is the last of its siblings.
    let mut open: Vec<bool> = Vec::new();
    for (i, e) in shown.iter().enumerate() {
        if e.depth == 0 {
            let _ = writeln!(out, "{}", line(ov, &p, e, show_hidden));
            continue;
        }
        let last = shown[i + 1..]
            .iter()
            .take_while(|n| n.depth >= e.depth)
            .all(|n| n.depth > e.depth);
        // open[k]: the ancestor at depth k + 1 has siblings below it still to come.
        open.resize(e.depth - 1, false);
        let prefix: String = open
            .iter()
            .map(|&more| if more { "│   " } else { "    " })
            .collect();
        open.push(!last);
        let branch = if last { "└── " } else { "├── " };
        let _ = writeln!(out, "{prefix}{branch}{}", line(ov, &p, e, show_hidden));
    }
    out
}
