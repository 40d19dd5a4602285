//! The image tools: from an image archive to a writable mount and back, without root
//! and without a daemon, in the steps the lessons teach (Docker's overlay2 layout,
//! containers, diff, commit, history). Built on the union core, which knows nothing
//! of it: `view` runs the core's lookup and listing in-process, `container` mounts
//! with the stratafs binary itself.
//!
//! `store` (the OCI layout and overlay2 directories, the lock), `layers` (a layer
//! directory's form), `archive` (reading an archive in place), `extract` (a layer tar
//! into a directory, fd-relative), `member` (a member's path and data), `import`, `export`, `container`, `view`, `diff`,
//! `commit`, `gc`, `progress`, `digest`, `fsdir` (the store's directories by fd), and
//! `cmd` (the command line and what it prints).

mod archive;
pub mod cmd;
mod commit;
mod container;
mod diff;
mod digest;
mod export;
mod extract;
mod fsdir;
mod gc;
mod import;
mod layers;
mod member;
mod progress;
mod store;
mod view;

/// Where the container `name` of the store is mounted (for `stratafs trace`).
pub fn container_mount_point(
    store: Option<&std::path::Path>,
    name: &str,
) -> Result<std::path::PathBuf, String> {
    let root = store
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(store::default_root);
    let st = store::Store::open(&root, store::Hold::Read)?;
    let c = container::find(&st, name)?;
    container::mounted_at(&st, &c).ok_or_else(|| format!("container {name} is not mounted"))
}
