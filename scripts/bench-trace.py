#!/usr/bin/env python3
"""What the trace and the statistics cost (run as root).

    scripts/bench-trace.py [--reps N] [--quick] [--dir D]

Three stratafs builds and settings, interleaved for N repetitions (default 5):
  notrace   a build with `--features notrace` (no statistics, no events): the baseline
  off       the normal build, nobody tracing (statistics counted, events not built)
  on        the normal build with `stratafs trace --json` listening (to /dev/null)
Each repetition mounts a fresh upper over one lower layer of 4,000 small files in 40
directories [--quick: 1,000 in 10] and times, cold caches dropped first: a stat walk
(no event), the copy-up of every lower file (open for append: a COPY-UP each), an
untar of as many new files (CREATE each), and rm -rf of the lower tree (WHITEOUT
each). Prints medians and the ratios off/notrace and on/notrace.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def release_bin():
    out = subprocess.run(["bash", "-c", f". {REPO}/scripts/lib.sh; release_bin {REPO}"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def build(features, dest):
    cmd = ["cargo", "build", "--release", "-q"] + (["--features", features] if features else [])
    subprocess.run(cmd, cwd=REPO, check=True)
    shutil.copy2(release_bin(), dest)


def drop_caches():
    subprocess.run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def workload(mnt, dirs, per, tarball):
    t = {}
    t0 = time.monotonic()
    n = sum(len(fs) for _, _, fs in os.walk(mnt))
    t["stat walk"] = time.monotonic() - t0
    assert n == dirs * per, n
    t0 = time.monotonic()
    for d in range(dirs):
        for i in range(per):
            with open(f"{mnt}/tree/d{d}/f{i}", "ab"):
                pass
    t["copy-up"] = time.monotonic() - t0
    os.makedirs(f"{mnt}/new")
    t0 = time.monotonic()
    subprocess.run(["tar", "-C", f"{mnt}/new", "-xf", tarball], check=True)
    t["untar"] = time.monotonic() - t0
    t0 = time.monotonic()
    shutil.rmtree(f"{mnt}/tree")
    t["rm -rf"] = time.monotonic() - t0
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dir", default="/var/tmp/stratafs-bench/trace")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench-trace.py: run as root", file=sys.stderr)
        sys.exit(2)
    dirs, per = (10, 100) if a.quick else (40, 100)
    base = a.dir
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(f"{base}/bin")
    build("notrace", f"{base}/bin/stratafs-notrace")
    build(None, f"{base}/bin/stratafs")
    lower = f"{base}/lower"
    for d in range(dirs):
        os.makedirs(f"{lower}/tree/d{d}")
        for i in range(per):
            with open(f"{lower}/tree/d{d}/f{i}", "wb") as f:
                f.write(os.urandom(512 + (i * 37) % 3000))
    src = f"{base}/src"
    for d in range(dirs):
        os.makedirs(f"{src}/d{d}")
        for i in range(per):
            with open(f"{src}/d{d}/n{i}", "wb") as f:
                f.write(b"x" * (i * 53 % 2000))
    tarball = f"{base}/new.tar"
    with tarfile.open(tarball, "w") as t:
        t.add(src, arcname=".")
    configs = [("notrace", f"{base}/bin/stratafs-notrace", False),
               ("off", f"{base}/bin/stratafs", False),
               ("on", f"{base}/bin/stratafs", True)]
    results = {c[0]: {} for c in configs}
    rt = f"{base}/rt"
    os.makedirs(rt)
    env = dict(os.environ, STRATAFS_RUNTIME_DIR=rt)
    for rep in range(a.reps):
        for name, binary, listen in configs:
            run = f"{base}/run"
            shutil.rmtree(run, ignore_errors=True)
            for d in ["upper", "work", "mnt"]:
                os.makedirs(f"{run}/{d}")
            mnt = f"{run}/mnt"
            subprocess.run([binary, "-o", f"lowerdir={lower},upperdir={run}/upper,workdir={run}/work", mnt],
                           check=True, env=env)
            tracer = None
            try:
                if listen:
                    tracer = subprocess.Popen([binary, "trace", "--json", mnt], env=env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                    tracer.stderr.readline()  # "tracing ...": listening
                drop_caches()
                t = workload(mnt, dirs, per, tarball)
            finally:
                subprocess.run(["umount", "-l", mnt])
                if tracer:
                    tracer.kill()
                    tracer.wait()
            for k, v in t.items():
                results[name].setdefault(k, []).append(v)
        print(f"rep {rep + 1}/{a.reps} done", file=sys.stderr)
    steps = list(results["notrace"].keys())
    print(f"trace cost: {dirs * per} files; medians of {a.reps}, seconds")
    print(f"{'step':<12} {'notrace':>9} {'off':>9} {'on':>9} {'off/notrace':>12} {'on/notrace':>11}")
    tot = {c: 0.0 for c in results}
    for s in steps:
        m = {c: statistics.median(results[c][s]) for c in results}
        for c in results:
            tot[c] += m[c]
        print(f"{s:<12} {m['notrace']:>9.3f} {m['off']:>9.3f} {m['on']:>9.3f} "
              f"{m['off'] / m['notrace']:>11.3f}x {m['on'] / m['notrace']:>10.3f}x")
    print(f"{'total':<12} {tot['notrace']:>9.3f} {tot['off']:>9.3f} {tot['on']:>9.3f} "
          f"{tot['off'] / tot['notrace']:>11.3f}x {tot['on'] / tot['notrace']:>10.3f}x")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
