//! POSIX ACLs on real mounts, side by side with kernel overlayfs: default ACLs are
//! inherited on create (in a lower directory and in a new one, also once one is set
//! or removed after creates there), access ACLs grant
//! what the mode alone would not, and `noacl` turns them off.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

fn sh(script: &str) -> (bool, String) {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn have_acl_tools() -> bool {
    sh("command -v setfacl && command -v getfacl && command -v setpriv").0
}

/// The same steps on a mount; returns what getfacl and the access checks showed.
fn scenario(m: &Path) -> String {
    let m = m.display();
    let steps = format!(
        "set -e
         umask 077
         setfacl -d -m u:1234:rwx,g::r-x,o::r-- {m}/D
         touch {m}/D/f
         mkdir {m}/D/sub
         touch {m}/D/sub/g
         mkdir {m}/new
         setfacl -d -m u:4321:r-x {m}/new
         mkdir {m}/new/inner
         mkdir {m}/E
         touch {m}/E/before
         setfacl -d -m u:555:rw {m}/E
         touch {m}/E/after
         setfacl -k {m}/E
         touch {m}/E/last
         echo secret > {m}/D/private
         chmod 600 {m}/D/private
         setfacl -m u:1234:r {m}/D/private
         cd {m}
         getfacl -n -p D/f D/sub D/sub/g new/inner D/private L/kept E/before E/after E/last 2>&1
         setpriv --reuid=1234 --regid=1234 --clear-groups cat D/private 2>&1 || echo denied-1234
         setpriv --reuid=1235 --regid=1235 --clear-groups cat D/private 2>&1 || echo denied-1235
         stat -c '%n %a' D/f D/sub D/sub/g new/inner D/private"
    );
    let (ok, out) = sh(&steps);
    assert!(ok, "ACL steps failed on {m}:\n{out}");
    out
}

fn build_lower(l: &Path) {
    std::fs::create_dir_all(l.join("D")).unwrap();
    write(&l.join("L/kept"), "x");
    let (ok, out) = sh(&format!("setfacl -m u:77:rw {}/L/kept", l.display()));
    assert!(ok, "{out}");
}

#[test]
fn acls_match_kernel_overlayfs() {
    assert_root();
    if !have_acl_tools() {
        eprintln!("skipped: setfacl/getfacl/setpriv missing (scripts/setup.sh installs them)");
        return;
    }
    let t = TempDir::new("acl");
    let (sl, su, sw) = (t.dir("sl"), t.dir("su"), t.dir("sw"));
    let (kl, ku, kw) = (t.dir("kl"), t.dir("ku"), t.dir("kw"));
    build_lower(&sl);
    build_lower(&kl);
    let km = t.dir("km");
    let _k = OtherMount::kernel_overlay(&[&kl], &ku, &kw, ",redirect_dir=on,index=on", &km);
    let m = Mount::layers(&[&sl], Some((&su, &sw)), &t.dir("sm"));
    let kernel = scenario(&km);
    let ours = scenario(&m.mnt);
    assert_eq!(kernel, ours, "kernel:\n{kernel}\nstratafs:\n{ours}");
    assert!(ours.contains("user:1234:rwx"), "{ours}");
    assert!(ours.contains("denied-1235") && !ours.contains("denied-1234"));
    // and after a remount
    m.unmount();
    drop(m);
    let m = Mount::layers(&[&sl], Some((&su, &sw)), &t.dir("sm"));
    let (_, again) = sh(&format!(
        "cd {} && getfacl -n -p D/f D/sub D/sub/g new/inner D/private L/kept",
        m.mnt.display()
    ));
    assert!(ours.starts_with(&again), "after remount:\n{again}");
    m.unmount();
}

#[test]
fn noacl_turns_acls_off() {
    assert_root();
    if !have_acl_tools() {
        eprintln!("skipped: setfacl missing");
        return;
    }
    let t = TempDir::new("noacl");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    std::fs::create_dir_all(l.join("D")).unwrap();
    let opts = layer_opts(&[&l], Some((&u, &w))) + ",noacl";
    let m = Mount::new(&opts, &t.dir("m"));
    let (ok, out) = sh(&format!("setfacl -m u:1234:rwx {}/D", m.mnt.display()));
    assert!(!ok, "setfacl worked with noacl: {out}");
    m.unmount();
}
