//! `stratafs commit`: a container's upper becomes a layer tar, and a new image on top
//! of the container's. Char 0/0 and `.wh.` whiteouts become `.wh.NAME` entries; an
//! opaque directory gets `.wh..wh..opq` first in it; a redirected (renamed lower)
//! directory is written whole from the union, opaque, so it no longer needs its lower
//! part; upper hard links are tar links; overlay-private xattrs are left out. The tar
//! is written sorted, so the same upper gives the same layer (`--timestamp` also fixes
//! times). Its blob is kept uncompressed (its digest is its DiffID); a layer the store
//! has already is not unpacked again.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde_json::{json, Value};

use super::container::{self, Container};
use super::digest::{self, HashingWriter};
use super::extract::{self, Options, Report};
use super::layers;
use super::progress::Progress;
use super::store::{self, Store};
use super::view::{content_xattrs, Item, View};
use crate::ondisk::{Ovl, OPAQUE_MARKER, WH_PREFIX};
use crate::override_stat;
use crate::sys::{self, At, Stat};

/// What `commit` is asked for.
pub struct Request<'a> {
    pub message: Option<&'a str>,
    pub author: Option<&'a str>,
    pub changes: &'a [String],
    pub tag: Option<&'a str>,
    pub timestamp: Option<i64>,
}

/// Writes tar entries with the store's conventions.
struct Emitter<W: Write> {
    tar: tar::Builder<W>,
    /// Hard links: the first path written for each (dev, ino).
    seen: HashMap<(u64, u64), String>,
    timestamp: Option<i64>,
    pub entries: u64,
}

fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}

impl<W: Write> Emitter<W> {
    fn header(&self, st: &Stat) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(st.st_uid as u64);
        h.set_gid(st.st_gid as u64);
        h.set_mtime(self.timestamp.unwrap_or(st.st_mtime).max(0) as u64);
        h.set_size(0);
        h
    }

    fn xattrs(&mut self, xattrs: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
        if xattrs.is_empty() {
            return Ok(());
        }
        let keys: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(k, v)| {
                (
                    format!("SCHILY.xattr.{}", String::from_utf8_lossy(k)),
                    v.as_slice(),
                )
            })
            .collect();
        self.tar
            .append_pax_extensions(keys.iter().map(|(k, v)| (k.as_str(), *v)))
    }

    /// One entry: `data` is the file's contents for a regular file, `target` a
    /// symlink's target.
    fn entry(
        &mut self,
        path: &str,
        st: &Stat,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        data: Option<&mut dyn Read>,
        target: Option<Vec<u8>>,
    ) -> io::Result<()> {
        let mut h = self.header(st);
        let p = rel(path);
        let ft = st.st_mode & libc::S_IFMT;
        if ft != libc::S_IFDIR && st.st_nlink > 1 {
            if let Some(first) = self.seen.get(&(st.st_dev, st.st_ino)).cloned() {
                h.set_entry_type(tar::EntryType::Link);
                self.entries += 1;
                return self.tar.append_link(&mut h, p, first);
            }
            self.seen.insert((st.st_dev, st.st_ino), p.to_string());
        }
        self.xattrs(xattrs)?;
        self.entries += 1;
        match ft {
            libc::S_IFDIR => {
                h.set_entry_type(tar::EntryType::Directory);
                self.tar.append_data(&mut h, format!("{p}/"), io::empty())
            }
            libc::S_IFREG => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(st.st_size as u64);
                let mut empty = io::empty();
                let r: &mut dyn Read = match data {
                    Some(d) => d,
                    None => &mut empty,
                };
                self.tar.append_data(&mut h, p, r.take(st.st_size as u64))
            }
            libc::S_IFLNK => {
                h.set_entry_type(tar::EntryType::Symlink);
                let t = target.unwrap_or_default();
                self.tar.append_link(
                    &mut h,
                    p,
                    std::ffi::OsStr::new(&*String::from_utf8_lossy(&t)),
                )
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                h.set_entry_type(match ft {
                    libc::S_IFCHR => tar::EntryType::Char,
                    libc::S_IFBLK => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                });
                h.set_device_major(libc::major(st.st_rdev))?;
                h.set_device_minor(libc::minor(st.st_rdev))?;
                self.tar.append_data(&mut h, p, io::empty())
            }
            _ => Ok(()),
        }
    }

    /// A whiteout entry for `name` in `dir`.
    fn whiteout(&mut self, dir: &str, name: &[u8]) -> io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(0);
        h.set_mtime(self.timestamp.unwrap_or(0).max(0) as u64);
        let mut p = rel(dir).to_string();
        if !p.is_empty() {
            p.push('/');
        }
        p.push_str(&String::from_utf8_lossy(WH_PREFIX));
        p.push_str(&String::from_utf8_lossy(name));
        self.entries += 1;
        self.tar.append_data(&mut h, p, io::empty())
    }
}

fn join(parent: &str, name: &[u8]) -> String {
    format!(
        "{}/{}",
        parent.trim_end_matches('/'),
        String::from_utf8_lossy(name)
    )
}

fn xattr_is(at: At, what: Ovl, value: &[u8]) -> bool {
    what.names()
        .iter()
        .any(|n| sys::getxattr(at, n).is_ok_and(|v| v == value))
}

fn redirect_of(at: At) -> Option<Vec<u8>> {
    Ovl::Redirect
        .names()
        .iter()
        .find_map(|n| sys::getxattr(at, n).ok())
}

/// Walks the upper directory `dir` (at `path`), writing what it changes.
struct Walk<'a, W: Write> {
    out: Emitter<W>,
    view: &'a View,
    /// The override xattr the upper uses (a plain user's container), if any.
    stat_override: Option<&'static std::ffi::CStr>,
}

impl<W: Write> Walk<'_, W> {
    fn dir(&mut self, dir: BorrowedFd, path: &str) -> io::Result<()> {
        let rd = sys::openat(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let mut names: Vec<Vec<u8>> = sys::read_dir_all(rd.as_fd())?
            .into_iter()
            .map(|e| e.name)
            .collect();
        names.sort();
        for name in names {
            let c = CString::new(name.clone())
                .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            if name.as_slice() == OPAQUE_MARKER.to_bytes() {
                continue; // written with its directory
            }
            let mut st = sys::statat(dir, &c)?;
            if crate::whiteout::is_whiteout_dev(&st) {
                self.out.whiteout(path, &name)?;
                continue;
            }
            if name.starts_with(WH_PREFIX) {
                // An AUFS whiteout in the upper: already the tar form.
                self.out.whiteout(path, &name[WH_PREFIX.len()..])?;
                continue;
            }
            let at = At { dir, name: &c };
            override_stat::apply(self.stat_override, at, &mut st);
            let p = join(path, &name);
            let xattrs = content_xattrs(at);
            match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => {
                    let sub: OwnedFd = sys::openat(dir, &c, libc::O_PATH | libc::O_DIRECTORY, 0)?;
                    let sat = At {
                        dir: sub.as_fd(),
                        name: c"",
                    };
                    if redirect_of(sat).is_some() {
                        self.whole(&p)?;
                        continue;
                    }
                    self.out.entry(&p, &st, &xattrs, None, None)?;
                    if xattr_is(sat, Ovl::Opaque, b"y")
                        || sys::getxattr(sat, crate::ondisk::FUSE_OVERLAYFS_OPAQUE)
                            .is_ok_and(|v| v == b"y")
                        || sys::statat(sub.as_fd(), OPAQUE_MARKER).is_ok()
                    {
                        self.out.whiteout(&p, b".wh..opq")?;
                    }
                    self.dir(sub.as_fd(), &p)?;
                }
                libc::S_IFREG => {
                    let mut f = std::fs::File::from(sys::openat(dir, &c, libc::O_RDONLY, 0)?);
                    self.out.entry(&p, &st, &xattrs, Some(&mut f), None)?;
                }
                libc::S_IFLNK => {
                    let t = sys::readlinkat(dir, &c)?;
                    self.out.entry(&p, &st, &xattrs, None, Some(t))?;
                }
                _ => self.out.entry(&p, &st, &xattrs, None, None)?,
            }
        }
        Ok(())
    }

    /// A redirected directory: its whole merged contents, opaque.
    fn whole(&mut self, path: &str) -> io::Result<()> {
        let comps: Vec<Vec<u8>> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .map(|c| c.as_bytes().to_vec())
            .collect();
        let Some(item) = self.view.at(&comps)? else {
            return Ok(());
        };
        self.view_tree(&item, path, true)
    }

    fn view_tree(&mut self, item: &Item, path: &str, opaque: bool) -> io::Result<()> {
        let xattrs = self.view.xattrs(item);
        match item.st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                self.out.entry(path, &item.st, &xattrs, None, None)?;
                if opaque {
                    self.out.whiteout(path, b".wh..opq")?;
                }
                for name in self.view.names(item)? {
                    if let Some(child) = self.view.child(item, &name)? {
                        self.view_tree(&child, &join(path, &name), false)?;
                    }
                }
                Ok(())
            }
            libc::S_IFREG => {
                let mut f = self.view.open_file(item)?;
                self.out.entry(path, &item.st, &xattrs, Some(&mut f), None)
            }
            libc::S_IFLNK => {
                let t = self.view.readlink(item)?;
                self.out.entry(path, &item.st, &xattrs, None, Some(t))
            }
            _ => self.out.entry(path, &item.st, &xattrs, None, None),
        }
    }
}

/// Writes the layer tar of the container's upper to `w`; returns the entry count.
pub fn write_layer<W: Write>(
    store: &Store,
    c: &Container,
    w: W,
    timestamp: Option<i64>,
) -> Result<(u64, W), String> {
    let img = store.resolve(&c.image)?;
    let lowers = layers::lower_paths(store, &container::image_layers(&img)?)?;
    let upper = c.upper(store);
    let view = View::open(Some(&upper), &lowers)?;
    let udir =
        super::fsdir::Dir::open_path(&upper).map_err(|e| format!("{}: {e}", upper.display()))?;
    let root_x = sys::listxattr(At {
        dir: udir.fd(),
        name: c"",
    })
    .unwrap_or_default();
    let mut tar = tar::Builder::new(w);
    tar.mode(tar::HeaderMode::Complete);
    let mut walk = Walk {
        out: Emitter {
            tar,
            seen: HashMap::new(),
            timestamp,
            entries: 0,
        },
        view: &view,
        stat_override: override_stat::detect(&root_x),
    };
    walk.dir(udir.fd(), "/")
        .map_err(|e| format!("reading the container's upper: {e}"))?;
    let n = walk.out.entries;
    let w = walk
        .out
        .tar
        .into_inner()
        .map_err(|e| format!("writing the layer: {e}"))?;
    Ok((n, w))
}

/// Parses one `-c` change (a Dockerfile instruction) into the config.
pub fn apply_change(config: &mut Value, change: &str) -> Result<String, String> {
    let change = change.trim();
    let (instr, rest) = change
        .split_once(char::is_whitespace)
        .unwrap_or((change, ""));
    let rest = rest.trim();
    let cfg = &mut config["config"];
    if cfg.is_null() {
        *cfg = json!({});
    }
    let words = || -> Value {
        match serde_json::from_str::<Value>(rest) {
            Ok(v @ Value::Array(_)) => v,
            _ => json!(["/bin/sh", "-c", rest]),
        }
    };
    match instr.to_ascii_uppercase().as_str() {
        "CMD" => cfg["Cmd"] = words(),
        "ENTRYPOINT" => cfg["Entrypoint"] = words(),
        "USER" => cfg["User"] = json!(rest),
        "WORKDIR" => cfg["WorkingDir"] = json!(rest),
        "STOPSIGNAL" => cfg["StopSignal"] = json!(rest),
        "ENV" => {
            let (k, v) = rest
                .split_once('=')
                .or_else(|| rest.split_once(' '))
                .ok_or_else(|| format!("ENV needs KEY=VALUE: '{change}'"))?;
            let mut env: Vec<Value> = cfg["Env"].as_array().cloned().unwrap_or_default();
            env.retain(|e| !e.as_str().is_some_and(|s| s.starts_with(&format!("{k}="))));
            env.push(json!(format!("{k}={}", v.trim())));
            cfg["Env"] = Value::Array(env);
        }
        "LABEL" => {
            let (k, v) = rest.split_once('=').ok_or_else(|| format!("LABEL needs KEY=VALUE: '{change}'"))?;
            if cfg["Labels"].is_null() {
                cfg["Labels"] = json!({});
            }
            cfg["Labels"][k.trim()] = json!(v.trim().trim_matches('"'));
        }
        "EXPOSE" => {
            if cfg["ExposedPorts"].is_null() {
                cfg["ExposedPorts"] = json!({});
            }
            for p in rest.split_whitespace() {
                let p = if p.contains('/') { p.to_string() } else { format!("{p}/tcp") };
                cfg["ExposedPorts"][p] = json!({});
            }
        }
        "VOLUME" => {
            if cfg["Volumes"].is_null() {
                cfg["Volumes"] = json!({});
            }
            let list = match serde_json::from_str::<Vec<String>>(rest) {
                Ok(v) => v,
                Err(_) => rest.split_whitespace().map(String::from).collect(),
            };
            for v in list {
                cfg["Volumes"][v] = json!({});
            }
        }
        other => return Err(format!("unsupported change '{other}' (CMD, ENTRYPOINT, ENV, LABEL, EXPOSE, USER, WORKDIR, VOLUME, STOPSIGNAL)")),
    }
    Ok(change.to_string())
}

/// `stratafs commit`: returns the new image's ID.
pub fn commit(
    store: &Store,
    c: &Container,
    req: &Request,
    progress: &mut Progress,
) -> Result<String, String> {
    let img = store.resolve(&c.image)?;
    let tmp = store.tmp().map_err(|e| format!("tmp/: {e}"))?;
    let blob_name = format!("commit-{}.tar", std::process::id());
    let file = tmp
        .create(&blob_name, 0o644)
        .map_err(|e| format!("staging the layer: {e}"))?;
    progress.step("Writing layer of", &c.id, 0);
    let (entries, w) = write_layer(
        store,
        c,
        HashingWriter::new(io::BufWriter::new(file)),
        req.timestamp,
    )?;
    let (diff_id, size, bw) = w.finish();
    let f = bw
        .into_inner()
        .map_err(|e| format!("writing the layer: {e}"))?;
    f.sync_all()
        .map_err(|e| format!("writing the layer: {e}"))?;
    drop(f);
    progress.set(size);
    // The new layer on the image's stack.
    let mut diff_ids = img.diff_ids();
    diff_ids.push(diff_id.clone());
    let chains = digest::chain_ids(&diff_ids);
    let chain = chains.last().cloned().ok_or("no layers")?;
    let id = digest::hex_of(&chain)?.to_string();
    let mut staged = None;
    if store.layer_dir(&chain)?.is_none() {
        let s = layers::stage(store, &format!("commit-layer-{}", std::process::id()))?;
        let lowers = layers::diff_dirs(store, &container::image_layers(&img)?)?;
        let opt = Options {
            rootless: sys::geteuid() != 0,
            max_bytes: u64::MAX,
        };
        let mut report = Report::default();
        let blob = tmp.open(&blob_name).map_err(|e| e.to_string())?;
        extract::unpack(
            io::BufReader::new(blob),
            &s.diff,
            &lowers,
            &opt,
            &mut report,
            &mut |_| {},
        )?;
        staged = Some(s);
    }
    // The config: a history entry, the DiffID, the changes.
    let mut config = img.config.clone();
    let created = match req.timestamp {
        Some(t) => container::rfc3339(t),
        None => container::now_rfc3339(),
    };
    let mut applied = Vec::new();
    for ch in req.changes {
        applied.push(apply_change(&mut config, ch)?);
    }
    config["created"] = json!(created);
    if let Some(a) = req.author {
        config["author"] = json!(a);
    }
    config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
    let mut entry = json!({"created": created, "created_by": if applied.is_empty() { "stratafs commit".to_string() } else { format!("stratafs commit --change {}", applied.join(" --change ")) }});
    if let Some(a) = req.author {
        entry["author"] = json!(a);
    }
    if let Some(m) = req.message {
        entry["comment"] = json!(m);
    }
    let mut history = config["history"].as_array().cloned().unwrap_or_default();
    history.push(entry);
    config["history"] = Value::Array(history);
    let config_bytes = serde_json::to_vec(&config).map_err(|e| e.to_string())?;
    let mut layer_descs = img.layer_descriptors();
    layer_descs.push(json!({"mediaType": store::LAYER_TAR, "digest": diff_id, "size": size}));
    let config_digest = digest::of(&config_bytes);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": store::MANIFEST_OCI,
        "config": {"mediaType": store::CONFIG_OCI, "digest": config_digest, "size": config_bytes.len()},
        "layers": layer_descs,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
    // Into place: the blob, the layer, the config and manifest, then the name.
    let blobs = store.blobs().map_err(|e| format!("blobs/: {e}"))?;
    let hex = digest::hex_of(&diff_id)?;
    if blobs.exists(hex) {
        let _ = tmp.remove(&blob_name);
    } else {
        tmp.rename(&blob_name, &blobs, hex)
            .map_err(|e| format!("placing the layer blob: {e}"))?;
    }
    if let Some(s) = staged {
        let below = container::image_layers(&img)?;
        layers::place(store, s, &id, &below, false)?;
    }
    store.put_blob(&config_bytes)?;
    let md = store.put_blob(&manifest_bytes)?;
    store.tag(&md, manifest_bytes.len() as u64, req.tag)?;
    progress.done(&format!(
        "committed {entries} entries ({})",
        super::progress::human(size)
    ));
    Ok(config_digest)
}
