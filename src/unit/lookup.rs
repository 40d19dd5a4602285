//! Lookup across the layers (namei.rs).

use super::*;
use fuser::FileType;

#[test]
fn the_topmost_layer_that_has_a_name_gives_it() {
    let t = Tree::new("top");
    t.file("l1/a", "one");
    t.file("l2/a", "two");
    t.file("l2/b", "only below");
    let ov = t.overlay(&["l1", "l2"], None);
    assert_eq!(read(&ov, "a"), "one");
    assert_eq!(layer_of(&ov, "a"), 0);
    assert_eq!(read(&ov, "b"), "only below");
    assert_eq!(layer_of(&ov, "b"), 1);
}

#[test]
fn a_missing_name_is_enoent() {
    let t = Tree::new("missing");
    t.file("l1/a", "");
    let ov = t.overlay(&["l1"], None);
    assert_eq!(resolve(&ov, "b").err(), Some(libc::ENOENT));
}

#[test]
fn a_name_too_long_for_its_aufs_whiteout_is_still_found_below() {
    // ".wh." + 255 bytes cannot exist: looking for it must not fail the lookup.
    let t = Tree::new("long");
    let long = "x".repeat(255);
    t.dir("l1/d");
    t.file(&format!("l2/d/{long}"), "deep");
    let ov = t.overlay(&["l1", "l2"], None);
    assert_eq!(read(&ov, &format!("d/{long}")), "deep");
    assert_eq!(listing(&ov, "d"), [long]);
}

#[test]
fn directories_of_one_name_merge_topmost_first() {
    let t = Tree::new("merge");
    t.file("l1/d/a", "");
    t.file("l2/d/b", "");
    t.file("l3/d/c", "");
    let ov = t.overlay(&["l1", "l2", "l3"], None);
    let d = resolve(&ov, "d").unwrap();
    let layers: Vec<u16> = d.stack().refs.iter().map(|r| r.layer).collect();
    assert_eq!(layers, [0, 1, 2]);
    assert!(resolve(&ov, "d/c").is_ok());
}

#[test]
fn a_file_above_hides_a_directory_below() {
    let t = Tree::new("file-over-dir");
    t.file("l1/x", "file");
    t.file("l2/x/inner", "");
    let ov = t.overlay(&["l1", "l2"], None);
    let x = resolve(&ov, "x").unwrap();
    assert_eq!(x.kind, FileType::RegularFile);
    assert_eq!(x.stack().refs.len(), 1);
}

#[test]
fn a_directory_above_a_file_does_not_merge_it() {
    let t = Tree::new("dir-over-file");
    t.file("l1/x/inner", "");
    t.file("l2/x", "file");
    let ov = t.overlay(&["l1", "l2"], None);
    let x = resolve(&ov, "x").unwrap();
    assert_eq!(x.kind, FileType::Directory);
    assert_eq!(x.stack().refs.len(), 1);
}

#[test]
fn an_aufs_whiteout_hides_the_name_below() {
    let t = Tree::new("aufs-wh");
    t.file("l1/.wh.a", "");
    t.file("l1/.wh.d", "");
    t.file("l2/a", "");
    t.file("l2/d/f", "");
    let ov = t.overlay(&["l1", "l2"], None);
    assert_eq!(resolve(&ov, "a").err(), Some(libc::ENOENT));
    assert_eq!(resolve(&ov, "d").err(), Some(libc::ENOENT));
}

#[test]
fn an_aufs_opaque_marker_stops_the_merge() {
    let t = Tree::new("aufs-opq");
    t.file("l1/d/.wh..wh..opq", "");
    t.file("l1/d/mine", "");
    t.file("l2/d/theirs", "");
    let ov = t.overlay(&["l1", "l2"], None);
    assert_eq!(resolve(&ov, "d").unwrap().stack().refs.len(), 1);
    assert!(resolve(&ov, "d/mine").is_ok());
    assert_eq!(resolve(&ov, "d/theirs").err(), Some(libc::ENOENT));
}

#[test]
fn opaque_xattrs_stop_the_merge() {
    for attr in ["user.overlay.opaque", "user.fuseoverlayfs.opaque"] {
        let t = Tree::new("xattr-opq");
        t.file("l1/d/mine", "");
        t.xattr("l1/d", attr, b"y");
        t.file("l2/d/theirs", "");
        let ov = t.overlay(&["l1", "l2"], None);
        assert_eq!(resolve(&ov, "d").unwrap().stack().refs.len(), 1, "{attr}");
        assert_eq!(resolve(&ov, "d/theirs").err(), Some(libc::ENOENT), "{attr}");
    }
}

#[test]
fn an_xattr_whiteout_counts_only_in_an_opaque_x_directory() {
    let t = Tree::new("xattr-wh");
    t.file("l1/x/a", "");
    t.xattr("l1/x/a", "user.overlay.whiteout", b"");
    t.xattr("l1/x", "user.overlay.opaque", b"x");
    t.file("l1/plain/a", "");
    t.xattr("l1/plain/a", "user.overlay.whiteout", b"");
    t.file("l2/x/a", "below");
    t.file("l2/x/b", "below");
    t.file("l2/plain/a", "below");
    let ov = t.overlay(&["l1", "l2"], None);
    assert_eq!(resolve(&ov, "x/a").err(), Some(libc::ENOENT));
    assert_eq!(read(&ov, "x/b"), "below", "opaque=x still merges");
    assert_eq!(
        read(&ov, "plain/a"),
        "",
        "outside opaque=x it is a plain file"
    );
}

#[test]
fn names_that_a_lookup_refuses() {
    use crate::namei::check_name;
    for bad in [&b"."[..], b"..", b"a/b", b".wh.x", b".wh..wh..opq"] {
        assert!(
            check_name(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert!(check_name(b"a.wh.b").is_ok());
    assert!(check_name(&[b'x'; 256]).is_err());
}

#[test]
fn a_symlink_in_a_layer_is_an_entry_never_followed() {
    let t = Tree::new("symlink");
    t.file("l1/d/f", "");
    std::os::unix::fs::symlink("d", t.path("l1/link")).unwrap();
    std::os::unix::fs::symlink("../../../outside", t.path("l1/up")).unwrap();
    let ov = t.overlay(&["l1"], None);
    assert_eq!(resolve(&ov, "link").unwrap().kind, FileType::Symlink);
    assert_eq!(resolve(&ov, "up").unwrap().kind, FileType::Symlink);
    assert!(resolve(&ov, "link/f").is_err());
}

#[test]
fn inode_numbers_are_the_lower_files_own_and_links_share_one() {
    use std::os::unix::fs::MetadataExt;
    let t = Tree::new("ino");
    let a = t.file("l1/a", "");
    std::fs::hard_link(&a, t.path("l1/b")).unwrap();
    let ov = t.overlay(&["l1"], None);
    let ino = std::fs::metadata(&a).unwrap().ino();
    assert_eq!(resolve(&ov, "a").unwrap().ino, ino);
    assert_eq!(resolve(&ov, "b").unwrap().ino, ino);
}

#[test]
fn a_redirect_leads_a_renamed_directory_to_its_lower_contents() {
    let t = Tree::new("redirect");
    t.file("lower/old/f", "moved");
    t.dir("upper/new");
    t.xattr("upper/new", "user.overlay.redirect", b"old");
    let ov = t.overlay(&["lower"], Some("upper"));
    assert_eq!(read(&ov, "new/f"), "moved");
    let new = resolve(&ov, "new").unwrap();
    assert_eq!(
        new.stack().refs.len(),
        2,
        "the upper dir and the lower one it names"
    );
}

#[test]
fn which_names_the_layer_a_path_comes_from() {
    let t = Tree::new("which");
    t.file("l1/a", "");
    t.file("l2/b", "");
    let ov = t.overlay(&["l1", "l2"], None);
    let line = crate::inspect::which(&ov, Path::new("b"));
    assert!(line.contains("lower 2"), "{line}");
    let gone = crate::inspect::which(&ov, Path::new("c"));
    assert!(gone.contains("not in the merged view"), "{gone}");
}
