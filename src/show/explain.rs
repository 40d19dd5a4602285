//! `stratafs explain`: the lookup story of one path, component by component, and
//! for each component layer by layer (the parent's stack, topmost first), ending in
//! the verdict: which layers the merged object comes from.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use fuser::FileType;

use super::story::{kind_word, Role, Seen, Step, Story};
use super::{clean, components, layer_list, Label};
use crate::inode::Node;
use crate::overlay::Overlay;

/// What the step's layer holds, in words.
fn seen_text(step: &Step) -> Vec<String> {
    let mut lines = Vec::new();
    match &step.seen {
        Seen::NoParent => lines.push("the parent directory is missing here".into()),
        Seen::Absent => lines.push("absent".into()),
        Seen::Whiteout(k) if step.reached => {
            lines.push(format!("hidden by a whiteout here ({})", k.describe()))
        }
        Seen::Whiteout(k) => lines.push(format!("a whiteout here ({}), not reached", k.describe())),
        Seen::Object {
            kind,
            opaque,
            redirect,
            stray_wh_xattr,
        } => {
            lines.push(format!("found here ({})", kind_word(*kind)));
            if let Some(how) = opaque {
                lines.push(format!("opaque directory ({how}): layers below are hidden"));
            }
            if let Some(t) = redirect {
                lines.push(format!(
                    "redirected from {t}: the layers below are searched at {t}"
                ));
            }
            if *stray_wh_xattr {
                lines.push(
                    "(carries an overlay whiteout xattr, but its directory is not marked \
                     opaque=x: an ordinary file)"
                        .into(),
                );
            }
        }
    }
    let role = match &step.role {
        Role::Top => ": the name comes from here".to_string(),
        Role::Merged => ": merged in".to_string(),
        Role::Hidden(why) => format!(": not shown, {why}"),
        Role::Nothing => String::new(),
    };
    if let Some(first) = lines.first_mut() {
        first.push_str(&role);
    }
    lines
}

/// The verdict on an object found with `layers` (and, for those reached through a
/// redirect, their path there).
fn verdict(ov: &Overlay, kind: FileType, story: &Story) -> String {
    let Some((_, _, refs)) = &story.found else {
        return "not in the merged view".into();
    };
    let from: Vec<String> = refs
        .iter()
        .map(|r| match &r.path {
            Some(p) => format!("{} at /{}", ov.label(r.layer), clean(p.to_bytes())),
            None => ov.label(r.layer),
        })
        .collect();
    match kind {
        FileType::Directory if refs.len() > 1 => {
            format!("merged directory of {}", from.join(" + "))
        }
        k => format!("{} from {}", kind_word(k), from.join(" + ")),
    }
}

/// Why the merged view does not show the name.
fn why_not(ov: &Overlay, story: &Story) -> String {
    match story.whiteout() {
        Some((layer, k)) => format!(
            "hidden by the whiteout ({}) in {}",
            k.describe(),
            ov.label(layer)
        ),
        None => "absent from every layer".into(),
    }
}

/// The whole story of `path`, as the lines to print.
pub fn explain(ov: &Overlay, path: &Path) -> Result<String, String> {
    let comps = components(path)?;
    let mut out = String::new();
    let _ = writeln!(out, "layers, topmost first: {}", layer_list(ov));
    let mut node: Arc<Node> = ov.table.root().ok_or("the overlay has no root")?;
    let root_layers: Vec<u16> = node.stack().refs.iter().map(|r| r.layer).collect();
    let _ = writeln!(
        out,
        "/: the root, {} of {}",
        if root_layers.len() > 1 {
            "merged directory"
        } else {
            "directory"
        },
        root_layers
            .iter()
            .map(|&l| ov.label(l))
            .collect::<Vec<_>>()
            .join(" + ")
    );
    let width = (0..ov.layers.len())
        .map(|l| ov.label(l as u16).len())
        .max()
        .unwrap_or(0);
    let mut sofar = String::new();
    for (i, comp) in comps.iter().enumerate() {
        let parent_shown = if sofar.is_empty() {
            "/".to_string()
        } else {
            format!("{sofar}/")
        };
        if !sofar.is_empty() {
            sofar.push('/');
        }
        sofar.push_str(&clean(comp));
        if node.kind != FileType::Directory {
            let _ = writeln!(out, "\n{sofar}: {parent_shown} is not a directory");
            let _ = writeln!(out, "verdict: {} is not in the merged view", path.display());
            return Ok(out);
        }
        let story = match Story::of(ov, &node, comp) {
            Ok(s) => s,
            Err(_) if crate::whiteout::is_aufs_name(comp) => {
                let _ = writeln!(
                    out,
                    "\n{sofar}: a name the AUFS whiteout format reserves (.wh.*), never shown"
                );
                let _ = writeln!(out, "verdict: {} is not in the merged view", path.display());
                return Ok(out);
            }
            Err(e) => return Err(format!("{sofar}: {e}")),
        };
        let _ = writeln!(out, "\n{sofar}  (looked up in {parent_shown})");
        let mut told = Vec::new();
        for step in &story.steps {
            let label = ov.label(step.layer);
            let mut lines = seen_text(step);
            // Absent at this name, but merged in from where a redirect leads: one line.
            if let (Seen::Absent, Some((_, at))) = (
                &step.seen,
                story.redirected.iter().find(|(l, _)| *l == step.layer),
            ) {
                lines = vec![format!(
                    "not at this name; found at {} (directory): merged in through the redirect",
                    clean(at.as_bytes())
                )];
                told.push(step.layer);
            }
            if let Some(at) = &step.parent_at {
                // The parent's part in this layer came through a redirect.
                if let Some(first) = lines.first_mut() {
                    *first = format!("in {}: {first}", clean(at.as_bytes()));
                }
            }
            for (i, line) in lines.iter().enumerate() {
                let l = if i == 0 { label.as_str() } else { "" };
                let _ = writeln!(out, "  {l:<width$}  {line}");
            }
        }
        for (layer, at) in story.redirected.iter().filter(|(l, _)| !told.contains(l)) {
            let _ = writeln!(
                out,
                "  {:<width$}  found at {} (directory): merged in through the redirect",
                ov.label(*layer),
                clean(at.as_bytes())
            );
        }
        let Some(kind) = story.found.as_ref().map(|f| f.0) else {
            let why = why_not(ov, &story);
            let _ = writeln!(out, "  => {sofar}: not in the merged view ({why})");
            let _ = writeln!(out, "verdict: {} is not in the merged view", path.display());
            return Ok(out);
        };
        let _ = writeln!(out, "  => {sofar}: {}", verdict(ov, kind, &story));
        let Some(next) = story.node(&node) else {
            return Err(format!("{sofar}: cannot be named"));
        };
        node = next;
        if i + 1 == comps.len() {
            let ino = node.ino;
            let _ = writeln!(
                out,
                "verdict: {} is a {}, inode {ino}",
                path.display(),
                verdict(ov, kind, &story)
            );
        }
    }
    if comps.is_empty() {
        let _ = writeln!(out, "verdict: / is the root");
    }
    Ok(out)
}
