//! `stratafs check`: each kind of defect planted in an upper is found, with its fix;
//! `--repair` fixes them all (and the kernel then reads the upper as intended); an
//! upper that stratafs wrote is clean; a mounted upper is not checked.

mod common;
use common::*;

use std::fs;
use std::path::Path;

fn check(upper: &Path, work: &Path, lower: &Path, repair: bool) -> (bool, String) {
    run_check(upper, work, lower, repair)
}

#[test]
fn each_planted_defect_is_found_and_repaired() {
    assert_root();
    let t = TempDir::new("check");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    write(&l.join("gone"), "hidden by an AUFS whiteout in the upper");
    write(&l.join("opq/lower-only"), "hidden by an opaque marker");
    write(&l.join("real/x"), "a lower directory");
    // the defects
    write(&w.join("work/#leftover"), "half a copy-up");
    write(&u.join(".wh.gone"), "");
    write(&u.join("opq/.wh..wh..opq"), "");
    write(&u.join("opq/own"), "own");
    write(&u.join("file-opaque"), "x");
    set_xattr(&u.join("file-opaque"), "trusted.overlay.opaque", b"y");
    write(&u.join("file-redirect"), "x");
    set_xattr(
        &u.join("file-redirect"),
        "trusted.overlay.redirect",
        b"/real",
    );
    fs::create_dir_all(u.join("escape")).unwrap();
    set_xattr(&u.join("escape"), "trusted.overlay.redirect", b"/../../etc");
    fs::create_dir_all(u.join("nowhere")).unwrap();
    set_xattr(
        &u.join("nowhere"),
        "trusted.overlay.redirect",
        b"/no/such/dir",
    );
    fs::create_dir_all(u.join("moved")).unwrap();
    set_xattr(&u.join("moved"), "trusted.overlay.redirect", b"/real");
    write(&u.join("bad-origin"), "x");
    set_xattr(
        &u.join("bad-origin"),
        "trusted.overlay.stratafs.origin",
        b"123",
    );
    write(&u.join("sub/copied"), "x");
    set_xattr(
        &u.join("sub/copied"),
        "trusted.overlay.stratafs.origin",
        &7u64.to_le_bytes(),
    );

    let (ok, out) = check(&u, &w, &l, false);
    assert!(!ok, "defects but a clean exit:\n{out}");
    for (path, what) in [
        ("work/#leftover", "leftover"),
        (".wh.gone", "AUFS whiteout"),
        ("opq/.wh..wh..opq", "AUFS opaque marker"),
        ("file-opaque", "on a non-directory"),
        ("file-redirect", "redirect on a non-directory"),
        ("escape", "leaves the layers"),
        ("nowhere", "no lower holds"),
        ("bad-origin", "wrong size"),
        ("sub", "not marked impure"),
    ] {
        assert!(
            out.lines()
                .any(|line| line.starts_with(&format!("{path}:")) && line.contains(what)),
            "{path} ({what}) not reported:\n{out}"
        );
    }
    assert!(
        !out.contains("moved:"),
        "a redirect that leads somewhere was reported:\n{out}"
    );
    assert!(out.contains("9 problems found"), "{out}");
    // Nothing changed without --repair.
    assert!(w.join("work/#leftover").exists() && u.join(".wh.gone").exists());

    let (ok, out) = check(&u, &w, &l, true);
    assert!(ok, "--repair left problems:\n{out}");
    assert!(out.contains("all repaired"), "{out}");
    let (ok, out) = check(&u, &w, &l, false);
    assert!(
        ok && out.contains("clean"),
        "not clean after the repair:\n{out}"
    );
    assert_eq!(
        get_xattr(&u.join("moved"), "trusted.overlay.redirect").unwrap(),
        b"/real"
    );
    assert_eq!(
        fs::read_to_string(l.join("gone")).unwrap(),
        "hidden by an AUFS whiteout in the upper"
    );

    // The kernel now reads the upper as stratafs did before: `gone` hidden, `opq` opaque.
    let (kw, km) = (t.dir("kw"), t.dir("km"));
    let k = OtherMount::kernel_overlay(&[&l], &u, &kw, ",redirect_dir=on", &km);
    assert!(
        !km.join("gone").exists(),
        "the repaired whiteout does not hide for the kernel"
    );
    assert_eq!(names(&km.join("opq")), vec!["own"]);
    drop(k);
}

#[test]
fn an_upper_stratafs_wrote_is_clean_and_a_mounted_one_is_not_checked() {
    assert_root();
    let t = TempDir::new("check-clean");
    let (l, u, w, m) = (t.dir("l"), t.dir("u"), t.dir("w"), t.dir("m"));
    write(&l.join("a/f"), "f");
    write(&l.join("a/g"), "g");
    write(&l.join("b/h"), "h");
    let mount = Mount::layers(&[&l], Some((&u, &w)), &m);
    append(&m.join("a/f"), "+"); // a copy-up: origin and impure
    fs::remove_file(m.join("a/g")).unwrap(); // a whiteout
    fs::rename(m.join("b"), m.join("c")).unwrap(); // a redirect
    fs::remove_dir_all(m.join("a")).unwrap();
    fs::create_dir(m.join("a")).unwrap(); // an opaque directory
    write(&m.join("a/new"), "new");
    let (ok, out) = check(&u, &w, &l, false);
    assert!(
        !ok && out.contains("in use by a mount"),
        "a mounted upper was checked:\n{out}"
    );
    mount.unmount();
    drop(mount);
    let (ok, out) = check(&u, &w, &l, false);
    assert!(
        ok && out.contains("clean"),
        "an upper stratafs wrote is not clean:\n{out}"
    );
}

#[test]
fn hard_link_groups_split_are_found_and_left_to_do_by_hand() {
    assert_root();
    let t = TempDir::new("check-links");
    let (l, u, w, m) = (t.dir("l"), t.dir("u"), t.dir("w"), t.dir("m"));
    write(&l.join("a"), "shared\n");
    fs::create_dir_all(l.join("d")).unwrap();
    fs::hard_link(l.join("a"), l.join("d/b")).unwrap();
    let mount = Mount::layers(&[&l], Some((&u, &w)), &m);
    append(&m.join("a"), "+"); // the copy-up links d/b to the copy too
    mount.unmount();
    drop(mount);
    let (ok, out) = check(&u, &w, &l, false);
    assert!(ok, "an upper with a linked-up group is not clean:\n{out}");

    // d/b made a separate copy (with the same origin): a split in the upper.
    let b = u.join("d/b");
    let origin = list_xattr(&u.join("a"))
        .into_iter()
        .find(|n| n.ends_with("overlay.stratafs.origin"))
        .expect("the copy records its origin");
    let value = get_xattr(&u.join("a"), &origin).unwrap();
    fs::remove_file(&b).unwrap();
    write(&b, "shared\n+");
    set_xattr(&b, &origin, &value);
    let (ok, out) = check(&u, &w, &l, false);
    assert!(
        !ok && out.contains("d/b: a copy of lower inode") && out.contains("separate file"),
        "the split copy is not found:\n{out}"
    );

    // d/b not in the upper at all: the merged view shows the lower one beside `a`.
    fs::remove_file(&b).unwrap();
    let (ok, out) = check(&u, &w, &l, true);
    assert!(
        !ok && out.contains("d/b: another name of lower inode") && out.contains("by hand"),
        "the name left in the lower is not found:\n{out}"
    );
    assert!(!b.exists(), "--repair made a choice it leaves to the owner");
}

#[test]
fn kernel_index_entries_that_no_name_links_to_or_that_name_no_lower_are_found() {
    assert_root();
    let t = TempDir::new("check-index");
    let (l, u, w, m) = (t.dir("l"), t.dir("u"), t.dir("w"), t.dir("m"));
    for (x, y) in [("a", "b"), ("c", "d")] {
        write(&l.join(x), "shared\n");
        fs::hard_link(l.join(x), l.join(y)).unwrap();
    }
    // The kernel with index=on copies a lower hard link up through its index.
    let k = OtherMount::kernel_overlay(&[&l], &u, &w, ",redirect_dir=on,index=on", &m);
    append(&m.join("a"), "+");
    append(&m.join("c"), "+");
    drop(k);
    let entries = || fs::read_dir(w.join("index")).unwrap().count();
    assert_eq!(entries(), 2, "the kernel made no index entries");
    let (ok, out) = check(&u, &w, &l, false);
    assert!(
        ok,
        "a kernel upper with live index entries is not clean:\n{out}"
    );

    // a: its upper name removed, the entry is left alone in the index.
    fs::remove_file(u.join("a")).unwrap();
    // c: the lower object it was copied from is gone.
    fs::remove_file(l.join("c")).unwrap();
    fs::remove_file(l.join("d")).unwrap();
    drop_caches();
    let (ok, out) = check(&u, &w, &l, false);
    assert!(
        !ok && out.contains("no upper name links to") && out.contains("names no object"),
        "the orphan and the stale index entries are not both found:\n{out}"
    );
    let (ok, out) = check(&u, &w, &l, true);
    assert!(ok, "--repair did not remove them:\n{out}");
    assert_eq!(entries(), 0);
}
