//! The command line. The default form is fuse-overlayfs's, verbatim:
//! `stratafs [-f] [-d] [-o OPTS]... [SOURCE] MOUNTPOINT`; subcommands such as
//! `stratafs which` sit beside it and never change that form.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::image::cmd::{CommitArgs, ContainerCmd, ImageCmd, StoreArg, SystemCmd};
use crate::mount::{self, MountRequest};
use crate::options::MountOptions;
use crate::overlay::{Overlay, Settings};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Parser, Debug)]
#[command(
    name = "stratafs",
    about = "A copy-on-write union filesystem in userspace (FUSE), compatible with fuse-overlayfs",
    override_usage = "stratafs [-f] [-d] [-o OPTS]... [SOURCE] MOUNTPOINT\n       stratafs which -o lowerdir=...[,upperdir=...] PATH...\n       stratafs check UPPER --work WORKDIR [--lower L1:L2...] [--repair]",
    disable_version_flag = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub mount: MountArgs,
    /// Print the version and exit.
    #[arg(short = 'V', long = "version", action = ArgAction::SetTrue)]
    pub version: bool,
}

#[derive(Args, Debug)]
pub struct MountArgs {
    /// Stay in the foreground.
    #[arg(short = 'f')]
    pub foreground: bool,
    /// Debug logging (implies -f).
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,
    /// Mount options, comma separated (lowerdir=, upperdir=, workdir=, ...); may repeat.
    #[arg(short = 'o', value_name = "OPTS", action = ArgAction::Append)]
    pub opts: Vec<String>,
    /// [SOURCE] MOUNTPOINT: the last one is the mountpoint.
    #[arg(value_name = "MOUNTPOINT")]
    pub positionals: Vec<OsString>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Tell which layer each PATH of the merged view comes from, without mounting.
    Which {
        /// The same options a mount takes (lowerdir=, upperdir=).
        #[arg(short = 'o', value_name = "OPTS", action = ArgAction::Append, required = true)]
        opts: Vec<String>,
        /// Paths relative to the merged root.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Check an upper layer that is not mounted (after a crash, or before the kernel
    /// mounts it): report each problem with its fix; repair only with --repair.
    Check {
        /// The upper directory.
        upper: PathBuf,
        /// Its work directory.
        #[arg(long, value_name = "WORKDIR")]
        work: PathBuf,
        /// The lower directories, topmost first, `:`-separated (read only).
        #[arg(long, value_name = "L1:L2...")]
        lower: Option<String>,
        /// Fix what is found (in the upper and the work dir; never in a lower).
        #[arg(long)]
        repair: bool,
    },
    /// Images in the store: import, ls, inspect, history, tag, rm, export.
    Image {
        #[command(flatten)]
        store: StoreArg,
        #[command(subcommand)]
        cmd: ImageCmd,
    },
    /// Containers: create, mount, umount, ls, rm.
    Container {
        #[command(flatten)]
        store: StoreArg,
        #[command(subcommand)]
        cmd: ContainerCmd,
    },
    /// What a container changed against its image (A/C/D lines, like docker diff).
    Diff {
        #[command(flatten)]
        store: StoreArg,
        container: String,
    },
    /// A container's changes as a new image layer (like docker commit).
    Commit {
        #[command(flatten)]
        store: StoreArg,
        #[command(flatten)]
        args: CommitArgs,
    },
    /// Print what a live mount does to its layers (copy-ups, whiteouts, ...) as it happens.
    Trace {
        /// A mount point, or a container of the store.
        target: String,
        /// One JSON object per event.
        #[arg(long)]
        json: bool,
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
    },
    /// Statistics of a live mount: requests and latencies, copy-ups, whiteouts, nodes.
    Stats {
        target: String,
        #[arg(long)]
        json: bool,
        #[arg(long, value_name = "DIR")]
        store: Option<PathBuf>,
    },
    /// The store: df, gc.
    System {
        #[command(flatten)]
        store: StoreArg,
        #[command(subcommand)]
        cmd: SystemCmd,
    },
    /// Tell how PATH is looked up, layer by layer, component by component.
    Explain(crate::show::ExplainArgs),
    /// Draw the merged tree, each entry marked with the layer it comes from.
    Tree(crate::show::TreeArgs),
    /// What one FUSE round trip costs here with a server that does nothing (and, given
    /// a FILE on a mount, what that mount's server adds).
    Floor {
        /// A file on a FUSE mount to time the same call on.
        against: Option<PathBuf>,
        /// Calls per round.
        #[arg(long, default_value_t = 20000)]
        calls: u32,
        /// Rounds (the two by turns; medians printed).
        #[arg(long, default_value_t = 5)]
        rounds: u32,
    },
}

const SUBCOMMANDS: &[&str] = &[
    "which",
    "check",
    "help",
    "image",
    "container",
    "diff",
    "commit",
    "system",
    "trace",
    "stats",
    "explain",
    "tree",
    "floor",
];

/// fuse-overlayfs ignores dash flags it does not know; so do we, before clap sees them.
fn drop_unknown_flags(args: Vec<OsString>) -> Vec<OsString> {
    if args
        .get(1)
        .is_some_and(|a| SUBCOMMANDS.iter().any(|s| a == s))
    {
        return args;
    }
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    out.extend(it.next());
    let mut after_dashdash = false;
    let mut expect_value = false;
    for a in it {
        let s = a.to_string_lossy();
        let known = after_dashdash
            || expect_value
            || !s.starts_with('-')
            || s == "-"
            || matches!(
                &*s,
                "-f" | "-d" | "--debug" | "-h" | "--help" | "-V" | "--version" | "--"
            )
            || s.starts_with("-o");
        if known {
            expect_value = !after_dashdash && s == "-o";
            after_dashdash |= s == "--";
            out.push(a);
        } else {
            eprintln!("unknown argument ignored: {s}");
        }
    }
    out
}

/// Runs the command line; the error is the one-line message to print.
pub fn main(args: Vec<OsString>) -> Result<(), String> {
    let cli = match Cli::try_parse_from(drop_unknown_flags(args)) {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp) => {
            print!("{e}");
            return Ok(());
        }
        Err(e) => {
            return Err(e
                .to_string()
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                .to_string())
        }
    };
    if cli.version {
        println!("stratafs: version {VERSION}");
        println!("FUSE library: fuser 0.18 (pure Rust)");
        return Ok(());
    }
    if cli.command.is_some() {
        crate::sys::default_sigpipe();
    }
    match cli.command {
        Some(Command::Which { opts, paths }) => {
            let o = MountOptions::parse(opts.iter().map(String::as_str))?;
            if o.lowerdirs.is_empty() {
                return Err("no lowerdir specified".into());
            }
            let settings = Settings::unmounted(true);
            let upper = o.upperdir.as_deref().map(|u| (u, u));
            let ov = Overlay::open(upper, &o.lowerdirs, settings)?;
            for p in paths {
                println!("{}", crate::inspect::which(&ov, &p));
            }
            Ok(())
        }
        Some(Command::Check {
            upper,
            work,
            lower,
            repair,
        }) => {
            let req = crate::check::Request {
                upper,
                work,
                lowers: lower
                    .as_deref()
                    .map(crate::options::split_lowerdirs)
                    .unwrap_or_default(),
                repair,
            };
            match crate::check::run(&req)? {
                true => Ok(()),
                false => Err("the upper has problems (listed above)".into()),
            }
        }
        Some(Command::Image { store, cmd }) => {
            init_logging(false);
            crate::image::cmd::image(&store, cmd)
        }
        Some(Command::Container { store, cmd }) => {
            init_logging(false);
            crate::image::cmd::container_cmd(&store, cmd)
        }
        Some(Command::Diff { store, container }) => crate::image::cmd::diff_cmd(&store, &container),
        Some(Command::Commit { store, args }) => {
            init_logging(false);
            crate::image::cmd::commit_cmd(&store, args)
        }
        Some(Command::System { store, cmd }) => crate::image::cmd::system(&store, cmd),
        Some(Command::Explain(a)) => crate::show::explain_cmd(a),
        Some(Command::Tree(a)) => crate::show::tree_cmd(a),
        Some(Command::Floor {
            against,
            calls,
            rounds,
        }) => crate::floor::run(against.as_deref(), calls, rounds),
        Some(Command::Trace {
            target,
            json,
            store,
        }) => crate::trace::trace_cmd(&target, json, store.as_deref()),
        Some(Command::Stats {
            target,
            json,
            store,
        }) => crate::trace::stats_cmd(&target, json, store.as_deref()),
        None => {
            let m = cli.mount;
            let opts = MountOptions::parse(m.opts.iter().map(String::as_str))?;
            init_logging(m.debug || opts.debug);
            let mut pos = m.positionals;
            let mountpoint = pos.pop().ok_or("no mountpoint specified")?;
            let req = MountRequest {
                foreground: m.foreground || m.debug || opts.debug,
                source: pos.into_iter().next(),
                mountpoint: PathBuf::from(mountpoint),
                opts,
            };
            mount::run(req, &crate::trace::control::listen)
        }
    }
}

fn init_logging(debug: bool) {
    let default = if debug { "debug" } else { "warn" };
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format_timestamp_millis()
        .try_init();
}
