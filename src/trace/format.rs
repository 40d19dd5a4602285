//! Events and statistics as people read them: one coloured line per event
//! (`COPY-UP etc/motd 1.2 KiB from lower 2 (base) by vi[4321] 0.3 ms`), and tables.

use serde_json::Value;

/// `1.2 KiB`.
pub fn bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn colour(tag: &str) -> &'static str {
    match tag {
        "COPY-UP" => "\x1b[1;33m",
        "WHITEOUT" => "\x1b[1;31m",
        "UNWHITEOUT" => "\x1b[31m",
        "OPAQUE" => "\x1b[1;35m",
        "REDIRECT" => "\x1b[1;36m",
        "LINK-UP" => "\x1b[36m",
        "CREATE" => "\x1b[1;32m",
        _ => "",
    }
}

/// One event (the daemon's JSON) as a line.
pub fn event_line(e: &Value, colours: bool) -> String {
    if let Some(n) = e["lost"].as_u64() {
        return format!("({n} events lost: the trace fell behind)");
    }
    let tag = e["event"].as_str().unwrap_or("?");
    let path = e["path"].as_str().unwrap_or("");
    let path = if path.is_empty() { "/" } else { path };
    let mut line = match tag {
        "COPY-UP" => format!(
            "{path} {} from {} ({})",
            bytes(e["bytes"].as_u64().unwrap_or(0)),
            e["from"].as_str().unwrap_or("?"),
            e["method"].as_str().unwrap_or("?"),
        ),
        "REDIRECT" => format!(
            "{path} (its lower part: {})",
            e["redirect_from"].as_str().unwrap_or("?")
        ),
        "CREATE" => format!("{path} ({})", e["kind"].as_str().unwrap_or("?")),
        _ => path.to_string(),
    };
    if let (Some(pid), Some(comm)) = (e["pid"].as_u64(), e["comm"].as_str()) {
        if pid != 0 {
            line.push_str(&format!(" by {comm}[{pid}]"));
        }
    }
    if let Some(us) = e["micros"].as_u64() {
        line.push_str(&format!(" {:.1} ms", us as f64 / 1000.0));
    }
    if colours {
        format!("{}{tag:<10}\x1b[0m {line}", colour(tag))
    } else {
        format!("{tag:<10} {line}")
    }
}

fn us(v: &Value) -> String {
    let n = v.as_u64().unwrap_or(0);
    if n >= 1000 {
        format!("{:.1} ms", n as f64 / 1000.0)
    } else {
        format!("{n} µs")
    }
}

/// A block of `name value` lines (a JSON object of counts), names `width` wide.
fn figures(out: &mut String, obj: &Value, width: usize) {
    if let Some(c) = obj.as_object() {
        out.push('\n');
        for (k, v) in c {
            let name = k.replace('_', " ");
            out.push_str(&format!("{name:<width$} {}\n", v.as_u64().unwrap_or(0)));
        }
    }
}

/// The statistics (the daemon's JSON) as tables.
pub fn stats_text(s: &Value) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<16} {:>10} {:>10} {:>10} {:>10}\n",
        "REQUEST", "COUNT", "P50", "P99", "MAX"
    ));
    if let Some(ops) = s["requests"].as_object() {
        let mut ops: Vec<(&String, &Value)> = ops.iter().collect();
        ops.sort_by_key(|(_, v)| std::cmp::Reverse(v["count"].as_u64().unwrap_or(0)));
        for (name, v) in ops {
            out.push_str(&format!(
                "{name:<16} {:>10} {:>10} {:>10} {:>10}\n",
                v["count"].as_u64().unwrap_or(0),
                us(&v["p50_us"]),
                us(&v["p99_us"]),
                us(&v["max_us"])
            ));
        }
    }
    let cu = &s["copy_ups"];
    out.push_str(&format!(
        "\ncopy-ups: {} ({})\n",
        cu["count"].as_u64().unwrap_or(0),
        bytes(cu["bytes"].as_u64().unwrap_or(0))
    ));
    if let Some(m) = cu["by_method"].as_object() {
        for (name, v) in m {
            let c = v["count"].as_u64().unwrap_or(0);
            if c > 0 {
                out.push_str(&format!(
                    "  {name:<18} {c:>8}  {}\n",
                    bytes(v["bytes"].as_u64().unwrap_or(0))
                ));
            }
        }
    }
    figures(&mut out, &s["changes"], 18);
    figures(&mut out, &s["caches"], 30);
    out.push_str(&format!(
        "\nnodes in the inode table: {}\ndaemon RSS: {}\nuptime: {:.0} s",
        s["nodes"].as_u64().unwrap_or(0),
        bytes(s["rss_kib"].as_u64().unwrap_or(0) * 1024),
        s["uptime_s"].as_f64().unwrap_or(0.0)
    ));
    out
}
