//! Set-id bits are cleared as kernel overlayfs clears them: on write and truncate by a
//! user without CAP_FSETID (through passthrough and daemon-served), on chown always,
//! never on root's own writes. stratafs clears them itself (FUSE_HANDLE_KILLPRIV_V2);
//! the same steps run with that switched off, and without passthrough.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

fn sh(script: &str, arg: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(arg)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "steps failed in {}:\n{text}",
        arg.display()
    );
    text
}

/// Lower files, each with the set-id bits and owner one step below needs.
const LOWER: &str = "set -e; cd \"$1\"
    for f in a b c d e f g h t s i k; do echo data > $f; done
    chown 1234:1234 a b d h t s k
    chmod 6755 a d e f h i; chmod 2764 b; chmod 6777 c t; chmod 4766 s; chmod 2755 g
    chmod 6775 k";

/// Writes, truncates and chowns by user 1234 and by root; prints the modes.
const STEPS: &str = "set -e; cd \"$1\"
    as() { setpriv --reuid=1234 --regid=1234 --clear-groups \"$@\"; }
    as sh -c 'echo x >> a'   # suid and group-executable sgid go
    as sh -c 'echo x >> b'   # sgid without group exec stays
    as sh -c 'echo x >> c'   # a file of root's, written by another user
    as truncate -s 1 d
    echo x >> e              # root keeps them
    chown 1234:1234 f        # chown clears them, even root's
    chown 1234:1234 g
    truncate -s 1 h
    echo hi > u; chmod 6777 u
    as dd if=/dev/zero of=u bs=1 count=3 seek=1 conv=notrunc status=none
    as sh -c ': > t'         # open with O_TRUNC
    as truncate -s 5 s
    chown -h 1234 i
    as sh -c 'echo y >> k'; as sh -c 'echo y >> k'
    stat -c '%n %a %u %g %s' a b c d e f g h u t s i k";

#[test]
fn set_id_bits_are_cleared_as_the_kernel_clears_them() {
    assert_root();
    let t = TempDir::new("setid");
    let (kl, ku, kw) = (t.dir("kl"), t.dir("ku"), t.dir("kw"));
    sh(LOWER, &kl);
    let km = t.dir("km");
    let k = OtherMount::kernel_overlay(&[&kl], &ku, &kw, ",redirect_dir=on,index=on", &km);
    let kernel = sh(STEPS, &km);
    drop(k);
    assert!(
        kernel.contains("a 755 ") && kernel.contains("e 6755 "),
        "{kernel}"
    );
    for (i, off) in ["", "passthrough", "killpriv"].iter().enumerate() {
        let (l, u, w) = (
            t.dir(&format!("l{i}")),
            t.dir(&format!("u{i}")),
            t.dir(&format!("w{i}")),
        );
        sh(LOWER, &l);
        let opts = layer_opts(&[&l], Some((&u, &w)));
        let m = Mount::with_env(
            &opts,
            &t.dir(&format!("m{i}")),
            &[("STRATAFS_DISABLE", off)],
        );
        let ours = sh(STEPS, &m.mnt);
        m.unmount();
        assert_eq!(kernel, ours, "STRATAFS_DISABLE={off}");
    }
}
