//! `stratafs image export`: an image of the store as a docker-archive (what `podman
//! load` and `docker load` read: `manifest.json`, the config, one uncompressed tar per
//! layer named by its DiffID), an oci-archive, or an OCI directory. Blobs go out byte
//! for byte, so an image imported and exported unchanged keeps its ID and digests.
//! The output is written under a temporary name beside it and renamed when complete.

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::Path;

use serde_json::json;

use super::digest;
use super::import::{compression_of, decompress};
use super::progress::Progress;
use super::store::{self, Image, Store};

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Format {
    DockerArchive,
    OciArchive,
    Oci,
}

fn header(size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn add_bytes<W: Write>(t: &mut tar::Builder<W>, name: &str, data: &[u8]) -> io::Result<()> {
    let mut h = header(data.len() as u64, 0o644);
    t.append_data(&mut h, name, data)
}

fn index_json(img: &Image, store: &Store) -> Result<Vec<u8>, String> {
    let size = store.read_blob(&img.manifest_digest)?.len();
    let mut desc =
        json!({"mediaType": store::MANIFEST_OCI, "digest": img.manifest_digest, "size": size});
    if let Some(n) = img.names.first() {
        desc["annotations"] = json!({ store::REF_NAME: n });
    }
    serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [desc]})).map_err(|e| e.to_string())
}

/// Every blob the image's manifest names, manifest included.
fn blobs_of(img: &Image) -> Vec<String> {
    let mut v = vec![img.manifest_digest.clone(), img.config_digest.clone()];
    for l in img.layer_descriptors() {
        if let Some(d) = l["digest"].as_str() {
            v.push(d.to_string());
        }
    }
    v
}

/// Puts each file of the image's OCI layout (`oci-layout`, `index.json`,
/// `blobs/sha256/<hex>`) through `put(name, data, size)`: into a tar or a directory.
fn oci_layout(
    store: &Store,
    img: &Image,
    progress: &mut Progress,
    put: &mut dyn FnMut(&str, &mut dyn io::Read, u64) -> io::Result<()>,
) -> Result<(), String> {
    let e = |x: io::Error| x.to_string();
    let layout = store::OCI_LAYOUT;
    put("oci-layout", &mut &layout[..], layout.len() as u64).map_err(e)?;
    let index = index_json(img, store)?;
    put("index.json", &mut &index[..], index.len() as u64).map_err(e)?;
    for d in blobs_of(img) {
        let mut f = store.open_blob(&d)?;
        let size = f.metadata().map_err(e)?.len();
        progress.step("Writing", &d, size);
        put(
            &format!("blobs/sha256/{}", digest::hex_of(&d)?),
            &mut f,
            size,
        )
        .map_err(e)?;
    }
    Ok(())
}

pub fn export(
    store: &Store,
    reference: &str,
    out: &Path,
    format: Format,
    progress: &mut Progress,
) -> Result<(), String> {
    let img = store.resolve(reference)?;
    let name = out
        .file_name()
        .ok_or_else(|| format!("{}: not a file name", out.display()))?;
    let tmp = out.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = match format {
        Format::Oci => write_oci_dir(store, &img, &tmp, progress),
        _ => File::create(&tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))
            .and_then(|f| {
                let mut t = tar::Builder::new(io::BufWriter::new(f));
                match format {
                    Format::DockerArchive => write_docker(store, &img, &mut t, progress)?,
                    _ => write_oci_tar(store, &img, &mut t, progress)?,
                }
                let w = t.into_inner().map_err(|e| e.to_string())?;
                let f = w.into_inner().map_err(|e| e.to_string())?;
                f.sync_all().map_err(|e| e.to_string())
            }),
    };
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp).or_else(|_| std::fs::remove_dir_all(&tmp));
        return Err(e);
    }
    if format == Format::Oci && out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| format!("{}: {e}", out.display()))?;
    progress.done(&format!(
        "exported {} to {}",
        img.names
            .first()
            .map(String::as_str)
            .unwrap_or(&img.id()[..12]),
        out.display()
    ));
    Ok(())
}

fn write_oci_tar<W: Write>(
    store: &Store,
    img: &Image,
    t: &mut tar::Builder<W>,
    progress: &mut Progress,
) -> Result<(), String> {
    oci_layout(store, img, progress, &mut |name, data, size| {
        t.append_data(&mut header(size, 0o644), name, data)
    })
}

fn write_oci_dir(
    store: &Store,
    img: &Image,
    dir: &Path,
    progress: &mut Progress,
) -> Result<(), String> {
    std::fs::create_dir_all(dir.join("blobs/sha256"))
        .map_err(|x| format!("{}: {x}", dir.display()))?;
    oci_layout(store, img, progress, &mut |name, data, _| {
        io::copy(data, &mut File::create(dir.join(name))?).map(drop)
    })
    .map_err(|x| format!("{}: {x}", dir.display()))
}

fn write_docker<W: Write>(
    store: &Store,
    img: &Image,
    t: &mut tar::Builder<W>,
    progress: &mut Progress,
) -> Result<(), String> {
    let e = |x: io::Error| x.to_string();
    let diff_ids = img.diff_ids();
    let mut layer_names = Vec::new();
    let spool = store.tmp().map_err(e)?;
    for (i, l) in img.layer_descriptors().iter().enumerate() {
        let d = l["digest"].as_str().ok_or("a layer without a digest")?;
        let diff_id = diff_ids.get(i).ok_or("fewer DiffIDs than layers")?;
        let name = format!("{}.tar", digest::hex_of(diff_id)?);
        let c = compression_of(l["mediaType"].as_str().unwrap_or(store::LAYER_TAR))?;
        let f = store.open_blob(d)?;
        progress.step("Writing", diff_id, f.metadata().map_err(e)?.len());
        if d == diff_id {
            let size = f.metadata().map_err(e)?.len();
            let mut h = header(size, 0o644);
            t.append_data(&mut h, &name, f).map_err(e)?;
        } else {
            // A compressed blob: uncompressed to a spool file first (a tar header
            // needs the size before the data).
            let spool_name = format!("export-{}-{i}.tar", std::process::id());
            let mut out = spool.create(&spool_name, 0o600).map_err(e)?;
            let mut r = decompress(BufReader::new(f), c)?;
            io::copy(&mut r, &mut out).map_err(|x| format!("layer {d}: {x}"))?;
            drop(out);
            let back = spool.open(&spool_name).map_err(e)?;
            let size = back.metadata().map_err(e)?.len();
            let mut h = header(size, 0o644);
            t.append_data(&mut h, &name, back).map_err(e)?;
            let _ = spool.remove(&spool_name);
        }
        layer_names.push(name);
    }
    let config_name = format!("{}.json", img.id());
    add_bytes(t, &config_name, &img.config_bytes).map_err(e)?;
    let manifest = json!([{"Config": config_name, "RepoTags": img.names, "Layers": layer_names}]);
    add_bytes(
        t,
        "manifest.json",
        &serde_json::to_vec(&manifest).map_err(|x| x.to_string())?,
    )
    .map_err(e)?;
    let mut repos = serde_json::Map::new();
    for n in &img.names {
        let (r, tag) = store::split_tag(n);
        let top = digest::hex_of(diff_ids.last().map(String::as_str).unwrap_or_default())
            .unwrap_or_default();
        repos.entry(r.to_string()).or_insert_with(|| json!({}))[tag.unwrap_or("latest")] =
            json!(top);
    }
    add_bytes(
        t,
        "repositories",
        &serde_json::to_vec(&repos).map_err(|x| x.to_string())?,
    )
    .map_err(e)?;
    Ok(())
}
