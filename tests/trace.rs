//! `stratafs trace` and `stratafs stats` on real mounts: an event for each kind of
//! change, with its fields, in order, also under 8 writers at once; no event when
//! nothing changes the layers; the control socket refuses another user; the
//! statistics count a known workload.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// A mount whose control socket is in the test's own directory.
struct Traced {
    _t: TempDir,
    m: Mount,
    rt: String,
    lower: std::path::PathBuf,
    upper: std::path::PathBuf,
}

fn traced(tag: &str, fill: impl Fn(&Path)) -> Traced {
    let t = TempDir::new(tag);
    let lower = t.dir("lower");
    fill(&lower);
    let upper = t.dir("upper");
    let work = t.dir("work");
    let mnt = t.dir("mnt");
    let rt = t.dir("rt").to_string_lossy().into_owned();
    let opts = layer_opts(&[&lower], Some((&upper, &work)));
    let m = Mount::with_env(&opts, &mnt, &[("STRATAFS_RUNTIME_DIR", &rt)]);
    Traced {
        _t: t,
        m,
        rt,
        lower,
        upper,
    }
}

/// `stratafs trace --json` running, its events collected as they come.
struct Listener {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
}

impl Listener {
    fn start(t: &Traced) -> Listener {
        let mut child = Command::new(BIN)
            .args(["trace", "--json"])
            .arg(&t.m.mnt)
            .env("STRATAFS_RUNTIME_DIR", &t.rt)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Listening once it says so.
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        assert!(line.starts_with("tracing"), "trace did not start: {line}");
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = events.clone();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&l) {
                    ev.lock().unwrap().push(v);
                }
            }
        });
        Listener { child, events }
    }

    /// The events so far, after waiting for `n` of them (up to 10 s).
    fn wait(&self, n: usize) -> Vec<Value> {
        wait_for(10, || self.events.lock().unwrap().len() >= n);
        std::thread::sleep(Duration::from_millis(300));
        self.events.lock().unwrap().clone()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kind_path(v: &Value) -> (String, String) {
    (
        v["event"].as_str().unwrap_or_default().to_string(),
        v["path"].as_str().unwrap_or_default().to_string(),
    )
}

fn fill_lower(l: &Path) {
    write(&l.join("a"), "0123456789");
    write(&l.join("gone"), "x");
    fs::create_dir_all(l.join("d/sub")).unwrap();
    write(&l.join("d/x"), "x");
    fs::create_dir(l.join("mv_me")).unwrap();
    write(&l.join("mv_me/in"), "in");
    write(&l.join("h1"), "hard");
    fs::hard_link(l.join("h1"), l.join("h2")).unwrap();
    for i in 0..8 {
        write(&l.join(format!("f{i}")), &"y".repeat(1000 + i));
    }
}

fn is_our_thread(pid: u64) -> bool {
    Path::new(&format!("/proc/self/task/{pid}")).exists()
}

#[test]
fn each_change_is_an_event_with_its_fields_in_order() {
    assert_root();
    let t = traced("trace-events", fill_lower);
    let l = Listener::start(&t);
    let m = &t.m;
    append(&m.p("a"), "more");
    append(&m.p("a"), "again"); // copied already: no event
    fs::remove_file(m.p("gone")).unwrap();
    fs::remove_dir_all(m.p("d")).unwrap();
    fs::create_dir(m.p("d")).unwrap();
    fs::rename(m.p("mv_me"), m.p("moved")).unwrap();
    append(&m.p("h1"), "!");
    write(&m.p("new"), "n");
    let want: Vec<(&str, &str)> = vec![
        ("COPY-UP", "a"),
        ("WHITEOUT", "gone"),
        ("COPY-UP", "d"),
        ("WHITEOUT", "d/sub"),
        ("WHITEOUT", "d/x"),
        ("WHITEOUT", "d"),
        ("UNWHITEOUT", "d"),
        ("OPAQUE", "d"),
        ("CREATE", "d"),
        ("COPY-UP", "mv_me"),
        ("WHITEOUT", "mv_me"),
        ("REDIRECT", "moved"),
        ("COPY-UP", "h1"),
        ("LINK-UP", "h2"),
        ("CREATE", "new"),
    ];
    let got = l.wait(want.len());
    let got_kp: Vec<(String, String)> = got.iter().map(kind_path).collect();
    let mut want_kp: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    // rm -rf removes d's entries in listing order: compare those two as a set.
    let pos = |v: &Vec<(String, String)>, p: &str| v.iter().position(|x| x.1 == p).unwrap_or(0);
    if pos(&got_kp, "d/x") < pos(&got_kp, "d/sub") {
        let (i, j) = (pos(&want_kp, "d/sub"), pos(&want_kp, "d/x"));
        want_kp.swap(i, j);
    }
    assert_eq!(got_kp, want_kp, "events: {got:#?}");
    let cu = &got[0];
    assert_eq!(cu["bytes"], 10);
    assert_eq!(
        cu["from"],
        format!(
            "lower 1 ({})",
            t.lower.file_name().unwrap().to_string_lossy()
        )
    );
    assert!(
        ["reflink", "copy_file_range", "read-write"].contains(&cu["method"].as_str().unwrap()),
        "{cu}"
    );
    assert!(cu["micros"].as_u64().is_some());
    assert_eq!(got[2]["method"], "metadata only");
    assert_eq!(got[11]["redirect_from"], "mv_me");
    assert_eq!(got[8]["kind"], "directory");
    for e in &got {
        assert!(
            is_our_thread(e["pid"].as_u64().unwrap()),
            "pid of {e} is not this test's"
        );
        assert!(!e["comm"].as_str().unwrap().is_empty());
    }
    let seqs: Vec<u64> = got.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(t.upper.join("moved").is_dir());
}

#[test]
fn eight_writers_at_once_give_one_copy_up_each() {
    assert_root();
    let t = traced("trace-8", fill_lower);
    let l = Listener::start(&t);
    let mnt = t.m.mnt.clone();
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let p = mnt.join(format!("f{i}"));
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
                    f.write_all(b"z").unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let got = l.wait(8);
    let mut paths: Vec<String> = got
        .iter()
        .map(kind_path)
        .map(|(k, p)| {
            assert_eq!(k, "COPY-UP");
            p
        })
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        (0..8).map(|i| format!("f{i}")).collect::<Vec<_>>(),
        "{got:#?}"
    );
    for e in &got {
        let i: u64 = e["path"].as_str().unwrap()[1..].parse().unwrap();
        assert_eq!(e["bytes"].as_u64().unwrap(), 1000 + i);
    }
    let seqs: Vec<u64> = got.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn reads_and_stats_make_no_event() {
    assert_root();
    let t = traced("trace-quiet", fill_lower);
    let l = Listener::start(&t);
    let m = &t.m;
    for _ in 0..3 {
        assert_eq!(fs::read(m.p("a")).unwrap(), b"0123456789");
        let _ = fs::metadata(m.p("d/x")).unwrap();
        let _ = names(&m.p("d"));
        let _ = fs::read_link(m.p("a")).is_err();
        let _ = get_xattr(&m.p("a"), "user.none");
        let out = stats_output(&m.mnt, &t.rt, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        l.events.lock().unwrap().is_empty(),
        "events without a change: {:?}",
        l.events.lock().unwrap()
    );
    assert!(names(&t.upper).is_empty(), "a read changed the upper");
}

#[test]
fn the_control_socket_refuses_another_user() {
    assert_root();
    let t = traced("trace-user", fill_lower);
    // The directory is the first guard (0700)...
    let rt = Path::new(&t.rt);
    assert_eq!(
        fs::metadata(rt).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
            .args(args)
            .arg(&t.m.mnt)
            .env("STRATAFS_RUNTIME_DIR", &t.rt)
            .output()
            .unwrap()
    };
    let out = nobody(&["stats"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ... and with the directory and the socket opened to everyone, the daemon
    // itself refuses: it checks the peer's uid.
    fs::set_permissions(rt, fs::Permissions::from_mode(0o755)).unwrap();
    for e in fs::read_dir(rt).unwrap() {
        fs::set_permissions(e.unwrap().path(), fs::Permissions::from_mode(0o666)).unwrap();
    }
    for cmd in ["stats", "trace"] {
        let out = nobody(&[cmd]);
        assert!(!out.status.success(), "{cmd} as another user worked");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("refused: not the mount's owner"),
            "{cmd}: {err}"
        );
    }
    // The owner still gets in.
    let out = stats_output(&t.m.mnt, &t.rt, &[]);
    assert!(out.status.success());
}

use std::os::unix::fs::PermissionsExt;

#[test]
fn stats_count_a_known_workload() {
    assert_root();
    let t = traced("trace-stats", fill_lower);
    let m = &t.m;
    for i in 0..5 {
        write(&m.p(&format!("n{i}")), "new");
    }
    for i in 0..3 {
        append(&m.p(&format!("f{i}")), "+");
    }
    fs::remove_file(m.p("gone")).unwrap();
    fs::remove_file(m.p("f7")).unwrap();
    fs::create_dir(m.p("newdir")).unwrap();
    let out = stats_output(&m.mnt, &t.rt, &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["copy_ups"]["count"], 3, "{s:#}");
    assert_eq!(s["copy_ups"]["bytes"], 1000 + 1001 + 1002);
    assert_eq!(s["changes"]["whiteouts"], 2);
    assert_eq!(s["changes"]["creates"], 6);
    assert_eq!(s["requests"]["create"]["count"], 5);
    assert_eq!(s["requests"]["unlink"]["count"], 2);
    assert_eq!(s["requests"]["mkdir"]["count"], 1);
    let r = &s["requests"]["create"];
    assert!(r["p50_us"].as_u64().unwrap() <= r["p99_us"].as_u64().unwrap());
    assert!(r["p99_us"].as_u64().unwrap() <= r["max_us"].as_u64().unwrap());
    assert!(s["nodes"].as_u64().unwrap() >= 10);
    assert!(s["rss_kib"].as_u64().unwrap() > 0);
    // The text form says the same.
    let out = stats_output(&m.mnt, &t.rt, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("copy-ups: 3") && text.contains("whiteouts          2"),
        "{text}"
    );
}
