//! Real data: a copy of real system directories (/usr/bin, /usr/include, ...) as the
//! bottom layer, under an image-like layer that deletes (both whiteout formats),
//! replaces, rewrites and makes a directory opaque. The merged view must equal what
//! the overlay rules predict, entry for entry: type, mode, owner, size, content hash,
//! link target.

mod common;
use common::*;

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::fs;
use std::hash::Hasher;
use std::io::Read;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

const SOURCES: &[&str] = &[
    "/usr/bin",
    "/usr/sbin",
    "/usr/include",
    "/usr/share/perl5",
    "/usr/lib/os-release",
];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    content: u64,
    target: Option<PathBuf>,
}

fn hash_file(p: &Path) -> u64 {
    let mut h = DefaultHasher::new();
    let mut f = fs::File::open(p).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.write(&buf[..n]);
    }
    h.finish()
}

fn entry(p: &Path) -> Entry {
    let md = fs::symlink_metadata(p).unwrap();
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_file() {
        "file"
    } else {
        "special"
    };
    Entry {
        kind,
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        size: if ft.is_dir() { 0 } else { md.size() },
        content: if ft.is_file() { hash_file(p) } else { 0 },
        target: if ft.is_symlink() {
            Some(fs::read_link(p).unwrap())
        } else {
            None
        },
    }
}

/// relative path → entry, for the whole tree (never following links).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            let en = entry(&root.join(&r));
            if en.kind == "dir" {
                stack.push(r.clone());
            }
            out.insert(r, en);
        }
    }
    out
}

/// Copies the real directories into `base`, then makes every absolute symlink point
/// under a path that does not exist, so no fixture link leads to a real host file.
fn copy_real_tree(base: &Path) {
    for src in SOURCES {
        if !Path::new(src).exists() {
            continue;
        }
        let dest = base.join(Path::new(src).parent().unwrap().strip_prefix("/").unwrap());
        fs::create_dir_all(&dest).unwrap();
        let st = std::process::Command::new("cp")
            .args(["-a", src])
            .arg(&dest)
            .status()
            .unwrap();
        assert!(st.success(), "cp {src}");
    }
    let mut stack = vec![base.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p);
            } else if md.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap();
                if t.is_absolute() {
                    fs::remove_file(&p).unwrap();
                    let mut n = PathBuf::from("/.stratafs-test-absent");
                    n.push(t.strip_prefix("/").unwrap());
                    symlink(n, &p).unwrap();
                }
            }
        }
    }
}

fn remove_below(model: &mut BTreeMap<PathBuf, Entry>, dir: &Path) {
    model.retain(|p, _| !(p.starts_with(dir) && p != dir));
}

#[test]
fn real_tree_under_an_image_layer_matches_the_rules() {
    assert_root();
    let t = TempDir::new("real");
    let base = t.dir("base");
    copy_real_tree(&base);
    let mut model = snapshot(&base);
    assert!(
        model.len() > 1000,
        "the real tree is too small: {}",
        model.len()
    );

    let img = t.dir("image");
    let files: Vec<PathBuf> = model
        .iter()
        .filter(|(_, e)| e.kind == "file")
        .map(|(p, _)| p.clone())
        .collect();
    let dirs: Vec<PathBuf> = model
        .iter()
        .filter(|(p, e)| e.kind == "dir" && p.components().count() >= 3)
        .map(|(p, _)| p.clone())
        .collect();
    let children = |model: &BTreeMap<PathBuf, Entry>, d: &Path| {
        model.keys().filter(|p| p.parent() == Some(d)).count()
    };
    let mkparent = |rel: &Path| fs::create_dir_all(img.join(rel).parent().unwrap()).unwrap();

    // a deleted directory, an opaque one in each format, a dir replaced by a file
    let mut picked = dirs
        .iter()
        .filter(|d| children(&model, d) >= 3 && model.contains_key(*d));
    let (del, opq_aufs, opq_xattr, to_file) = (
        picked.next().unwrap().clone(),
        picked.nth(3).unwrap().clone(),
        picked.nth(3).unwrap().clone(),
        picked.nth(3).unwrap().clone(),
    );
    mkparent(&del);
    write(
        &img.join(del.parent().unwrap()).join(format!(
            ".wh.{}",
            del.file_name().unwrap().to_string_lossy()
        )),
        "",
    );
    remove_below(&mut model, &del);
    model.remove(&del);
    for (d, aufs) in [(&opq_aufs, true), (&opq_xattr, false)] {
        fs::create_dir_all(img.join(d)).unwrap();
        if aufs {
            write(&img.join(d).join(".wh..wh..opq"), "");
        } else {
            set_xattr(&img.join(d), "trusted.overlay.opaque", b"y");
        }
        write(&img.join(d).join("only-new"), "new\n");
        remove_below(&mut model, d);
        // metadata of a merged directory comes from the topmost layer
        model.insert(d.to_path_buf(), entry(&img.join(d)));
        model.insert(d.join("only-new"), entry(&img.join(d).join("only-new")));
    }
    mkparent(&to_file);
    write(&img.join(&to_file), "was a directory\n");
    remove_below(&mut model, &to_file);
    model.insert(to_file.clone(), entry(&img.join(&to_file)));
    let picked_dirs = [del, opq_aufs, opq_xattr, to_file];
    // deletions: AUFS .wh. files and kernel char 0/0 whiteouts
    for (i, f) in files.iter().enumerate() {
        if !model.contains_key(f) || picked_dirs.iter().any(|d| f.starts_with(d)) {
            continue;
        }
        if i % 41 == 0 {
            mkparent(f);
            let wh = f
                .parent()
                .unwrap()
                .join(format!(".wh.{}", f.file_name().unwrap().to_string_lossy()));
            write(&img.join(wh), "");
            model.remove(f);
        } else if i % 43 == 1 {
            mkparent(f);
            whiteout(&img.join(f));
            model.remove(f);
        } else if i % 37 == 2 {
            // rewritten with other content, mode and owner
            mkparent(f);
            write(&img.join(f), &format!("rewritten {i}\n"));
            chmod(&img.join(f), 0o640);
            std::os::unix::fs::chown(img.join(f), Some(1000 + i as u32), Some(2000)).unwrap();
            model.insert(f.clone(), entry(&img.join(f)));
        }
    }
    // a file replaced by a directory, and a brand-new file
    let to_dir = files
        .iter()
        .find(|f| {
            model.get(*f).is_some_and(|e| e.kind == "file")
                && !img.join(f).exists()
                && !picked_dirs.iter().any(|d| f.starts_with(d))
        })
        .unwrap()
        .clone();
    write(&img.join(&to_dir).join("inside"), "inside\n");
    model.insert(to_dir.clone(), entry(&img.join(&to_dir)));
    model.insert(
        to_dir.join("inside"),
        entry(&img.join(&to_dir).join("inside")),
    );
    write(&img.join("usr/NEWFILE"), "brand new\n");
    model.insert(
        PathBuf::from("usr/NEWFILE"),
        entry(&img.join("usr/NEWFILE")),
    );
    // directories the image layer created on the way take their metadata from it
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(img.join(&rel)).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                let r = rel.join(e.file_name());
                model.insert(r.clone(), entry(&img.join(&r)));
                stack.push(r);
            }
        }
    }

    let m = Mount::layers(&[&img, &base], None, &t.dir("m"));
    let seen = snapshot(&m.mnt);
    let missing: Vec<_> = model
        .keys()
        .filter(|p| !seen.contains_key(*p))
        .take(10)
        .collect();
    let extra: Vec<_> = seen
        .keys()
        .filter(|p| !model.contains_key(*p))
        .take(10)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    for (p, want) in &model {
        let got = &seen[p];
        // directory sizes are the real directory's; compare everything else
        assert_eq!(got, want, "{p:?} differs");
    }
    m.unmount();
}
