//! The image tools against hostile and broken input (the hazards table of
//! ../shared/docs/images-reference.md, a test per row), with archives built here:
//! each either fails with one clear line and leaves the store as it was, or gives the
//! documented safe result; nothing outside the store is touched (a sentinel
//! directory is checked); no panic. Then kill -9 during an import and a commit.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use sha2::{Digest, Sha256};

fn sha(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// One entry of a layer tar, written raw (so names the `tar` crate would refuse,
/// like `../x`, can be made).
#[derive(Clone)]
enum E {
    File(&'static str, &'static [u8]),
    Dir(&'static str),
    Symlink(&'static str, String),
    Hard(&'static str, &'static str),
    Char(&'static str, u32, u32),
    Xattr(&'static str, &'static str, &'static [u8]),
}

fn raw_header(name: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        let b = name.as_bytes();
        old.name[..b.len()].copy_from_slice(b);
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn set_link(h: &mut tar::Header, target: &str) {
    let old = h.as_old_mut();
    let b = target.as_bytes();
    old.linkname[..b.len()].copy_from_slice(b);
}

fn layer(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            E::File(n, d) => {
                let mut h = raw_header(n, tar::EntryType::Regular, d.len() as u64, 0o644);
                h.set_cksum();
                b.append(&h, *d).unwrap();
            }
            E::Dir(n) => {
                let mut h = raw_header(n, tar::EntryType::Directory, 0, 0o755);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            E::Symlink(n, t) => {
                let mut h = raw_header(n, tar::EntryType::Symlink, 0, 0o777);
                set_link(&mut h, t);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            E::Hard(n, t) => {
                let mut h = raw_header(n, tar::EntryType::Link, 0, 0o644);
                set_link(&mut h, t);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            E::Char(n, ma, mi) => {
                let mut h = raw_header(n, tar::EntryType::Char, 0, 0o666);
                h.set_device_major(*ma).unwrap();
                h.set_device_minor(*mi).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            E::Xattr(n, k, v) => {
                let key = format!("SCHILY.xattr.{k}");
                b.append_pax_extensions([(key.as_str(), *v)]).unwrap();
                let mut h = raw_header(n, tar::EntryType::Regular, 1, 0o644);
                h.set_cksum();
                b.append(&h, &b"x"[..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// A docker-archive of `layers` (uncompressed tars), with `diff_ids` in the config
/// (the right ones unless given) and the members given instead of `<hex>.tar`.
struct Archive {
    layers: Vec<Vec<u8>>,
    diff_ids: Option<Vec<String>>,
    layer_names: Option<Vec<String>>,
    extra: Vec<(String, Vec<u8>)>,
    links: Vec<(String, String)>,
    tag: &'static str,
}

impl Archive {
    fn new(layers: Vec<Vec<u8>>) -> Archive {
        Archive {
            layers,
            diff_ids: None,
            layer_names: None,
            extra: Vec::new(),
            links: Vec::new(),
            tag: "localhost/t:1",
        }
    }

    fn write(&self, path: &Path) {
        let diff_ids: Vec<String> = self
            .diff_ids
            .clone()
            .unwrap_or_else(|| self.layers.iter().map(|l| sha(l)).collect());
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": self.layers.iter().map(|_| serde_json::json!({"created_by": "test"})).collect::<Vec<_>>(),
        }))
        .unwrap();
        let cname = format!("{}.json", &sha(&config)[7..]);
        let names: Vec<String> = self.layer_names.clone().unwrap_or_else(|| {
            self.layers
                .iter()
                .map(|l| format!("{}.tar", &sha(l)[7..]))
                .collect()
        });
        let manifest = serde_json::to_vec(
            &serde_json::json!([{"Config": cname, "RepoTags": [self.tag], "Layers": names}]),
        )
        .unwrap();
        let mut b = tar::Builder::new(fs::File::create(path).unwrap());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        };
        for (i, l) in self.layers.iter().enumerate() {
            add(&format!("{}.tar", &sha(l)[7..]), l);
            let _ = i;
        }
        add(&cname, &config);
        add("manifest.json", &manifest);
        for (n, d) in &self.extra {
            add(n, d);
        }
        for (n, t) in &self.links {
            let mut h = raw_header(n, tar::EntryType::Symlink, 0, 0o777);
            set_link(&mut h, t);
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        }
        b.finish().unwrap();
    }
}

/// A store, a sentinel directory beside it, and the commands.
struct Env {
    _t: TempDir,
    store: PathBuf,
    outside: PathBuf,
    dir: PathBuf,
}

impl Env {
    fn new(tag: &str) -> Env {
        let t = TempDir::new(tag);
        let store = t.join("store");
        let outside = t.dir("outside");
        fs::write(outside.join("sentinel"), "untouched").unwrap();
        let dir = t.path.clone();
        Env {
            _t: t,
            store,
            outside,
            dir,
        }
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
        let mut c = Command::new(BIN);
        // (--store after the subcommand: `image import`, but `commit`.)
        let n = if ["image", "container", "system"].contains(&args[0]) {
            2
        } else {
            1
        };
        c.args(&args[..n])
            .arg("--store")
            .arg(&self.store)
            .args(&args[n..]);
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_output(child, 120);
        let so = String::from_utf8_lossy(&out.stdout).into_owned();
        let se = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!se.contains("panicked"), "stratafs panicked: {se}");
        (out.status.success(), so, se)
    }

    fn import(&self, archive: &Path) -> (bool, String, String) {
        self.run(
            &[
                "image",
                "import",
                archive.to_str().unwrap(),
                "--progress",
                "plain",
            ],
            &[],
        )
    }

    /// The store's tree (but its lock file and tmp/): path → kind and size.
    fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        let mut m = tree_view(&self.store);
        m.retain(|p, _| !p.starts_with("tmp") && p != Path::new("lock"));
        m
    }

    fn outside_untouched(&self) {
        assert_eq!(
            names(&self.outside),
            vec!["sentinel".to_string()],
            "something was written outside the store"
        );
        assert_eq!(
            fs::read_to_string(self.outside.join("sentinel")).unwrap(),
            "untouched"
        );
    }

    /// Imports a base image first, so "unchanged" means something.
    fn with_base(tag: &str) -> Env {
        let e = Env::new(tag);
        let a = e.dir.join("base.tar");
        Archive::new(vec![layer(&[
            E::Dir("etc"),
            E::File("etc/motd", b"hello\n"),
            E::File("etc/keep", b"k"),
        ])])
        .write(&a);
        let (ok, _, err) = e.import(&a);
        assert!(ok, "base import failed: {err}");
        e
    }

    /// `archive` must be refused with one line naming `why`; the store unchanged.
    fn refused(&self, archive: &Path, why: &str) {
        let before = self.snapshot();
        let (ok, _, err) = self.import(archive);
        assert!(!ok, "import should have failed ({why})");
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("stratafs: ") && last.contains(why),
            "error line '{last}' does not say '{why}' (stderr: {err})"
        );
        assert_eq!(
            self.snapshot(),
            before,
            "the store changed after a refused import"
        );
        self.outside_untouched();
        let (ok, _, err) = self.run(&["system", "gc"], &[]);
        assert!(ok, "gc: {err}");
        assert_eq!(self.snapshot(), before, "gc changed the store");
    }

    /// The `diff/` of the store's one container layer (the layer with a `merged/`).
    fn mounted_container_diff(&self) -> PathBuf {
        fs::read_dir(self.store.join("overlay2"))
            .unwrap()
            .filter_map(|d| d.ok())
            .map(|d| d.path())
            .find(|p| p.join("merged").is_dir())
            .unwrap()
            .join("diff")
    }

    fn diff_dir_of(&self, image: &str, layer_no: usize) -> PathBuf {
        let (ok, out, err) = self.run(&["image", "inspect", image], &[]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        PathBuf::from(v[0]["Layers"][layer_no]["Dir"].as_str().unwrap())
    }
}

fn one_layer(env: &Env, entries: &[E]) -> PathBuf {
    let p = env.dir.join(format!("a{}.tar", rand_suffix()));
    Archive::new(vec![layer(entries)]).write(&p);
    p
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

#[test]
fn dotdot_escaping_the_root_is_refused() {
    assert_root();
    let e = Env::with_base("img-dotdot");
    let a = one_layer(&e, &[E::File("a/../../outside/evil", b"x")]);
    e.refused(&a, "leaves the layer's root");
    let a = one_layer(&e, &[E::File("../outside/evil", b"x")]);
    e.refused(&a, "leaves the layer's root");
}

#[test]
fn leading_slash_and_dot_are_stripped() {
    assert_root();
    let e = Env::with_base("img-slash");
    let a = one_layer(
        &e,
        &[
            E::File("/abs", b"1"),
            E::File("./dot", b"2"),
            E::File("x/./../y", b"3"),
        ],
    );
    let (ok, _, err) = e.import(&a);
    assert!(ok, "{err}");
    let d = e.diff_dir_of("t:1", 0);
    assert_eq!(fs::read(d.join("abs")).unwrap(), b"1");
    assert_eq!(fs::read(d.join("dot")).unwrap(), b"2");
    assert_eq!(fs::read(d.join("y")).unwrap(), b"3");
    e.outside_untouched();
}

#[test]
fn a_file_through_a_symlink_is_refused() {
    assert_root();
    let e = Env::with_base("img-symlink");
    let target = e.outside.to_string_lossy().into_owned();
    let a = one_layer(&e, &[E::Symlink("x", target), E::File("x/evil", b"x")]);
    e.refused(&a, "goes through 'x'");
    let a = one_layer(
        &e,
        &[E::Symlink("y", "../../outside".into()), E::Dir("y/sub")],
    );
    e.refused(&a, "goes through 'y'");
}

#[test]
fn bad_hard_links_are_refused() {
    assert_root();
    let e = Env::with_base("img-hardlink");
    let abs = one_layer(&e, &[E::Hard("l", "/etc/passwd")]);
    e.refused(&abs, "absolute path");
    let esc = one_layer(&e, &[E::Hard("l", "../outside/sentinel")]);
    e.refused(&esc, "leaves the layer's root");
    let dir = one_layer(&e, &[E::Dir("d"), E::Hard("l", "d")]);
    e.refused(&dir, "to the directory");
    let none = one_layer(&e, &[E::Hard("l", "nowhere")]);
    e.refused(&none, "not in the image");
}

#[test]
fn hard_links_to_a_lower_layer_and_before_their_target() {
    assert_root();
    let e = Env::new("img-hardlink-ok");
    let a = e.dir.join("a.tar");
    let l0 = layer(&[E::Dir("etc"), E::File("etc/motd", b"hello\n")]);
    // Layer 1: a link to a lower file, a link before its target, a chain.
    let l1 = layer(&[
        E::Hard("low", "etc/motd"),
        E::Hard("early", "late"),
        E::File("late", b"L"),
        E::Hard("chain", "early"),
    ]);
    Archive::new(vec![l0, l1]).write(&a);
    let (ok, _, err) = e.import(&a);
    assert!(ok, "{err}");
    assert!(
        err.contains("of a lower layer; copied in"),
        "no report of the copied link: {err}"
    );
    let d = e.diff_dir_of("t:1", 1);
    assert_eq!(fs::read(d.join("low")).unwrap(), b"hello\n");
    let late = fs::metadata(d.join("late")).unwrap();
    assert_eq!(late.nlink(), 3);
    assert_eq!(fs::metadata(d.join("early")).unwrap().ino(), late.ino());
    assert_eq!(fs::metadata(d.join("chain")).unwrap().ino(), late.ino());
    e.outside_untouched();
}

#[test]
fn an_entry_of_another_type_replaces_the_earlier_one() {
    assert_root();
    let e = Env::new("img-replace");
    let a = one_layer(
        &e,
        &[
            E::File("p", b"file"),
            E::Dir("p"),
            E::File("p/in", b"1"),
            E::Dir("q"),
            E::File("q/x", b"1"),
            E::File("q", b"now a file"),
        ],
    );
    let (ok, _, err) = e.import(&a);
    assert!(ok, "{err}");
    let d = e.diff_dir_of("t:1", 0);
    assert!(fs::symlink_metadata(d.join("p")).unwrap().is_dir());
    assert_eq!(fs::read(d.join("q")).unwrap(), b"now a file");
}

#[test]
fn whiteouts_of_the_same_layer_and_empty_whiteouts() {
    assert_root();
    let e = Env::with_base("img-wh");
    let a = one_layer(
        &e,
        &[
            E::File("mine", b"kept"),
            E::File(".wh.mine", b""),
            E::File(".wh.other", b""),
        ],
    );
    let (ok, _, err) = e.import(&a);
    assert!(ok, "{err}");
    let d = e.diff_dir_of("t:1", 0);
    assert_eq!(fs::read(d.join("mine")).unwrap(), b"kept");
    let wh = fs::symlink_metadata(d.join("other")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(&wh.file_type()) && wh.rdev() == 0);
    let bad = one_layer(&e, &[E::File(".wh.", b"")]);
    e.refused(&bad, "a whiteout without a name");
}

#[test]
fn opaque_markers_become_the_opaque_xattr() {
    assert_root();
    let e = Env::new("img-opq");
    let l0 = layer(&[E::Dir("d"), E::File("d/old", b"o")]);
    let l1 = layer(&[
        E::Dir("d"),
        E::File("d/.wh..wh..opq", b""),
        E::File("d/new", b"n"),
    ]);
    let a = e.dir.join("a.tar");
    Archive::new(vec![l0, l1]).write(&a);
    let (ok, _, err) = e.import(&a);
    assert!(ok, "{err}");
    let d = e.diff_dir_of("t:1", 1);
    assert_eq!(
        get_xattr(&d.join("d"), "trusted.overlay.opaque").unwrap(),
        b"y"
    );
    assert!(!d.join("d/.wh..wh..opq").exists());
}

#[test]
fn a_char_device_0_0_is_refused() {
    assert_root();
    let e = Env::with_base("img-chr00");
    let a = one_layer(&e, &[E::Char("dev0", 0, 0)]);
    e.refused(&a, "would read as a whiteout");
}

#[test]
fn overlay_and_override_xattrs_are_dropped() {
    assert_root();
    let e = Env::new("img-xattr");
    let a = one_layer(
        &e,
        &[
            E::Dir("d"),
            E::Xattr("d/f1", "trusted.overlay.redirect", b"/etc"),
            E::Xattr("d/f2", "user.overlay.opaque", b"y"),
            E::Xattr("d/f3", "user.containers.override_stat", b"0:0:4755"),
            E::Xattr("d/f4", "user.kept", b"yes"),
        ],
    );
    let (ok, _, err) = e.import(&a);
    assert!(ok, "{err}");
    assert!(
        err.contains("dropped xattr trusted.overlay.redirect"),
        "{err}"
    );
    let d = e.diff_dir_of("t:1", 0);
    assert!(get_xattr(&d.join("d/f1"), "trusted.overlay.redirect").is_err());
    assert!(get_xattr(&d.join("d/f2"), "user.overlay.opaque").is_err());
    assert!(get_xattr(&d.join("d/f3"), "user.containers.override_stat").is_err());
    assert_eq!(get_xattr(&d.join("d/f4"), "user.kept").unwrap(), b"yes");
}

#[test]
fn devices_and_owners_as_a_plain_user_go_into_override_stat() {
    assert_root();
    let e = Env::new("img-rootless");
    let a = one_layer(
        &e,
        &[E::Dir("dev"), E::Char("dev/null", 1, 3), E::File("f", b"x")],
    );
    fs::set_permissions(&e.dir, fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(&a, fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "image",
            "import",
            "--store",
        ])
        .arg(&e.store)
        .arg(&a)
        .args(["--progress", "plain"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("device node kept as a file"), "{err}");
    let d = e.diff_dir_of("t:1", 0);
    let m = fs::symlink_metadata(d.join("dev/null")).unwrap();
    assert!(m.is_file() && m.uid() == 65534);
    assert_eq!(
        get_xattr(&d.join("dev/null"), "user.containers.override_stat").unwrap(),
        b"0:0:0666:char-1-3"
    );
    assert_eq!(
        get_xattr(&d.join("f"), "user.containers.override_stat").unwrap(),
        b"0:0:0644:file"
    );
    // The mount shows the device and the owners.
    let t = TempDir::new("img-rootless-mnt");
    let mnt = t.dir("m");
    let m = Mount::new(&format!("lowerdir={}", d.display()), &mnt);
    let st = fs::symlink_metadata(m.p("dev/null")).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_char_device(&st.file_type()),
        "not shown as a char device"
    );
    assert_eq!(st.rdev(), libc::makedev(1, 3));
    assert_eq!((st.uid(), st.mode() & 0o7777), (0, 0o666));
    m.unmount();
}

#[test]
fn a_decompression_bomb_is_stopped_and_holes_are_kept() {
    assert_root();
    let e = Env::with_base("img-bomb");
    // 64 MiB of zeros, gzip'd to a few KiB.
    let zeros = vec![0u8; 64 << 20];
    let mut b = tar::Builder::new(Vec::new());
    let mut h = raw_header("zeros", tar::EntryType::Regular, zeros.len() as u64, 0o644);
    h.set_cksum();
    b.append(&h, &zeros[..]).unwrap();
    let tar_bytes = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar_bytes).unwrap();
    let gz = gz.finish().unwrap();
    assert!(gz.len() < 1 << 20);
    let mut arch = Archive::new(vec![gz]);
    arch.diff_ids = Some(vec![sha(&tar_bytes)]);
    let a = e.dir.join("bomb.tar");
    arch.write(&a);
    let before = e.snapshot();
    let (ok, _, err) = e.run(
        &["image", "import", a.to_str().unwrap()],
        &[("STRATAFS_MAX_LAYER_BYTES", "1048576")],
    );
    assert!(
        !ok && err.contains("unpacks to more than 1048576 bytes"),
        "{err}"
    );
    assert_eq!(e.snapshot(), before);
    // Without the cap: imported, and the zeros are a hole.
    let (ok, _, err) = e.import(&a);
    assert!(ok, "{err}");
    let d = e.diff_dir_of("t:1", 0);
    let m = fs::metadata(d.join("zeros")).unwrap();
    assert_eq!(m.len(), 64 << 20);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "the zeros take {} bytes on disk",
        m.blocks() * 512
    );
}

#[test]
fn corrupt_and_truncated_layers_leave_nothing() {
    assert_root();
    let e = Env::with_base("img-corrupt");
    let good = layer(&[E::File("a", &[7u8; 100_000]), E::File("b", b"b")]);
    // Truncated: the tar cut in the middle of a file.
    let mut cut = Archive::new(vec![good[..50_000].to_vec()]);
    cut.diff_ids = Some(vec![sha(&good)]);
    let a = e.dir.join("cut.tar");
    cut.write(&a);
    e.refused(&a, "truncated");
    // A gzip stream with its middle overwritten.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&good).unwrap();
    let mut gz = gz.finish().unwrap();
    let mid = gz.len() / 2;
    for b in &mut gz[mid..mid + 64] {
        *b ^= 0x5a;
    }
    let mut bad = Archive::new(vec![gz]);
    bad.diff_ids = Some(vec![sha(&good)]);
    let a = e.dir.join("badgz.tar");
    bad.write(&a);
    e.refused(&a, "layer");
}

#[test]
fn digest_and_count_mismatches_are_refused() {
    assert_root();
    let e = Env::with_base("img-digest");
    let l = layer(&[E::File("a", b"a")]);
    let mut wrong = Archive::new(vec![l.clone()]);
    wrong.diff_ids = Some(vec![sha(b"something else")]);
    let a = e.dir.join("diffid.tar");
    wrong.write(&a);
    e.refused(&a, "DiffID mismatch");
    let mut count = Archive::new(vec![l.clone()]);
    count.diff_ids = Some(vec![sha(&l), sha(&l)]);
    let a = e.dir.join("count.tar");
    count.write(&a);
    e.refused(&a, "the manifest lists 1 layers, the config 2 DiffIDs");
    // An OCI layout whose layer descriptor has the wrong size, then the wrong digest,
    // then a media type that is not a layer.
    for (what, why) in [
        ("size", "size mismatch"),
        ("digest", "no member"),
        ("media", "unsupported layer media type"),
    ] {
        let dir = e.dir.join(format!("oci-{what}"));
        write_oci(&dir, &l, what);
        e.refused(&dir, why);
    }
}

/// An OCI layout of one layer, with one thing wrong (`"size"`, `"digest"`, `"media"`).
fn write_oci(dir: &Path, l: &[u8], wrong: &str) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let d = sha(data);
        fs::write(blobs.join(&d[7..]), data).unwrap();
        d
    };
    let ld = put(l);
    let config = serde_json::to_vec(
        &serde_json::json!({"rootfs": {"type": "layers", "diff_ids": [ld]}, "os": "linux"}),
    )
    .unwrap();
    let cd = put(&config);
    let mut ldesc = serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": l.len()});
    match wrong {
        "size" => ldesc["size"] = serde_json::json!(l.len() + 1),
        "digest" => ldesc["digest"] = serde_json::json!(sha(b"other")),
        _ => ldesc["mediaType"] = serde_json::json!("application/vnd.example.not-a-layer"),
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [ldesc],
    }))
    .unwrap();
    let md = put(&manifest);
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "localhost/oci:1"}}]})).unwrap(),
    )
    .unwrap();
}

#[test]
fn archive_members_never_lead_outside_the_archive() {
    assert_root();
    let e = Env::with_base("img-outer");
    let l = layer(&[E::File("a", b"a")]);
    // A layer named by a path that leaves the archive.
    let mut a1 = Archive::new(vec![l.clone()]);
    a1.layer_names = Some(vec!["../outside/sentinel".into()]);
    let p = e.dir.join("outer1.tar");
    a1.write(&p);
    e.refused(&p, "leaves the layer's root");
    // A layer member that is a symlink out of the archive.
    let mut a2 = Archive::new(vec![l.clone()]);
    a2.layer_names = Some(vec!["x/layer.tar".into()]);
    a2.links = vec![("x/layer.tar".into(), "../../outside/sentinel".into())];
    let p = e.dir.join("outer2.tar");
    a2.write(&p);
    e.refused(&p, "links outside the archive");
    // The legacy layout podman writes: a symlink member inside the archive is fine.
    let mut a3 = Archive::new(vec![l.clone()]);
    a3.layer_names = Some(vec!["v1/layer.tar".into()]);
    a3.links = vec![("v1/layer.tar".into(), format!("../{}.tar", &sha(&l)[7..]))];
    let p = e.dir.join("outer3.tar");
    a3.write(&p);
    let (ok, _, err) = e.import(&p);
    assert!(ok, "{err}");
    e.outside_untouched();
}

#[test]
fn import_from_stdin_and_layers_are_not_unpacked_twice() {
    assert_root();
    let e = Env::with_base("img-stdin");
    let a = one_layer(&e, &[E::File("s", b"stdin")]);
    let out = Command::new(BIN)
        .args(["image", "import", "--store"])
        .arg(&e.store)
        .args(["-", "--name", "from:stdin", "--progress", "plain"])
        .stdin(fs::File::open(&a).unwrap())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Loaded image: localhost/from:stdin"));
    let (ok, _, err) = e.run(
        &[
            "image",
            "import",
            a.to_str().unwrap(),
            "--name",
            "again:1",
            "--progress",
            "plain",
        ],
        &[],
    );
    assert!(
        ok && err.contains("Checking") && !err.contains("Unpacking"),
        "{err}"
    );
}

/// Kills `args` (an import or a commit) at `delay`, then checks that the store is
/// as before or as after (its images), and that `system gc` leaves it sound.
fn kill_during(e: &Env, args: &[&str], delay_ms: u64, before: &str, after: &str) {
    let mut c = Command::new(BIN);
    let n = if ["image", "container", "system"].contains(&args[0]) {
        2
    } else {
        1
    };
    c.args(&args[..n])
        .arg("--store")
        .arg(&e.store)
        .args(&args[n..])
        .args(["--progress", "plain"]);
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(delay_ms));
    let _ = child.kill();
    let _ = child.wait();
    let (ok, ls, err) = e.run(&["image", "ls"], &[]);
    assert!(ok, "{err}");
    let as_after = ls.contains(after) && before.lines().all(|l| ls.contains(l));
    assert!(
        ls == before || as_after,
        "after a kill at {delay_ms} ms the store is neither as before nor as after:\n{ls}"
    );
    let (ok, _, err) = e.run(&["system", "gc"], &[]);
    assert!(ok, "{err}");
    // Every image left is whole: its layers are there and inspect reads it.
    for line in ls.lines().skip(1) {
        let id = line.split_whitespace().nth(2).unwrap();
        let (ok, out, err) = e.run(&["image", "inspect", id], &[]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        for l in v[0]["Layers"].as_array().unwrap() {
            assert!(
                Path::new(l["Dir"].as_str().unwrap()).is_dir(),
                "a layer of {id} is missing"
            );
        }
    }
    assert!(names(&e.store.join("tmp")).is_empty(), "gc left tmp/");
}

#[test]
fn kill_9_during_import_and_commit_leaves_the_store_as_before_or_after() {
    assert_root();
    let e = Env::with_base("img-kill");
    // A 5-layer image of ~100 MiB of incompressible data.
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut layers = Vec::new();
    for i in 0..5 {
        let mut data = vec![0u8; 20 << 20];
        for chunk in data.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
        }
        let name: &'static str = Box::leak(format!("big{i}").into_boxed_str());
        let data: &'static [u8] = Box::leak(data.into_boxed_slice());
        layers.push(layer(&[
            E::File(name, data),
            E::File(Box::leak(format!("small{i}").into_boxed_str()), b"s"),
        ]));
    }
    let a = e.dir.join("big.tar");
    let mut arch = Archive::new(layers);
    arch.tag = "localhost/big:1";
    arch.write(&a);
    let before = e.run(&["image", "ls"], &[]).1;
    for (i, delay) in [30u64, 80, 150, 250, 400].iter().enumerate() {
        kill_during(
            &e,
            &["image", "import", a.to_str().unwrap()],
            *delay,
            &before,
            "localhost/big",
        );
        let _ = i;
    }
    let (ok, _, err) = e.import(&a);
    assert!(ok, "{err}");
    let after = e.run(&["image", "ls"], &[]).1;
    assert!(
        after.lines().any(|l| l.starts_with("localhost/big ")),
        "{after}"
    );
    // A commit of a container holding a 64 MiB change.
    let (ok, _, err) = e.run(&["container", "create", "big:1", "--name", "c"], &[]);
    assert!(ok, "{err}");
    let (ok, out, err) = e.run(&["image", "inspect", "big:1"], &[]);
    assert!(ok, "{err}");
    let _: serde_json::Value = serde_json::from_str(&out).unwrap();
    let upper = e.mounted_container_diff();
    let mut f = fs::File::create(upper.join("change")).unwrap();
    let chunk = vec![0x42u8; 1 << 20];
    for _ in 0..64 {
        f.write_all(&chunk).unwrap();
    }
    drop(f);
    let before = e.run(&["image", "ls"], &[]).1;
    for delay in [20u64, 60, 120, 200, 300] {
        kill_during(
            &e,
            &["commit", "c", "localhost/committed:1"],
            delay,
            &before,
            "localhost/committed",
        );
    }
    let (ok, _, err) = e.run(&["commit", "c", "localhost/committed:1"], &[]);
    assert!(ok, "{err}");
    assert!(e
        .run(&["image", "ls"], &[])
        .1
        .contains("localhost/committed"));
    e.outside_untouched();
}

#[test]
fn commit_with_a_timestamp_is_reproducible_and_equal_layers_are_kept_once() {
    assert_root();
    let e = Env::with_base("img-repro");
    let (ok, _, err) = e.run(&["container", "create", "t:1", "--name", "c"], &[]);
    assert!(ok, "{err}");
    let upper = e.mounted_container_diff();
    fs::create_dir(upper.join("etc")).unwrap();
    fs::write(upper.join("etc/motd"), "changed\n").unwrap();
    let mut ids = Vec::new();
    for tag in ["localhost/r:1", "localhost/r:2"] {
        let (ok, out, err) = e.run(
            &[
                "commit",
                "--timestamp",
                "1700000000",
                "-m",
                "same",
                "c",
                tag,
            ],
            &[],
        );
        assert!(ok, "{err}");
        ids.push(out.trim().to_string());
    }
    assert_eq!(
        ids[0], ids[1],
        "two commits of the same upper with --timestamp differ"
    );
    let layers: Vec<_> = fs::read_dir(e.store.join("overlay2")).unwrap().collect();
    // base layer + its commit layer + the container, and l/.
    assert_eq!(layers.len(), 4, "the equal layer was stored twice");
    let (ok, out, _) = e.run(&["image", "history", "r:2"], &[]);
    assert!(ok && out.lines().nth(1).unwrap().contains("same"), "{out}");
}

#[test]
fn two_imports_at_once_both_land_and_the_store_stays_sound() {
    assert_root();
    let e = Env::new("img-concurrent");
    let mut paths = Vec::new();
    for (i, tag) in ["localhost/one:1", "localhost/two:1", "localhost/three:1"]
        .iter()
        .enumerate()
    {
        let l = layer(&[
            E::Dir("d"),
            E::File(Box::leak(format!("d/f{i}").into_boxed_str()), b"data"),
        ]);
        let mut a = Archive::new(vec![l]);
        a.tag = tag;
        let p = e.dir.join(format!("c{i}.tar"));
        a.write(&p);
        paths.push(p);
    }
    let children: Vec<_> = paths
        .iter()
        .map(|p| {
            Command::new(BIN)
                .args(["image", "import", "--store"])
                .arg(&e.store)
                .arg(p)
                .args(["--progress", "plain"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = wait_output(c, 120);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (ok, ls, err) = e.run(&["image", "ls"], &[]);
    assert!(ok, "{err}");
    for name in ["localhost/one", "localhost/two", "localhost/three"] {
        assert!(
            ls.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} missing:\n{ls}"
        );
    }
    let (ok, out, err) = e.run(&["system", "gc"], &[]);
    assert!(ok, "{err}");
    assert!(
        out.contains("0 item(s) removed"),
        "gc found leftovers: {out}"
    );
}
