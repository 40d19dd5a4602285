//! The SVG picture's drawing: XML text escaped, boxes, lines and texts, the legend.

use std::fmt::Write as _;

use super::Label;
use crate::overlay::Overlay;

/// The colour of each hue (the upper's first), as in the text's ANSI colours.
pub const HEX: [&str; super::HUES] = [
    "#c2255c", "#1971c2", "#2f9e44", "#e8590c", "#0c8599", "#5c940d", "#6741d9",
];
pub const MARGIN: f64 = 24.0;

pub fn colour(ov: &Overlay, layer: u16) -> &'static str {
    HEX[ov.hue(layer) % HEX.len()]
}

pub const WHITEOUT: &str = "#e03131";
pub const GREY: &str = "#868e96";
pub const BOX_H: f64 = 44.0;
/// The width of a character of a box's first line (13 px monospace).
pub const CHAR_W: f64 = 7.9;
/// The width of a character of a box's second line.
pub const SUB_W: f64 = 6.4;

/// Text for XML: the five special characters escaped.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// `s`, shortened from the left to `max` characters.
pub fn fit(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    let tail: String = s.chars().skip(n + 1 - max).collect();
    format!("…{tail}")
}

/// The picture's text, being written.
pub struct Pic {
    pub s: String,
}

impl Pic {
    pub fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, rx: f64, style: &str) {
        let _ = writeln!(
            self.s,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" rx="{rx}" {style}/>"#
        );
    }

    pub fn text(&mut self, x: f64, y: f64, size: f64, style: &str, t: &str) {
        let _ = writeln!(
            self.s,
            r#"<text x="{x:.1}" y="{y:.1}" font-size="{size}" {style}>{}</text>"#,
            esc(t)
        );
    }

    pub fn line(&mut self, (x1, y1): (f64, f64), (x2, y2): (f64, f64), style: &str) {
        let _ = writeln!(
            self.s,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" {style}/>"#
        );
    }

    /// One box: its first line `t`, a small second line `sub`.
    pub fn boxed(&mut self, (x, y, w): (f64, f64, f64), style: &str, rx: f64, t: &str, sub: &str) {
        // (White below, so the tints look the same on every band and the column's
        // guide line does not show through.)
        self.rect(x, y, w, BOX_H, rx, r#"fill="white""#);
        self.rect(x, y, w, BOX_H, rx, style);
        let (ty, fill) = if sub.is_empty() {
            (y + BOX_H / 2.0 + 4.5, "#212529")
        } else {
            (y + 18.0, "#212529")
        };
        let anchor = format!(r#"text-anchor="middle" fill="{fill}""#);
        self.text(x + w / 2.0, ty, 13.0, &anchor, t);
        if !sub.is_empty() {
            let a = format!(r#"text-anchor="middle" fill="{GREY}" font-style="italic""#);
            self.text(x + w / 2.0, y + 34.0, 10.5, &a, sub);
        }
    }
}

/// The legend: each layer's colour, then what the box styles mean.
pub fn legend(ov: &Overlay, p: &mut Pic, y: f64) {
    let mut x = MARGIN;
    for l in 0..ov.layers.len() as u16 {
        let c = colour(ov, l);
        p.rect(x, y - 11.0, 14.0, 14.0, 3.0, &format!(r#"fill="{c}""#));
        let t = format!("{} {}", ov.letter(l), ov.label(l));
        p.text(x + 20.0, y, 13.0, r##"fill="#212529""##, &t);
        x += 20.0 + t.chars().count() as f64 * CHAR_W + 22.0;
    }
    let keys = [
        (WHITEOUT, "whiteout"),
        (GREY, "hidden"),
        ("#212529", "opaque dir"),
    ];
    for (i, (c, t)) in keys.iter().enumerate() {
        match i {
            0 => {
                p.rect(
                    x,
                    y - 11.0,
                    14.0,
                    14.0,
                    2.0,
                    &format!(r#"fill="white" stroke="{c}""#),
                );
                p.line(
                    (x, y - 11.0),
                    (x + 14.0, y + 3.0),
                    &format!(r#"stroke="{c}""#),
                );
                p.line(
                    (x + 14.0, y - 11.0),
                    (x, y + 3.0),
                    &format!(r#"stroke="{c}""#),
                );
            }
            1 => p.rect(
                x,
                y - 11.0,
                14.0,
                14.0,
                2.0,
                &format!(r##"fill="#f1f3f5" stroke="{c}" stroke-dasharray="3 2""##),
            ),
            _ => {
                p.rect(
                    x,
                    y - 11.0,
                    14.0,
                    14.0,
                    2.0,
                    r##"fill="white" stroke="#adb5bd""##,
                );
                p.rect(x, y, 14.0, 4.0, 0.0, &format!(r#"fill="{c}""#));
            }
        }
        p.text(x + 20.0, y, 13.0, r##"fill="#212529""##, t);
        x += 20.0 + t.len() as f64 * CHAR_W + 22.0;
    }
}
