//! The image store: an OCI image layout at its root (`oci-layout`, `index.json`,
//! `blobs/sha256/`, blobs kept byte for byte) plus the layers unpacked the way
//! Docker's overlay2 driver keeps them, keyed by ChainID:
//!
//! ```text
//! STORE/oci-layout, index.json, blobs/sha256/<hex>
//!       overlay2/<chain hex>/{diff/,link,lower,work/}   (the bottom layer: diff/, link)
//!       overlay2/l/<26 chars> -> ../<chain hex>/diff
//!       overlay2/<container id>/{diff/,link,lower,work/,merged/}
//!       containers.json, lock, tmp/
//! ```
//!
//! Every change is built under `tmp/` and renamed into place; `index.json` and
//! `containers.json` are replaced whole. Commands take the lock file (shared to read,
//! exclusive to change), so two at once never see or make half a change; an
//! exclusive holder clears what a killed command left in `tmp/`.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::digest;
use super::fsdir::Dir;
use crate::sys;

/// The `oci-layout` file of an OCI image layout.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const MANIFEST_OCI: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_OCI: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// How a command holds the store.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    Read,
    Change,
}

pub struct Store {
    pub root: PathBuf,
    pub dir: Dir,
    _lock: std::fs::File,
}

/// One image of the index: a manifest and the name it is tagged with (if any).
#[derive(Clone)]
pub struct Image {
    pub manifest_digest: String,
    pub names: Vec<String>,
    pub manifest: Value,
    pub config_digest: String,
    pub config: Value,
    pub config_bytes: Vec<u8>,
}

impl Image {
    /// The image ID: the config's digest, as podman and docker show it.
    pub fn id(&self) -> &str {
        self.config_digest.trim_start_matches("sha256:")
    }

    pub fn diff_ids(&self) -> Vec<String> {
        self.config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn chain_ids(&self) -> Vec<String> {
        digest::chain_ids(&self.diff_ids())
    }

    pub fn layer_descriptors(&self) -> Vec<Value> {
        self.manifest["layers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// The store a command uses: `--store`, else `STRATAFS_STORE`, else
/// `/var/lib/stratafs` for root and `$XDG_DATA_HOME/stratafs` (or
/// `~/.local/share/stratafs`) for anyone else.
pub fn default_root() -> PathBuf {
    if let Some(s) = std::env::var_os("STRATAFS_STORE") {
        return PathBuf::from(s);
    }
    if sys::geteuid() == 0 {
        return PathBuf::from("/var/lib/stratafs");
    }
    match std::env::var_os("XDG_DATA_HOME") {
        Some(x) if !x.is_empty() => PathBuf::from(x).join("stratafs"),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
            .join(".local/share/stratafs"),
    }
}

fn err(what: &str, e: io::Error) -> String {
    format!("{what}: {e}")
}

impl Store {
    /// Opens (creating it if need be) the store at `root` and takes its lock.
    pub fn open(root: &Path, hold: Hold) -> Result<Store, String> {
        std::fs::create_dir_all(root)
            .map_err(|e| format!("cannot create the store {}: {e}", root.display()))?;
        // One spelling for one store (mounts are found by the paths in their options).
        let root = &std::fs::canonicalize(root).map_err(|e| format!("{}: {e}", root.display()))?;
        let dir = Dir::open_path(root).map_err(|e| err(&root.display().to_string(), e))?;
        let lock = std::fs::File::from(
            sys::openat(dir.fd(), c"lock", libc::O_RDWR | libc::O_CREAT, 0o600)
                .map_err(|e| err("the store's lock file", e))?,
        );
        use std::os::fd::AsFd;
        let op = match hold {
            Hold::Read => libc::LOCK_SH,
            Hold::Change => libc::LOCK_EX,
        };
        sys::flock_wait(lock.as_fd(), op).map_err(|e| err("locking the store", e))?;
        let store = Store {
            root: root.to_path_buf(),
            dir,
            _lock: lock,
        };
        if hold == Hold::Change || !store.dir.exists("index.json") {
            if hold == Hold::Read {
                // A new store: made under the exclusive lock by a writer; a reader of a
                // store that does not exist yet sees an empty one.
                return Ok(store);
            }
            store.lay_out().map_err(|e| err("preparing the store", e))?;
            // What a killed command staged: no one else can be staging now.
            store
                .dir
                .remove("tmp")
                .map_err(|e| err("clearing tmp/", e))?;
            store
                .dir
                .make_sub("tmp", 0o700)
                .map_err(|e| err("tmp/", e))?;
        }
        Ok(store)
    }

    fn lay_out(&self) -> io::Result<()> {
        if !self.dir.exists("oci-layout") {
            self.dir.write_atomic("oci-layout", OCI_LAYOUT)?;
        }
        if !self.dir.exists("index.json") {
            self.write_index(&[]).map_err(io::Error::other)?;
        }
        self.dir
            .make_sub("blobs", 0o755)?
            .make_sub("sha256", 0o755)?;
        self.dir.make_sub("overlay2", 0o700)?.make_sub("l", 0o755)?;
        Ok(())
    }

    pub fn blobs(&self) -> io::Result<Dir> {
        self.dir.sub("blobs")?.sub("sha256")
    }

    pub fn layers(&self) -> io::Result<Dir> {
        self.dir.sub("overlay2")
    }

    pub fn tmp(&self) -> io::Result<Dir> {
        self.dir.sub("tmp")
    }

    /// The path of a layer (or container) directory, for mount options and messages.
    pub fn layer_path(&self, id: &str) -> PathBuf {
        self.root.join("overlay2").join(id)
    }

    pub fn has_blob(&self, d: &str) -> bool {
        match (digest::hex_of(d), self.blobs()) {
            (Ok(h), Ok(b)) => b.exists(h),
            _ => false,
        }
    }

    /// A blob's bytes, checked against its digest.
    pub fn read_blob(&self, d: &str) -> Result<Vec<u8>, String> {
        let h = digest::hex_of(d)?;
        let data = self
            .blobs()
            .and_then(|b| b.read(h))
            .map_err(|e| format!("blob {d}: {e}"))?;
        if digest::of(&data) != d {
            return Err(format!("blob {d} is corrupt (its digest differs)"));
        }
        Ok(data)
    }

    /// The blob file, for streaming.
    pub fn open_blob(&self, d: &str) -> Result<std::fs::File, String> {
        let h = digest::hex_of(d)?;
        self.blobs()
            .and_then(|b| b.open(h))
            .map_err(|e| format!("blob {d}: {e}"))
    }

    /// Writes a small blob (a config, a manifest) unless the store has it.
    pub fn put_blob(&self, data: &[u8]) -> Result<String, String> {
        let d = digest::of(data);
        if !self.has_blob(&d) {
            let h = digest::hex_of(&d)?;
            self.blobs()
                .and_then(|b| b.write_atomic(h, data))
                .map_err(|e| format!("writing blob {d}: {e}"))?;
        }
        Ok(d)
    }

    /// The manifests of `index.json`.
    pub fn index(&self) -> Result<Vec<Value>, String> {
        if !self.dir.exists("index.json") {
            return Ok(Vec::new());
        }
        let raw = self
            .dir
            .read("index.json")
            .map_err(|e| err("index.json", e))?;
        let v: Value =
            serde_json::from_slice(&raw).map_err(|e| format!("index.json is corrupt: {e}"))?;
        Ok(v["manifests"].as_array().cloned().unwrap_or_default())
    }

    pub fn write_index(&self, manifests: &[Value]) -> Result<(), String> {
        let v = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
        let bytes = serde_json::to_vec_pretty(&v).map_err(|e| e.to_string())?;
        self.dir
            .write_atomic("index.json", &bytes)
            .map_err(|e| err("writing index.json", e))
    }

    /// Every image of the index, one per manifest, with all its names.
    pub fn images(&self) -> Result<Vec<Image>, String> {
        let mut out: Vec<Image> = Vec::new();
        for m in self.index()? {
            let Some(md) = m["digest"].as_str() else {
                continue;
            };
            let name = m["annotations"][REF_NAME].as_str().map(String::from);
            if let Some(img) = out.iter_mut().find(|i| i.manifest_digest == md) {
                img.names.extend(name);
                continue;
            }
            let manifest: Value = serde_json::from_slice(&self.read_blob(md)?)
                .map_err(|e| format!("manifest {md}: {e}"))?;
            let cd = manifest["config"]["digest"]
                .as_str()
                .ok_or_else(|| format!("manifest {md} names no config"))?
                .to_string();
            let config_bytes = self.read_blob(&cd)?;
            let config: Value =
                serde_json::from_slice(&config_bytes).map_err(|e| format!("config {cd}: {e}"))?;
            out.push(Image {
                manifest_digest: md.to_string(),
                names: name.into_iter().collect(),
                manifest,
                config_digest: cd,
                config,
                config_bytes,
            });
        }
        Ok(out)
    }

    /// The image a reference names: `NAME[:TAG]` (`:latest` by default; `localhost/`
    /// and `docker.io/library/` may be left out), or an ID or its prefix.
    pub fn resolve(&self, reference: &str) -> Result<Image, String> {
        let images = self.images()?;
        if let Some(i) = images.iter().find(|i| i.manifest_digest == reference) {
            return Ok(i.clone());
        }
        let full = normalize_name(reference);
        let (repo, tag) = split_tag(&full);
        let short = repo.trim_start_matches("localhost/");
        // `busybox` also finds `docker.io/library/busybox`, as docker would.
        let alts = [
            full.clone(),
            format!("docker.io/library/{short}:{}", tag.unwrap_or("latest")),
            format!("docker.io/{short}:{}", tag.unwrap_or("latest")),
        ];
        if let Some(i) = images
            .iter()
            .find(|i| i.names.iter().any(|n| alts.contains(n)))
        {
            return Ok(i.clone());
        }
        let short = reference.trim_start_matches("sha256:");
        if short.len() >= 3 && short.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hits: Vec<&Image> = images
                .iter()
                .filter(|i| i.id().starts_with(short))
                .collect();
            match hits.first() {
                // (One config under two manifests is one image, as podman shows it.)
                Some(h) if hits.iter().all(|x| x.id() == h.id()) => return Ok((*h).clone()),
                Some(_) => return Err(format!("'{reference}' names more than one image")),
                None => {}
            }
        }
        Err(format!("no image '{reference}' in the store"))
    }

    /// Adds `name` to the image with manifest `manifest` (of `size` bytes), taking the
    /// name from any image that had it; `None` adds an untagged entry if the image has
    /// none.
    pub fn tag(&self, manifest: &str, size: u64, name: Option<&str>) -> Result<(), String> {
        let before = self.index()?;
        let mut idx = before.clone();
        let entry = |n: Option<&str>| {
            let mut e = json!({"mediaType": MANIFEST_OCI, "digest": manifest, "size": size});
            if let Some(n) = n {
                e["annotations"] = json!({ REF_NAME: n });
            }
            e
        };
        match name {
            Some(n) => {
                let n = normalize_name(n);
                idx.retain(|m| m["annotations"][REF_NAME].as_str() != Some(&n));
                // The image no longer needs an untagged entry.
                idx.retain(|m| {
                    !(m["digest"].as_str() == Some(manifest)
                        && m["annotations"][REF_NAME].is_null())
                });
                idx.push(entry(Some(&n)));
            }
            None => {
                if !idx.iter().any(|m| m["digest"].as_str() == Some(manifest)) {
                    idx.push(entry(None));
                }
            }
        }
        // An image left without any entry stays as an untagged one (`<none>`).
        for mut m in before {
            let d = m["digest"].as_str().unwrap_or_default().to_string();
            if !idx.iter().any(|x| x["digest"].as_str() == Some(&d)) {
                if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
                    a.remove(REF_NAME);
                }
                idx.push(m);
            }
        }
        self.write_index(&idx)
    }

    /// Layers of the store (directories keyed by ChainID hex).
    pub fn layer_dir(&self, chain: &str) -> Result<Option<Dir>, String> {
        let h = digest::hex_of(chain)?;
        let layers = self.layers().map_err(|e| err("overlay2/", e))?;
        match layers.sub(h) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(err(&format!("layer {h}"), e)),
        }
    }

    /// The short name (`l/<link>`) of a layer directory.
    pub fn link_of(&self, id: &str) -> Result<String, String> {
        let d = self
            .layers()
            .and_then(|l| l.sub(id))
            .and_then(|d| d.read("link"))
            .map_err(|e| err(&format!("layer {id}"), e))?;
        Ok(String::from_utf8_lossy(&d).trim().to_string())
    }
}

/// `busybox` → `localhost/busybox:latest`; names with a registry keep it.
pub fn normalize_name(name: &str) -> String {
    let (repo, tag) = split_tag(name);
    let repo = if repo.contains('/') && {
        let first = repo.split('/').next().unwrap_or_default();
        first.contains('.') || first.contains(':') || first == "localhost"
    } {
        repo.to_string()
    } else {
        format!("localhost/{repo}")
    };
    format!("{repo}:{}", tag.unwrap_or("latest"))
}

/// `repo:tag` → (`repo`, `Some(tag)`); a `:` in a registry port is not a tag.
pub fn split_tag(name: &str) -> (&str, Option<&str>) {
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => (&name[..i], Some(&name[i + 1..])),
        _ => (name, None),
    }
}

/// The short link name of a layer: 26 characters of `[A-Z0-9]`, derived from its id.
pub fn short_link(id: &str) -> String {
    use sha2::{Digest as _, Sha256};
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let h = Sha256::digest(format!("link:{id}").as_bytes());
    h.iter()
        .take(26)
        .map(|b| ALPHA[*b as usize % ALPHA.len()] as char)
        .collect()
}
