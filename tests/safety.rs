//! Hostile lowers: absolute symlinks, `..` symlinks, and symlinked directories that
//! point outside the layers. The daemon must not read or reveal anything outside.

mod common;
use common::*;

use std::fs;
use std::os::unix::fs::symlink;

#[test]
fn symlinks_in_layers_never_lead_the_daemon_outside() {
    assert_root();
    let t = TempDir::new("hostile");
    // "outside": a directory of this test that is not a layer, with a canary
    let outside = t.dir("outside");
    write(&outside.join("secret"), "CANARY");
    write(&outside.join("sub/deeper"), "CANARY");
    let (top, bottom) = (t.dir("top"), t.dir("bottom"));
    // bottom: directories that are really symlinks out of the layer
    symlink(&outside, bottom.join("escape")).unwrap(); // absolute
    symlink("../outside", bottom.join("dotdot")).unwrap(); // relative, climbs out
    symlink("../../../../../../../../..", bottom.join("climb")).unwrap();
    symlink(outside.join("secret"), bottom.join("abs-file")).unwrap();
    // top: real directories of the same names, so a careless merge would descend
    // into the bottom layer's symlinks to find more entries
    for d in ["escape", "dotdot", "climb"] {
        write(&top.join(format!("{d}/own")), "own");
    }
    // and the other way round: a symlink in the top layer over a real dir below
    symlink(&outside, top.join("real-below")).unwrap();
    write(&bottom.join("real-below/x"), "x");

    let m = Mount::layers(&[&top, &bottom], None, &t.dir("m"));
    for d in ["escape", "dotdot", "climb"] {
        assert_eq!(
            names(&m.p(d)),
            vec!["own"],
            "{d} merged with what its lower symlink points to"
        );
        for leak in ["secret", "sub", "outside", "etc"] {
            assert!(
                !m.p(&format!("{d}/{leak}")).exists(),
                "{d}/{leak} leaked through the merge"
            );
        }
    }
    // symlinks are shown as symlinks, targets verbatim; the daemon resolves none
    assert_eq!(fs::read_link(m.p("real-below")).unwrap(), outside);
    assert_eq!(
        fs::read_link(m.p("abs-file")).unwrap(),
        outside.join("secret")
    );
    assert!(fs::symlink_metadata(m.p("real-below"))
        .unwrap()
        .file_type()
        .is_symlink());
    // Nothing under the mount reads CANARY unless a symlink is followed client-side,
    // which we never do: walk without following links and read every file.
    let mut stack = vec![m.mnt.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                assert_ne!(
                    fs::read_to_string(e.path()).unwrap(),
                    "CANARY",
                    "{:?}",
                    e.path()
                );
            }
        }
    }
    m.unmount();
    assert_eq!(
        fs::read_to_string(outside.join("secret")).unwrap(),
        "CANARY"
    );
}

#[test]
fn daemon_opens_nothing_outside_the_layers() {
    assert_root();
    // Watch the outside directory with inotify while the merged tree is walked.
    let t = TempDir::new("inotify");
    let outside = t.dir("outside");
    write(&outside.join("secret"), "CANARY");
    let (top, bottom) = (t.dir("top"), t.dir("bottom"));
    symlink(&outside, bottom.join("d")).unwrap();
    write(&top.join("d/own"), "own");
    symlink("../outside", bottom.join("e")).unwrap();
    write(&top.join("e/own"), "own");
    let m = Mount::layers(&[&top, &bottom], None, &t.dir("m"));

    let c = std::ffi::CString::new(outside.as_os_str().as_encoded_bytes()).unwrap();
    let ifd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    assert!(ifd >= 0);
    let mask = libc::IN_OPEN | libc::IN_ACCESS | libc::IN_ATTRIB | libc::IN_MODIFY;
    assert!(unsafe { libc::inotify_add_watch(ifd, c.as_ptr(), mask) } >= 0);
    for d in ["d", "e"] {
        let _ = names(&m.p(d));
        let _ = fs::read_to_string(m.p(&format!("{d}/own")));
        let _ = fs::symlink_metadata(m.p(&format!("{d}/secret")));
        let _ = fs::read_to_string(m.p(&format!("{d}/secret")));
    }
    drop_caches();
    for d in ["d", "e"] {
        let _ = names(&m.p(d));
        let _ = fs::symlink_metadata(m.p(&format!("{d}/secret")));
    }
    let mut buf = [0u8; 4096];
    let n = unsafe { libc::read(ifd, buf.as_mut_ptr().cast(), buf.len()) };
    unsafe { libc::close(ifd) };
    assert!(
        n <= 0,
        "the outside directory was touched ({n} bytes of inotify events)"
    );
    m.unmount();
}
