//! The write path on real mounts: copy-up keeps metadata, deletes leave whiteouts,
//! `rm -rf D; mkdir D` never brings old entries back, directories rename without
//! EXDEV; all of it also after a remount.

mod common;
use common::*;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[test]
fn copy_up_delete_recreate_and_dir_rename_survive_remount() {
    assert_root();
    let t = TempDir::new("write");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    write(&l.join("f"), "lower\n");
    std::os::unix::fs::chown(l.join("f"), Some(1234), Some(4321)).unwrap();
    chmod(&l.join("f"), 0o640);
    set_xattr(&l.join("f"), "user.k", b"v");
    write(&l.join("D/a"), "a");
    write(&l.join("D/sub/b"), "b");
    write(&l.join("R/x"), "x");
    write(&l.join("gone"), "gone");
    let m_dir = t.dir("m");
    let opts = layer_opts(&[&l], Some((&u, &w)));
    let m = Mount::new(&opts, &m_dir);

    // copy-up on write keeps owner, mode, xattrs; the lower is untouched
    let ino = fs::metadata(m.p("f")).unwrap().ino();
    fs::OpenOptions::new().append(true).open(m.p("f")).unwrap();
    use std::io::Write;
    fs::OpenOptions::new()
        .append(true)
        .open(m.p("f"))
        .unwrap()
        .write_all(b"more\n")
        .unwrap();
    let md = fs::metadata(u.join("f")).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (1234, 4321, 0o640)
    );
    assert_eq!(get_xattr(&m.p("f"), "user.k").unwrap(), b"v");
    assert_eq!(fs::read_to_string(m.p("f")).unwrap(), "lower\nmore\n");
    assert_eq!(fs::read_to_string(l.join("f")).unwrap(), "lower\n");
    assert_eq!(
        fs::metadata(m.p("f")).unwrap().ino(),
        ino,
        "copy-up changed the inode number"
    );
    // a read-only open never copies up
    fs::read(m.p("R/x")).unwrap();
    assert!(!u.join("R").exists());

    // delete, rm -rf + mkdir, dir rename
    fs::remove_file(m.p("gone")).unwrap();
    fs::remove_dir_all(m.p("D")).unwrap();
    fs::create_dir(m.p("D")).unwrap();
    fs::write(m.p("D/new"), "new").unwrap();
    fs::rename(m.p("R"), m.p("R2")).unwrap();
    let check = |m: &Mount| {
        assert!(!m.p("gone").exists());
        assert_eq!(names(&m.p("D")), vec!["new"]);
        assert!(!m.p("D/a").exists() && !m.p("D/sub").exists());
        assert!(!m.p("R").exists());
        assert_eq!(fs::read_to_string(m.p("R2/x")).unwrap(), "x");
        assert_eq!(fs::read_to_string(m.p("f")).unwrap(), "lower\nmore\n");
        assert_eq!(fs::metadata(m.p("f")).unwrap().ino(), ino);
    };
    check(&m);
    drop_caches();
    check(&m);
    m.unmount();
    drop(m);
    let m = Mount::new(&opts, &m_dir);
    check(&m);
    // the lower layer never changed
    assert_eq!(names(&l.join("D")), vec!["a", "sub"]);
    assert!(l.join("R/x").exists() && l.join("gone").exists());
    m.unmount();
}

#[test]
fn an_open_file_keeps_working_after_its_last_name_is_gone() {
    use std::os::unix::fs::PermissionsExt;
    assert_root();
    let t = TempDir::new("unlinked");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    write(&l.join("lower"), "lower\n");
    let m = Mount::layers(&[&l], Some((&u, &w)), &t.dir("m"));
    for name in ["new", "lower"] {
        let p = m.p(name);
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .unwrap();
        fs::remove_file(&p).unwrap();
        assert!(!p.exists());
        let md = f.metadata().expect("fstat of an unlinked file");
        assert_eq!(md.nlink(), 0, "{name}");
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .unwrap();
        assert_eq!(f.metadata().unwrap().mode() & 0o777, 0o600);
        std::os::unix::fs::fchown(&f, Some(7), Some(8)).unwrap();
        assert_eq!(f.metadata().unwrap().uid(), 7);
        use std::io::Write;
        (&f).write_all(b"still here").unwrap();
        f.set_len(5).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 5);
    }
    m.unmount();
}

/// A directory renamed, pushed down into the lowers (as after a remount with the old
/// upper as a lower), and renamed again: its lookup follows both redirects to the
/// bottom layer's contents.
#[test]
fn chained_redirects_reach_the_bottom_layer() {
    assert_root();
    let t = TempDir::new("redirects");
    let (l1, l2, u, w) = (t.dir("l1"), t.dir("l2"), t.dir("u"), t.dir("w"));
    write(&l2.join("a/dir/f"), "pop\n");
    fs::create_dir_all(l1.join("a/dirx")).unwrap();
    set_xattr(&l1.join("a/dirx"), "trusted.overlay.redirect", b"/a/dir");
    whiteout(&l1.join("a/dir"));
    fs::create_dir_all(u.join("a/empty/dir")).unwrap();
    set_xattr(
        &u.join("a/empty/dir"),
        "trusted.overlay.redirect",
        b"/a/dirx",
    );
    whiteout(&u.join("a/dirx"));
    // the same, with a relative redirect in the middle layer
    write(&l2.join("b/one/g"), "g\n");
    fs::create_dir_all(l1.join("b/two")).unwrap();
    set_xattr(&l1.join("b/two"), "trusted.overlay.redirect", b"one");
    whiteout(&l1.join("b/one"));
    fs::create_dir_all(u.join("b/three")).unwrap();
    set_xattr(&u.join("b/three"), "trusted.overlay.redirect", b"/b/two");
    whiteout(&u.join("b/two"));
    // a directory moved out of a redirected one (its redirect passes through the
    // moved parent's old name, which the middle layer redirects again)
    write(&l2.join("c/dir/pop/b"), "b\n");
    fs::create_dir_all(l2.join("c/empty")).unwrap();
    fs::create_dir_all(l1.join("c/empty/dir")).unwrap();
    set_xattr(
        &l1.join("c/empty/dir"),
        "trusted.overlay.redirect",
        b"/c/dir",
    );
    whiteout(&l1.join("c/dir"));
    fs::create_dir_all(u.join("c/empty/pop")).unwrap();
    set_xattr(
        &u.join("c/empty/pop"),
        "trusted.overlay.redirect",
        b"/c/empty/dir/pop",
    );
    fs::create_dir_all(u.join("c/empty/dir")).unwrap();
    whiteout(&u.join("c/empty/dir/pop"));
    let check = |m: &Path| {
        assert_eq!(names(&m.join("a")), vec!["empty"]);
        assert_eq!(names(&m.join("a/empty/dir")), vec!["f"]);
        assert_eq!(
            fs::read_to_string(m.join("a/empty/dir/f")).unwrap(),
            "pop\n"
        );
        assert_eq!(names(&m.join("b")), vec!["three"]);
        assert_eq!(fs::read_to_string(m.join("b/three/g")).unwrap(), "g\n");
        assert_eq!(names(&m.join("c/empty")), vec!["dir", "pop"]);
        assert!(names(&m.join("c/empty/dir")).is_empty());
        assert_eq!(fs::read_to_string(m.join("c/empty/pop/b")).unwrap(), "b\n");
    };
    let m = Mount::layers(&[&l1, &l2], Some((&u, &w)), &t.dir("m"));
    check(&m.mnt);
    m.unmount();
    drop(m);
    // the kernel reads the same layers the same way
    let (km, kw) = (t.dir("km"), t.dir("kw"));
    let _k = OtherMount::kernel_overlay(&[&l1, &l2], &u, &kw, ",redirect_dir=on", &km);
    check(&km);
}
