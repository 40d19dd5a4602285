//! The kernel-side means of speed, each turned off for diagnosis
//! (`STRATAFS_DISABLE`): the mount behaves the same with all of them off.

mod common;
use common::*;

use std::fs;
use std::io::ErrorKind;

/// Missing names, creates, a listing before and after a change, a symlink, and a
/// 3 MiB file written and read back, on a mount with `env`.
fn exercise(env: &[(&str, &str)]) {
    let t = TempDir::new("means");
    let (l, u, w) = (t.dir("l"), t.dir("u"), t.dir("w"));
    write(&l.join("low"), "lower");
    fs::create_dir(l.join("d")).unwrap();
    write(&l.join("d/a"), "a");
    let opts = layer_opts(&[&l], Some((&u, &w)));
    let m = Mount::with_env(&opts, &t.dir("m"), env);

    // A name looked up while missing shows up once it is made.
    let missing = fs::symlink_metadata(m.p("new"));
    assert_eq!(missing.unwrap_err().kind(), ErrorKind::NotFound);
    write(&m.p("new"), "made");
    assert_eq!(fs::read_to_string(m.p("new")).unwrap(), "made");

    // A listing read before a change shows the change after it.
    let names = |p: &str| {
        let mut v: Vec<String> = fs::read_dir(m.p(p))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("d"), ["a"]);
    write(&m.p("d/b"), "b");
    fs::remove_file(m.p("d/a")).unwrap();
    assert_eq!(names("d"), ["b"]);

    std::os::unix::fs::symlink("low", m.p("link")).unwrap();
    assert_eq!(fs::read_link(m.p("link")).unwrap().to_str(), Some("low"));
    assert_eq!(fs::read_to_string(m.p("link")).unwrap(), "lower");

    let data: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    fs::write(m.p("big"), &data).unwrap();
    assert!(
        fs::read(m.p("big")).unwrap() == data,
        "big read back differs"
    );
    // A lower file written through the mount: copied up, old data kept before it.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(m.p("low"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"+").unwrap();
    drop(f);
    assert_eq!(fs::read_to_string(m.p("low")).unwrap(), "lower+");
    assert_eq!(fs::read_to_string(u.join("low")).unwrap(), "lower+");
}

#[test]
fn every_mean_off_behaves_the_same() {
    assert_root();
    exercise(&[(
        "STRATAFS_DISABLE",
        "passthrough,negative,keep_cache,cache_dir,parallel_dirops,symlink_cache,big_writes,killpriv",
    )]);
}

#[test]
fn every_mean_on_and_readdirplus() {
    assert_root();
    exercise(&[]);
    exercise(&[("STRATAFS_READDIRPLUS", "1")]);
}
