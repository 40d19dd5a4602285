//! The image tools' command line (`image`, `container`, `diff`, `commit`, `system`)
//! and what they print, in docker's and podman's column layouts.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::progress::{human, Mode, Progress};
use super::store::{self, Hold, Image, Store};
use super::{commit, container, diff, export, gc, import};

#[derive(Args, Debug)]
pub struct StoreArg {
    /// The store (default: $STRATAFS_STORE, /var/lib/stratafs for root,
    /// $XDG_DATA_HOME/stratafs otherwise).
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,
}

impl StoreArg {
    fn open(&self, hold: Hold) -> Result<Store, String> {
        let root = self.store.clone().unwrap_or_else(store::default_root);
        Store::open(&root, hold)
    }
}

#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// Import an image archive (docker-archive, oci-archive, OCI directory; `-` = stdin).
    Import {
        source: String,
        /// Name the image REPO:TAG (instead of the archive's names).
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_enum, default_value = "auto")]
        progress: Mode,
    },
    /// List images.
    Ls,
    /// Show an image as JSON.
    Inspect { reference: String },
    /// Show an image's history.
    History {
        reference: String,
        #[arg(long)]
        no_trunc: bool,
    },
    /// Give an image another name.
    Tag { reference: String, new: String },
    /// Remove an image name (the image too when it was its last name).
    Rm {
        reference: String,
        /// Remove it even if containers use it (they are removed too).
        #[arg(short, long)]
        force: bool,
    },
    /// Write an image to an archive or an OCI directory.
    Export {
        reference: String,
        #[arg(short = 'o', long)]
        output: PathBuf,
        #[arg(long, value_enum, default_value = "docker-archive")]
        format: export::Format,
        #[arg(long, value_enum, default_value = "auto")]
        progress: Mode,
    },
}

#[derive(Subcommand, Debug)]
pub enum ContainerCmd {
    /// A container: a writable layer over an image.
    Create {
        reference: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// Mount a container (at DIR, or its merged/ directory); prints the mount point.
    Mount { name: String, dir: Option<PathBuf> },
    /// Unmount a container.
    Umount { name: String },
    /// List containers.
    Ls,
    /// Remove a container.
    Rm {
        name: String,
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum SystemCmd {
    /// What the store holds.
    Df,
    /// Remove what no image or container uses.
    Gc,
}

#[derive(Args, Debug)]
pub struct CommitArgs {
    /// The commit message (the history entry's comment).
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// The author.
    #[arg(short = 'a', long)]
    pub author: Option<String>,
    /// A Dockerfile instruction to apply to the config (CMD, ENV, ...); may repeat.
    #[arg(short = 'c', long = "change")]
    pub changes: Vec<String>,
    /// Seconds since the epoch for every time in the layer and config (reproducible).
    #[arg(long)]
    pub timestamp: Option<i64>,
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: Mode,
    pub container: String,
    pub tag: Option<String>,
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Seconds since the epoch of an RFC 3339 time (fractions and zone offsets ignored).
fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let n = |a: usize, z: usize| s.get(a..z)?.parse::<i64>().ok();
    let (y, m, d) = (n(0, 4)?, n(5, 7)?, n(8, 10)?);
    let (hh, mm, ss) = (n(11, 13)?, n(14, 16)?, n(17, 19)?);
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86400 + hh * 3600 + mm * 60 + ss)
}

/// `5 minutes ago`, as docker prints times.
fn ago(created: &str) -> String {
    let Some(t) = parse_time(created) else {
        return "N/A".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let s = (now - t).max(0);
    let (n, unit) = match s {
        0..=59 => (s, "second"),
        60..=3599 => (s / 60, "minute"),
        3600..=86399 => (s / 3600, "hour"),
        86400..=2_591_999 => (s / 86400, "day"),
        2_592_000..=31_535_999 => (s / 2_592_000, "month"),
        _ => (s / 31_536_000, "year"),
    };
    if n == 1 {
        format!("{} {unit} ago", if unit == "hour" { "An" } else { "1" })
    } else {
        format!("{n} {unit}s ago")
    }
}

/// Bytes an image's layers use in the store.
fn image_size(store: &Store, img: &Image) -> u64 {
    let Ok(l) = store.layers() else { return 0 };
    img.chain_ids()
        .iter()
        .filter_map(|c| super::digest::hex_of(c).ok())
        .map(|h| {
            l.sub(h)
                .and_then(|d| d.sub("diff"))
                .map(|d| d.disk_usage())
                .unwrap_or(0)
        })
        .sum()
}

pub fn image(s: &StoreArg, cmd: ImageCmd) -> Result<(), String> {
    match cmd {
        ImageCmd::Import {
            source,
            name,
            progress,
        } => {
            let st = s.open(Hold::Change)?;
            let mut p = Progress::new(progress);
            for line in import::import(&st, &source, name.as_deref(), &mut p)? {
                println!("{line}");
            }
        }
        ImageCmd::Ls => {
            let st = s.open(Hold::Read)?;
            println!(
                "{:<40} {:<12} {:<14} {:<16} SIZE",
                "REPOSITORY", "TAG", "IMAGE ID", "CREATED"
            );
            for img in st.images()? {
                let created = ago(img.config["created"].as_str().unwrap_or_default());
                let size = human(image_size(&st, &img));
                let names = if img.names.is_empty() {
                    vec!["<none>:<none>".to_string()]
                } else {
                    img.names.clone()
                };
                for n in names {
                    let (r, t) = store::split_tag(&n);
                    println!(
                        "{:<40} {:<12} {:<14} {:<16} {}",
                        r,
                        t.unwrap_or("<none>"),
                        short(img.id()),
                        created,
                        size
                    );
                }
            }
        }
        ImageCmd::Inspect { reference } => {
            let st = s.open(Hold::Read)?;
            let img = st.resolve(&reference)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&inspect(&st, &img)?).map_err(|e| e.to_string())?
            );
        }
        ImageCmd::History {
            reference,
            no_trunc,
        } => {
            let st = s.open(Hold::Read)?;
            history(&st, &st.resolve(&reference)?, no_trunc);
        }
        ImageCmd::Tag { reference, new } => {
            let st = s.open(Hold::Change)?;
            let img = st.resolve(&reference)?;
            let size = st.read_blob(&img.manifest_digest)?.len() as u64;
            st.tag(&img.manifest_digest, size, Some(&new))?;
        }
        ImageCmd::Rm { reference, force } => {
            let st = s.open(Hold::Change)?;
            let img = st.resolve(&reference)?;
            let users: Vec<_> = container::list(&st)?
                .into_iter()
                .filter(|c| c.image == img.manifest_digest)
                .collect();
            let by_name = store::normalize_name(&reference);
            let untag_only = img.names.len() > 1 && img.names.contains(&by_name);
            if !untag_only && !users.is_empty() && !force {
                return Err(format!(
                    "image {} is used by container {} (rm -f removes both)",
                    short(img.id()),
                    users[0].name
                ));
            }
            let mut idx = st.index()?;
            if untag_only {
                idx.retain(|m| m["annotations"][store::REF_NAME].as_str() != Some(&by_name));
                println!("Untagged: {by_name}");
            } else {
                for c in &users {
                    container::remove(&st, c, true)?;
                }
                idx.retain(|m| m["digest"].as_str() != Some(&img.manifest_digest));
                for n in &img.names {
                    println!("Untagged: {n}");
                }
                println!("Deleted: {}", img.id());
            }
            st.write_index(&idx)?;
            gc::gc(&st)?;
        }
        ImageCmd::Export {
            reference,
            output,
            format,
            progress,
        } => {
            let st = s.open(Hold::Read)?;
            let mut p = Progress::new(progress);
            export::export(&st, &reference, &output, format, &mut p)?;
        }
    }
    Ok(())
}

fn inspect(st: &Store, img: &Image) -> Result<Value, String> {
    let c = &img.config;
    let diff_ids = img.diff_ids();
    let layers: Vec<Value> = img
        .chain_ids()
        .iter()
        .zip(&diff_ids)
        .zip(img.layer_descriptors())
        .map(|((chain, diff), desc)| {
            let hex = super::digest::hex_of(chain).unwrap_or_default();
            json!({"ChainID": chain, "DiffID": diff, "Digest": desc["digest"], "Dir": st.layer_path(hex).join("diff")})
        })
        .collect();
    Ok(json!([{
        "Id": img.config_digest,
        "Digest": img.manifest_digest,
        "RepoTags": img.names,
        "Created": c["created"],
        "Author": c["author"].as_str().unwrap_or_default(),
        "Architecture": c["architecture"],
        "Os": c["os"],
        "Config": c["config"],
        "RootFS": {"Type": "layers", "Layers": diff_ids},
        "History": c["history"],
        "Size": image_size(st, img),
        "Layers": layers,
    }]))
}

fn history(st: &Store, img: &Image, no_trunc: bool) {
    println!(
        "{:<14} {:<16} {:<46} {:<10} COMMENT",
        "IMAGE", "CREATED", "CREATED BY", "SIZE"
    );
    let hist = img.config["history"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let chains = img.chain_ids();
    // Which layer each non-empty history entry made, bottom first.
    let mut layer_of = Vec::new();
    let mut li = 0;
    for h in &hist {
        if h["empty_layer"].as_bool().unwrap_or(false) {
            layer_of.push(None);
        } else {
            layer_of.push(chains.get(li).cloned());
            li += 1;
        }
    }
    let layers = st.layers().ok();
    for (i, h) in hist.iter().enumerate().rev() {
        let id = if i + 1 == hist.len() {
            short(img.id()).to_string()
        } else {
            "<missing>".into()
        };
        let mut by = h["created_by"].as_str().unwrap_or_default().to_string();
        if !no_trunc && by.chars().count() > 45 {
            by = by.chars().take(44).collect::<String>() + "…";
        }
        let size = match (&layer_of[i], &layers) {
            (Some(c), Some(l)) => super::digest::hex_of(c)
                .ok()
                .and_then(|hx| l.sub(hx).and_then(|d| d.sub("diff")).ok())
                .map(|d| human(d.disk_usage()))
                .unwrap_or_else(|| "0B".into()),
            _ => "0B".into(),
        };
        println!(
            "{:<14} {:<16} {:<46} {:<10} {}",
            id,
            ago(h["created"].as_str().unwrap_or_default()),
            by,
            size,
            h["comment"].as_str().unwrap_or_default()
        );
    }
}

pub fn container_cmd(s: &StoreArg, cmd: ContainerCmd) -> Result<(), String> {
    match cmd {
        ContainerCmd::Create { reference, name } => {
            let st = s.open(Hold::Change)?;
            println!(
                "{}",
                container::create(&st, &reference, name.as_deref())?.id
            );
        }
        ContainerCmd::Mount { name, dir } => {
            let st = s.open(Hold::Read)?;
            let c = container::find(&st, &name)?;
            println!("{}", container::mount(&st, &c, dir.as_deref())?.display());
        }
        ContainerCmd::Umount { name } => {
            let st = s.open(Hold::Read)?;
            let c = container::find(&st, &name)?;
            match container::umount(&st, &c)? {
                Some(_) => println!("{}", c.name),
                None => return Err(format!("container {} is not mounted", c.name)),
            }
        }
        ContainerCmd::Ls => {
            let st = s.open(Hold::Read)?;
            println!(
                "{:<14} {:<32} {:<16} {:<40} {:<10} NAMES",
                "CONTAINER ID", "IMAGE", "CREATED", "STATUS", "SIZE"
            );
            let layers = st.layers().ok();
            for c in container::list(&st)? {
                let status = match container::mounted_at(&st, &c) {
                    Some(p) => format!("Mounted at {}", p.display()),
                    None => "Created".into(),
                };
                let size = layers
                    .as_ref()
                    .and_then(|l| l.sub(&c.id).and_then(|d| d.sub("diff")).ok())
                    .map(|d| human(d.disk_usage()))
                    .unwrap_or_default();
                println!(
                    "{:<14} {:<32} {:<16} {:<40} {:<10} {}",
                    short(&c.id),
                    c.image_name,
                    ago(&c.created),
                    status,
                    size,
                    c.name
                );
            }
        }
        ContainerCmd::Rm { name, force } => {
            let st = s.open(Hold::Change)?;
            let c = container::find(&st, &name)?;
            container::remove(&st, &c, force)?;
            println!("{}", c.name);
        }
    }
    Ok(())
}

pub fn diff_cmd(s: &StoreArg, name: &str) -> Result<(), String> {
    let st = s.open(Hold::Read)?;
    let c = container::find(&st, name)?;
    let img = st.resolve(&c.image)?;
    let lowers = super::layers::lower_paths(&st, &container::image_layers(&img)?)?;
    let new = super::view::View::open(Some(&c.upper(&st)), &lowers)?;
    let old = super::view::View::open(None, &lowers)?;
    for (k, p) in diff::changes(&new, &old).map_err(|e| format!("comparing: {e}"))? {
        println!("{} {p}", k.letter());
    }
    Ok(())
}

pub fn commit_cmd(s: &StoreArg, a: CommitArgs) -> Result<(), String> {
    let st = s.open(Hold::Change)?;
    let c = container::find(&st, &a.container)?;
    let mut p = Progress::new(a.progress);
    let req = commit::Request {
        message: a.message.as_deref(),
        author: a.author.as_deref(),
        changes: &a.changes,
        tag: a.tag.as_deref(),
        timestamp: a.timestamp,
    };
    println!("{}", commit::commit(&st, &c, &req, &mut p)?);
    Ok(())
}

pub fn system(s: &StoreArg, cmd: SystemCmd) -> Result<(), String> {
    match cmd {
        SystemCmd::Df => {
            let st = s.open(Hold::Read)?;
            println!("{}", gc::df(&st)?);
        }
        SystemCmd::Gc => {
            let st = s.open(Hold::Change)?;
            let removed = gc::gc(&st)?;
            for r in &removed {
                println!("removed {r}");
            }
            println!("{} item(s) removed", removed.len());
        }
    }
    Ok(())
}
