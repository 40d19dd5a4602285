//! `stratafs tree --svg`: the layer stack as a picture for slides, written by hand.
//! Each layer is a horizontal band (the bottom lower at the bottom, the upper above
//! the lowers) and the merged view is the top band; each entry of the tree (the first
//! `MAX_ENTRIES`) is a column, with a box in the band of every layer that holds
//! something at its name: a coloured box where the merged view uses it, a grey dashed
//! one where it is hidden, a red crossed one for a whiteout; an opaque directory has a
//! heavy floor, a renamed one says where it came from. Columns wrap into panels.

use std::fmt::Write as _;

use fuser::FileType;

use super::pic::{colour, fit, legend, Pic, BOX_H, CHAR_W, GREY, MARGIN, SUB_W, WHITEOUT};
use super::story::{Role, Seen};
use super::walk::Entry;
use super::Label;
use crate::overlay::Overlay;

/// How many entries the picture shows at most.
const MAX_ENTRIES: usize = 40;
/// The band labels' column.
const LABEL_W: f64 = 170.0;
const BAND_H: f64 = 58.0;
const GAP: f64 = 6.0;
/// The widest a panel of columns gets before the columns wrap into the next.
const PANEL_W: f64 = 1400.0;
/// Between the band labels and the first column.
const LEFT_PAD: f64 = 10.0;
/// The longest box text, in characters.
const MAX_CHARS: usize = 26;
const FONT: &str = "DejaVu Sans Mono, Menlo, Consolas, monospace";

/// What a column shows in one band.
enum Cell {
    /// Used by the merged view (a directory merged in through a redirect: from where).
    Used {
        opaque: bool,
        from: Option<String>,
    },
    Hidden,
    Whiteout(&'static str),
}

impl Cell {
    /// The box's second line.
    fn sub(&self) -> String {
        match self {
            Cell::Used { from: Some(f), .. } => f.clone(),
            Cell::Used { opaque: true, .. } => "opaque".into(),
            Cell::Used { .. } => String::new(),
            Cell::Hidden => "hidden".into(),
            Cell::Whiteout(k) => format!("whiteout ({k})"),
        }
    }
}

/// The cell of entry `e` in the band of `layer`.
fn cell(e: &Entry, layer: u16) -> Option<Cell> {
    let step = e.steps.iter().find(|s| s.layer == layer);
    match step.map(|s| (&s.seen, &s.role)) {
        Some((Seen::Whiteout(k), _)) => Some(Cell::Whiteout(k.brief())),
        Some((
            Seen::Object {
                opaque, redirect, ..
            },
            Role::Top | Role::Merged,
        )) => Some(Cell::Used {
            opaque: opaque.is_some(),
            from: redirect.as_ref().map(|r| format!("from {r}")),
        }),
        Some((Seen::Object { .. }, _)) => Some(Cell::Hidden),
        // A layer merged in through a redirect holds it at another path.
        _ => e
            .redirected
            .iter()
            .find(|r| r.0 == layer)
            .map(|(_, at)| Cell::Used {
                opaque: false,
                from: Some(format!("at {at}")),
            }),
    }
}

/// The picture of the tree's `entries` (the start, `label`, left out).
pub fn render(ov: &Overlay, entries: &[Entry], label: &str) -> String {
    let cols: Vec<&Entry> = entries.iter().filter(|e| e.depth > 0).collect();
    let more = cols.len().saturating_sub(MAX_ENTRIES);
    let cols = &cols[..cols.len().min(MAX_ENTRIES)];
    let texts: Vec<String> = cols
        .iter()
        .map(|e| {
            let slash = if e.kind == FileType::Directory {
                "/"
            } else {
                ""
            };
            fit(&format!("{}{slash}", e.path), MAX_CHARS)
        })
        .collect();
    let widths: Vec<f64> = cols
        .iter()
        .zip(&texts)
        .map(|(e, t)| {
            let sub = (0..ov.layers.len() as u16)
                .filter_map(|l| cell(e, l))
                .map(|c| c.sub().chars().count())
                .max()
                .unwrap_or(0);
            (t.chars().count() as f64 * CHAR_W)
                .max(sub as f64 * SUB_W)
                .max(66.0)
                + 18.0
        })
        .collect();
    // Columns into panels: (first, end) index ranges.
    let mut panels: Vec<(usize, usize)> = Vec::new();
    let (mut start, mut w) = (0, 0.0);
    for (i, cw) in widths.iter().enumerate() {
        if w + cw > PANEL_W && i > start {
            panels.push((start, i));
            (start, w) = (i, 0.0);
        }
        w += cw + GAP;
    }
    panels.push((start, cols.len()));
    let bands = ov.layers.len() + 1;
    let panel_h = bands as f64 * (BAND_H + GAP) + 14.0 + 28.0;
    let content_w = panels
        .iter()
        .map(|&(a, b)| widths[a..b].iter().map(|w| w + GAP).sum::<f64>())
        .fold(0.0, f64::max)
        .max(560.0)
        + LEFT_PAD;
    let width = MARGIN * 2.0 + LABEL_W + LEFT_PAD + content_w;
    let top = MARGIN + 66.0;
    let height = top + panels.len() as f64 * panel_h + if more > 0 { 24.0 } else { 0.0 } + MARGIN;
    let mut p = Pic { s: String::new() };
    let _ = writeln!(
        p.s,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="{FONT}">"#
    );
    p.rect(0.0, 0.0, width, height, 0.0, r#"fill="white""#);
    let title = format!("stratafs tree {label}: the layer stack and the merged view");
    p.text(
        MARGIN,
        MARGIN + 16.0,
        20.0,
        r##"font-weight="bold" fill="#212529""##,
        &title,
    );
    legend(ov, &mut p, MARGIN + 44.0);
    for (n, &(a, b)) in panels.iter().enumerate() {
        let y0 = top + n as f64 * panel_h;
        panel(
            ov,
            &mut p,
            y0,
            &cols[a..b],
            &texts[a..b],
            &widths[a..b],
            content_w,
        );
    }
    if more > 0 {
        let note = format!("… and {more} more entries (the first {MAX_ENTRIES} are drawn)");
        p.text(
            MARGIN,
            height - MARGIN,
            13.0,
            &format!(r#"fill="{GREY}""#),
            &note,
        );
    }
    p.s.push_str("</svg>\n");
    p.s
}

/// One panel: the merged band, then a band per layer, with the columns `cols`.
fn panel(
    ov: &Overlay,
    p: &mut Pic,
    y0: f64,
    cols: &[&Entry],
    texts: &[String],
    widths: &[f64],
    content_w: f64,
) {
    let x0 = MARGIN + LABEL_W + LEFT_PAD;
    let band_y = |i: usize| y0 + i as f64 * (BAND_H + GAP) + if i > 0 { 14.0 } else { 0.0 };
    // The bands and their labels.
    let last = band_y(ov.layers.len()) + BAND_H;
    p.rect(
        MARGIN,
        band_y(0),
        LABEL_W + LEFT_PAD + content_w,
        BAND_H,
        6.0,
        r##"fill="#f1f3f5""##,
    );
    p.text(
        MARGIN + 10.0,
        band_y(0) + 26.0,
        15.0,
        r##"font-weight="bold" fill="#212529""##,
        "merged view",
    );
    p.text(
        MARGIN + 10.0,
        band_y(0) + 44.0,
        11.0,
        &format!(r#"fill="{GREY}""#),
        "what the mount shows",
    );
    for l in 0..ov.layers.len() as u16 {
        let y = band_y(l as usize + 1);
        let c = colour(ov, l);
        p.rect(
            MARGIN,
            y,
            LABEL_W + LEFT_PAD + content_w,
            BAND_H,
            6.0,
            &format!(r#"fill="{c}" fill-opacity="0.08""#),
        );
        p.rect(MARGIN, y, 6.0, BAND_H, 0.0, &format!(r#"fill="{c}""#));
        let dir = ov
            .layer(l)
            .path
            .file_name()
            .map(|d| d.to_string_lossy().into_owned());
        let bold = format!(r#"font-weight="bold" fill="{c}""#);
        p.text(
            MARGIN + 14.0,
            y + 26.0,
            15.0,
            &bold,
            &format!("{} {}", ov.letter(l), ov.short(l)),
        );
        let dir = fit(&super::clean(dir.unwrap_or_default().as_bytes()), 20);
        p.text(
            MARGIN + 14.0,
            y + 44.0,
            11.0,
            &format!(r#"fill="{GREY}""#),
            &dir,
        );
    }
    let mut x = x0;
    for ((e, t), &w) in cols.iter().zip(texts).zip(widths) {
        let cx = x + w / 2.0;
        p.line(
            (cx, band_y(0) + BAND_H),
            (cx, last),
            r##"stroke="#ced4da" stroke-dasharray="2 4""##,
        );
        let dir = e.kind == FileType::Directory;
        let rx = if dir { 9.0 } else { 2.0 };
        if let Some(&topl) = e.layers.first() {
            let y = band_y(0) + (BAND_H - BOX_H) / 2.0;
            let c = colour(ov, topl);
            let merged = dir && e.layers.len() > 1;
            let sub = if merged { "merged" } else { "" };
            p.boxed(
                (x, y, w),
                &format!(r#"fill="{c}" fill-opacity="0.30" stroke="{c}" stroke-width="2""#),
                rx,
                t,
                sub,
            );
            if merged {
                // A chip of each layer's colour along the bottom.
                let cw = (w - 2.0 * rx) / e.layers.len() as f64;
                for (i, &l) in e.layers.iter().enumerate() {
                    let cx = x + rx + i as f64 * cw;
                    p.rect(
                        cx,
                        y + BOX_H - 6.0,
                        cw,
                        4.0,
                        0.0,
                        &format!(r#"fill="{}""#, colour(ov, l)),
                    );
                }
            }
        }
        for l in 0..ov.layers.len() as u16 {
            let y = band_y(l as usize + 1) + (BAND_H - BOX_H) / 2.0;
            match cell(e, l) {
                None => {}
                Some(c @ Cell::Used { .. }) => {
                    let style = format!(
                        r#"fill="{colour}" fill-opacity="0.22" stroke="{colour}" stroke-width="1.5""#,
                        colour = colour(ov, l)
                    );
                    p.boxed((x, y, w), &style, rx, t, &c.sub());
                    if matches!(c, Cell::Used { opaque: true, .. }) {
                        p.rect(x, y + BOX_H - 3.0, w, 6.0, 2.0, r##"fill="#212529""##);
                    }
                }
                Some(Cell::Hidden) => {
                    let style =
                        format!(r##"fill="#f1f3f5" stroke="{GREY}" stroke-dasharray="5 3""##);
                    p.boxed((x, y, w), &style, rx, t, "hidden");
                }
                Some(c @ Cell::Whiteout(_)) => {
                    let style = format!(r#"fill="white" stroke="{WHITEOUT}" stroke-width="1.5""#);
                    p.boxed((x, y, w), &style, 2.0, t, &c.sub());
                    let red =
                        format!(r#"stroke="{WHITEOUT}" stroke-opacity="0.55" stroke-width="1.5""#);
                    p.line((x, y), (x + w, y + BOX_H), &red);
                    p.line((x + w, y), (x, y + BOX_H), &red);
                    let tw = t.chars().count() as f64 * CHAR_W;
                    let strike = format!(r#"stroke="{WHITEOUT}" stroke-width="2""#);
                    p.line(
                        (cx - tw / 2.0, y + 14.0),
                        (cx + tw / 2.0, y + 14.0),
                        &strike,
                    );
                }
            }
        }
        x += w + GAP;
    }
}
