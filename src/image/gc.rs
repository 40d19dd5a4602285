//! `stratafs system gc` and `system df`: what the store holds, and removing what no
//! image or container uses (layers, blobs, `l/` links, leftovers in `tmp/`).

use std::collections::HashSet;

use super::container;
use super::digest;
use super::progress::human;
use super::store::Store;

/// Layer ids and blob digests in use.
fn in_use(store: &Store) -> Result<(HashSet<String>, HashSet<String>), String> {
    let mut layers = HashSet::new();
    let mut blobs = HashSet::new();
    for img in store.images()? {
        blobs.insert(img.manifest_digest.clone());
        blobs.insert(img.config_digest.clone());
        for l in img.layer_descriptors() {
            if let Some(d) = l["digest"].as_str() {
                blobs.insert(d.to_string());
            }
        }
        for c in img.chain_ids() {
            layers.insert(digest::hex_of(&c)?.to_string());
        }
    }
    for c in container::list(store)? {
        layers.insert(c.id.clone());
    }
    Ok((layers, blobs))
}

/// Removes what nothing uses; returns what was removed, a line each.
pub fn gc(store: &Store) -> Result<Vec<String>, String> {
    let (layers, blobs) = in_use(store)?;
    let mut removed = Vec::new();
    let ldir = store.layers().map_err(|e| format!("overlay2/: {e}"))?;
    for name in ldir.names().map_err(|e| e.to_string())? {
        if name == "l" || layers.contains(&name) {
            continue;
        }
        super::layers::remove(store, &name)?;
        removed.push(format!("layer {name}"));
    }
    if let Ok(l) = ldir.sub("l") {
        for link in l.names().unwrap_or_default() {
            // A link is `../<id>/diff`: alive while layer <id> is there.
            let target = super::fsdir::cname(&link)
                .ok()
                .and_then(|c| crate::sys::readlinkat(l.fd(), &c).ok())
                .map(|t| String::from_utf8_lossy(&t).into_owned());
            let alive = target.as_deref().is_some_and(|t| {
                t.strip_prefix("../")
                    .and_then(|r| r.strip_suffix("/diff"))
                    .is_some_and(|id| !id.contains('/') && ldir.exists(id))
            });
            if !alive {
                let _ = l.remove(&link);
                removed.push(format!("link l/{link}"));
            }
        }
    }
    let bdir = store.blobs().map_err(|e| format!("blobs/: {e}"))?;
    for hex in bdir.names().map_err(|e| e.to_string())? {
        if !blobs.contains(&format!("sha256:{hex}")) {
            bdir.remove(&hex).map_err(|e| e.to_string())?;
            removed.push(format!("blob sha256:{hex}"));
        }
    }
    if let Ok(t) = store.tmp() {
        for n in t.names().unwrap_or_default() {
            let _ = t.remove(&n);
            removed.push(format!("tmp/{n}"));
        }
    }
    Ok(removed)
}

/// `system df`: images, containers, layers and blobs with their sizes.
pub fn df(store: &Store) -> Result<String, String> {
    let images = store.images()?;
    let containers = container::list(store)?;
    let ldir = store.layers().map_err(|e| e.to_string())?;
    let (in_layers, _) = in_use(store)?;
    let mut layer_bytes = 0;
    let mut layer_n = 0;
    for name in ldir.names().unwrap_or_default() {
        if name == "l" || !in_layers.contains(&name) || containers.iter().any(|c| c.id == name) {
            continue;
        }
        layer_n += 1;
        layer_bytes += ldir.sub(&name).map(|d| d.disk_usage()).unwrap_or(0);
    }
    let cont_bytes: u64 = containers
        .iter()
        .map(|c| {
            ldir.sub(&c.id)
                .and_then(|d| d.sub("diff"))
                .map(|d| d.disk_usage())
                .unwrap_or(0)
        })
        .sum();
    let blob_bytes = store.blobs().map(|b| b.disk_usage()).unwrap_or(0);
    Ok(format!(
        "TYPE            TOTAL     SIZE\nImages          {:<9} {}\nLayers          {:<9} {}\nContainers      {:<9} {}\nBlobs           {:<9} {}",
        images.len(),
        human(layer_bytes + blob_bytes),
        layer_n,
        human(layer_bytes),
        containers.len(),
        human(cont_bytes),
        store.blobs().and_then(|b| b.names()).map(|v| v.len()).unwrap_or(0),
        human(blob_bytes)
    ))
}
