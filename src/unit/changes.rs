//! Namespace changes (dir.rs): whiteouts, opaque directories, redirects.

use super::*;
use crate::dir::{self, Caller, New};

fn caller() -> Caller {
    Caller {
        uid: sys::geteuid(),
        gid: sys::getegid(),
        umask: 0o022,
    }
}

fn remove(ov: &Overlay, parent: &str, name: &str, rmdir: bool) -> Result<(), i32> {
    let p = resolve(ov, parent).unwrap();
    dir::remove(ov, &p, &cname(name), rmdir).map_err(errno)
}

#[test]
fn removing_a_lower_name_leaves_a_whiteout() {
    let t = Tree::new("rm");
    t.file("l1/a", "");
    t.file("l1/b", "");
    let ov = t.overlay(&["l1"], Some("up"));
    remove(&ov, "", "a", false).unwrap();
    assert_eq!(resolve(&ov, "a").err(), Some(libc::ENOENT));
    assert_eq!(listing(&ov, ""), ["b"]);
    assert!(t.path("l1/a").exists(), "the lower is untouched");
    // The whiteout is in the format the probe chose for this upper.
    let char_dev = std::fs::symlink_metadata(t.path("up/a")).is_ok();
    let aufs = t.path("up/.wh.a").exists();
    assert!(
        char_dev != aufs,
        "one whiteout: char {char_dev}, aufs {aufs}"
    );
}

#[test]
fn removing_an_upper_only_name_leaves_nothing() {
    let t = Tree::new("rm-upper");
    t.dir("l1");
    t.file("up/new", "");
    let ov = t.overlay(&["l1"], Some("up"));
    remove(&ov, "", "new", false).unwrap();
    assert!(std::fs::read_dir(t.path("up")).unwrap().next().is_none());
}

#[test]
fn rmdir_of_a_directory_that_is_not_empty_is_refused() {
    let t = Tree::new("rmdir");
    t.file("l1/d/f", "");
    let ov = t.overlay(&["l1"], Some("up"));
    assert_eq!(remove(&ov, "", "d", true), Err(libc::ENOTEMPTY));
    remove(&ov, "d", "f", false).unwrap();
    remove(&ov, "", "d", true).unwrap();
    assert_eq!(resolve(&ov, "d").err(), Some(libc::ENOENT));
}

#[test]
fn a_directory_made_where_one_was_removed_is_opaque() {
    let t = Tree::new("opaque");
    t.file("l1/d/old", "");
    let ov = t.overlay(&["l1"], Some("up"));
    remove(&ov, "d", "old", false).unwrap();
    remove(&ov, "", "d", true).unwrap();
    let root = resolve(&ov, "").unwrap();
    dir::create(&ov, &root, &cname("d"), caller(), New::Dir { mode: 0o755 }).unwrap();
    assert!(
        listing(&ov, "d").is_empty(),
        "the old directory shows through"
    );
    assert_eq!(resolve(&ov, "d").unwrap().stack().refs.len(), 1);
}

#[test]
fn a_file_created_in_a_lower_directory_copies_the_directory_up() {
    let t = Tree::new("create");
    t.file("l1/d/f", "");
    let ov = t.overlay(&["l1"], Some("up"));
    let d = resolve(&ov, "d").unwrap();
    let (node, _, fd) =
        dir::create(&ov, &d, &cname("new"), caller(), New::File { mode: 0o644 }).unwrap();
    assert!(fd.is_some(), "a new file comes open");
    assert_eq!(node.stack().top(), 0);
    assert!(t.path("up/d/new").is_file());
    assert_eq!(listing(&ov, "d"), ["f", "new"]);
}

#[test]
fn a_renamed_lower_directory_keeps_its_contents_through_a_redirect() {
    let t = Tree::new("rename-dir");
    t.file("l1/old/f", "moved");
    let ov = t.overlay(&["l1"], Some("up"));
    let root = resolve(&ov, "").unwrap();
    crate::rename::rename(&ov, &root, &cname("old"), &root, &cname("new"), 0).unwrap();
    assert_eq!(resolve(&ov, "old").err(), Some(libc::ENOENT));
    assert_eq!(listing(&ov, "new"), ["f"]);
    assert_eq!(read(&ov, "new/f"), "moved");
    let up = sys::open_path(&cpath(&t.path("up/new")), libc::O_PATH | libc::O_DIRECTORY).unwrap();
    // (An absolute path from the layer root, as the kernel writes it.)
    assert_eq!(
        crate::namei::redirect_of(up.as_fd()).as_deref(),
        Some(&b"/old"[..])
    );
}

#[test]
fn a_renamed_lower_file_is_copied_and_its_old_name_whited_out() {
    let t = Tree::new("rename-file");
    t.file("l1/a", "data");
    let ov = t.overlay(&["l1"], Some("up"));
    let root = resolve(&ov, "").unwrap();
    crate::rename::rename(&ov, &root, &cname("a"), &root, &cname("b"), 0).unwrap();
    assert_eq!(listing(&ov, ""), ["b"]);
    assert_eq!(read(&ov, "b"), "data");
}

#[test]
fn rename_noreplace_refuses_an_existing_target() {
    let t = Tree::new("rename-noreplace");
    t.file("l1/a", "");
    t.file("l1/b", "");
    let ov = t.overlay(&["l1"], Some("up"));
    let root = resolve(&ov, "").unwrap();
    let e = crate::rename::rename(
        &ov,
        &root,
        &cname("a"),
        &root,
        &cname("b"),
        libc::RENAME_NOREPLACE,
    )
    .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
}

#[test]
fn a_symlink_made_through_the_overlay_holds_its_target() {
    let t = Tree::new("symlink-new");
    t.dir("l1");
    let ov = t.overlay(&["l1"], Some("up"));
    let root = resolve(&ov, "").unwrap();
    let target = cname("../x");
    dir::create(
        &ov,
        &root,
        &cname("s"),
        caller(),
        New::Symlink { target: &target },
    )
    .unwrap();
    assert_eq!(
        std::fs::read_link(t.path("up/s")).unwrap(),
        Path::new("../x")
    );
}

#[test]
fn nothing_changes_without_an_upper() {
    let t = Tree::new("ro");
    t.file("l1/a", "");
    let ov = t.overlay(&["l1"], None);
    assert_eq!(remove(&ov, "", "a", false), Err(libc::EROFS));
    let root = resolve(&ov, "").unwrap();
    let e = dir::create(&ov, &root, &cname("n"), caller(), New::File { mode: 0o644 });
    assert_eq!(e.err().map(errno), Some(libc::EROFS));
}
