//! Containers: an image plus a writable layer of the store's own form
//! (`overlay2/<id>/{diff/,link,lower,work/,merged/}`, `diff/` being the upper), kept in
//! `containers.json`. `mount` runs stratafs itself on the image's layers and that
//! upper (through fusermount3 for a plain user), as podman runs a mount program.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::layers;
use super::store::{Image, Store};

/// A container record.
#[derive(Clone)]
pub struct Container {
    pub id: String,
    pub name: String,
    /// The image's manifest digest (an image ID may stand for two manifests).
    pub image: String,
    pub image_name: String,
    pub created: String,
}

impl Container {
    fn from_json(v: &Value) -> Option<Container> {
        Some(Container {
            id: v["Id"].as_str()?.to_string(),
            name: v["Name"].as_str()?.to_string(),
            image: v["Image"].as_str()?.to_string(),
            image_name: v["ImageName"].as_str().unwrap_or_default().to_string(),
            created: v["Created"].as_str().unwrap_or_default().to_string(),
        })
    }

    fn to_json(&self) -> Value {
        json!({"Id": self.id, "Name": self.name, "Image": self.image, "ImageName": self.image_name, "Created": self.created})
    }

    /// The upper directory, `overlay2/<id>/diff`.
    pub fn upper(&self, store: &Store) -> PathBuf {
        store.layer_path(&self.id).join("diff")
    }

    /// The default mount point, `overlay2/<id>/merged`.
    pub fn merged(&self, store: &Store) -> PathBuf {
        store.layer_path(&self.id).join("merged")
    }
}

pub fn list(store: &Store) -> Result<Vec<Container>, String> {
    if !store.dir.exists("containers.json") {
        return Ok(Vec::new());
    }
    let raw = store
        .dir
        .read("containers.json")
        .map_err(|e| format!("containers.json: {e}"))?;
    let v: Value =
        serde_json::from_slice(&raw).map_err(|e| format!("containers.json is corrupt: {e}"))?;
    Ok(v.as_array()
        .map(|a| a.iter().filter_map(Container::from_json).collect())
        .unwrap_or_default())
}

fn save(store: &Store, all: &[Container]) -> Result<(), String> {
    let v: Vec<Value> = all.iter().map(Container::to_json).collect();
    let bytes = serde_json::to_vec_pretty(&v).map_err(|e| e.to_string())?;
    store
        .dir
        .write_atomic("containers.json", &bytes)
        .map_err(|e| format!("containers.json: {e}"))
}

/// The container a name or an id (prefix) names.
pub fn find(store: &Store, what: &str) -> Result<Container, String> {
    let all = list(store)?;
    if let Some(c) = all.iter().find(|c| c.name == what) {
        return Ok(c.clone());
    }
    let hits: Vec<&Container> = all
        .iter()
        .filter(|c| what.len() >= 3 && c.id.starts_with(what))
        .collect();
    match hits.as_slice() {
        [c] => Ok((*c).clone()),
        [] => Err(format!("no container '{what}'")),
        _ => Err(format!("'{what}' names more than one container")),
    }
}

/// A new random id (64 hex digits).
pub fn new_id() -> String {
    let mut buf = [0u8; 32];
    match std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
    {
        Ok(()) => super::digest::hex(&buf),
        // (No /dev/urandom: the time and the pid, hashed.)
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let d = super::digest::of(format!("{t:?}{}", std::process::id()).as_bytes());
            d.trim_start_matches("sha256:").to_string()
        }
    }
}

/// Now, as RFC 3339 in UTC (the form image configs use).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    rfc3339(secs)
}

pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The image's layer ids in the store, topmost first.
pub fn image_layers(img: &Image) -> Result<Vec<String>, String> {
    img.chain_ids()
        .iter()
        .rev()
        .map(|c| super::digest::hex_of(c).map(String::from))
        .collect()
}

/// `container create`: a new empty upper over the image's layers.
pub fn create(store: &Store, reference: &str, name: Option<&str>) -> Result<Container, String> {
    let img = store.resolve(reference)?;
    let below = image_layers(&img)?;
    for id in &below {
        if store.layers().map(|l| !l.exists(id)).unwrap_or(true) {
            return Err(format!(
                "layer {id} of image {} is missing from the store",
                &img.id()[..12]
            ));
        }
    }
    let mut all = list(store)?;
    let id = new_id();
    let name = name
        .map(String::from)
        .unwrap_or_else(|| format!("stratafs-{}", &id[..12]));
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(format!("bad container name '{name}'"));
    }
    if all.iter().any(|c| c.name == name) {
        return Err(format!("the container name '{name}' is already in use"));
    }
    let staged = layers::stage(store, &format!("container-{id}"))?;
    layers::place(store, staged, &id, &below, true)?;
    let c = Container {
        id,
        name,
        image: img.manifest_digest.clone(),
        image_name: img
            .names
            .first()
            .cloned()
            .unwrap_or_else(|| img.id()[..12].to_string()),
        created: now_rfc3339(),
    };
    all.push(c.clone());
    save(store, &all)?;
    Ok(c)
}

/// Where the container is mounted now, if it is: a stratafs mount whose source is
/// `stratafs:<its upper>` (the `fsname` its mount sets).
pub fn mounted_at(store: &Store, c: &Container) -> Option<PathBuf> {
    let want = format!("stratafs:{}", c.upper(store).to_string_lossy());
    crate::mountinfo::read("self")
        .into_iter()
        .find(|m| m.fstype == "fuse.stratafs" && m.source == want.as_bytes())
        .map(|m| m.point)
}

/// `container mount`: mounts the container at `dir` (default `merged/`); returns the
/// mount point.
pub fn mount(store: &Store, c: &Container, dir: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = mounted_at(store, c) {
        return Ok(p);
    }
    let img = store.resolve(&c.image)?;
    let lowers = layers::lower_paths(store, &image_layers(&img)?)?;
    let target = match dir {
        Some(d) => std::fs::canonicalize(d).map_err(|e| format!("{}: {e}", d.display()))?,
        None => c.merged(store),
    };
    let base = store.layer_path(&c.id);
    let esc = |p: &Path| {
        p.to_string_lossy()
            .replace('\\', "\\\\")
            .replace(',', "\\,")
            .replace(':', "\\:")
    };
    let lower = lowers.iter().map(|p| esc(p)).collect::<Vec<_>>().join(":");
    let mut opts = format!(
        "lowerdir={lower},upperdir={},workdir={},fsname=stratafs:{}",
        esc(&base.join("diff")),
        esc(&base.join("work")),
        esc(&base.join("diff")),
    );
    if crate::sys::geteuid() != 0 {
        opts.push_str(",xattr_permissions=2");
    }
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the stratafs binary: {e}"))?;
    let out = std::process::Command::new(exe)
        .arg("-o")
        .arg(&opts)
        .arg(&target)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("running the mount: {e}"))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        return Err(format!("mount failed: {}", msg.trim()));
    }
    Ok(target)
}

/// `container umount`: unmounts it wherever it is mounted.
pub fn umount(store: &Store, c: &Container) -> Result<Option<PathBuf>, String> {
    let Some(p) = mounted_at(store, c) else {
        return Ok(None);
    };
    if crate::sys::geteuid() == 0 {
        let cp =
            std::ffi::CString::new(p.to_string_lossy().as_bytes()).map_err(|e| e.to_string())?;
        crate::mount::unmount(&cp);
    } else {
        let ok = std::process::Command::new("fusermount3")
            .args(["-u", "-z", "--"])
            .arg(&p)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!("fusermount3 -u {} failed", p.display()));
        }
    }
    Ok(Some(p))
}

/// `container rm`: removes a container that is not mounted (`force`: unmounts it).
pub fn remove(store: &Store, c: &Container, force: bool) -> Result<(), String> {
    if mounted_at(store, c).is_some() {
        if !force {
            return Err(format!(
                "container {} is mounted; `stratafs container umount {}` first (or rm -f)",
                c.name, c.name
            ));
        }
        umount(store, c)?;
    }
    let mut all = list(store)?;
    all.retain(|x| x.id != c.id);
    save(store, &all)?;
    layers::remove(store, &c.id)
}
