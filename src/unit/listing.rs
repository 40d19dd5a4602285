//! Merged listings (readdir.rs).

use super::*;
use fuser::FileType;

#[test]
fn a_listing_shows_each_name_once_topmost_first() {
    let t = Tree::new("list");
    t.file("l1/d/a", "");
    t.file("l1/d/b", "");
    t.file("l2/d/b", "");
    t.file("l2/d/c", "");
    let ov = t.overlay(&["l1", "l2"], None);
    assert_eq!(listing(&ov, "d"), ["a", "b", "c"]);
}

#[test]
fn a_listing_starts_with_dot_and_dotdot() {
    let t = Tree::new("dots");
    t.file("l1/a", "");
    let ov = t.overlay(&["l1"], None);
    let root = ov.table.root().unwrap();
    let names: Vec<Vec<u8>> = crate::readdir::list(&ov, &root)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(&names[..2], [b".".to_vec(), b"..".to_vec()]);
}

#[test]
fn aufs_whiteouts_and_markers_are_not_listed_and_hide_what_they_name() {
    let t = Tree::new("list-aufs");
    t.file("l1/d/.wh.gone", "");
    t.file("l1/d/mine", "");
    t.file("l2/d/gone", "");
    t.file("l2/d/kept", "");
    let ov = t.overlay(&["l1", "l2"], None);
    assert_eq!(listing(&ov, "d"), ["kept", "mine"]);
}

#[test]
fn an_opaque_directory_lists_only_its_own_layer() {
    let t = Tree::new("list-opq");
    t.file("l1/d/.wh..wh..opq", "");
    t.file("l1/d/mine", "");
    t.file("l2/d/theirs", "");
    let ov = t.overlay(&["l1", "l2"], None);
    assert_eq!(listing(&ov, "d"), ["mine"]);
}

#[test]
fn xattr_whiteouts_are_not_listed_but_count_for_emptiness() {
    let t = Tree::new("list-xwh");
    t.file("l1/d/a", "");
    t.xattr("l1/d/a", "user.overlay.whiteout", b"");
    t.xattr("l1/d", "user.overlay.opaque", b"x");
    t.file("l2/d/a", "");
    let ov = t.overlay(&["l1", "l2"], None);
    assert!(listing(&ov, "d").is_empty());
    let d = resolve(&ov, "d").unwrap();
    assert!(
        !crate::readdir::is_empty(&ov, &d).unwrap(),
        "as the kernel judges it"
    );
}

#[test]
fn a_directory_whose_lower_names_are_whited_out_is_empty() {
    let t = Tree::new("empty");
    t.file("l1/d/.wh.a", "");
    t.file("l2/d/a", "");
    t.file("l1/e/x", "");
    let ov = t.overlay(&["l1", "l2"], None);
    let d = resolve(&ov, "d").unwrap();
    assert!(crate::readdir::is_empty(&ov, &d).unwrap());
    let e = resolve(&ov, "e").unwrap();
    assert!(!crate::readdir::is_empty(&ov, &e).unwrap());
}

#[test]
fn listed_inode_numbers_and_types_are_those_lookups_give() {
    let t = Tree::new("list-ino");
    t.file("l1/d/f", "");
    t.dir("l2/d/sub");
    std::os::unix::fs::symlink("f", t.path("l2/d/s")).unwrap();
    let ov = t.overlay(&["l1", "l2"], None);
    let d = resolve(&ov, "d").unwrap();
    for e in crate::readdir::list(&ov, &d).unwrap() {
        let name = String::from_utf8(e.name).unwrap();
        if name == "." || name == ".." {
            continue;
        }
        let n = resolve(&ov, &format!("d/{name}")).unwrap();
        assert_eq!(e.ino, n.ino, "{name}");
        assert_eq!(e.kind, n.kind, "{name}");
    }
    assert_eq!(resolve(&ov, "d/sub").unwrap().kind, FileType::Directory);
}

#[test]
fn a_big_merged_directory_lists_every_name() {
    let t = Tree::new("list-big");
    for i in 0..300 {
        t.file(&format!("l{}/d/f{i}", i % 3 + 1), "");
    }
    let ov = t.overlay(&["l1", "l2", "l3"], None);
    assert_eq!(listing(&ov, "d").len(), 300);
}
