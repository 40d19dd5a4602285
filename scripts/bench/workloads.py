"""The workloads (see scripts/bench.py). For each NAME, prep_NAME(b) makes its lower
layers once under b.lower_root (kept; PATH.ok marks them made), and run_NAME(r) runs it
on r.impl, repetition r.rep: mounts with r.mount, measures with r.measure, records with
r.result and r.finish or r.record (r is a core.Run). shape(b).NAME has its sizes."""
import os
import shutil
import stat
import subprocess
import time
from types import SimpleNamespace as NS

from . import gen, probes
from .core import (BenchError, Mount, count_files, drop_caches, log, read, read_expect, same, unmount_below,
                   wait_for, write, write_expect, write_random)

MIB = 1024 * 1024


def prep(path, what, make):
    """Unless PATH.ok says PATH is made: logs WHAT, clears PATH, make()s it, marks it."""
    if not os.path.exists(path + ".ok"):
        log(f"preparing {path}: {what}")
        shutil.rmtree(path, ignore_errors=True)
        make()
        os.sync()
        open(path + ".ok", "w").close()


def tail(path, n):
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - n))
        return f.read()


def shape(b):
    """Every workload's sizes, as q(FULL, QUICK) (QUICK with --quick), and its lower
    layers' paths."""
    def q(full, quick):
        return quick if b.quick else full
    low = b.lower_root
    s = NS(io=NS(mib=q(1024, 100), rand=q(10000, 2000)),
           copyup=NS(files=q(2000, 500), ap_files=q(100, 50), ap_rounds=q(200, 40)),
           untar=NS(files=q(20000, 5000)),
           bigdir=NS(n=q(50000, 5000), miss=q(20000, 2000)),
           rename=NS(dirs=q(100, 10), files=100, size=q(1024 * MIB // 10000, 100 * MIB // 1000)),
           memory=NS(dirs=q(1000, 100), files=1000),
           walk=NS(small=q(100000, 10000), sdirs=q(1000, 200), base=low + q("/rootfs", "/rootfs/usr/share"),
                   opq=q("usr/share/doc", "doc"), whd=q("usr/share/man,usr/share/locale", "man,locale")))
    s.io.lower = f"{low}/io-{s.io.mib}"
    s.copyup.lower = f"{low}/copyup-{s.copyup.files}"
    s.untar.lower = f"{low}/untar-{s.untar.files}"
    s.bigdir.root = f"{low}/bigdir-{s.bigdir.n}"
    s.rename.lower = f"{low}/rename-{s.rename.dirs * s.rename.files}"
    s.memory.n = s.memory.dirs * s.memory.files
    s.memory.lower = f"{low}/memory-{s.memory.n}"
    s.walk.data = f"{low}/walk-{s.walk.small}"
    s.walk.layers = [s.walk.data + "/image", s.walk.data + "/small", s.walk.base]
    return s


# ------------------------------------------------------------------------ walk

def make_rootfs(b, r):
    """The bottom layer R: a Debian root fs, made with debootstrap (or, if that fails, a
    copy of this machine's /usr/lib, /usr/share and /etc); R.source says which."""
    shutil.rmtree(r + ".tmp", ignore_errors=True)
    with open(b.lower_root + "/debootstrap.log", "w") as f:
        ok = shutil.which("debootstrap") and not subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", r + ".tmp", "http://deb.debian.org/debian"],
            stdout=f, stderr=subprocess.STDOUT).returncode
    source = "debootstrap --variant=minbase bookworm"
    if not ok:
        log(f"debootstrap failed (see {b.lower_root}/debootstrap.log): copying this machine's"
            " /usr/lib, /usr/share and /etc instead")
        unmount_below(b.dir + "/")
        shutil.rmtree(r + ".tmp", ignore_errors=True)
        os.makedirs(r + ".tmp/usr")
        subprocess.run(["cp", "-a", "/usr/lib", "/usr/share", r + ".tmp/usr/"], check=True)
        subprocess.run(["cp", "-a", "/etc", r + ".tmp/"], check=True)
        source = "cp -a of this machine's /usr/lib, /usr/share, /etc (debootstrap failed)"
    write(r + ".source", source + "\n")
    os.rename(r + ".tmp", r)


def prep_walk(b):
    r, w = b.lower_root + "/rootfs", shape(b).walk
    prep(r, "debootstrap --variant=minbase bookworm (once; a minute or two)", lambda: make_rootfs(b, r))

    def make():
        os.makedirs(w.data + "/image")
        write(w.data + "/image.txt", gen.image(w.base, w.data + "/image", w.opq, w.whd) + "\n")
        gen.files(w.data + "/image/small", w.small // 2, w.sdirs, "a", 4096)
        gen.files(w.data + "/small/small", w.small - w.small // 2, w.sdirs, "b", 4096)
        os.sync()
        write_expect(w.data + "/expect", gen.merge(w.layers))
    prep(w.data, f"an image layer over {w.base}; {w.small} small files in {w.sdirs} dirs merged from two layers",
         make)


def run_walk(r):
    w = shape(r.b).walk
    x = read_expect(w.data + "/expect")
    for tool in ("find", "stat walk", "tar read-all"):
        r.mount(":".join(w.layers), f"walk-{r.impl}-{r.rep}")      # each on a fresh mount
        drop_caches()
        for temp in ("cold", "warm"):
            if tool == "find":
                r.want("entries", r.measure(["find", r.mnt], count="lines"), x["X_ENTRIES"])
            elif tool == "stat walk":
                r.measure(["find", r.mnt, "-printf", "%y %s\\n"])
                rows = [line.split(" ") for line in r.text.splitlines()]
                got = f"{len(rows)} {sum(int(s) for t, s in rows if t == 'f')}"
                r.want("entries, bytes", got, f"{x['X_ENTRIES']} {x['X_BYTES']}")
            else:
                n = int(r.measure(["tar", "-C", r.mnt, "-cf", "-", "."], count="bytes"))
                if not int(x["X_TARMIN"]) <= n <= int(x["X_TARMAX"]):
                    r.fail(f"tar wrote {n} bytes, want {x['X_TARMIN']}..{x['X_TARMAX']}")
            r.result(f"{tool} {temp}")
    r.finish()


# ------------------------------------------------------------------------ io

def prep_io(b):
    io = shape(b).io
    prep(io.lower, f"big ({io.mib} MiB of random data)", lambda: write_random(io.lower + "/big", io.mib * MIB))


def dd_bytes(r):
    """The byte count that the dd r last measured reported (on stderr)."""
    return next((line.split()[0] for line in r.err.splitlines() if "bytes" in line), "")


def run_io(r):
    io = shape(r.b).io
    r.mount(io.lower, f"io-{r.impl}-{r.rep}")
    drop_caches()
    r.measure(["dd", f"if={r.mnt}/big", "of=/dev/null", "bs=1M"])
    r.want("bytes read", dd_bytes(r), io.mib * MIB)
    if tail(r.mnt + "/big", 65536) != tail(io.lower + "/big", 65536):
        r.fail("the end of big differs")
    r.result(f"seq read {io.mib}M cold")

    drop_caches()
    r.measure(["dd", "if=/dev/zero", f"of={r.mnt}/new", "bs=1M", f"count={io.mib}"])
    r.want("bytes written", dd_bytes(r), io.mib * MIB)
    r.result(f"seq write {io.mib}M")
    r.measure(["sync", r.mnt + "/new"])
    new = r.upper + "/new" if os.path.exists(r.upper + "/new") else "/dev/null"     # (no upper/new: size 0)
    r.want("upper size", os.path.getsize(new), io.mib * MIB)
    r.want("non-zero bytes at the end", len(tail(new, MIB).replace(b"\0", b"")), 0)
    r.result("fsync after write")
    subprocess.run(["rm", "-f", r.mnt + "/new"], check=True)

    drop_caches()
    r.measure(r.probe("randread", r.mnt + "/big", io.rand))
    r.want("digest", r.out, probes.randread(io.lower + "/big", io.rand))
    r.result(f"4k rand read x{io.rand}")
    r.finish()


# ------------------------------------------------------------------------ copyup

def prep_copyup(b):
    prep_io(b)
    cu = shape(b).copyup
    prep(cu.lower, f"{cu.files} files of 0-64 KiB in 20 dirs",
         lambda: gen.files(cu.lower + "/files", cu.files, 20, "f", 65536))


def copyup_files(r, cu):
    r.want("files opened", r.measure(r.probe("copyup", r.mnt + "/files")), cu.files)
    r.want("files in the upper", count_files(r.upper + "/files"), cu.files)


def run_copyup(r):
    cu, io = shape(r.b).copyup, shape(r.b).io
    r.mount(f"{cu.lower}:{io.lower}", f"copyup-{r.impl}-{r.rep}")
    drop_caches()
    copyup_files(r, cu)
    if not same(r.upper + "/files", cu.lower + "/files"):
        r.fail("the upper's copies differ from the lower files")
    r.result(f"copy-up {cu.files} files")

    drop_caches()               # dd opens big O_WRONLY|O_APPEND, writes nothing
    r.measure(["dd", f"of={r.mnt}/big", "oflag=append", "conv=notrunc,nocreat", "count=0", "status=none"])
    if not same(r.upper + "/big", io.lower + "/big"):
        r.fail("the upper's big differs from the lower's")
    r.result(f"copy-up {io.mib}M file")

    os.mkdir(r.mnt + "/logs")
    for i in range(cu.ap_files):
        write(f"{r.mnt}/logs/log{i:04d}", "0" * 99 + "\n")
    r.want("appends", r.measure(r.probe("append", r.mnt + "/logs", cu.ap_files, cu.ap_rounds)),
           cu.ap_files * cu.ap_rounds)
    sizes = {str(os.stat(e.path).st_size) for e in os.scandir(r.upper + "/logs") if e.name[0] != "."}
    r.want("upper sizes", " ".join(sorted(sizes)) + " ", f"{100 * (cu.ap_rounds + 1)} ")
    r.result(f"append x{cu.ap_files * cu.ap_rounds}")

    # The same copy-up of the small files on a `volatile` mount (no sync before the
    # rename: the kernel's and stratafs's; fuse-overlayfs never syncs anyway).
    r.mount(f"{cu.lower}:{io.lower}", f"copyup-vol-{r.impl}-{r.rep}", extra="volatile")
    drop_caches()
    copyup_files(r, cu)
    r.result(f"vol. copy-up {cu.files}")
    r.finish()


# ------------------------------------------------------------------------ untar

def prep_untar(b):
    ut = shape(b).untar

    def make():
        gen.files(ut.lower + "/src/ut", ut.files, ut.files // 100, "f", 8192)
        subprocess.run(["tar", "-C", ut.lower + "/src", "-cf", ut.lower + "/ut.tar", "ut"], check=True)
        os.mkdir(ut.lower + "/lower")
        os.rename(ut.lower + "/src/ut", ut.lower + "/lower/lo")
        os.rmdir(ut.lower + "/src")
    prep(ut.lower, f"a tarball of {ut.files} files (0-8 KiB) and the same tree as lower/lo", make)


def run_untar(r):
    ut = shape(r.b).untar
    r.mount(ut.lower + "/lower", f"untar-{r.impl}-{r.rep}")
    # An ext4 without a journal makes each new inode skip past the inodes deleted in
    # the last minute whose table blocks are still cached (ext4's recently_deleted):
    # after the previous run's rm -rf that costs seconds. Written out and dropped
    # here, so that no run pays for the one before it.
    drop_caches()
    subprocess.run(["cat", ut.lower + "/ut.tar"], stdout=subprocess.DEVNULL, check=True)  # read warm
    r.measure(["tar", "-C", r.mnt, "-xf", ut.lower + "/ut.tar"])
    r.want("files", count_files(r.mnt + "/ut"), ut.files)
    r.result(f"untar {ut.files} files")

    r.measure(["rm", "-rf", r.mnt + "/ut"])
    if os.path.lexists(r.mnt + "/ut"):
        r.fail("ut still exists")
    up = r.upper + "/ut"                            # a whiteout may stay (fuse-overlayfs)
    if os.path.exists(up) and not stat.S_ISCHR(os.stat(up).st_mode):
        r.fail("ut is still in the upper")
    r.result("rm -rf untarred")

    drop_caches()
    r.measure(["rm", "-rf", r.mnt + "/lo"])
    r.want("mount's entries", len(os.listdir(r.mnt)), 0)
    if not os.path.exists(ut.lower + "/lower/lo/d0000"):
        r.fail("the lower tree was touched")
    r.result("rm -rf lower tree")
    r.finish()


# ------------------------------------------------------------------------ bigdir

def prep_bigdir(b):
    bd = shape(b).bigdir

    def make():
        gen.bigdir(bd.root, bd.n)
        os.sync()
        write_expect(bd.root + "/expect", gen.merge([bd.root + "/up", bd.root + "/mid", bd.root + "/low"]))
    prep(bd.root, f"big/ with {bd.n} names over lower, middle and upper layers", make)


def run_bigdir(r):
    bd = shape(r.b).bigdir
    # ls -f lists . and .. and the dir's names; X_ENTRIES counts the root, big/ and them.
    r.want("names in the merged view", read_expect(bd.root + "/expect")["X_ENTRIES"], bd.n + 2)
    r.mount(f"{bd.root}/mid:{bd.root}/low", f"bigdir-{r.impl}-{r.rep}", template=bd.root + "/up")
    drop_caches()
    for temp in ("cold", "warm"):
        r.want("ls -f lines", r.measure(["ls", "-f", r.mnt + "/big"], count="lines"), bd.n + 2)
        r.result(f"ls -f {bd.n} {temp}")
    drop_caches()
    r.want("ENOENT answers", r.measure(r.probe("missing", r.mnt + "/big", bd.miss)), bd.miss)
    r.result(f"{bd.miss} missing names")
    r.finish()


# ------------------------------------------------------------------------ src

SRC_MODS, SRC_EXTRA, SRC_TOKEN = 60, 2000, "XYZZY_BENCH_MARK"


def prep_src(b):
    lower = f"{b.lower_root}/src-{SRC_MODS}-{SRC_EXTRA}"

    def make():
        expect = gen.src(lower + "/src", SRC_MODS, SRC_EXTRA, SRC_TOKEN)
        write_expect(lower + "/expect", expect)
        for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=bench", "-c", "user.email=bench@localhost",
                                                     "commit", "-q", "-m", "generated source tree"]):
            subprocess.run(["git", "-C", lower + "/src"] + args, check=True)
    prep(lower, f"a git repository of a C project ({SRC_MODS} modules built, {SRC_EXTRA} more files)", make)


def run_src(r):
    lower = f"{r.b.lower_root}/src-{SRC_MODS}-{SRC_EXTRA}"
    x = read_expect(lower + "/expect")
    r.mount(lower, f"src-{r.impl}-{r.rep}")
    src = r.mnt + "/src"
    for cmd, what, wanted, name in ((["git", "-C", src, "status", "--porcelain"], "changed paths", 0, "git status"),
                                    (["grep", "-r", SRC_TOKEN, src], "matching lines", x["SRC_GREP"], "grep -r")):
        drop_caches()
        for temp in ("cold", "warm"):
            r.want(what, r.measure(cmd, count="lines"), wanted)
            r.result(f"{name} {temp}")
    drop_caches()
    r.measure(["make", "-C", src, "-j2", "-s"])
    said = subprocess.run(["sh", "-c", '"$0" 2>&1', src + "/prog"], capture_output=True, text=True).stdout
    r.want("./prog says", said.rstrip("\n"), x["SRC_OUTPUT"])
    r.want("objects in the upper", count_files(r.upper + "/src", lambda e: e.name.endswith(".o")), SRC_MODS + 1)
    r.result(f"make -j2 ({SRC_MODS + 1} .c)")
    r.finish()


# ------------------------------------------------------------------------ rename

def prep_rename(b):
    rn = shape(b).rename

    def make():
        for d in range(rn.dirs):
            for f in range(rn.files):
                write_random(f"{rn.lower}/tree/d{d:02d}/f{f:02d}", rn.size)
    prep(rn.lower, f"{rn.dirs * rn.files} files of {rn.size} bytes", make)


def run_rename(r):
    rn = shape(r.b).rename
    r.mount(rn.lower, f"rename-{r.impl}-{r.rep}")
    os.listdir(r.mnt)
    drop_caches()
    t0 = time.perf_counter()
    rc = subprocess.run(["mv", r.mnt + "/tree", r.mnt + "/tree2"]).returncode
    secs = f"{time.perf_counter() - t0:.6f}"
    # Check the result (not timed).
    got, want = count_files(r.mnt + "/tree2"), rn.dirs * rn.files
    why = ([f"mv exited {rc}"] if rc else []) + ([f"tree2 has {got} files, want {want}"] if got != want else [])
    why += ["tree still exists"] if os.path.lexists(r.mnt + "/tree") else []
    why += [f"tree2/{f} differs" for f in ("d00/f00", f"d{rn.dirs - 1:02d}/f{rn.files - 1:02d}")
            if not same(f"{r.mnt}/tree2/{f}", f"{rn.lower}/tree/{f}")]
    status = "FAIL" if why else "ok"
    r.log(f"{secs}s {status}" + (f" ({'; '.join(why)})" if why else ""))
    r.record("rename (s)", secs)
    r.record("rename check", status)
    r.unmount()


# ------------------------------------------------------------------------ mounts

def prep_mounts(b):
    lower = b.lower_root + "/mounts"

    def make():
        for i in range(1, 501):
            write(f"{lower}/l{i}/f{i}", f"{i}\n")
    prep(lower, "500 layers of one file each", make)


def run_mounts(r):
    per = 5 if r.b.quick else 10
    for n in (8, 128, 500):
        # Layer paths relative to the layers' directory (the mount command runs there):
        # the kernel takes at most a page of mount options, which 500 absolute paths exceed.
        lower, times = ":".join(f"l{i}" for i in range(1, n + 1)), []
        for _ in range(per):
            m = Mount(r.b, r.impl, lower, f"{r.b.dir}/runs/mounts-{r.impl}-{r.rep}", cwd=r.b.lower_root + "/mounts")
            t0 = time.perf_counter()
            rc = m.start()
            times.append(time.perf_counter() - t0)
            if rc:
                r.fail(f"mount exited {rc}")
            if not (os.path.exists(m.mnt + "/f1") and os.path.exists(f"{m.mnt}/f{n}")):
                r.fail("the layers' files are not shown")
            m.unmount()
        med = "FAIL" if r.why else f"{sorted(times)[(per + 1) // 2 - 1]:.6f}"
        r.log(f"{n} layers {med}s (median of {per})" + (f" FAIL:{r.why[:-1]}" if r.why else ""))
        r.record(f"mount {n} layers (s)", med)
        r.why = ""


# ------------------------------------------------------------------------ stall

S_BIG_MIB, S_OTHER = 1024, 1000


def prep_stall(b):
    lower = b.lower_root + "/stall"

    def make():
        write_random(lower + "/big", S_BIG_MIB * MIB)
        for i in range(S_OTHER):
            write(f"{lower}/other/f{i}", f"small file {i}\n")
    prep(lower, f"big ({S_BIG_MIB} MiB of random data) and other/ ({S_OTHER} files)", make)


def run_stall(r):
    lower = r.b.lower_root + "/stall"
    m = r.mount(lower, f"stall-{r.impl}-{r.rep}")
    ready, stop, out = m.dir + "/prober.ready", m.dir + "/prober.stop", m.dir + "/prober.out"
    drop_caches()
    # Warm the lower layer's metadata of other/ (directly, not through the mount), so
    # that the prober measures the implementation, not cold ext4 inode reads queued
    # behind the copy-up's I/O; big's data and the mount's own caches stay cold.
    subprocess.run(["ls", "-l", lower + "/other"], stdout=subprocess.DEVNULL, check=True)
    prober = subprocess.Popen(r.probe("prober", m.mnt, S_OTHER, ready, stop, out))
    try:
        wait_for(lambda: os.path.exists(ready) or prober.poll() is not None, 300, 0.05)
        if not os.path.exists(ready):
            raise BenchError(f"stall {r.impl}: the prober did not start")
        t0 = time.time()
        try:                    # open(O_WRONLY|O_APPEND) + close: copies big up
            os.close(os.open(m.mnt + "/big", os.O_WRONLY | os.O_APPEND))
            ok = True
        except OSError as e:
            r.log(f"copy-up: {e}")
            ok = False
        t1 = time.time()
        write(stop + ".tmp", f"{t0:.6f} {t1:.6f}\n")
        os.rename(stop + ".tmp", stop)
        if prober.wait():
            raise BenchError(f"stall {r.impl}: the prober failed")
    finally:
        if prober.poll() is None:
            prober.kill()
            prober.wait()
    # Check the copy (not timed): the upper must hold an identical copy.
    status = "ok" if ok and same(m.upper + "/big", lower + "/big") else "FAIL"
    p = {"max": "nan", "p99": "nan", **dict(line.split() for line in read(out).splitlines())}
    secs = f"{t1 - t0:.6f}"
    r.log(f"copy-up {secs}s, {p['probes']} probes, max {p['max']} ms, p99 {p['p99']} ms"
          f" (stat {p['max_stat']}, listdir {p['max_listdir']}, statroot {p['max_statroot']}) {status}")
    for metric, v in (("copy-up (s)", secs), ("max (ms)", p["max"]), ("p99 (ms)", p["p99"]),
                      ("max stat (ms)", p["max_stat"]), ("max listdir (ms)", p["max_listdir"]),
                      ("max stat / (ms)", p["max_statroot"]), ("probes (n)", p["probes"]), ("copy-up check", status)):
        r.record(metric, v)
    r.unmount()


# ------------------------------------------------------------------------ memory

def prep_memory(b):
    mem = shape(b).memory
    prep(mem.lower, f"{mem.n} empty files in {mem.dirs} dirs", lambda: gen.empty(mem.lower, mem.dirs, mem.files))


def run_memory(r):
    mem, walk = shape(r.b).memory, "stat walk cold"
    if r.impl == "kernel":      # no daemon: nothing to measure
        for m in (f"{walk} (s)", f"{walk} cpu (s)", "entries (n)", "RSS after walk (MiB)",
                  "RSS drop_caches+3s (MiB)", "daemon peak RSS (MiB)"):
            r.record(m, "-")
        r.log("skipped (no daemon)")
        return
    r.mount(mem.lower, f"memory-{r.impl}-{r.rep}")
    drop_caches()
    n = r.measure(["find", r.mnt, "-printf", "%s\\n"], count="lines")   # the root, the dirs, the files
    r.want("entries", n, 1 + mem.dirs + mem.n)
    r.result(walk)
    r.record("entries (n)", n)
    after = r.daemon_mib("VmRSS")
    drop_caches(2)              # dentries and inodes: FORGETs to the daemon
    time.sleep(3)
    dropped = r.daemon_mib("VmRSS")
    r.log(f"{n} entries; RSS {after} MiB after the walk, {dropped} MiB after drop_caches")
    r.record("RSS after walk (MiB)", after)
    r.record("RSS drop_caches+3s (MiB)", dropped)
    r.finish()
