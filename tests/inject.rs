//! Fault injection (`-o inject=STEP:ERRNO`) swept over every step and every kind of
//! change: after an injected failure the caller gets the errno, and the merged view,
//! a remount and kernel overlayfs mounting the upper all show the tree as it was
//! before the operation; `stratafs check` finds the upper sound. An operation that
//! does not reach the step must succeed and leave the tree as without injection.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;

const STEPS: [&str; 8] = [
    "copy-data",
    "copy-meta",
    "copy-rename",
    "whiteout",
    "opaque",
    "redirect",
    "create",
    "fsync",
];

/// The merged tree with what the operations change: type and mode, owner, size,
/// links, contents, symlink targets, user xattrs.
fn view(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap() {
            let r = rel.join(e.unwrap().file_name());
            let p = root.join(&r);
            let md = fs::symlink_metadata(&p).unwrap();
            let mut s = format!("mode={:o} owner={}:{}", md.mode(), md.uid(), md.gid());
            if md.is_file() {
                s += &format!(
                    " size={} nlink={} data={:?}",
                    md.size(),
                    md.nlink(),
                    fs::read(&p).unwrap()
                );
            } else if md.file_type().is_symlink() {
                s += &format!(" target={:?}", fs::read_link(&p).unwrap());
            } else if md.is_dir() {
                stack.push(r.clone());
            }
            let mut x = list_xattr(&p);
            x.retain(|n| n.starts_with("user."));
            x.sort();
            for n in x {
                s += &format!(" {n}={:?}", get_xattr(&p, &n).unwrap_or_default());
            }
            out.insert(r, s);
        }
    }
    out
}

/// The lower layer every case starts from, and the upper's starting state: a
/// whiteout over the lower directory `wh_dir`.
fn layers(t: &TempDir) -> (PathBuf, PathBuf, PathBuf) {
    let lower = t.dir("lower");
    write(&lower.join("file"), "lower data");
    fs::create_dir_all(lower.join("dir/sub")).unwrap();
    write(&lower.join("dir/in"), "in dir");
    write(&lower.join("dir/sub/deep"), "deep");
    fs::create_dir(lower.join("empty")).unwrap();
    fs::create_dir(lower.join("wh_dir")).unwrap();
    write(&lower.join("wh_dir/old"), "old");
    let upper = t.dir("upper");
    let work = t.dir("work");
    mknod(&upper.join("wh_dir"), libc::S_IFCHR, 0);
    (lower, upper, work)
}

type Op = fn(&Path) -> std::io::Result<()>;

fn ops() -> Vec<(&'static str, Op)> {
    vec![
        ("create", |m| fs::write(m.join("dir/new"), "new")),
        ("write-open of a lower file", |m| {
            use std::io::Write;
            let mut f = fs::OpenOptions::new().append(true).open(m.join("file"))?;
            f.write_all(b"+")
        }),
        ("truncate", |m| {
            fs::OpenOptions::new()
                .write(true)
                .open(m.join("file"))?
                .set_len(3)
        }),
        ("chmod", |m| {
            fs::set_permissions(m.join("dir/in"), fs::Permissions::from_mode(0o600))
        }),
        ("chown", |m| {
            std::os::unix::fs::lchown(m.join("file"), Some(1234), Some(5678))
        }),
        ("setxattr", |m| {
            let p = std::ffi::CString::new(m.join("file").into_os_string().into_encoded_bytes())
                .unwrap();
            let r = unsafe {
                libc::lsetxattr(
                    p.as_ptr(),
                    c"user.test".as_ptr(),
                    b"v".as_ptr().cast(),
                    1,
                    0,
                )
            };
            if r == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }),
        ("link", |m| {
            fs::hard_link(m.join("file"), m.join("dir/link"))
        }),
        ("unlink", |m| fs::remove_file(m.join("dir/in"))),
        ("rmdir", |m| fs::remove_dir(m.join("empty"))),
        ("rename of a lower file", |m| {
            fs::rename(m.join("file"), m.join("dir/moved"))
        }),
        ("rename of a lower directory", |m| {
            fs::rename(m.join("dir"), m.join("dir2"))
        }),
        ("mkdir over a whiteout", |m| {
            fs::create_dir(m.join("wh_dir"))
        }),
    ]
}

/// Runs `op` on a fresh mount with `inject` (if any); returns its result, the
/// merged view after it, and the layers (for the checks that follow).
fn run_case(
    tag: &str,
    op: Op,
    inject: Option<&str>,
) -> (std::io::Result<()>, BTreeMap<PathBuf, String>, TempDir) {
    let t = TempDir::new(tag);
    let (lower, upper, work) = layers(&t);
    let mnt = t.dir("mnt");
    let mut opts = layer_opts(&[&lower], Some((&upper, &work)));
    if let Some(i) = inject {
        opts += &format!(",inject={i}");
    }
    let m = Mount::new(&opts, &mnt);
    let r = op(&mnt);
    let after = view(&mnt);
    m.unmount();
    (r, after, t)
}

#[test]
fn every_step_of_every_change_fails_cleanly() {
    assert_root();
    let mut failures = Vec::new();
    let mut reached: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let only = std::env::var("INJECT_ONLY").ok();
    for (name, op) in ops() {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        // Without injection: the tree before and after.
        let (r, after_clean, t) = run_case("inj-ref", op, None);
        r.unwrap_or_else(|e| panic!("{name} without injection: {e}"));
        drop(t);
        let before = {
            let t = TempDir::new("inj-before");
            let (lower, upper, work) = layers(&t);
            let mnt = t.dir("mnt");
            let m = Mount::layers(&[&lower], Some((&upper, &work)), &mnt);
            let v = view(&mnt);
            m.unmount();
            v
        };
        for step in STEPS {
            let rule = format!("{step}:EIO");
            let (r, after, t) = run_case("inj", op, Some(&rule));
            let what = format!("{name} with inject={rule}");
            match r {
                Ok(()) => {
                    if after != after_clean {
                        failures.push(format!(
                            "{what}: succeeded, but the tree differs from a run without injection"
                        ));
                    }
                    continue;
                }
                Err(e) if e.raw_os_error() != Some(libc::EIO) => {
                    failures.push(format!("{what}: failed with {e}, not EIO"));
                    continue;
                }
                Err(_) => reached.entry(name).or_default().push(step),
            }
            if after != before {
                failures.push(format!(
                    "{what}: failed, but the merged view changed: {:?}",
                    diff(&before, &after)
                ));
                continue;
            }
            let (lower, upper, work) = (t.join("lower"), t.join("upper"), t.join("work"));
            // A remount shows the tree as before.
            let mnt2 = t.dir("mnt2");
            let m = Mount::layers(&[&lower], Some((&upper, &work)), &mnt2);
            let again = view(&mnt2);
            m.unmount();
            if again != before {
                failures.push(format!(
                    "{what}: after a remount the tree differs: {:?}",
                    diff(&before, &again)
                ));
                continue;
            }
            // stratafs check finds the upper sound, and the kernel reads it the same.
            let (ok, said) = check_upper(&upper, &work, &lower);
            if !ok {
                failures.push(format!("{what}: stratafs check: {said}"));
                continue;
            }
            let kmnt = t.dir("kmnt");
            let k = OtherMount::kernel_overlay(
                &[&lower],
                &upper,
                &work,
                ",redirect_dir=on,index=on",
                &kmnt,
            );
            let kv = view(&kmnt);
            drop(k);
            if kv != before {
                failures.push(format!(
                    "{what}: kernel overlayfs shows another tree: {:?}",
                    diff(&before, &kv)
                ));
            }
        }
    }
    for (name, _) in ops() {
        assert!(
            reached.contains_key(name),
            "no step was reached by {name}: the sweep proves nothing for it"
        );
    }
    eprintln!("steps that made each operation fail: {reached:#?}");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn diff(a: &BTreeMap<PathBuf, String>, b: &BTreeMap<PathBuf, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("-{}", k.display())),
            Some(w) if w != v => out.push(format!("~{} {v} -> {w}", k.display())),
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        out.push(format!("+{}", k.display()));
    }
    out
}

#[test]
fn nth_call_and_delay_rules_work_on_a_mount() {
    assert_root();
    let t = TempDir::new("inj-nth");
    let (lower, upper, work) = layers(&t);
    write(&lower.join("second"), "2");
    let mnt = t.dir("mnt");
    let opts = layer_opts(&[&lower], Some((&upper, &work)))
        + ",inject=copy-data:ENOSPC@2,inject=create:delay=50";
    let m = Mount::new(&opts, &mnt);
    let append = |p: &Path| fs::OpenOptions::new().append(true).open(p).map(drop);
    assert!(
        append(&mnt.join("file")).is_ok(),
        "the first copy-up is not the second call"
    );
    assert_eq!(errno_of(append(&mnt.join("second"))), libc::ENOSPC);
    assert!(
        append(&mnt.join("second")).is_ok(),
        "only the second call fails"
    );
    let t0 = std::time::Instant::now();
    fs::write(mnt.join("slow"), "x").unwrap();
    assert!(
        t0.elapsed() >= std::time::Duration::from_millis(50),
        "the create was not delayed"
    );
    m.unmount();
    // A bad rule is refused with one line, before anything is mounted.
    let mnt2 = t.dir("mnt2");
    let out = run(&[
        std::ffi::OsStr::new("-o"),
        std::ffi::OsStr::new(
            &(layer_opts(&[&lower], Some((&upper, &work))) + ",inject=copy-data:EWHAT"),
        ),
        mnt2.as_os_str(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("inject=copy-data:EWHAT: unknown errno"),
        "{err}"
    );
    assert!(!is_mounted(&mnt2));
}
