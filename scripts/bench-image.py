#!/usr/bin/env python3
"""Benchmarks the image tools against podman, side by side (run as root).

    scripts/bench-image.py [--reps N] [--quick] [--dir D]

Builds once a docker-archive of a 5-layer image of incompressible data (~200 MB;
--quick: ~40 MB) under D (default /var/tmp/stratafs-bench/image). Then, for N
repetitions (default 3), interleaved:
  import    `podman load -i ARCHIVE` into an empty private store, against
            `stratafs image import ARCHIVE` into an empty store;
  commit    a container of the image with a 100 MB change (--quick: 20 MB) written
            into it, then `podman commit` against `stratafs commit`.
Prints the median of each, the ratio stratafs/podman, and the peak RSS of the
stratafs commands (streaming: it must not grow with the layer size). Every command's
result is checked (the image is there, with the right number of layers).
"""

import argparse
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNOPTS = ["--network", "none", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]


def die(msg):
    print(f"bench-image: {msg}", file=sys.stderr)
    sys.exit(1)


def stratafs_bin():
    out = subprocess.run(["bash", "-c", f". {REPO}/scripts/lib.sh; release_bin {REPO}"],
                         capture_output=True, text=True, check=True)
    path = os.environ.get("STRATAFS_BIN") or out.stdout.strip()
    if not os.environ.get("STRATAFS_BIN"):
        subprocess.run(["cargo", "build", "--release", "-q"], cwd=REPO, check=True)
    return path


def busybox_layer():
    """A base layer with a static busybox (sh, dd, true), from the Debian package."""
    work = "/tmp/bench-image-bb"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    subprocess.run(["apt-get", "download", "busybox-static"], cwd=work, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deb = [f for f in os.listdir(work) if f.endswith(".deb")][0]
    subprocess.run(["dpkg-deb", "-x", deb, "x"], cwd=work, check=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in ["bin", "tmp", "etc"]:
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            t.addfile(ti)
        with open(f"{work}/x/bin/busybox", "rb") as f:
            data = f.read()
        ti = tarfile.TarInfo("bin/busybox")
        ti.size, ti.mode = len(data), 0o755
        t.addfile(ti, io.BytesIO(data))
        for applet in ["sh", "dd", "true", "ls", "cat"]:
            ti = tarfile.TarInfo(f"bin/{applet}")
            ti.type, ti.linkname = tarfile.SYMTYPE, "busybox"
            t.addfile(ti)
    shutil.rmtree(work, ignore_errors=True)
    return buf.getvalue()


def data_layer(i, size):
    """A layer of a few files of random data, `size` bytes in all."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        ti = tarfile.TarInfo(f"data{i}")
        ti.type, ti.mode = tarfile.DIRTYPE, 0o755
        t.addfile(ti)
        per = size // 4
        for k in range(4):
            blob = os.urandom(per)
            ti = tarfile.TarInfo(f"data{i}/f{k}")
            ti.size, ti.mode = per, 0o644
            t.addfile(ti, io.BytesIO(blob))
    return buf.getvalue()


def make_archive(path, total):
    layers = [busybox_layer()] + [data_layer(i, total // 4) for i in range(4)]
    diff_ids = ["sha256:" + hashlib.sha256(l).hexdigest() for l in layers]
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
    }).encode()
    cname = hashlib.sha256(config).hexdigest() + ".json"
    names = [d[7:] + ".tar" for d in diff_ids]
    manifest = json.dumps([{"Config": cname, "RepoTags": ["localhost/benchimg:1"], "Layers": names}]).encode()
    tmp = path + ".tmp"
    with tarfile.open(tmp, "w") as t:
        for name, data in list(zip(names, layers)) + [(cname, config), ("manifest.json", manifest)]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    os.rename(tmp, path)


def timed(cmd, env=None):
    """Runs cmd; returns (seconds, its peak RSS in KiB, its stdout)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = p.communicate()
    dt = time.monotonic() - t0
    if p.returncode != 0:
        die(f"{' '.join(cmd)} failed: {err.strip()[-500:]}")
    return dt, None, out


def timed_rss(cmd):
    """Runs cmd under GNU time: (seconds, its own peak RSS in KiB, stdout). (The
    rusage of a child forked from this Python would count Python's pages too.)"""
    t0 = time.monotonic()
    r = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", "/tmp/bench-image.rss", *cmd],
                       capture_output=True, text=True)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        die(f"{' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")
    with open("/tmp/bench-image.rss") as f:
        return dt, int(f.read().split()[-1]), r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dir", default="/var/tmp/stratafs-bench/image")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench-image.py: run as root", file=sys.stderr)
        sys.exit(2)
    for tool, pkg in [("podman", "podman"), ("/usr/bin/time", "time"), ("dpkg-deb", "dpkg")]:
        if not shutil.which(tool):
            subprocess.run(["apt-get", "install", "-y", "-qq", pkg], check=True, stdout=subprocess.DEVNULL)
    bin_ = stratafs_bin()
    os.makedirs(a.dir, exist_ok=True)
    total = (40 if a.quick else 200) << 20
    change_mb = 20 if a.quick else 100
    archive = os.path.join(a.dir, f"image-{total >> 20}M.tar")
    if not os.path.exists(archive):
        print(f"making {archive} (5 layers, {total >> 20} MB)", file=sys.stderr)
        make_archive(archive, total)
    run = os.path.join(a.dir, "run")
    pm = ["podman", "--root", f"{run}/graph", "--runroot", f"{run}/runroot", "--storage-driver", "overlay"]
    res = {k: [] for k in ["podman load", "stratafs import", "podman commit", "stratafs commit"]}
    rss = {"import": 0, "commit": 0}

    def reset():
        subprocess.run(pm + ["system", "reset", "-f"], capture_output=True)
        shutil.rmtree(run, ignore_errors=True)
        os.makedirs(run)

    try:
        for rep in range(a.reps):
            # import
            reset()
            subprocess.run(["sync"])
            dt, _, _ = timed(pm + ["load", "-q", "-i", archive])
            res["podman load"].append(dt)
            store = f"{run}/store"
            subprocess.run(["sync"])
            dt, peak, _ = timed_rss([bin_, "image", "import", "--store", store, "--progress", "plain", archive])
            res["stratafs import"].append(dt)
            rss["import"] = max(rss["import"], peak or 0)
            _, _, out = timed([bin_, "image", "inspect", "--store", store, "benchimg:1"])
            if len(json.loads(out)[0]["RootFS"]["Layers"]) != 5:
                die("stratafs import: not 5 layers")
            # commit of a change
            timed(pm + ["run", "--name", "c", *RUNOPTS, "localhost/benchimg:1", "sh", "-c",
                        f"dd if=/dev/urandom of=/change bs=1M count={change_mb} 2>/dev/null"])
            dt, _, _ = timed(pm + ["commit", "-q", "c", "localhost/committed:1"])
            res["podman commit"].append(dt)
            timed([bin_, "container", "create", "--store", store, "benchimg:1", "--name", "c"])
            _, _, mnt = timed([bin_, "container", "mount", "--store", store, "c"])
            mnt = mnt.strip()
            subprocess.run(["dd", "if=/dev/urandom", f"of={mnt}/change", "bs=1M", f"count={change_mb}"],
                           check=True, capture_output=True)
            timed([bin_, "container", "umount", "--store", store, "c"])
            subprocess.run(["sync"])
            dt, peak, _ = timed_rss([bin_, "commit", "--store", store, "--progress", "plain", "c", "localhost/committed:1"])
            res["stratafs commit"].append(dt)
            rss["commit"] = max(rss["commit"], peak or 0)
            _, _, out = timed([bin_, "image", "inspect", "--store", store, "committed:1"])
            if len(json.loads(out)[0]["RootFS"]["Layers"]) != 6:
                die("stratafs commit: not 6 layers")
            print(f"rep {rep + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in res.items()), file=sys.stderr)
    finally:
        reset()
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"image: {total >> 20} MB in 5 layers; commit of a {change_mb} MB change; medians of {a.reps}")
    print(f"{'step':<10} {'podman (s)':>11} {'stratafs (s)':>13} {'ratio':>7}")
    for step, p, s in [("import", "podman load", "stratafs import"), ("commit", "podman commit", "stratafs commit")]:
        print(f"{step:<10} {med[p]:>11.2f} {med[s]:>13.2f} {med[s] / med[p]:>6.2f}x")
    print(f"peak RSS of stratafs: import {rss['import'] / 1024:.1f} MiB, commit {rss['commit'] / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
