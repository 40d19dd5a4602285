//! stratafs: a copy-on-write union filesystem in userspace.
//!
//! `cli` reads the command line, `mount` runs the mount's life, `fs` dispatches FUSE
//! requests to the modules that follow the kernel's fs/overlayfs layout: `overlay`
//! (super), `namei`, `inode`, `readdir`, `file`, `xattr`, and `whiteout` (formats).
//! `sys` holds every syscall wrapper: the lints below keep it the one module with
//! unchecked code, each block of it with the reason it is sound (`// SAFETY:`).

#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod acl;
mod attr;
mod check;
mod cli;
mod copy_up;
mod dir;
mod events;
mod file;
mod floor;
mod fs;
mod handles;
mod idmap;
mod image;
mod index;
mod inject;
mod inode;
mod inspect;
mod links;
mod means;
mod mount;
mod mountinfo;
mod namei;
mod ondisk;
mod options;
mod orphan;
mod overlay;
mod override_stat;
mod prefetch;
mod prefill;
mod procfs;
mod rdplus;
mod readdir;
mod real_io;
mod rename;
mod show;
mod stack;
mod stats;
mod sys;
mod table;
mod trace;
#[cfg(test)]
mod unit;
mod whiteout;
mod work;
mod xattr;

fn main() {
    if let Err(msg) = cli::main(std::env::args_os().collect()) {
        eprintln!("stratafs: {msg}");
        std::process::exit(1);
    }
}
