//! Progress of import, export and commit: bars on a terminal (indicatif), a line per
//! step with `--progress plain`, a JSON object per step with `--progress json`; a
//! summary line at the end in every form.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Mode {
    Auto,
    Plain,
    Json,
}

pub struct Progress {
    mode: Mode,
    bar: Option<ProgressBar>,
    started: Instant,
}

/// `1.2 MB`, as docker prints sizes (powers of 1000).
pub fn human(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.3}{}", units[i])
            .replace(".000", "")
            .trim_end_matches('0')
            .to_string()
    }
}

impl Progress {
    pub fn new(mode: Mode) -> Progress {
        let mode = match mode {
            Mode::Auto if std::io::stderr().is_terminal() => Mode::Auto,
            Mode::Auto => Mode::Plain,
            m => m,
        };
        Progress {
            mode,
            bar: None,
            started: Instant::now(),
        }
    }

    /// A step of `total` bytes begins (a layer, a blob).
    pub fn step(&mut self, what: &str, id: &str, total: u64) {
        let short = id.trim_start_matches("sha256:").get(..12).unwrap_or(id);
        match self.mode {
            Mode::Auto => {
                if let Some(b) = self.bar.take() {
                    b.finish();
                }
                let b = ProgressBar::new(total.max(1));
                b.set_style(
                    ProgressStyle::with_template(
                        "{msg:24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                b.set_message(format!("{what} {short}"));
                self.bar = Some(b);
            }
            Mode::Plain if total == 0 => eprintln!("{what} {short}"),
            Mode::Plain => eprintln!("{what} {short} ({})", human(total)),
            Mode::Json => eprintln!(
                "{}",
                serde_json::json!({"event": "step", "what": what, "id": id, "bytes": total})
            ),
        }
    }

    /// `done` bytes of the current step are through.
    pub fn set(&self, done: u64) {
        if let Some(b) = &self.bar {
            b.set_position(done);
        }
    }

    /// A note on the way (a warning, a skipped layer).
    pub fn note(&self, msg: &str) {
        match (&self.bar, self.mode) {
            (Some(b), _) => b.println(msg),
            (None, Mode::Json) => {
                eprintln!("{}", serde_json::json!({"event": "note", "message": msg}))
            }
            _ => eprintln!("{msg}"),
        }
    }

    /// The end: the summary line, with the time taken.
    pub fn done(&mut self, summary: &str) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let secs = self.started.elapsed().as_secs_f64();
        match self.mode {
            Mode::Json => eprintln!(
                "{}",
                serde_json::json!({"event": "done", "summary": summary, "seconds": secs})
            ),
            _ => eprintln!("{summary} in {secs:.1}s"),
        }
    }
}
