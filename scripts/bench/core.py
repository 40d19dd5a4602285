"""Mounting an implementation, measuring a command on it, checking and recording."""
import os
import shutil
import signal
import subprocess
import sys
import time

IMPLS = ("kernel", "fuse-ovl", "stratafs")     # also the order of the interleaving
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROG = os.path.basename(os.environ.get("BENCH_ARGV0", sys.argv[0]))
PROBES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "probes.py")
QUIET = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class BenchError(Exception):
    """A run cannot go on: recorded as FAIL for that run."""


def on_signal(sig, _frame=None):
    """SIGINT and SIGTERM end the benchmark (undoing its mounts), but once a running
    mount command has returned: its mount would come after the cleanup."""
    if Mount.starting:
        Mount.starting = sig
    elif sig == signal.SIGINT:
        raise KeyboardInterrupt
    else:
        sys.exit(128 + sig)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def die(msg):
    log(f"{PROG}: {msg}")
    sys.exit(1)


def apt_install(pkgs):
    log("installing: " + " ".join(pkgs))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *pkgs]
    if subprocess.run(cmd, env=env, **QUIET).returncode:
        subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL, check=True)
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)


def read(path, default=""):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return default


def inherited_fds():
    """The fds beyond 0-2 that this process got from its parent: what it runs gets them
    too, as from a shell. (They matter: with an inherited fd above 255 a FUSE daemon has
    a big fd table from the start, and a cold walk on stratafs takes 20% less time.)"""
    fds = [int(f) for f in os.listdir("/proc/self/fd") if int(f) > 2]
    return [f for f in fds if os.path.exists(f"/proc/self/fd/{f}") and os.get_inheritable(f)]


def wait_for(cond, tries, delay):
    """Whether COND() held within TRIES polls, DELAY seconds apart."""
    for _ in range(tries):
        if cond():
            return True
        time.sleep(delay)
    return bool(cond())


def drop_caches(what=3):
    os.sync()
    write("/proc/sys/vm/drop_caches", f"{what}\n")


# ------------------------------------------------------------------------ mounts, daemons

def mount_points():
    """The mount points of /proc/self/mountinfo (not statted: a FUSE daemon may hang)."""
    return [line.split()[4] for line in read("/proc/self/mountinfo").splitlines()]


def unmount_below(prefix):
    """Lazily unmounts every mount whose path starts with PREFIX, deepest first."""
    for m in sorted((m for m in mount_points() if m.startswith(prefix)), reverse=True):
        log(f"unmounting leftover {m}")
        subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)


def serving(mnt, names=None):
    """Pids of the processes whose last argument is MNT (and whose name is in NAMES)."""
    return [int(p) for p in os.listdir("/proc") if p.isdigit()
            and read(f"/proc/{p}/cmdline").split("\0")[-2:-1] == [mnt]
            and (names is None or read(f"/proc/{p}/comm").strip() in names)]


def daemon_cpu(pid):
    """user+system seconds that process PID (all its threads) has used; 0 without it."""
    fields = read(f"/proc/{pid}/stat", ") ").rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK if pid and fields else 0.0


def daemon_kb(pid, field):
    """FIELD (VmRSS, VmHWM) of /proc/PID/status in KiB; None without the process."""
    kb = [line.split()[1] for line in read(f"/proc/{pid}/status").splitlines() if line.startswith(field + ":")]
    return int(kb[0]) if pid and kb else None


class Mount:
    """IMPL over LOWER (colon-separated) on DIR/mnt, with a fresh upper and work dir in DIR
    (the upper a copy of TEMPLATE's contents if given), plus mount options EXTRA. start()
    runs the mount command (in CWD if given): its exit status; live() waits for the mount
    and finds the FUSE daemon (pid; None for kernel overlayfs); unmount() undoes it all."""
    def __init__(self, b, impl, lower, dir, template=None, extra=None, cwd=None):
        self.impl, self.dir, self.cwd, self.pid = impl, dir, cwd, None
        self.upper, self.mnt = dir + "/upper", dir + "/mnt"
        unmount_below(dir + "/")        # (a leftover: never remove files through a mount)
        shutil.rmtree(dir, ignore_errors=True)
        for d in ("upper", "work", "mnt"):
            os.makedirs(f"{dir}/{d}")
        if template:
            subprocess.run(["cp", "-a", template + "/.", self.upper + "/"], check=True)
        opts = f"lowerdir={lower},upperdir={self.upper},workdir={dir}/work" + (f",{extra}" if extra else "")
        strata = os.path.realpath(b.stratafs or "stratafs")
        self.cmd = {"kernel": ["mount", "-t", "overlay", "overlay", "-o", opts + ",redirect_dir=on,index=on"],
                    "fuse-ovl": ["/usr/bin/fuse-overlayfs", "-o", opts],
                    "stratafs": [strata, "-o", opts]}[impl] + [self.mnt]
        self.names = {"fuse-overlayfs", os.path.basename(strata)[:15]}     # the daemon's comm

    starting = False        # True (or a signal held back) while a mount command runs

    def start(self):
        Mount.starting = True
        try:
            return subprocess.run(self.cmd, cwd=self.cwd, pass_fds=inherited_fds()).returncode
        finally:
            sig, Mount.starting = Mount.starting, False
            if sig is not True:
                on_signal(sig)

    def live(self):
        if not wait_for(lambda: self.mnt in mount_points(), 100, 0.1):
            raise BenchError(f"{self.impl}: {self.mnt} did not get mounted")
        if self.impl != "kernel":   # a daemonizing parent may still be around: wait for one
            wait_for(lambda: len(serving(self.mnt, self.names)) == 1, 40, 0.05)
            self.pid = max(serving(self.mnt, self.names), default=None)
        return self

    def unmount(self):
        """umount (once more a second later, then lazily), waits (up to 10 s) for the
        daemon to exit on its own, removes DIR."""
        umount = ["umount", self.mnt]
        if self.mnt in mount_points() and subprocess.run(umount, stderr=subprocess.DEVNULL).returncode:
            time.sleep(1)
            if subprocess.run(umount, stderr=subprocess.DEVNULL).returncode:
                subprocess.run(["umount", "-l", self.mnt])
        wait_for(lambda: not serving(self.mnt), 100, 0.1)
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------------ one run

class Run:
    """One workload on one implementation in one repetition: its mounts (one at a time),
    its measurements, their checks and its records. B holds the settings (quick, reps,
    dir, impls, workloads, stratafs, lower_root) and the results (a report.Results)."""
    def __init__(self, b, wl, impl, rep):
        self.b, self.wl, self.impl, self.rep = b, wl, impl, rep
        self.m = None           # the current Mount
        self.peak_kb = 0        # the daemons' largest VmHWM
        self.why = ""           # why the current measurement's checks failed
        self.rc, self.secs, self.cpu, self.out, self.text, self.err = 0, 0.0, 0.0, "", "", ""

    mnt = property(lambda self: self.m.mnt)
    upper = property(lambda self: self.m.upper)

    def mount(self, lower, name, template=None, extra=None):
        """A fresh mount of this run's implementation on runs/NAME (see Mount)."""
        self.unmount()
        self.m = Mount(self.b, self.impl, lower, f"{self.b.dir}/runs/{name}", template, extra)
        rc = self.m.start()
        if rc:
            raise BenchError(f"{self.impl}: the mount command exited {rc}")
        return self.m.live()

    def unmount(self):
        """Notes the daemon's peak RSS, unmounts, removes the mount's directory."""
        if self.m:
            self.peak_kb = max(self.peak_kb, daemon_kb(self.m.pid, "VmHWM") or 0)
            m, self.m = self.m, None
            m.unmount()

    def measure(self, cmd, count=None):
        """Runs CMD: sets rc, secs (wall), cpu (user+system of CMD and its children plus the
        daemon's over the same interval), err, text (the output, unless counted) and out,
        returned: the first line of the output, or with count='lines'/'bytes' how many."""
        d0, errpath, fds = daemon_cpu(self.m.pid), self.m.dir + "/err", inherited_fds()
        chunks, lines, nbytes = [], 0, 0
        with open(errpath, "wb") as err:
            t0 = time.perf_counter()
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, pass_fds=fds)
            try:
                while b := os.read(p.stdout.fileno(), 1 << 20):
                    lines, nbytes = lines + b.count(b"\n"), nbytes + len(b)
                    if not count:
                        chunks.append(b)
                _, status, ru = os.wait4(p.pid, 0)
            except BaseException:
                p.kill()
                p.wait()
                raise
            self.secs = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        p.stdout.close()
        self.rc = p.returncode if p.returncode >= 0 else 128 - p.returncode
        self.cpu = ru.ru_utime + ru.ru_stime + daemon_cpu(self.m.pid) - d0
        self.err = read(errpath)
        self.text = b"".join(chunks).decode(errors="replace")
        self.out = str(lines if count == "lines" else nbytes) if count else self.text.split("\n", 1)[0]
        return self.out

    def fail(self, why):
        self.why += f" {why};"

    def want(self, what, got, wanted):
        """A check: fails unless GOT = WANTED (compared as text)."""
        if str(got) != str(wanted):
            self.fail(f"{what} is '{got}', want '{wanted}'")

    def result(self, name):
        """Records the last measurement as "NAME (s)" and "NAME cpu (s)", or FAIL for
        both when it exited non-zero or a check failed; logs it."""
        if self.rc:
            self.fail(f"exit status {self.rc}: " + self.err[:300].replace("\n", " "))
        secs, cpu = f"{self.secs:.6f}", f"{self.cpu:.2f}"
        self.log(f"{name} {secs}s cpu {cpu}s" + (f" FAIL:{self.why[:-1]}" if self.why else ""))
        self.record(f"{name} (s)", "FAIL" if self.why else secs)
        self.record(f"{name} cpu (s)", "FAIL" if self.why else cpu)
        self.why = ""

    def record(self, metric, value):
        self.b.results.add(self.wl, metric, self.impl, self.rep, value)

    def log(self, msg):
        log(f"  {self.wl} {self.impl} rep {self.rep}: {msg}")

    def daemon_mib(self, field):
        kb = daemon_kb(self.m.pid, field)
        return "n/a" if kb is None else f"{kb / 1024:.1f}"

    def finish(self):
        """Unmounts, and records the FUSE daemon's peak RSS over the run's mounts."""
        self.unmount()
        v = "-" if self.impl == "kernel" else f"{self.peak_kb / 1024:.1f}" if self.peak_kb else "n/a"
        self.record("daemon peak RSS (MiB)", v)

    @staticmethod
    def probe(name, *args):
        """The command that runs the timed Python helper NAME of probes.py."""
        return [sys.executable, PROBES, name, *map(str, args)]


# ------------------------------------------------------------------------ files

def count_files(top, pred=lambda e: e.is_file(follow_symlinks=False)):
    """Entries below TOP (not TOP itself) for which PRED(DirEntry) holds; 0 without TOP."""
    try:
        with os.scandir(top) as it:
            return sum(pred(e) + (count_files(e.path, pred) if e.is_dir(follow_symlinks=False) else 0)
                       for e in it)
    except OSError:
        return 0


def same(a, b):
    """Whether the files (or trees) A and B have the same contents (cmp -s, diff -r -q)."""
    cmd = ["diff", "-r", "-q", a, b] if os.path.isdir(a) else ["cmp", "-s", a, b]
    return subprocess.run(cmd, **QUIET).returncode == 0


def write(path, text):
    """Writes TEXT (str or bytes) to PATH, making its directory first if need be."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(text, bytes) else "w") as f:
        f.write(text)


def write_random(path, size):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        for off in range(0, size, 1 << 20):
            f.write(os.urandom(min(size - off, 1 << 20)))


def read_expect(path):
    """The NAME=VALUE lines of a prepared layer's expect file (values unquoted)."""
    return {k: v.strip("'") for k, _, v in (line.partition("=") for line in read(path).splitlines()) if k}


def write_expect(path, values):
    write(path, "".join(f"{k}={v}\n" if str(v).isdigit() else f"{k}='{v}'\n" for k, v in values.items()))
