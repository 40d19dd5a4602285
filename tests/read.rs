//! Read semantics, as kernel overlayfs: lookup, merge, every whiteout and opaque
//! format, readdir (also large and with seekdir), attributes, xattrs, statfs.

mod common;
use common::*;

use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Three lowers and an upper exercising every format.
fn fixture(
    t: &TempDir,
) -> (
    Vec<std::path::PathBuf>,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let (l1, l2, l3) = (t.dir("l1"), t.dir("l2"), t.dir("l3"));
    let (u, w) = (t.dir("u"), t.dir("w"));
    // bottom layer
    write(&l3.join("base.txt"), "base\n");
    write(&l3.join("replaced"), "bottom\n");
    write(&l3.join("d/keep"), "keep\n");
    write(&l3.join("d/gone-chr"), "x");
    write(&l3.join("d/gone-wh"), "x");
    write(&l3.join("d/gone-xattr"), "x");
    write(&l3.join("d/gone-upper"), "x");
    write(&l3.join("opq-trusted/h"), "hidden");
    write(&l3.join("opq-user/h"), "hidden");
    write(&l3.join("opq-fo/h"), "hidden");
    write(&l3.join("opq-aufs/h"), "hidden");
    write(&l3.join("dir-to-file/x"), "x");
    write(&l3.join("file-to-dir"), "f");
    write(&l3.join("gone-dir/x"), "x");
    std::os::unix::fs::symlink("/nonexistent/absolute/target", l3.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../relative target", l3.join("rel-link")).unwrap();
    // middle layer: AUFS / OCI style
    write(&l2.join("d/.wh.gone-wh"), "");
    write(&l2.join("d/mid"), "mid\n");
    write(&l2.join(".wh.gone-dir"), "");
    write(&l2.join("opq-aufs/.wh..wh..opq"), "");
    write(&l2.join("opq-aufs/v"), "visible");
    write(&l2.join("replaced"), "middle\n");
    // top lower: kernel style
    write(&l1.join("d/top"), "top\n");
    whiteout(&l1.join("d/gone-chr"));
    fs::create_dir_all(l1.join("opq-trusted")).unwrap();
    set_xattr(&l1.join("opq-trusted"), "trusted.overlay.opaque", b"y");
    write(&l1.join("opq-trusted/v"), "visible");
    fs::create_dir_all(l1.join("opq-user")).unwrap();
    set_xattr(&l1.join("opq-user"), "user.overlay.opaque", b"y");
    fs::create_dir_all(l1.join("opq-fo")).unwrap();
    set_xattr(&l1.join("opq-fo"), "user.fuseoverlayfs.opaque", b"y");
    write(&l1.join("dir-to-file"), "now a file");
    write(&l1.join("file-to-dir/inner"), "inner");
    // xattr whiteout inside an opaque=x directory
    fs::create_dir_all(l1.join("d")).unwrap();
    set_xattr(&l1.join("d"), "trusted.overlay.opaque", b"x");
    write(&l1.join("d/gone-xattr"), "");
    set_xattr(&l1.join("d/gone-xattr"), "trusted.overlay.whiteout", b"");
    // upper
    write(&u.join("upper.txt"), "upper\n");
    write(&u.join("replaced"), "upper\n");
    whiteout(&u.join("d/gone-upper"));
    set_xattr(&u.join("upper.txt"), "user.note", b"hello");
    set_xattr(&u.join("upper.txt"), "security.stratafs-test", b"sec");
    set_xattr(&u.join("upper.txt"), "trusted.overlay.origin", b"private");
    set_xattr(&u.join("upper.txt"), "user.overlay.private", b"private");
    set_xattr(
        &u.join("upper.txt"),
        "user.fuseoverlayfs.origin",
        b"private",
    );
    (vec![l1, l2, l3], u, w)
}

/// The fixture's layers, mounted with its upper; and the upper's path.
fn mount_fixture(t: &TempDir) -> (Mount, PathBuf) {
    let (lowers, u, w) = fixture(t);
    let lrefs: Vec<&Path> = lowers.iter().map(|p| p.as_path()).collect();
    (Mount::layers(&lrefs, Some((&u, &w)), &t.dir("m")), u)
}

#[test]
fn merge_whiteouts_and_opaque_in_every_format() {
    assert_root();
    let t = TempDir::new("read");
    let (m, u) = mount_fixture(&t);

    assert_eq!(
        names(&m.p("")),
        vec![
            "abs-link",
            "base.txt",
            "d",
            "dir-to-file",
            "file-to-dir",
            "opq-aufs",
            "opq-fo",
            "opq-trusted",
            "opq-user",
            "rel-link",
            "replaced",
            "upper.txt"
        ]
    );
    assert_eq!(names(&m.p("d")), vec!["keep", "mid", "top"]);
    for opq in ["opq-trusted", "opq-user", "opq-fo", "opq-aufs"] {
        assert!(!m.p(&format!("{opq}/h")).exists(), "{opq}/h must be hidden");
        assert!(
            !names(&m.p(opq)).contains(&"h".to_string()),
            "{opq} readdir shows h"
        );
    }
    assert_eq!(names(&m.p("opq-aufs")), vec!["v"]);
    assert_eq!(names(&m.p("opq-trusted")), vec!["v"]);
    // lookups agree with readdir, for every kind of whiteout
    for gone in [
        "d/gone-chr",
        "d/gone-wh",
        "d/gone-xattr",
        "d/gone-upper",
        "gone-dir",
        "d/.wh.gone-wh",
        "opq-aufs/.wh..wh..opq",
    ] {
        assert_gone(&m, gone, "");
    }
    // topmost wins; a non-dir hides a lower dir and the other way round
    assert_eq!(fs::read_to_string(m.p("replaced")).unwrap(), "upper\n");
    assert_eq!(
        fs::read_to_string(m.p("dir-to-file")).unwrap(),
        "now a file"
    );
    assert_eq!(names(&m.p("file-to-dir")), vec!["inner"]);
    assert_eq!(fs::read_to_string(m.p("d/keep")).unwrap(), "keep\n");
    // readlink returns targets verbatim, never resolved
    assert_eq!(
        fs::read_link(m.p("abs-link")).unwrap().as_os_str(),
        "/nonexistent/absolute/target"
    );
    assert_eq!(
        fs::read_link(m.p("rel-link")).unwrap().as_os_str(),
        "../relative target"
    );
    // xattrs: user.* through, private names hidden
    assert_eq!(get_xattr(&m.p("upper.txt"), "user.note").unwrap(), b"hello");
    assert_eq!(
        get_xattr(&m.p("upper.txt"), "security.stratafs-test").unwrap(),
        b"sec"
    );
    let mut listed = list_xattr(&m.p("upper.txt"));
    listed.sort();
    assert_eq!(listed, vec!["security.stratafs-test", "user.note"]);
    for private in [
        "trusted.overlay.origin",
        "user.overlay.private",
        "user.fuseoverlayfs.origin",
    ] {
        assert_eq!(
            get_xattr(&m.p("upper.txt"), private),
            Err(libc::ENODATA),
            "{private}"
        );
    }
    assert!(list_xattr(&m.p("opq-trusted")).is_empty());
    assert!(list_xattr(&m.p("d")).is_empty());
    // d_type from readdir matches the type lookup reports
    for e in fs::read_dir(m.p("")).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        let md = fs::symlink_metadata(e.path()).unwrap();
        assert_eq!(ft.is_dir(), md.is_dir(), "{:?}", e.path());
        assert_eq!(
            ft.is_symlink(),
            md.file_type().is_symlink(),
            "{:?}",
            e.path()
        );
        assert_eq!(ft.is_file(), md.is_file(), "{:?}", e.path());
    }
    // merged directories report nlink 1 like the kernel; others their real count
    assert_eq!(fs::metadata(m.p("d")).unwrap().nlink(), 1);
    // statfs is the upper's filesystem
    let (a, b) = (statvfs(&m.p("")), statvfs(&u));
    assert_eq!(a.f_blocks, b.f_blocks);
    assert_eq!(a.f_bsize, b.f_bsize);
    // a mount with an upper takes changes into the upper only
    fs::write(m.p("new"), "x").unwrap();
    assert_eq!(fs::read_to_string(u.join("new")).unwrap(), "x");
    m.unmount();
}

/// Listings teach the daemon which layer directories hold no `.wh.` names, and it
/// keeps that past the kernel forgetting the directories; AUFS whiteouts in the
/// directories that do hold them must still hide their names then.
#[test]
fn aufs_whiteouts_hide_after_the_kernel_forgets_the_listed_directories() {
    assert_root();
    let t = TempDir::new("read-forget");
    let (m, _) = mount_fixture(&t);
    for round in 0..2 {
        for dir in ["", "d", "opq-aufs", "file-to-dir"] {
            names(&m.p(dir));
        }
        drop_caches();
        for gone in [
            "d/gone-wh",
            "gone-dir",
            "d/gone-chr",
            "opq-aufs/h",
            "d/nothing",
        ] {
            assert_gone(&m, gone, &format!(", round {round}"));
        }
        assert_eq!(fs::read_to_string(m.p("d/keep")).unwrap(), "keep\n");
        assert_eq!(
            fs::read_to_string(m.p("file-to-dir/inner")).unwrap(),
            "inner"
        );
        assert_eq!(names(&m.p("d")), vec!["keep", "mid", "top"]);
        drop_caches();
    }
    m.unmount();
}

/// `name` is not found through the mount (ENOENT); `ctx` follows it in the message.
fn assert_gone(m: &Mount, name: &str, ctx: &str) {
    assert_eq!(
        errno_of(fs::symlink_metadata(m.p(name))),
        libc::ENOENT,
        "{name}{ctx}"
    );
}

fn statvfs(p: &Path) -> libc::statvfs {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    s
}

#[test]
fn special_files_and_attributes_pass_through() {
    assert_root();
    let t = TempDir::new("special");
    let l = t.dir("l");
    mknod(&l.join("fifo"), libc::S_IFIFO | 0o640, 0);
    mknod(&l.join("chr"), libc::S_IFCHR | 0o600, libc::makedev(1, 3));
    mknod(&l.join("blk"), libc::S_IFBLK | 0o600, libc::makedev(7, 0));
    write(&l.join("owned"), "x");
    std::os::unix::fs::chown(l.join("owned"), Some(1234), Some(5678)).unwrap();
    chmod(&l.join("owned"), 0o4751);
    let m = Mount::layers(&[&l], None, &t.dir("m"));
    let md = |n: &str| fs::symlink_metadata(m.p(n)).unwrap();
    assert!(md("fifo").file_type().is_fifo());
    assert_eq!(md("fifo").mode() & 0o7777, 0o640);
    assert!(md("chr").file_type().is_char_device());
    assert_eq!(md("chr").rdev(), libc::makedev(1, 3));
    assert!(md("blk").file_type().is_block_device());
    let o = md("owned");
    let real = fs::symlink_metadata(l.join("owned")).unwrap();
    assert_eq!(
        (o.uid(), o.gid(), o.mode(), o.size()),
        (1234, 5678, real.mode(), 1)
    );
    assert_eq!(
        (o.mtime(), o.mtime_nsec()),
        (real.mtime(), real.mtime_nsec())
    );
    m.unmount();
}

#[test]
fn large_directory_over_three_layers_with_seekdir() {
    assert_root();
    let t = TempDir::new("big");
    let layers = [t.dir("l1"), t.dir("l2"), t.dir("l3")];
    let n = 50_000;
    // names spread over the layers, with overlaps (topmost wins) and whiteouts below
    for i in 0..n {
        let layer = i % 3;
        write(&layers[layer].join(format!("big/f{i:05}")), "");
        if i % 10 == 0 && layer == 0 {
            write(&layers[2].join(format!("big/f{i:05}")), "shadowed");
        }
    }
    for i in 0..100 {
        write(&layers[2].join(format!("big/wh{i}")), "");
        whiteout(&layers[1].join(format!("big/wh{i}")));
        fs::create_dir_all(layers[2].join(format!("big/sub{i}"))).unwrap();
    }
    let lrefs: Vec<&Path> = layers.iter().map(|p| p.as_path()).collect();
    let m = Mount::layers(&lrefs, None, &t.dir("m"));
    let big = m.p("big");

    let listed = readdir_raw(&big);
    let names: Vec<&str> = listed.iter().map(|e| e.0.as_str()).collect();
    let unique: HashSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len(), "a name listed twice");
    assert_eq!(names.len(), n + 100 + 2, "entries: {}", names.len());
    assert!(unique.contains(".") && unique.contains(".."));
    assert!(!unique.iter().any(|s| s.starts_with("wh")));
    for (name, ino, dtype) in &listed {
        let expect = if name.starts_with("sub") || name == "." || name == ".." {
            libc::DT_DIR
        } else {
            libc::DT_REG
        };
        assert_eq!(*dtype, expect, "{name}");
        if name != "." && name != ".." {
            assert_eq!(
                fs::symlink_metadata(big.join(name)).unwrap().ino(),
                *ino,
                "d_ino != st_ino for {name}"
            );
        }
    }
    assert_eq!(fs::read_to_string(big.join("f00000")).unwrap(), "");

    // telldir/seekdir: a position remembered mid-listing gives the same tail again
    let tail_a = seek_and_read_tail(&big, 20_000);
    assert_eq!(tail_a.len(), names.len() - 20_000);
    assert_eq!(
        tail_a,
        names[20_000..]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    );
    m.unmount();
}

/// (name, d_ino, d_type) of every entry, through libc readdir.
fn readdir_raw(dir: &Path) -> Vec<(String, u64, u8)> {
    let c = CString::new(dir.as_os_str().as_bytes()).unwrap();
    let mut out = Vec::new();
    unsafe {
        let d = libc::opendir(c.as_ptr());
        assert!(!d.is_null());
        loop {
            let e = libc::readdir64(d);
            if e.is_null() {
                break;
            }
            let name = std::ffi::CStr::from_ptr((*e).d_name.as_ptr())
                .to_string_lossy()
                .into_owned();
            out.push((name, (*e).d_ino, (*e).d_type));
        }
        libc::closedir(d);
    }
    out
}

/// Reads `skip` entries, remembers telldir, reads on, seeks back, reads the rest.
fn seek_and_read_tail(dir: &Path, skip: usize) -> Vec<String> {
    let c = CString::new(dir.as_os_str().as_bytes()).unwrap();
    let mut out = Vec::new();
    unsafe {
        let d = libc::opendir(c.as_ptr());
        assert!(!d.is_null());
        for _ in 0..skip {
            assert!(!libc::readdir64(d).is_null());
        }
        let pos = libc::telldir(d);
        for _ in 0..1000 {
            libc::readdir64(d);
        }
        libc::seekdir(d, pos);
        loop {
            let e = libc::readdir64(d);
            if e.is_null() {
                break;
            }
            out.push(
                std::ffi::CStr::from_ptr((*e).d_name.as_ptr())
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        // rewinddir starts over with a full listing
        libc::rewinddir(d);
        let mut n = 0;
        while !libc::readdir64(d).is_null() {
            n += 1;
        }
        assert_eq!(n, skip + out.len());
        libc::closedir(d);
    }
    out
}

#[test]
fn read_only_without_upper_and_one_lower() {
    assert_root();
    let t = TempDir::new("ro");
    let l = t.dir("l");
    write(&l.join("f"), "data");
    let m = Mount::layers(&[&l], None, &t.dir("m"));
    assert_eq!(fs::read_to_string(m.p("f")).unwrap(), "data");
    assert_eq!(errno_of(fs::write(m.p("f"), "x")), libc::EROFS);
    assert_eq!(errno_of(fs::write(m.p("g"), "x")), libc::EROFS);
    assert_eq!(errno_of(fs::create_dir(m.p("d"))), libc::EROFS);
    assert_eq!(errno_of(fs::remove_file(m.p("f"))), libc::EROFS);
    assert_eq!(fs::read_to_string(l.join("f")).unwrap(), "data");
    m.unmount();
}

/// A lower file opened for reading is opened for real at its first read: it still
/// reads, and stats, after its name is gone, and two handles read side by side.
#[test]
fn a_lower_file_open_for_reading_outlives_its_name() {
    use std::io::{Read, Seek, SeekFrom};
    assert_root();
    let t = TempDir::new("lazyopen");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    write(&l.join("f"), "lower data\n");
    let m = Mount::layers(&[&l], Some((&u, &w)), &t.dir("m"));
    let mut a = fs::File::open(m.p("f")).unwrap();
    let mut b = fs::File::open(m.p("f")).unwrap();
    fs::remove_file(m.p("f")).unwrap();
    assert!(!m.p("f").exists());
    assert_eq!(a.metadata().expect("fstat after unlink").len(), 11);
    let mut s = String::new();
    a.read_to_string(&mut s).unwrap();
    assert_eq!(s, "lower data\n");
    b.seek(SeekFrom::Start(6)).unwrap();
    let mut s = String::new();
    b.read_to_string(&mut s).unwrap();
    assert_eq!(s, "data\n");
    drop((a, b));
    assert_eq!(fs::read_to_string(l.join("f")).unwrap(), "lower data\n");
    m.unmount();
}
