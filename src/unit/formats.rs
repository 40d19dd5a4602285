//! The on-disk formats (whiteout.rs, ondisk.rs).

use super::*;
use crate::whiteout::{self, Opacity};

fn stat_of(mode: u32, rdev: u64) -> sys::Stat {
    let mut st = sys::zeroed_stat();
    st.st_mode = mode;
    st.st_rdev = rdev;
    st
}

#[test]
fn a_char_device_0_0_is_a_whiteout_and_nothing_else_is() {
    assert!(whiteout::is_whiteout_dev(&stat_of(libc::S_IFCHR, 0)));
    assert!(!whiteout::is_whiteout_dev(&stat_of(libc::S_IFCHR, 0x103)));
    assert!(!whiteout::is_whiteout_dev(&stat_of(libc::S_IFREG, 0)));
    assert!(!whiteout::is_whiteout_dev(&stat_of(libc::S_IFBLK, 0)));
}

#[test]
fn aufs_names() {
    assert!(whiteout::is_aufs_name(b".wh.a"));
    assert!(whiteout::is_aufs_name(b".wh..wh..opq"));
    assert!(!whiteout::is_aufs_name(b"a.wh."));
    assert_eq!(
        whiteout::aufs_whiteout_name(b"a").unwrap().as_bytes(),
        b".wh.a"
    );
    assert!(whiteout::aufs_whiteout_name(b"a\0b").is_err());
}

#[test]
fn private_xattrs_are_the_overlays_and_fuse_overlayfss() {
    for private in [
        "trusted.overlay.opaque",
        "user.overlay.redirect",
        "user.fuseoverlayfs.opaque",
        "user.containers.override_stat",
        "security.fuseoverlayfs.override_stat",
    ] {
        assert!(whiteout::is_private_xattr(private.as_bytes()), "{private}");
    }
    for public in [
        "user.mime",
        "security.selinux",
        "trusted.other",
        "user.overlayx",
    ] {
        assert!(!whiteout::is_private_xattr(public.as_bytes()), "{public}");
    }
}

fn opacity(t: &Tree, rel: &str) -> Opacity {
    let c = cpath(&t.path(rel));
    let fd = sys::open_path(&c, libc::O_PATH | libc::O_DIRECTORY).unwrap();
    let names = sys::listxattr(At {
        dir: fd.as_fd(),
        name: c"",
    })
    .unwrap();
    whiteout::opacity_with(fd.as_fd(), c"", &names)
}

#[test]
fn opacity_comes_from_the_xattrs_or_the_marker() {
    let t = Tree::new("opacity");
    t.dir("plain");
    t.dir("y");
    t.xattr("y", "user.overlay.opaque", b"y");
    t.dir("x");
    t.xattr("x", "user.overlay.opaque", b"x");
    t.dir("fo");
    t.xattr("fo", "user.fuseoverlayfs.opaque", b"y");
    t.file("marker/.wh..wh..opq", "");
    t.dir("other");
    t.xattr("other", "user.overlay.opaque", b"n");
    assert_eq!(opacity(&t, "plain"), Opacity::Transparent);
    assert_eq!(opacity(&t, "y"), Opacity::Opaque);
    assert_eq!(opacity(&t, "x"), Opacity::XWhiteouts);
    assert_eq!(opacity(&t, "fo"), Opacity::Opaque);
    assert_eq!(opacity(&t, "marker"), Opacity::Opaque);
    assert_eq!(opacity(&t, "other"), Opacity::Transparent);
}

#[test]
fn an_xattr_whiteout_is_an_empty_regular_file_with_the_xattr() {
    let t = Tree::new("xwh");
    t.file("d/wh", "");
    t.xattr("d/wh", "user.overlay.whiteout", b"");
    t.file("d/full", "data");
    t.xattr("d/full", "user.overlay.whiteout", b"");
    t.file("d/plain", "");
    let dir = sys::open_path(&cpath(&t.path("d")), libc::O_PATH | libc::O_DIRECTORY).unwrap();
    let is = |n: &str| {
        let n = cname(n);
        let st = sys::statat(dir.as_fd(), &n).unwrap();
        whiteout::is_xattr_whiteout(dir.as_fd(), &n, &st)
    };
    assert!(is("wh"));
    assert!(!is("full"), "not empty");
    assert!(!is("plain"), "no xattr");
}

#[test]
fn an_upper_takes_the_formats_its_filesystem_allows() {
    let t = Tree::new("probe");
    let ov = t.overlay(&["l1"], Some("up"));
    let work = ov.work.as_ref().unwrap();
    // (A char 0/0 whiteout needs no privilege since Linux 5.8; other devices do.)
    let scratch = sys::open_path(&cpath(&t.dir("scratch")), libc::O_PATH).unwrap();
    let mknod_works = sys::mknodat(scratch.as_fd(), c"wh", libc::S_IFCHR, 0).is_ok();
    assert_eq!(
        work.whiteout == crate::work::WhiteoutFormat::CharDev,
        mknod_works,
        "char 0/0 whiteouts exactly where mknod makes them"
    );
    assert_ne!(work.ns, crate::work::XattrNs::None, "user. xattrs at least");
    assert!(
        std::fs::read_dir(t.path("up.work/work"))
            .unwrap()
            .next()
            .is_none(),
        "the probes leave work/ empty"
    );
}
