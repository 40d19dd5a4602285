//! Copy-up (copy_up.rs).

use super::*;
use std::os::unix::fs::MetadataExt;

fn copy_up(ov: &Overlay, path: &str) -> Arc<Node> {
    let node = resolve(ov, path).unwrap();
    crate::copy_up::copy_up(ov, &node).unwrap();
    node
}

#[test]
fn a_lower_file_is_copied_with_its_contents_and_mode() {
    let t = Tree::new("cu-file");
    let f = t.file("l1/f", "contents");
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let ov = t.overlay(&["l1"], Some("up"));
    let node = copy_up(&ov, "f");
    assert_eq!(node.stack().top(), 0, "the node is the upper copy now");
    assert_eq!(std::fs::read_to_string(t.path("up/f")).unwrap(), "contents");
    assert_eq!(
        std::fs::metadata(t.path("up/f")).unwrap().mode() & 0o7777,
        0o640
    );
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        "contents",
        "the lower is untouched"
    );
}

#[test]
fn parents_are_copied_up_first() {
    let t = Tree::new("cu-parents");
    t.file("l1/a/b/c", "deep");
    t.file("l1/a/other", "");
    let ov = t.overlay(&["l1"], Some("up"));
    copy_up(&ov, "a/b/c");
    assert!(t.path("up/a/b").is_dir());
    assert_eq!(std::fs::read_to_string(t.path("up/a/b/c")).unwrap(), "deep");
    assert!(!t.path("up/a/other").exists(), "only what was touched");
    assert_eq!(resolve(&ov, "a").unwrap().stack().top(), 0);
}

#[test]
fn a_copy_up_leaves_the_work_dir_empty() {
    let t = Tree::new("cu-work");
    t.file("l1/d/f", "x");
    let ov = t.overlay(&["l1"], Some("up"));
    copy_up(&ov, "d/f");
    assert!(std::fs::read_dir(t.path("up.work/work"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn the_copy_records_its_origin_and_marks_its_parent_impure() {
    let t = Tree::new("cu-origin");
    let f = t.file("l1/d/f", "x");
    let ino = std::fs::metadata(&f).unwrap().ino();
    let ov = t.overlay(&["l1"], Some("up"));
    let node = copy_up(&ov, "d/f");
    assert_eq!(node.ino, ino, "the node keeps its number");
    let d = sys::open_path(&cpath(&t.path("up/d")), libc::O_PATH | libc::O_DIRECTORY).unwrap();
    assert_eq!(crate::namei::read_origin(d.as_fd(), c"f"), Some(ino));
    let names = sys::listxattr(At {
        dir: d.as_fd(),
        name: c"",
    })
    .unwrap();
    assert!(names.iter().any(|n| crate::ondisk::Ovl::Impure.is(n)));
}

#[test]
fn user_xattrs_and_times_are_copied() {
    let t = Tree::new("cu-meta");
    let f = t.file("l1/f", "x");
    t.xattr("l1/f", "user.note", b"kept");
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let ov = t.overlay(&["l1"], Some("up"));
    copy_up(&ov, "f");
    let up = t.path("up/f");
    assert_eq!(std::fs::metadata(&up).unwrap().modified().unwrap(), old);
    let dir = sys::open_path(&cpath(&t.path("up")), libc::O_PATH | libc::O_DIRECTORY).unwrap();
    let v = sys::getxattr(
        At {
            dir: dir.as_fd(),
            name: c"f",
        },
        c"user.note",
    )
    .unwrap();
    assert_eq!(v, b"kept");
}

#[test]
fn a_symlink_is_copied_as_a_symlink() {
    let t = Tree::new("cu-link");
    t.dir("l1");
    std::os::unix::fs::symlink("../somewhere", t.path("l1/s")).unwrap();
    let ov = t.overlay(&["l1"], Some("up"));
    copy_up(&ov, "s");
    assert_eq!(
        std::fs::read_link(t.path("up/s")).unwrap(),
        Path::new("../somewhere")
    );
}

#[test]
fn a_second_copy_up_changes_nothing() {
    let t = Tree::new("cu-twice");
    t.file("l1/f", "x");
    let ov = t.overlay(&["l1"], Some("up"));
    let node = copy_up(&ov, "f");
    std::fs::write(t.path("up/f"), "changed in the upper").unwrap();
    crate::copy_up::copy_up(&ov, &node).unwrap();
    assert_eq!(read(&ov, "f"), "changed in the upper");
}

#[test]
fn without_an_upper_a_copy_up_is_erofs() {
    let t = Tree::new("cu-ro");
    t.file("l1/f", "x");
    let ov = t.overlay(&["l1"], None);
    let node = resolve(&ov, "f").unwrap();
    let e = crate::copy_up::copy_up(&ov, &node).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
}

#[test]
fn the_other_names_of_a_lower_hard_link_follow_it_up() {
    let t = Tree::new("cu-hardlink");
    let a = t.file("l1/a", "shared");
    t.dir("l1/d");
    std::fs::hard_link(&a, t.path("l1/d/b")).unwrap();
    let ov = t.overlay(&["l1"], Some("up"));
    copy_up(&ov, "a");
    let ino_a = std::fs::metadata(t.path("up/a")).unwrap().ino();
    let ino_b = std::fs::metadata(t.path("up/d/b")).unwrap().ino();
    assert_eq!(ino_a, ino_b, "one upper inode for both names");
    let b = resolve(&ov, "d/b").unwrap();
    assert_eq!(b.stack().top(), 0);
    // The link carries the origin, so its directory is impure: a listing there gives
    // the number a lookup gives (the lower one), after a remount too.
    drop(ov);
    let ov = t.overlay(&["l1"], Some("up"));
    let d = resolve(&ov, "d").unwrap();
    let listed = crate::readdir::list(&ov, &d).unwrap();
    let e = listed.iter().find(|e| e.name == b"b").unwrap();
    assert_eq!(e.ino, resolve(&ov, "d/b").unwrap().ino);
    assert_eq!(
        e.ino,
        std::fs::metadata(&a).unwrap().ino(),
        "the lower's number"
    );
}

#[test]
fn a_merged_directory_is_copied_up_empty_and_stays_merged() {
    let t = Tree::new("cu-dir");
    t.file("l1/d/a", "");
    t.file("l2/d/b", "");
    let ov = t.overlay(&["l1", "l2"], Some("up"));
    let d = copy_up(&ov, "d");
    assert!(t.path("up/d").is_dir());
    assert!(std::fs::read_dir(t.path("up/d")).unwrap().next().is_none());
    let layers: Vec<u16> = d.stack().refs.iter().map(|r| r.layer).collect();
    assert_eq!(layers, [0, 1, 2]);
    assert_eq!(listing(&ov, "d"), ["a", "b"]);
}
