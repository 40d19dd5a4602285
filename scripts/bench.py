#!/usr/bin/env python3
"""Benchmarks stratafs against kernel overlayfs and fuse-overlayfs, side by side.

  scripts/bench.sh [--quick] [--reps N] [--dir D] [--only IMPL[,IMPL]] [WORKLOAD...]

Run as root. Each workload runs on the three implementations interleaved
(kernel, fuse-ovl, stratafs, kernel, fuse-ovl, stratafs, ...) for N repetitions
(default 3); then one table per workload shows the median of each metric and the
ratios stratafs/kernel and stratafs/fuse-overlayfs. Lower layers are prepared once
and kept (read-only, shared by every run); each repetition mounts a fresh, empty
upper and work dir. Page, dentry and inode caches are dropped before every timed
cold measurement; a warm one repeats it right after. Everything lives under one
directory (default /var/tmp/stratafs-bench); every mount is undone on exit.

Every timed step checks its result (counts, sizes, contents, a digest) and is
reported as FAIL instead of a time when it is wrong. Next to each time "NAME (s)" is
"NAME cpu (s)": user+system time of the command and its children plus that of the
FUSE daemon over the same interval (from /proc/PID/stat; kernel overlayfs's work is
in the command's system time). Each table ends with the daemon's peak RSS (VmHWM
read right before unmount; the largest over the run's mounts).

Workloads (no WORKLOAD argument = all of them); sizes in brackets are --quick's:
  walk    lowerdir = an image-like layer (every 41st file of the root fs whited out,
          every 37th rewritten, usr/share/doc opaque with new contents, usr/share/man
          and usr/share/locale whited out, a new opt/app tree) : a layer of small
          files : a Debian root fs (debootstrap --variant=minbase bookworm, made once;
          if debootstrap fails, a cp -a of this machine's /usr/lib, /usr/share, /etc)
          [only its usr/share]. 100,000 [10,000] small files (0-4 KiB) in 1,000
          [200] dirs, each dir merged from the top two layers. Cold and warm: `find`,
          a stat walk (`find -printf '%y %s'`), tar read-all (`tar -cf - . | wc -c`),
          each on a fresh mount. Checked against the merged view computed from the
          layers (entries, bytes, tar size bounds).
  io      sequential read (cold) and write (dd bs=1M, then fsync timed separately) of
          1 GiB [100 MiB]; 10,000 [2,000] random 4 KiB preads of the cold lower file
          (digest compared with the same reads of the lower file).
  copyup  copy-up (open O_WRONLY|O_APPEND) of 2,000 [500] lower files of 0-64 KiB
          and of the 1 GiB [100 MiB] lower file, cold; then 20,000 [2,000]
          open+append(100 B)+close on 100 [50] files of the upper; then the copy-up
          of the small files again on a fresh mount with `-o volatile` ("vol.").
  untar   tar -xf of 20,000 [5,000] files (0-8 KiB, in 200 [50] dirs); rm -rf of
          that tree; rm -rf (cold) of the same tree lying in the lower layer.
  bigdir  a directory of 50,000 [5,000] names, a third from each of the lower,
          middle and upper layers (1-2% whited out by the layers above): `ls -f`,
          cold and warm; stat of 20,000 [2,000] distinct missing names in it, cold.
  src     a git repository (committed in the lower layer) of a generated C project
          (60 modules) plus 2,000 other source files: `git status` cold and warm,
          `grep -r` cold and warm, `make -j2` cold (the program's output checked).
  rename  mv MNT/tree MNT/tree2, a rename(2) of a lower directory holding 10,000
          files / 1 GiB [1,000 files / 100 MiB]. Kernel overlayfs and
          stratafs set a redirect; fuse-overlayfs returns EXDEV and mv copies it all.
          The result is checked (file count, source gone, sample contents).
  podman  (only when named; not in the default list) podman as root and rootless with
          native kernel overlay, fuse-overlayfs and stratafs as mount_program:
          `podman run --rm IMAGE true` and a 6-step `podman build --no-cache` (7
          layers) over a Debian minbase, with where each build step's time goes, by
          scripts/bench-podman.sh (installs podman, buildah, runc, uidmap; adds a user)
  image   (only when named) the image tools against podman: import of a 200 MB
          [40 MB], 5-layer docker-archive against `podman load`, and commit of a
          100 MB [20 MB] change against `podman commit`, with stratafs's peak RSS; by
          scripts/bench-image.py
  trace   (only when named) the cost of the statistics and the trace: a build with
          `--features notrace`, the normal build with nobody tracing, and with
          `stratafs trace` listening, on a stat walk, copy-ups, an untar and rm -rf of
          4,000 [1,000] files; by scripts/bench-trace.py
  stall   copy-up of a 1 GiB lower file (opened O_WRONLY|O_APPEND through the mount)
          while a prober stats other/fN (cycling through 1,000 names), lists other/
          and stats the root; reports the copy-up time and the prober's latency
          (max, p99, max per kind of call) during the copy-up. After the caches are
          dropped, the lower layer's other/ is listed directly (not through the
          mount) so the prober does not wait for the disk; big stays cold.
  mounts  mount time at 8, 128 and 500 lower layers (each layer a directory with one
          file, given by relative paths; a fresh upper and work dir): the median of 10 [5] mounts per
          repetition, from the mount command's start until it returns with the mount
          live (a FUSE daemon returns once it is), each checked to show the layers'
          files, then unmounted. What `podman run` pays per container start.
  memory  (only when named; not in the default list) the FUSE daemon's memory for a
          lower layer of 1,000,000 [100,000] empty files in 1,000 [100] dirs (empty
          upper); fuse-overlayfs and stratafs only (kernel overlayfs has no daemon: its
          rows are '-'). A cold stat walk (`find -printf '%s'`, which looks up every
          entry; the entry count checked), then the daemon's RSS (VmRSS) right after
          it and after `echo 2 > /proc/sys/vm/drop_caches` and 3 s (the kernel forgets
          its inodes, so the daemon can free its inode table), and its peak RSS.

Options:
  --quick          the smaller sizes above, 1 repetition unless --reps is given (all
                   workloads in under 3 minutes once the data is prepared)
  --reps N         repetitions per implementation (default 3)
  --dir D          work directory (default /var/tmp/stratafs-bench)
  --only LIST      comma-separated subset of: kernel, fuse-ovl (or fuse-overlayfs), stratafs

Environment: STRATAFS_BIN=/path/to/stratafs skips `cargo build --release`.

The code: scripts/bench.py and the modules of scripts/bench/. A workload NAME is a
prep_NAME(b) and a run_NAME(r) in bench/workloads.py (see there), and NAME in
ALL_WORKLOADS. An exception in run_NAME is recorded as FAIL for that run, its mounts are
undone, and the benchmark goes on.
"""
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import traceback
from types import SimpleNamespace

sys.dont_write_bytecode = True          # no __pycache__ in scripts/bench/
from bench import core, report, workloads  # noqa: E402  (the package next to this file)
from bench.core import BenchError, die, log  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL_WORKLOADS = ["walk", "io", "copyup", "untar", "bigdir", "src", "rename", "stall", "mounts"]
OPT_WORKLOADS = ["podman", "memory", "image", "trace"]    # run only when named
# Workloads run by a script of their own (own storage, own builds): its arguments.
OWN_SCRIPTS = {
    "podman": lambda b: [REPO + "/scripts/bench-podman.sh", "--reps", str(b.reps)],
    "image": lambda b: [sys.executable, REPO + "/scripts/bench-image.py", "--reps", str(b.reps),
                        "--dir", b.dir + "/image"] + (["--quick"] if b.quick else []),
    "trace": lambda b: [sys.executable, REPO + "/scripts/bench-trace.py", "--reps", str(b.reps),
                        "--dir", b.dir + "/trace"] + (["--quick"] if b.quick else []),
}


def parse_args(args):
    b = SimpleNamespace(quick=False, reps=None, dir="/var/tmp/stratafs-bench", impls=list(core.IMPLS),
                        workloads=[], stratafs="")
    args = list(args)
    while args:
        a = args.pop(0)
        opt, eq, val = a.partition("=")
        if a == "--quick":
            b.quick = True
        elif opt in ("--reps", "--dir", "--only"):
            if not eq:
                if not args:
                    die(f"{opt} needs " + {"--reps": "a number", "--dir": "a directory", "--only": "a list"}[opt])
                val = args.pop(0)
            if opt == "--only":
                want = ["fuse-ovl" if w == "fuse-overlayfs" else w for w in val.split(",")]
                for w in want:
                    if w not in core.IMPLS:
                        die(f"--only: unknown implementation '{w}' (kernel, fuse-ovl, stratafs)")
                b.impls = [i for i in core.IMPLS if i in want] or die("--only: no implementation given")
            else:
                setattr(b, opt[2:], val)
        elif a in ("-h", "--help"):
            print(__doc__.strip("\n"))
            sys.exit(0)
        elif a.startswith("-"):
            die(f"unknown option: {a} (see --help)")
        else:
            b.workloads.append(a)
    b.reps = ("1" if b.quick else "3") if b.reps is None else b.reps
    if not re.fullmatch(r"[1-9][0-9]*", b.reps):
        die(f"--reps must be a positive integer, not '{b.reps}'")
    b.reps, b.workloads = int(b.reps), b.workloads or list(ALL_WORKLOADS)
    for w in b.workloads:
        if w not in ALL_WORKLOADS + OPT_WORKLOADS:
            die(f"unknown workload: {w} (known: {' '.join(ALL_WORKLOADS + OPT_WORKLOADS)})")
    if re.search(r"\s", b.dir):
        die("--dir must not contain white space")
    b.dir = re.sub("/$", "", os.path.join(os.getcwd(), b.dir))
    if b.dir in ("", "/"):
        die("--dir must not be /")
    return b


def ensure_tools(b):
    """Installs (apt-get) the packages of missing tools; loads fuse and overlay if need be."""
    fuse, walk, src = "fuse-ovl" in b.impls or "stratafs" in b.impls, "walk" in b.workloads, "src" in b.workloads
    need = [pkg for wanted, tool, pkg in (
        (True, "tar", "tar"), (src, "git", "git"), (src, "make", "make"), (src, "gcc", "gcc libc6-dev"),
        (walk, "debootstrap", "debootstrap"), (fuse, "fusermount3", "fuse3"),
        ("fuse-ovl" in b.impls, "/usr/bin/fuse-overlayfs", "fuse-overlayfs")) if wanted and not shutil.which(tool)]
    for wanted, loaded, module, missing in (
            (fuse, lambda: os.path.exists("/dev/fuse"), "fuse", "/dev/fuse is missing"),
            ("kernel" in b.impls, lambda: "\toverlay\n" in core.read("/proc/filesystems"), "overlay",
             "kernel overlayfs is not available")):
        if wanted and not loaded():
            subprocess.run(["modprobe", module], **core.QUIET)
            if not loaded():
                die(missing)
    if need:
        core.apt_install(" ".join(need).split())


def ensure_stratafs(b):
    if "stratafs" not in b.impls:
        return
    b.stratafs = os.environ.get("STRATAFS_BIN", "")
    if b.stratafs and not os.access(b.stratafs, os.X_OK):
        die(f"STRATAFS_BIN={b.stratafs} is not executable")
    if not b.stratafs:
        log("building stratafs (cargo build --release)")
        if subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO).returncode:
            die("cargo build --release failed")
        b.stratafs = subprocess.run(["bash", "-c", '. "$1/scripts/lib.sh"; release_bin "$1"', "lib", REPO],
                                    capture_output=True, text=True, check=True).stdout.strip()


def run_workload(b, wl):
    """WL's runs: the implementations interleaved, REPS times."""
    log(f"== {wl}")
    for rep in range(1, b.reps + 1):
        for impl in b.impls:
            r = core.Run(b, wl, impl, rep)
            try:
                getattr(workloads, "run_" + wl)(r)
            except Exception as e:  # noqa: BLE001 -- a failed run is a FAIL row; the rest goes on
                if not isinstance(e, (BenchError, OSError, subprocess.SubprocessError)):
                    traceback.print_exc()       # a bug
                log(f"  {wl} {impl} rep {rep}: FAILED ({e})")
                b.results.add(wl, f"{wl} run", impl, rep, "FAIL")
            finally:
                r.unmount()


def header(b, cmdline):
    def out(*cmd):
        return subprocess.run(cmd, capture_output=True, text=True).stdout
    lines = [f"# {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  kernel {os.uname().release}  "
             f"nproc {len(os.sched_getaffinity(0))}  reps {b.reps}" + ("  quick" if b.quick else ""),
             f"# command: {cmdline}"]
    versions = []
    if "fuse-ovl" in b.impls:
        v = re.search(r"^fuse-overlayfs: version (.*)$", out("/usr/bin/fuse-overlayfs", "--version"), re.M)
        versions.append("fuse-overlayfs " + (v.group(1) if v else ""))
    if "stratafs" in b.impls:
        rev = out("git", "-C", REPO, "describe", "--always", "--dirty").strip() or "unknown"
        versions.append(f"stratafs {b.stratafs} ({rev})")
    lines += ["# " + "; ".join(versions)] if versions else []
    source = core.read(b.lower_root + "/rootfs.source").strip()
    if source and "walk" in b.workloads:
        w = workloads.shape(b).walk
        entries = core.read_expect(w.data + "/expect").get("X_ENTRIES", "")
        lines.append(f"# walk: bottom layer {w.base} ({source}), {entries} entries merged")
    return "\n".join(lines + [f"# medians of {b.reps} runs; data in {b.dir}; "
                              "cpu = user+sys of the command plus the FUSE daemon's"])


def main(argv):
    cmdline = " ".join([os.environ.get("BENCH_ARGV0", sys.argv[0])] +
                       [a if re.fullmatch(r"[][A-Za-z0-9_./,:=@%+-]+", a) else shlex.quote(a) for a in argv])
    b = parse_args(argv)
    if os.getuid() != 0:
        die("must be run as root (mounts, drops caches)")
    for name, args in OWN_SCRIPTS.items():   # on their own storage, by their own scripts
        if name in b.workloads:
            cmd = args(b)
            if subprocess.run(cmd).returncode:
                die(f"{os.path.basename(cmd[0] if name == 'podman' else cmd[1])} failed")
            b.workloads = [w for w in b.workloads if w != name]
            if not b.workloads:
                return 0
    ensure_tools(b)
    ensure_stratafs(b)
    b.lower_root = b.dir + "/lower"
    signal.signal(signal.SIGTERM, core.on_signal)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, core.on_signal)
    try:
        core.unmount_below(b.dir + "/")
        shutil.rmtree(b.dir + "/runs", ignore_errors=True)
        os.makedirs(b.lower_root, exist_ok=True)
        os.makedirs(b.dir + "/runs")
        b.results = report.Results(b.dir + "/results.tsv")
        for wl in b.workloads:
            getattr(workloads, "prep_" + wl)(b)
        for wl in b.workloads:
            run_workload(b, wl)
        text = header(b, cmdline) + "".join("\n\n" + b.results.table(wl, b.impls) for wl in b.workloads)
        print(text, flush=True)
        core.write(b.dir + "/report.txt", text + "\n")
        if b.results.failed():
            die(f"some runs or checks FAILED (details above; raw results in {b.results.path})")
    except KeyboardInterrupt:
        return 130
    finally:               # every mount undone, also on errors, Ctrl-C and TERM
        core.unmount_below(b.dir + "/")
        shutil.rmtree(b.dir + "/runs", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
