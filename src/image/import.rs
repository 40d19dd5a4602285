//! `stratafs image import`: an image archive (docker-archive as `podman save` and
//! `docker save` write it, oci-archive, an OCI directory; standard input as `-`) into
//! the store. Every digest, size, media type and DiffID is verified; blobs are kept
//! byte for byte, so the image ID is the one podman shows; layers the store has are
//! not unpacked again. Everything is staged in `tmp/` and moved into place at the end.

use std::io::{self, BufRead, BufReader, Read, Write};

use serde_json::{json, Value};

use super::archive::Source;
use super::digest::{self, HashingReader, HashingWriter, TeeReader};
use super::extract::{self, Options, Report};
use super::fsdir::Dir;
use super::layers::{self, Staged};
use super::progress::Progress;
use super::store::{self, Store};

/// The compression of a layer blob.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The compression a layer media type names, or an error for one that is not a layer.
pub fn compression_of(media: &str) -> Result<Compression, String> {
    Ok(match media {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Compression::None,
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Compression::Zstd,
        other => return Err(format!("unsupported layer media type '{other}'")),
    })
}

fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// A reader of the uncompressed tar inside `r`.
pub fn decompress<'a>(r: impl BufRead + 'a, c: Compression) -> Result<Box<dyn Read + 'a>, String> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(r)
                .map_err(|e| format!("corrupt zstd layer: {e}"))?,
        ),
    })
}

/// One layer to bring in: where its blob is in the source and what it must be.
struct LayerIn {
    member: String,
    /// The digest the manifest gives (none in a docker-archive: there the tar's own
    /// digest is its DiffID).
    digest: Option<String>,
    size: Option<u64>,
    compression: Option<Compression>,
    media: Option<String>,
}

/// An image found in the source.
struct ImageIn {
    manifest_bytes: Option<Vec<u8>>,
    config_bytes: Vec<u8>,
    config_media: String,
    layers: Vec<LayerIn>,
    names: Vec<String>,
}

fn parse_json(bytes: &[u8], what: &str) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("{what} is not valid JSON: {e}"))
}

/// Reads a blob of an OCI layout, checked against its descriptor.
fn oci_blob(src: &Source, desc: &Value, what: &str) -> Result<Vec<u8>, String> {
    let d = desc["digest"]
        .as_str()
        .ok_or_else(|| format!("{what}: no digest"))?;
    let hex = digest::hex_of(d)?;
    let bytes = src.read_small(&format!("blobs/sha256/{hex}"))?;
    if digest::of(&bytes) != d {
        return Err(format!("{what} {d}: digest mismatch"));
    }
    if desc["size"].as_u64() != Some(bytes.len() as u64) {
        return Err(format!(
            "{what} {d}: size mismatch ({} bytes, descriptor says {})",
            bytes.len(),
            desc["size"]
        ));
    }
    Ok(bytes)
}

fn read_oci(src: &Source) -> Result<Vec<ImageIn>, String> {
    let index = parse_json(&src.read_small("index.json")?, "index.json")?;
    let mut out = Vec::new();
    for desc in index["manifests"].as_array().cloned().unwrap_or_default() {
        let mut desc = desc;
        let mut bytes = oci_blob(src, &desc, "manifest")?;
        let mut m = parse_json(&bytes, "the manifest")?;
        let media = m["mediaType"]
            .as_str()
            .or(desc["mediaType"].as_str())
            .unwrap_or_default()
            .to_string();
        if media.contains("index") || media.contains("manifest.list") {
            // An image index: the linux/amd64 image, or else the first.
            let list = m["manifests"].as_array().cloned().unwrap_or_default();
            let pick = list
                .iter()
                .find(|x| {
                    x["platform"]["architecture"] == "amd64" && x["platform"]["os"] == "linux"
                })
                .or(list.first())
                .cloned()
                .ok_or("an empty image index")?;
            if let Some(a) = desc.get("annotations").cloned() {
                desc = pick.clone();
                desc["annotations"] = a;
            } else {
                desc = pick.clone();
            }
            bytes = oci_blob(src, &pick, "manifest")?;
            m = parse_json(&bytes, "the manifest")?;
        }
        let cdesc = &m["config"];
        let config_media = cdesc["mediaType"].as_str().unwrap_or_default().to_string();
        if !matches!(
            config_media.as_str(),
            store::CONFIG_OCI | "application/vnd.docker.container.image.v1+json"
        ) {
            return Err(format!("unsupported config media type '{config_media}'"));
        }
        let config_bytes = oci_blob(src, cdesc, "config")?;
        let mut layers = Vec::new();
        for l in m["layers"].as_array().cloned().unwrap_or_default() {
            let d = l["digest"]
                .as_str()
                .ok_or("a layer without a digest")?
                .to_string();
            let media = l["mediaType"].as_str().unwrap_or_default().to_string();
            let c = compression_of(&media).map_err(|e| format!("layer {d}: {e}"))?;
            layers.push(LayerIn {
                member: format!("blobs/sha256/{}", digest::hex_of(&d)?),
                size: Some(
                    l["size"]
                        .as_u64()
                        .ok_or_else(|| format!("layer {d}: no size"))?,
                ),
                digest: Some(d),
                compression: Some(c),
                media: Some(media),
            });
        }
        let names = desc["annotations"][store::REF_NAME]
            .as_str()
            .filter(|n| n.contains(':') || n.contains('/'))
            .or(desc["annotations"]["io.containerd.image.name"].as_str())
            .map(|n| vec![store::normalize_name(n)])
            .unwrap_or_default();
        out.push(ImageIn {
            manifest_bytes: Some(bytes),
            config_bytes,
            config_media,
            layers,
            names,
        });
    }
    Ok(out)
}

fn read_docker(src: &Source) -> Result<Vec<ImageIn>, String> {
    let manifest = parse_json(&src.read_small("manifest.json")?, "manifest.json")?;
    let mut out = Vec::new();
    for m in manifest.as_array().cloned().unwrap_or_default() {
        let cfg = m["Config"]
            .as_str()
            .ok_or("manifest.json: an entry without Config")?;
        let config_bytes = src.read_small(cfg)?;
        // The config's file name is its digest, when the archive names it so.
        let stem = cfg
            .rsplit('/')
            .next()
            .unwrap_or(cfg)
            .trim_end_matches(".json");
        if stem.len() == 64
            && stem.bytes().all(|b| b.is_ascii_hexdigit())
            && digest::of(&config_bytes) != format!("sha256:{stem}")
        {
            return Err(format!("config {cfg}: digest mismatch"));
        }
        let layers = m["Layers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|l| {
                Ok(LayerIn {
                    member: l
                        .as_str()
                        .ok_or("manifest.json: a layer that is not a name")?
                        .to_string(),
                    digest: None,
                    size: None,
                    compression: None,
                    media: None,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let names = m["RepoTags"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|t| t.as_str().map(store::normalize_name))
            .collect();
        out.push(ImageIn {
            manifest_bytes: None,
            config_bytes,
            config_media: store::CONFIG_OCI.into(),
            layers,
            names,
        });
    }
    Ok(out)
}

/// A reader that counts what it read (the progress of a layer being unpacked).
struct Counted<R> {
    inner: R,
    read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

/// Where a layer goes: what it must be (its DiffID), its ChainID, the ids of the
/// layers below (topmost first) and their `diff/` directories.
struct Place<'a> {
    diff_id: &'a str,
    chain: &'a str,
    below: &'a [String],
    lower_diffs: &'a [Dir],
}

/// The import's working state: what is staged, for the final moves.
struct Job<'a> {
    store: &'a Store,
    tmp: Dir,
    seq: usize,
    /// Staged blobs: (name in tmp/, digest).
    blobs: Vec<(String, String)>,
    /// Staged layers: (staged, id, ids below topmost first).
    layers: Vec<(Staged, String, Vec<String>)>,
    opt: Options,
}

/// The default cap on what one layer unpacks to (`STRATAFS_MAX_LAYER_BYTES`).
pub fn max_layer_bytes() -> u64 {
    std::env::var("STRATAFS_MAX_LAYER_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64 << 30)
}

impl Job<'_> {
    fn staged_has_blob(&self, d: &str) -> bool {
        self.store.has_blob(d) || self.blobs.iter().any(|(_, x)| x == d)
    }

    /// Brings in one layer: keeps its blob, checks its digests, unpacks it unless the
    /// store already has it. Returns the blob's descriptor.
    fn layer(
        &mut self,
        src: &Source,
        l: &LayerIn,
        at: &Place,
        progress: &mut Progress,
    ) -> Result<Value, String> {
        let Place {
            diff_id,
            chain,
            below,
            lower_diffs,
        } = *at;
        let (raw, size) = src.reader(&l.member)?;
        // How far into the blob the unpacking is, for the progress bar.
        let read = std::rc::Rc::new(std::cell::Cell::new(0u64));
        let mut raw = Counted {
            inner: raw,
            read: read.clone(),
        };
        if let Some(s) = l.size {
            if s != size {
                return Err(format!(
                    "layer {}: size mismatch ({size} bytes, manifest says {s})",
                    l.member
                ));
            }
        }
        let id = digest::hex_of(chain)?.to_string();
        let have_layer =
            self.store.layer_dir(chain)?.is_some() || self.layers.iter().any(|(_, i, _)| *i == id);
        let keep_blob = !l.digest.as_deref().is_some_and(|d| self.staged_has_blob(d));
        self.seq += 1;
        let blob_name = format!("blob-{}", self.seq);
        let sink: Box<dyn Write> = if keep_blob {
            Box::new(io::BufWriter::new(
                self.tmp
                    .create(&blob_name, 0o644)
                    .map_err(|e| format!("staging a blob: {e}"))?,
            ))
        } else {
            Box::new(io::sink())
        };
        let mut copy = HashingWriter::new(sink);
        let staged = if have_layer {
            None
        } else {
            Some(layers::stage(self.store, &format!("layer-{}", self.seq))?)
        };
        progress.step(
            if have_layer { "Checking" } else { "Unpacking" },
            l.digest.as_deref().unwrap_or(diff_id),
            size,
        );
        let mut report = Report::default();
        let got_diff_id;
        let used;
        {
            let tee = TeeReader {
                inner: &mut raw,
                copy: &mut copy,
            };
            let mut buffered = BufReader::with_capacity(1 << 16, tee);
            let head = buffered
                .fill_buf()
                .map_err(|e| format!("layer {}: {e}", l.member))?;
            let found = sniff(head);
            let c = match l.compression {
                Some(c)
                    if c != found && !(c == Compression::None && found != Compression::None) =>
                {
                    return Err(format!(
                        "layer {}: the data is not {:?} as its media type says",
                        l.member, c
                    ))
                }
                Some(c) => c,
                None => found,
            };
            used = c;
            let tar = decompress(buffered, c).map_err(|e| format!("layer {}: {e}", l.member))?;
            let mut hashed = HashingReader::new(tar);
            match &staged {
                Some(s) => {
                    let mut tick = |_n: u64| progress.set(read.get());
                    extract::unpack(
                        &mut hashed,
                        &s.diff,
                        lower_diffs,
                        &self.opt,
                        &mut report,
                        &mut tick,
                    )
                    .map_err(|e| format!("layer {}: {e}", short(diff_id)))?;
                }
                None => {
                    io::copy(&mut hashed, &mut io::sink())
                        .map_err(|e| format!("layer {}: {e}", l.member))?;
                }
            }
            let (d, _, _) = hashed
                .finish()
                .map_err(|e| format!("layer {}: corrupt or truncated: {e}", l.member))?;
            got_diff_id = d;
        }
        io::copy(
            &mut TeeReader {
                inner: &mut raw,
                copy: &mut copy,
            },
            &mut io::sink(),
        )
        .map_err(|e| format!("layer {}: {e}", l.member))?;
        progress.set(size);
        let (blob_digest, blob_size, mut w) = copy.finish();
        w.flush().map_err(|e| format!("staging a blob: {e}"))?;
        drop(w);
        if let Some(d) = &l.digest {
            if *d != blob_digest {
                return Err(format!(
                    "layer {d}: digest mismatch (the blob's is {blob_digest})"
                ));
            }
        }
        if got_diff_id != diff_id {
            return Err(format!(
                "layer {}: DiffID mismatch (the config says {diff_id}, the layer is {got_diff_id})",
                l.member
            ));
        }
        for w in &report.warnings {
            progress.note(&format!("warning: {w}"));
        }
        if keep_blob && !self.staged_has_blob(&blob_digest) {
            if let Ok(f) = self.tmp.open(&blob_name) {
                let _ = f.sync_all();
            }
            self.blobs.push((blob_name, blob_digest.clone()));
        }
        if let Some(s) = staged {
            self.layers.push((s, id, below.to_vec()));
        }
        let media = l.media.clone().unwrap_or_else(|| {
            match used {
                Compression::None => store::LAYER_TAR,
                Compression::Gzip => store::LAYER_GZIP,
                Compression::Zstd => store::LAYER_ZSTD,
            }
            .to_string()
        });
        Ok(json!({"mediaType": media, "digest": blob_digest, "size": blob_size}))
    }

    /// Moves everything staged into place: blobs, then layers (bottom first).
    fn commit(self) -> Result<(), String> {
        let blobs = self.store.blobs().map_err(|e| format!("blobs/: {e}"))?;
        for (name, d) in &self.blobs {
            let hex = digest::hex_of(d)?;
            if !blobs.exists(hex) {
                self.tmp
                    .rename(name, &blobs, hex)
                    .map_err(|e| format!("placing blob {d}: {e}"))?;
            }
        }
        blobs.sync().map_err(|e| format!("blobs/: {e}"))?;
        for (staged, id, below) in self.layers {
            layers::place(self.store, staged, &id, &below, false)?;
        }
        Ok(())
    }
}

fn short(d: &str) -> &str {
    d.trim_start_matches("sha256:").get(..12).unwrap_or(d)
}

/// Imports the archive at `path` into `store`; returns the lines to print (`Loaded
/// image: NAME`).
pub fn import(
    store: &Store,
    path: &str,
    name: Option<&str>,
    progress: &mut Progress,
) -> Result<Vec<String>, String> {
    let spool = store.tmp().map_err(|e| format!("tmp/: {e}"))?;
    let src = Source::open(path, &spool)?;
    let images = if src.has("index.json") && src.has("oci-layout") {
        read_oci(&src)?
    } else if src.has("manifest.json") {
        read_docker(&src)?
    } else {
        return Err(format!("{path}: neither an OCI layout (index.json, oci-layout) nor a docker-archive (manifest.json)"));
    };
    if images.is_empty() {
        return Err(format!("{path}: the archive holds no image"));
    }
    if name.is_some() && images.len() > 1 {
        return Err("--name needs an archive of one image".into());
    }
    let mut job = Job {
        store,
        tmp: store.tmp().map_err(|e| format!("tmp/: {e}"))?,
        seq: 0,
        blobs: Vec::new(),
        layers: Vec::new(),
        opt: Options {
            rootless: crate::sys::geteuid() != 0,
            max_bytes: max_layer_bytes(),
        },
    };
    let mut tags: Vec<(String, u64, Option<String>)> = Vec::new();
    let mut loaded = Vec::new();
    let mut total_layers = 0;
    for img in &images {
        let config = parse_json(&img.config_bytes, "the config")?;
        let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
            .as_array()
            .ok_or("the config has no rootfs.diff_ids")?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .ok_or("a DiffID that is not a string")
            })
            .collect::<Result<_, _>>()?;
        for d in &diff_ids {
            digest::hex_of(d)?;
        }
        if diff_ids.len() != img.layers.len() {
            return Err(format!(
                "the manifest lists {} layers, the config {} DiffIDs",
                img.layers.len(),
                diff_ids.len()
            ));
        }
        let chains = digest::chain_ids(&diff_ids);
        let mut descs = Vec::new();
        let mut lower_diffs: Vec<Dir> = Vec::new();
        for (i, l) in img.layers.iter().enumerate() {
            let below: Vec<String> = chains[..i]
                .iter()
                .rev()
                .map(|c| digest::hex_of(c).map(String::from))
                .collect::<Result<_, _>>()?;
            let at = Place {
                diff_id: &diff_ids[i],
                chain: &chains[i],
                below: &below,
                lower_diffs: &lower_diffs,
            };
            let desc = job.layer(&src, l, &at, progress)?;
            descs.push(desc);
            // This layer's files, for hard links of the layers above into it.
            let id = digest::hex_of(&chains[i])?;
            let d = match job.layers.iter().find(|(_, x, _)| x == id) {
                Some((s, _, _)) => s.diff.sub_c(c"").or_else(|_| s.dir.sub("diff")),
                None => store
                    .layers()
                    .and_then(|l| l.sub(id))
                    .and_then(|d| d.sub("diff")),
            }
            .map_err(|e| format!("layer {id}: {e}"))?;
            lower_diffs.insert(0, d);
            total_layers += 1;
        }
        let config_digest = digest::of(&img.config_bytes);
        job.blobs_small(&img.config_bytes)?;
        let manifest_bytes = match &img.manifest_bytes {
            Some(b) => b.clone(),
            None => serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": store::MANIFEST_OCI,
                "config": {"mediaType": img.config_media, "digest": config_digest, "size": img.config_bytes.len()},
                "layers": descs,
            }))
            .map_err(|e| e.to_string())?,
        };
        let md = job.blobs_small(&manifest_bytes)?;
        let names: Vec<String> = match name {
            Some(n) => vec![store::normalize_name(n)],
            None => img.names.clone(),
        };
        if names.is_empty() {
            tags.push((md.clone(), manifest_bytes.len() as u64, None));
            loaded.push(format!("Loaded image: {config_digest}"));
        }
        for n in names {
            loaded.push(format!("Loaded image: {n}"));
            tags.push((md.clone(), manifest_bytes.len() as u64, Some(n)));
        }
    }
    job.commit()?;
    for (md, size, n) in tags {
        store.tag(&md, size, n.as_deref())?;
    }
    let _ = spool.remove("stdin.tar");
    progress.done(&format!(
        "imported {} image(s), {total_layers} layer(s)",
        images.len()
    ));
    Ok(loaded)
}

impl Job<'_> {
    /// Stages a small blob (a config, a manifest) for the final moves.
    fn blobs_small(&mut self, data: &[u8]) -> Result<String, String> {
        let d = digest::of(data);
        if !self.staged_has_blob(&d) {
            self.seq += 1;
            let name = format!("blob-{}", self.seq);
            let mut f = self
                .tmp
                .create(&name, 0o644)
                .map_err(|e| format!("staging a blob: {e}"))?;
            f.write_all(data)
                .and_then(|_| f.sync_all())
                .map_err(|e| format!("staging a blob: {e}"))?;
            self.blobs.push((name, d.clone()));
        }
        Ok(d)
    }
}
