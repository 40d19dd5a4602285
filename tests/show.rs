//! `stratafs explain` and `stratafs tree` on layers holding every format: a char 0/0
//! whiteout, an AUFS `.wh.` file, an xattr whiteout in an `opaque=x` directory, an
//! opaque directory, a renamed directory with its redirect; the story lines, the
//! tree's marks (with `--hidden`, `--depth`, a start path, colours) and the SVG
//! picture (well-formed XML, names escaped, rendered by rsvg-convert when present).

mod common;
use common::*;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;

struct Layers {
    _t: TempDir,
    opts: String,
    dir: std::path::PathBuf,
}

/// upper `u` over lower 1 `l1` over lower 2 `l2`:
/// - `bin/` in all three; `bin/ls` (l2) whited out by a char 0/0 in u;
/// - `README` (l2) whited out by `.wh.README` in l1;
/// - `etc/` opaque in u (`trusted.overlay.opaque=y`): l1's and l2's etc/ hidden;
/// - `new/app` in u renamed from `/old/app` (l2), `old` whited out in u;
/// - `x/gone` (l2) whited out by an xattr whiteout in l1's `x/` (`opaque=x`);
/// - `odd&<name>` (l2), a name XML must escape.
fn layers() -> Layers {
    assert_root();
    let t = TempDir::new("show");
    let (u, l1, l2) = (t.dir("u"), t.dir("l1"), t.dir("l2"));
    for (p, d) in [
        ("etc/passwd", "l2"),
        ("etc/hosts", "l2"),
        ("bin/sh", "sh"),
        ("bin/ls", "ls"),
        ("old/app/config", "cfg"),
        ("var/log/syslog", "x"),
        ("README", "r"),
        ("x/gone", "gone"),
        ("x/kept", "kept"),
        ("odd&<name>", "odd"),
    ] {
        write(&l2.join(p), d);
    }
    write(&l1.join("etc/group"), "g");
    write(&l1.join("etc/passwd"), "l1");
    write(&l1.join("bin/bash"), "bash");
    write(&l1.join(".wh.README"), "");
    write(&l1.join("x/gone"), "");
    set_xattr(&l1.join("x"), "trusted.overlay.opaque", b"x");
    set_xattr(&l1.join("x/gone"), "trusted.overlay.whiteout", b"");
    std::os::unix::fs::symlink("bash", l1.join("bin/rbash")).unwrap();
    write(&u.join("etc/passwd"), "mine");
    set_xattr(&u.join("etc"), "trusted.overlay.opaque", b"y");
    whiteout(&u.join("bin/ls"));
    whiteout(&u.join("old"));
    write(&u.join("new/app/version"), "2");
    set_xattr(&u.join("new/app"), "trusted.overlay.redirect", b"/old/app");
    let opts = format!(
        "lowerdir={}:{},upperdir={}",
        l1.display(),
        l2.display(),
        u.display()
    );
    let dir = t.path.clone();
    Layers { _t: t, opts, dir }
}

fn stratafs(args: &[&str]) -> String {
    let a: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let out = run(&a);
    assert!(
        out.status.success(),
        "stratafs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn explain(l: &Layers, path: &str) -> String {
    stratafs(&["explain", "-o", &l.opts, path])
}

/// Is there a line of `text` that starts (after spaces) with `start` and holds `has`?
fn has_line(text: &str, start: &str, has: &str) -> bool {
    text.lines()
        .any(|l| l.trim_start().starts_with(start) && l.contains(has))
}

/// Is there a line of `text` that starts with `start` (branch lines and all) and
/// holds `has`?
fn tree_line(text: &str, start: &str, has: &str) -> bool {
    text.lines()
        .any(|l| l.starts_with(start) && l.contains(has))
}

/// (path, [(line start, what the line holds)]) for `explain`.
type Story = (&'static str, &'static [(&'static str, &'static str)]);

#[rustfmt::skip]
const STORIES: &[Story] = &[
    ("bin/ls", &[
        ("layers, topmost first:", "upper (u), lower 1 (l1), lower 2 (l2)"),
        ("=> bin:", "merged directory of upper (u) + lower 1 (l1) + lower 2 (l2)"),
        ("upper (u)", "hidden by a whiteout here (char 0/0)"),
        ("lower 1 (l1)", "absent"),
        ("lower 2 (l2)", "found here (file): not shown, hidden by the whiteout (char 0/0) in upper (u)"),
        ("verdict:", "bin/ls is not in the merged view"),
    ]),
    ("README", &[
        ("lower 1 (l1)", "hidden by a whiteout here (.wh. file)"),
        ("lower 2 (l2)", "not shown, hidden by the whiteout (.wh. file) in lower 1 (l1)"),
    ]),
    ("x/gone", &[
        ("lower 1 (l1)", "hidden by a whiteout here (xattr whiteout)"),
        ("verdict:", "x/gone is not in the merged view"),
    ]),
    ("x/kept", &[("verdict:", "x/kept is a file from lower 2 (l2)")]),
    ("etc/passwd", &[
        ("", "opaque directory (trusted.overlay.opaque=y): layers below are hidden"),
        ("lower 1 (l1)", "found here (directory): not shown, hidden by the opaque directory in upper (u)"),
        ("=> etc:", "directory from upper (u)"),
        ("verdict:", "etc/passwd is a file from upper (u)"),
    ]),
    ("new/app/config", &[
        ("", "redirected from /old/app: the layers below are searched at /old/app"),
        ("lower 2 (l2)", "found at /old/app (directory): merged in through the redirect"),
        ("=> new/app:", "merged directory of upper (u) + lower 2 (l2) at /old/app"),
        ("lower 2 (l2)", "in /old/app: found here (file): the name comes from here"),
        ("verdict:", "new/app/config is a file from lower 2 (l2)"),
    ]),
    ("old/app", &[
        ("lower 2 (l2)", "found here (directory): not shown, hidden by the whiteout (char 0/0) in upper (u)"),
    ]),
    ("no/such", &[("=> no:", "not in the merged view (absent from every layer)")]),
    ("/", &[("verdict:", "/ is the root")]),
];

#[test]
fn explain_tells_the_story_of_each_component() {
    let l = layers();
    for (path, lines) in STORIES {
        let s = explain(&l, path);
        for (start, has) in lines.iter() {
            assert!(
                has_line(&s, start, has),
                "{path}: no line {start:?} with {has:?}:\n{s}"
            );
        }
    }
}

#[test]
fn tree_marks_each_entry_with_its_layers() {
    let l = layers();
    let s = stratafs(&["tree", "-o", &l.opts, "--no-color"]);
    assert!(!s.contains('\x1b'), "{s}");
    let first = s.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("layers, topmost first:")
            && first.contains("U upper (u)")
            && first.contains("2 lower 2 (l2)"),
        "{s}"
    );
    for (start, has) in [
        ("/", "[U+1+2] merged"),
        ("├── bin/", "[U+1+2] merged"),
        ("│   ├── bash", "[1]"),
        ("│   ├── rbash -> bash", "[1]"),
        ("│   └── sh", "[2]"),
        ("├── etc/", "[U] opaque in upper"),
        ("│   └── passwd", "[U]"),
        (
            "│   └── app/",
            "[U+2] merged, renamed from /old/app in upper",
        ),
        ("│       ├── config", "[2]"),
        ("├── odd&<name>", "[2]"),
        ("└── x/", "[1+2] merged"),
        ("    └── kept", "[2]"),
    ] {
        assert!(
            tree_line(&s, start, has),
            "no line {start:?} with {has:?}:\n{s}"
        );
    }
    for gone in ["ls", "README", "group", "old/", "gone", "~"] {
        assert!(
            !s.lines()
                .any(|l| l.ends_with(gone) || l.contains(&format!("── {gone}"))),
            "{gone}:\n{s}"
        );
    }

    let s = stratafs(&["tree", "-o", &l.opts, "--no-color", "--hidden"]);
    for (start, has) in [
        (
            "├── ~ README",
            "(in lower 2: hidden by the whiteout (.wh. file) in lower 1 (l1))",
        ),
        (
            "│   ├── ~ ls",
            "(in lower 2: hidden by the whiteout (char 0/0) in upper (u))",
        ),
        (
            "│   ├── ~ group",
            "(in lower 1: hidden by the opaque directory in upper (u))",
        ),
        (
            "│   ├── ~ hosts",
            "(in lower 2: hidden by the opaque directory in upper (u))",
        ),
        (
            "├── ~ old/",
            "hidden by the whiteout (char 0/0) in upper (u)",
        ),
        (
            "    ├── ~ gone",
            "(in lower 2: hidden by the whiteout (xattr whiteout) in lower 1 (l1))",
        ),
    ] {
        assert!(
            tree_line(&s, start, has),
            "no line {start:?} with {has:?}:\n{s}"
        );
    }

    let s = stratafs(&["tree", "-o", &l.opts, "--no-color", "--depth", "1"]);
    assert!(
        tree_line(&s, "├── var/", "[2]") && !s.contains("syslog"),
        "{s}"
    );
    let s = stratafs(&["tree", "-o", &l.opts, "--no-color", "new"]);
    assert!(
        s.lines().nth(1).is_some_and(|l| l.starts_with("new  [U]")),
        "{s}"
    );
    assert!(
        tree_line(&s, "└── app/", "[U+2]") && !s.contains("bin"),
        "{s}"
    );
    let s = stratafs(&["tree", "-o", &l.opts, "--color", "always"]);
    assert!(s.contains("\x1b[1;35mU\x1b[0m"), "{s}");
}

/// A well-formedness check of XML: tags nest and close, attributes are quoted, `&`
/// starts an entity, no raw `<` in text.
fn well_formed(x: &str) -> Result<(), String> {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = x.trim_start();
    rest = rest.strip_prefix("<?xml").ok_or("no XML declaration")?;
    rest = &rest[rest.find("?>").ok_or("declaration not closed")? + 2..];
    while let Some(i) = rest.find(['<', '&']) {
        let (text, tail) = rest.split_at(i);
        if text.contains('>') {
            return Err(format!("a raw > in text: {text:?}"));
        }
        if tail.starts_with('&') {
            let end = tail.find(';').ok_or("entity not closed")?;
            let ent = &tail[1..end];
            if !["amp", "lt", "gt", "quot", "apos"].contains(&ent) {
                return Err(format!("unknown entity {ent}"));
            }
            rest = &tail[end + 1..];
            continue;
        }
        let end = tail.find('>').ok_or("tag not closed")?;
        let tag = &tail[1..end];
        if tag.contains('<') || tag.matches('"').count() % 2 != 0 {
            return Err(format!("bad tag {tag:?}"));
        }
        let name: String = tag
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '/')
            .collect();
        if let Some(closing) = tag.strip_prefix('/') {
            if stack.pop().as_deref() != Some(closing.trim()) {
                return Err(format!("</{closing}> closes nothing open"));
            }
        } else if !tag.ends_with('/') {
            stack.push(name);
        }
        rest = &tail[end + 1..];
    }
    match stack.is_empty() && rest.trim().is_empty() {
        true => Ok(()),
        false => Err(format!("left open: {stack:?}")),
    }
}

fn rsvg_check(svg: &Path) {
    let png = svg.with_extension("png");
    match std::process::Command::new("rsvg-convert")
        .arg(svg)
        .arg("-o")
        .arg(&png)
        .output()
    {
        Ok(o) => {
            assert!(
                o.status.success(),
                "rsvg-convert: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(fs::metadata(&png).is_ok_and(|m| m.len() > 1000), "no PNG");
        }
        Err(_) => eprintln!("note: rsvg-convert not installed, the SVG was not rendered"),
    }
}

#[test]
fn svg_draws_the_layer_stack() {
    let l = layers();
    let svg = l.dir.join("stack.svg");
    let svg_s = svg.display().to_string();
    let s = stratafs(&["tree", "-o", &l.opts, "--no-color", "--svg", &svg_s]);
    assert!(s.starts_with("layers, topmost first:"), "{s}");
    let x = fs::read_to_string(&svg).unwrap();
    well_formed(&x).unwrap_or_else(|e| panic!("{e}:\n{x}"));
    for has in [
        "<svg xmlns=\"http://www.w3.org/2000/svg\"",
        ">merged view</text>",
        ">U upper</text>",
        ">2 lower 2</text>",
        ">bin/ls</text>",
        ">whiteout (0/0)</text>",
        ">whiteout (.wh.)</text>",
        ">whiteout (xattr)</text>",
        ">opaque</text>",
        ">hidden</text>",
        ">from /old/app</text>",
        ">at /old/app</text>",
        ">odd&amp;&lt;name&gt;</text>",
    ] {
        assert!(x.contains(has), "no {has:?} in the SVG:\n{x}");
    }
    rsvg_check(&svg);
}

#[test]
fn svg_draws_at_most_40_entries() {
    assert_root();
    let t = TempDir::new("show-many");
    let l = t.dir("l");
    for i in 0..55 {
        write(&l.join(format!("f{i:02}")), "x");
    }
    let svg = t.join("many.svg");
    let opts = format!("lowerdir={}", l.display());
    stratafs(&["tree", "-o", &opts, "--svg", &svg.display().to_string()]);
    let x = fs::read_to_string(&svg).unwrap();
    well_formed(&x).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        x.contains(">f39</text>") && !x.contains(">f40</text>"),
        "{x}"
    );
    assert!(x.contains("and 15 more entries"), "{x}");
    rsvg_check(&svg);
}
