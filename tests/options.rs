//! fuse-overlayfs's owner options on real mounts: `uidmapping=`/`gidmapping=` in the
//! form podman writes (leading `:`, several triples), and squashing.

mod common;
use common::*;

use std::fs;
use std::os::unix::fs::MetadataExt;

fn owned(path: &std::path::Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

#[test]
fn uid_and_gid_mappings_shift_owners_both_ways() {
    assert_root();
    let t = TempDir::new("idmap");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    write(&l.join("root"), "r");
    write(&l.join("user"), "u");
    write(&l.join("far"), "f");
    owned(&l.join("user"), 1000, 1000);
    owned(&l.join("far"), 200_000, 200_000);
    // layer ids 0..999 show as 100000..; 1000 shows as 0 (like --userns=keep-id)
    let opts = layer_opts(&[&l], Some((&u, &w)))
        + ",uidmapping=:0:100000:1000:1000:0:1,gidmapping=:0:100000:1000:1000:0:1";
    let m = Mount::new(&opts, &t.dir("m"));
    let ids = |p: &str| {
        let md = fs::symlink_metadata(m.p(p)).unwrap();
        (md.uid(), md.gid())
    };
    assert_eq!(ids("root"), (100000, 100000));
    assert_eq!(ids("user"), (0, 0));
    assert_eq!(ids("far"), (65534, 65534));
    // created by root (shown id 0): stored as layer id 1000
    write(&m.p("new"), "n");
    assert_eq!(ids("new"), (0, 0));
    let md = fs::metadata(u.join("new")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1000, 1000));
    // chown to a shown id: stored shifted back
    owned(&m.p("root"), 100005, 100006);
    assert_eq!(ids("root"), (100005, 100006));
    let md = fs::metadata(u.join("root")).unwrap();
    assert_eq!((md.uid(), md.gid()), (5, 6));
    m.unmount();
}

#[test]
fn squashing_shows_one_owner_and_ignores_owner_changes() {
    assert_root();
    let t = TempDir::new("squash");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    write(&l.join("f"), "f");
    owned(&l.join("f"), 1234, 5678);
    let opts = layer_opts(&[&l], Some((&u, &w))) + ",squash_to_root";
    let m = Mount::new(&opts, &t.dir("m"));
    let md = fs::metadata(m.p("f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (0, 0));
    owned(&m.p("f"), 42, 43);
    let md = fs::metadata(m.p("f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (0, 0));
    m.unmount();
    drop(m);
    let opts = layer_opts(&[&l], Some((&u, &w))) + ",squash_to_uid=7,squash_to_gid=8";
    let m = Mount::new(&opts, &t.dir("m"));
    let md = fs::metadata(m.p("f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (7, 8));
    m.unmount();
}

#[test]
fn static_nlink_and_noxattrs() {
    assert_root();
    let t = TempDir::new("nlink");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    write(&l.join("D/sub1/f"), "f");
    fs::create_dir_all(l.join("D/sub2")).unwrap();
    set_xattr(&l.join("D/sub1/f"), "user.k", b"v");
    let plain = Mount::layers(&[&l], Some((&u, &w)), &t.dir("m"));
    assert_eq!(fs::metadata(plain.p("D")).unwrap().nlink(), 4);
    assert_eq!(get_xattr(&plain.p("D/sub1/f"), "user.k").unwrap(), b"v");
    plain.unmount();
    drop(plain);
    let opts = layer_opts(&[&l], Some((&u, &w))) + ",static_nlink,noxattrs=1";
    let m = Mount::new(&opts, &t.dir("m"));
    assert_eq!(fs::metadata(m.p("D")).unwrap().nlink(), 1);
    assert_eq!(
        get_xattr(&m.p("D/sub1/f"), "user.k").unwrap_err(),
        libc::EOPNOTSUPP
    );
    m.unmount();
}

#[test]
fn xattr_permissions_keep_owner_and_mode_in_an_xattr() {
    use std::os::unix::fs::PermissionsExt;
    assert_root();
    let t = TempDir::new("xperm");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    write(&l.join("f"), "f");
    owned(&l.join("f"), 1234, 5678);
    chmod(&l.join("f"), 0o640);
    let opts = layer_opts(&[&l], Some((&u, &w))) + ",xattr_permissions=2";
    let m = Mount::new(&opts, &t.dir("m"));
    owned(&m.p("f"), 7, 8);
    fs::set_permissions(m.p("f"), fs::Permissions::from_mode(0o600)).unwrap();
    write(&m.p("new"), "n");
    owned(&m.p("new"), 9, 10);
    let view = |m: &std::path::Path| {
        let f = fs::metadata(m.join("f")).unwrap();
        let n = fs::metadata(m.join("new")).unwrap();
        (f.uid(), f.gid(), f.mode() & 0o7777, n.uid(), n.gid())
    };
    assert_eq!(view(&m.mnt), (7, 8, 0o600, 9, 10));
    // the real file kept its owner and mode; the xattr holds what the mount shows
    let real = fs::metadata(u.join("f")).unwrap();
    assert_eq!((real.uid(), real.mode() & 0o7777), (1234, 0o640));
    assert_eq!(
        get_xattr(&u.join("f"), "user.containers.override_stat").unwrap(),
        b"7:8:600"
    );
    assert!(!list_xattr(&m.p("f")).iter().any(|n| n.contains("override")));
    m.unmount();
    drop(m);
    // the upper, used as a lower later, is read the same way
    let ro = layer_opts(&[&u, &l], None);
    let m = Mount::new(&ro, &t.dir("m"));
    assert_eq!(view(&m.mnt), (7, 8, 0o600, 9, 10));
    m.unmount();
}

#[test]
fn ino32_t_keeps_inode_numbers_below_2_pow_32() {
    assert_root();
    let t = TempDir::new("ino32");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    write(&l.join("D/f"), "f");
    // a second filesystem in the stack: its numbers would get high bits otherwise
    let tm = t.dir("tmpfs");
    let _tmpfs = OtherMount::new("tmpfs", "ino32test", "size=1m", &tm);
    write(&tm.join("D/g"), "g");
    let opts = layer_opts(&[&l, &tm], Some((&u, &w))) + ",ino32_t";
    let m = Mount::new(&opts, &t.dir("m"));
    write(&m.p("D/new"), "n");
    let mut seen = std::collections::HashSet::new();
    for p in ["D", "D/f", "D/g", "D/new"] {
        let ino = fs::metadata(m.p(p)).unwrap().ino();
        assert!(ino < 1 << 32, "{p}: {ino:#x}");
        assert!(seen.insert(ino), "{p}: number used twice");
    }
    m.unmount();
}
