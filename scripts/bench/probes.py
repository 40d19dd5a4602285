"""The timed Python helpers, each run as a command of its own (`python3 probes.py NAME
ARG...`, printing what NAME returns), so timed with the interpreter's start like the
other commands. Each imports only what it needs."""
import os
import sys


def randread(path, n):
    """N random 4 KiB preads of PATH (a fixed sequence): prints their SHA-1."""
    import hashlib
    import random
    fd = os.open(path, os.O_RDONLY)
    blocks, rnd, h = os.fstat(fd).st_size // 4096, random.Random(12345), hashlib.sha1()
    for _ in range(int(n)):
        b = os.pread(fd, 4096, rnd.randrange(blocks) * 4096)
        if len(b) != 4096:
            sys.exit("short read")
        h.update(b)
    return h.hexdigest()


def copyup(top):
    """open(O_WRONLY|O_APPEND) + close of every file below TOP: prints how many."""
    n = 0
    for root, dirs, files in os.walk(top):
        dirs.sort()
        for f in sorted(files):
            os.close(os.open(os.path.join(root, f), os.O_WRONLY | os.O_APPEND))
            n += 1
    return n


def append(d, nfiles, rounds):
    """ROUNDS times over D/log0000..: open, append 100 bytes, close: prints how many."""
    nfiles, rounds = int(nfiles), int(rounds)
    line = b"x" * 99 + b"\n"
    paths = [os.path.join(d, "log%04d" % i) for i in range(nfiles)]
    for _ in range(rounds):
        for p in paths:
            fd = os.open(p, os.O_WRONLY | os.O_APPEND)
            os.write(fd, line)
            os.close(fd)
    return nfiles * rounds


def missing(d, n):
    """stat of N names missing from D: prints how many answered ENOENT."""
    k = 0
    for i in range(int(n)):
        try:
            os.stat(os.path.join(d, "missing-%06d.conf" % i))
        except FileNotFoundError:
            k += 1
    return k


def prober(mnt, n, ready, stop, out):
    """stat(MNT/other/fI) for I cycling through N names, listdir(other), stat(MNT) in turn
    until STOP appears (READY after 3 rounds); STOP holds "T0 T1", the copy-up's start and
    end (epoch seconds). Writes to OUT "key value" lines (ms) about the calls during it."""
    import time
    n = int(n)
    other = os.path.join(mnt, "other")
    clock = time.time
    calls = []                                  # (start, end, kind)
    i = rounds = 0
    while True:
        for kind in ("stat", "listdir", "statroot"):
            t0 = clock()
            if kind == "stat":
                os.stat(os.path.join(other, "f%d" % i))
                i = (i + 1) % n
            elif kind == "listdir":
                os.listdir(other)
            else:
                os.stat(mnt)
            calls.append((t0, clock(), kind))
        rounds += 1
        if rounds == 3:
            open(ready, "w").close()
        if os.path.exists(stop):
            break
    with open(stop) as f:
        c0, c1 = map(float, f.read().split())
    during = [(e - s, k) for s, e, k in calls if e >= c0 and s <= c1]
    lat = sorted(d for d, _ in during)

    def ms(x):
        return "%.3f" % (x * 1000)
    with open(out, "w") as f:
        f.write("probes %d\n" % len(lat))
        if lat:
            p99 = lat[max(0, -(-len(lat) * 99 // 100) - 1)]
            f.write("max %s\np99 %s\nmedian %s\n" % (ms(lat[-1]), ms(p99), ms(lat[(len(lat) - 1) // 2])))
        for k in ("stat", "listdir", "statroot"):
            ks = [d for d, kk in during if kk == k]
            f.write("max_%s %s\n" % (k, ms(max(ks)) if ks else "nan"))


if __name__ == "__main__":
    result = globals()[sys.argv[1]](*sys.argv[2:])
    if result is not None:
        print(result)
