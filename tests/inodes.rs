//! Inode numbers: unique, equal to d_ino, stable for the mount's life (also after the
//! kernel forgets them), one number for hard links, a uniform st_dev.

mod common;
use common::*;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Every path below `root` (not following symlinks) with its lstat.
fn walk(root: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = fs::symlink_metadata(e.path()).unwrap();
            assert_eq!(e.ino(), md.ino(), "d_ino != st_ino for {:?}", e.path());
            if md.is_dir() {
                stack.push(e.path());
            }
            out.push((e.path(), md));
        }
    }
    out
}

#[test]
fn inode_numbers_unique_stable_and_shared_by_hard_links() {
    assert_root();
    let t = TempDir::new("ino");
    let (l1, l2) = (t.dir("l1"), t.dir("l2"));
    // a second filesystem for one layer, so numbers from two devices must not collide
    let shm_layer = PathBuf::from(format!("/dev/shm/stratafs-ino-{}", std::process::id()));
    fs::create_dir_all(&shm_layer).unwrap();
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let _rm = Rm(shm_layer.clone());
    for i in 0..200 {
        write(&l2.join(format!("d{}/f{i}", i % 7)), "x");
        write(&l1.join(format!("d{}/g{i}", i % 5)), "y");
        write(&shm_layer.join(format!("d{}/h{i}", i % 3)), "z");
    }
    write(&l2.join("orig"), "linked");
    fs::hard_link(l2.join("orig"), l2.join("d0/link1")).unwrap();
    fs::hard_link(l2.join("orig"), l2.join("d1/link2")).unwrap();
    let m = Mount::layers(&[&l1, &shm_layer, &l2], None, &t.dir("m"));

    let first = walk(&m.mnt);
    let root_dev = fs::metadata(&m.mnt).unwrap().dev();
    let mut by_ino: HashMap<u64, Vec<PathBuf>> = HashMap::new();
    for (p, md) in &first {
        assert_eq!(md.dev(), root_dev, "st_dev differs for {p:?}");
        by_ino.entry(md.ino()).or_default().push(p.clone());
    }
    for (ino, paths) in &by_ino {
        if paths.len() > 1 {
            let mut names: Vec<_> = paths
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(
                names,
                vec!["link1", "link2", "orig"],
                "inode {ino} shared by {paths:?}"
            );
        }
    }
    let orig = fs::metadata(m.p("orig")).unwrap();
    assert_eq!(orig.nlink(), 3);
    assert_eq!(fs::metadata(m.p("d0/link1")).unwrap().ino(), orig.ino());
    assert_eq!(fs::metadata(m.p("d1/link2")).unwrap().ino(), orig.ino());

    // The kernel forgets its inodes; the numbers stay the same.
    drop_caches();
    let second = walk(&m.mnt);
    let before: HashMap<_, _> = first.iter().map(|(p, md)| (p.clone(), md.ino())).collect();
    assert_eq!(second.len(), first.len());
    for (p, md) in &second {
        assert_eq!(before.get(p), Some(&md.ino()), "inode of {p:?} changed");
    }
    m.unmount();
}

/// A copied-up file or directory keeps its inode number when it moves to another
/// directory: the directory it lands in is marked impure, so that listings there
/// read the origin too (d_ino equal to st_ino), also after a remount.
#[test]
fn moved_copies_keep_their_inode_number_in_listings() {
    assert_root();
    let t = TempDir::new("inomove");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    fs::create_dir_all(l.join("d1/sub")).unwrap();
    write(&l.join("d1/a"), "a");
    write(&l.join("d1/b"), "b");
    write(&l.join("d1/sub/c"), "c");
    let opts = layer_opts(&[&l], Some((&u, &w)));
    let mnt = t.dir("m");
    let mut want = HashMap::new();
    {
        let m = Mount::new(&opts, &mnt);
        append(&m.p("d1/a"), "+");
        for n in ["d1/a", "d1/b", "d1/sub"] {
            want.insert(n, fs::symlink_metadata(m.p(n)).unwrap().ino());
        }
        fs::create_dir(m.p("d2")).unwrap();
        fs::create_dir(m.p("d3")).unwrap();
        fs::rename(m.p("d1/a"), m.p("d2/a")).unwrap(); // a copy
        fs::rename(m.p("d1/b"), m.p("d3/b")).unwrap(); // copied up by the move
        fs::rename(m.p("d1/sub"), m.p("d3/sub")).unwrap(); // a directory, redirected
        walk(&m.p(""));
        m.unmount();
    }
    let m = Mount::new(&opts, &mnt);
    walk(&m.p(""));
    for (from, to) in [("d1/a", "d2/a"), ("d1/b", "d3/b"), ("d1/sub", "d3/sub")] {
        assert_eq!(
            fs::symlink_metadata(m.p(to)).unwrap().ino(),
            want[from],
            "{to}"
        );
    }
}
