//! The trace: watching and measuring a live mount. `control` is the daemon's side (a
//! per-mount Unix socket in the runtime directory, reachable by the mount's owner
//! only, serving events and statistics); `client` is `stratafs trace` and `stratafs
//! stats`; `format` turns events and figures into lines for people. The core only
//! counts (`stats`) and emits (`events`); it knows nothing of this folder.

mod client;
pub mod control;
mod format;

pub use client::{stats_cmd, trace_cmd};
