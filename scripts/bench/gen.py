"""Generated lower layers, and what their merged view must show."""
import os
import random
import stat

from .core import write


def whiteout(path):
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))


def files(top, n, nd, pre, maxsize):
    """N files TOP/dNNNN/PREnnnnnn (in ND dirs) of 0..MAXSIZE random bytes (fixed sizes)."""
    rnd = random.Random(pre + str(n))
    buf = os.urandom(maxsize + 65536)
    for d in range(nd):
        os.makedirs(os.path.join(top, "d%04d" % d), exist_ok=True)
    for i in range(n):
        size, off = rnd.randrange(0, maxsize + 1), rnd.randrange(0, 65536)
        write(os.path.join(top, "d%04d" % (i % nd), "%s%06d" % (pre, i)), buf[off:off + size])


def image(base, img, opq, whdirs):
    """An image-like layer IMG over BASE: every 41st regular file whited out, every 37th
    rewritten, OPQ an opaque dir with new contents, the dirs WHDIRS (comma-separated)
    whited out, and a new tree opt/app. Returns a line describing it."""
    whdirs = [d for d in whdirs.split(",") if d and os.path.isdir(os.path.join(base, d))]

    def mkparents(rel):
        parts = [p for p in os.path.dirname(rel).split("/") if p]
        for cur in ("/".join(parts[:k]) for k in range(1, len(parts) + 1)):
            d = os.path.join(img, cur)
            if not os.path.isdir(d):
                os.mkdir(d)
                try:
                    os.chmod(d, stat.S_IMODE(os.lstat(os.path.join(base, cur)).st_mode))
                except FileNotFoundError:
                    pass

    def wh(rel):
        mkparents(rel)
        whiteout(os.path.join(img, rel))
    skip = set([opq] + whdirs)
    n = nwh = rw = 0
    for root, dirs, names in os.walk(base):
        r = os.path.relpath(root, base)
        r = "" if r == "." else r
        dirs[:] = sorted(d for d in dirs if os.path.join(r, d) not in skip)
        for f in sorted(names):
            rel = os.path.join(r, f)
            st = os.lstat(os.path.join(base, rel))
            if not stat.S_ISREG(st.st_mode):
                continue
            n += 1
            if n % 41 == 0:
                wh(rel)
                nwh += 1
            elif n % 37 == 0:
                mkparents(rel)
                write(os.path.join(img, rel), b"rewritten by the image layer: %s\n" % rel.encode() * (1 + n % 50))
                os.chmod(os.path.join(img, rel), stat.S_IMODE(st.st_mode))
                rw += 1
    mkparents(opq)
    d = os.path.join(img, opq)
    os.mkdir(d)
    os.setxattr(d, "trusted.overlay.opaque", b"y")
    for i in range(20):
        write(os.path.join(d, "README-%d" % i), "replaces the lower directory's contents %d\n" % i)
    for w in whdirs:
        wh(w)
    for i in range(10):
        os.makedirs(os.path.join(img, "opt/app/d%d" % i))
        for j in range(50):
            write(os.path.join(img, "opt/app/d%d/f%d" % (i, j)), "application file %d/%d\n" % (i, j) * (1 + j))
    return ("%d regular files in the base: %d whited out, %d rewritten; opaque %s; whited-out dirs %s"
            % (n, nwh, rw, opq, " ".join(whdirs) or "none"))


def merge(layers):
    """What the merged view of LAYERS (topmost first) holds: ENTRIES (as `find` lists
    them, the root included), FILES, BYTES (regular files' sizes), TARMIN / TARMAX
    (bounds on the size of `tar -cf - .` of it), as X_NAME keys. Whiteouts are 0/0 char
    devices; opaque dirs have trusted.overlay.opaque=y."""
    def opaque(p):
        try:
            return os.getxattr(p, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
        except OSError:
            return False

    def blocks(n):
        return (n + 511) // 512 * 512
    tot = {"entries": 1, "files": 0, "bytes": 0, "uniq": 0, "all": 0, "long": 0}
    seen = set()

    def walk(dirs, rel):
        state = {}
        for d in dirs:
            with os.scandir(d) as it:
                for e in it:
                    st = e.stat(follow_symlinks=False)
                    isdir = stat.S_ISDIR(st.st_mode)
                    cur = state.get(e.name)
                    if cur is None:
                        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                            state[e.name] = "wh"
                        elif isdir:
                            state[e.name] = ["d", [e.path], opaque(e.path)]
                        else:
                            state[e.name] = ("f", st, e.path)
                    elif isinstance(cur, list) and not cur[2]:
                        if isdir:
                            cur[1].append(e.path)
                            cur[2] = opaque(e.path)
                        else:
                            cur[2] = True
        for name, cur in state.items():
            if cur == "wh":
                continue
            tot["entries"] += 1
            r = rel + "/" + name
            if len(r) >= 99:
                tot["long"] += 512 + blocks(len(r) + 1)
            if isinstance(cur, list):
                walk(cur[1], r)
                continue
            st = cur[1]
            if stat.S_ISLNK(st.st_mode) and st.st_size >= 99:
                tot["long"] += 512 + blocks(st.st_size + 1)
            if stat.S_ISREG(st.st_mode):
                tot["files"] += 1
                tot["bytes"] += st.st_size
                tot["all"] += blocks(st.st_size)
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    tot["uniq"] += blocks(st.st_size)
    walk(layers, ".")
    return {"X_ENTRIES": tot["entries"], "X_FILES": tot["files"], "X_BYTES": tot["bytes"],
            "X_TARMIN": 512 * tot["entries"] + tot["uniq"] + 1024,
            "X_TARMAX": 512 * tot["entries"] + tot["all"] + 2 * tot["long"] + 1024 + 20480}


def bigdir(root, n):
    """ROOT/{low,mid,up}/big, whose merged view holds N names: about a third from each
    layer, with 1% of low's names whited out in mid, 1% more in up, and 1% of mid's in
    up. up/ is the upper layer's template (copied into each fresh upper)."""
    w = max(1, n // 100)
    third = n // 3
    nl, nm = third + 2 * w, third + w
    nu = n - (nl - 2 * w) - (nm - w)
    for layer in ("low", "mid", "up"):
        os.makedirs(os.path.join(root, layer, "big"))

    for layer, k in (("low", nl), ("mid", nm), ("up", nu)):
        for i in range(k):
            write(os.path.join(root, layer, "big", "%s-%06d" % (layer, i)), "%s-%06d\n" % (layer, i))
    for i in range(w):
        whiteout(os.path.join(root, "mid", "big", "low-%06d" % i))
        whiteout(os.path.join(root, "up", "big", "low-%06d" % (w + i)))
        whiteout(os.path.join(root, "up", "big", "mid-%06d" % i))


def src(d, nmods, nextra, token):
    """A C project in D (NMODS modules under lib/ and include/, main.c, a Makefile) plus
    NEXTRA other source files under third_party/ (not built). Returns SRC_GREP (lines
    holding TOKEN) and SRC_OUTPUT (what the built ./prog prints)."""
    for sub in ("lib", "include", "third_party"):
        os.makedirs(os.path.join(d, sub))
    grep = 0

    def w(rel, text):
        write(os.path.join(d, rel), text)
    w("include/common.h", "#ifndef COMMON_H\n#define COMMON_H\n#include <stdio.h>\n"
      "#include <stdlib.h>\n#include <string.h>\n#endif\n")
    for i in range(nmods):
        w("include/mod%03d.h" % i, "#ifndef MOD%03d_H\n#define MOD%03d_H\nint mod%03d(int x);\n#endif\n" % (i, i, i))
        body = ["#include \"common.h\"", "#include \"mod%03d.h\"" % i, ""]
        for j in range(20):
            body += ["static int helper%d(int x)" % j, "{",
                     "    int a[16], k, s = 0;",
                     "    for (k = 0; k < 16; k++) a[k] = x * %d + k;" % (j + 1),
                     "    for (k = 0; k < 16; k++) s += a[k] %% %d;" % (j + 2),
                     "    return s;", "}", ""]
        if i % 3 == 0:
            body.append("/* %s: marker in module %d */" % (token, i))
            grep += 1
        body += ["int mod%03d(int x)" % i, "{", "    int s = 0;"]
        body += ["    s += helper%d(x) & 0;" % j for j in range(20)]
        body += ["    return x + %d + s;" % i, "}", ""]
        w("lib/mod%03d.c" % i, "\n".join(body))
    main = ["#include \"common.h\""] + ["#include \"mod%03d.h\"" % i for i in range(nmods)]
    main += ["int main(void)", "{", "    long sum = 0;"]
    main += ["    sum += mod%03d(1);" % i for i in range(nmods)]
    main += ["    printf(\"sum %ld\\n\", sum);", "    return 0;", "}", ""]
    w("main.c", "\n".join(main))
    w("Makefile", "CFLAGS = -O1 -Iinclude\nSRCS = main.c $(sort $(wildcard lib/*.c))\nOBJS = $(SRCS:.c=.o)\n\n"
      "prog: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n\n%.o: %.c\n\t$(CC) $(CFLAGS) -c -o $@ $<\n\n"
      "clean:\n\trm -f prog $(OBJS)\n")
    for i in range(nextra):
        sub = "third_party/pkg%02d" % (i % 40)
        os.makedirs(os.path.join(d, sub), exist_ok=True)
        lines = ["/* generated file %d */" % i]
        for j in range(60):
            if (i + j) % 97 == 0:
                lines.append("/* %s %d */" % (token, j))
                grep += 1
            lines.append("static const int table_%d_%d[] = { %s };"
                         % (i, j, ", ".join(str((i * j + k) % 1000) for k in range(12))))
        w("%s/file%04d.c" % (sub, i), "\n".join(lines) + "\n")
    return {"SRC_GREP": grep, "SRC_OUTPUT": "sum %d" % sum(1 + i for i in range(nmods))}


def empty(top, nd, nf):
    """TOP/dNNNN/fNNNN: ND dirs of NF empty files each."""
    os.makedirs(top)
    for d in range(nd):
        name = os.path.join(top, "d%04d" % d)
        os.mkdir(name)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY)
        for f in range(nf):
            os.mknod("f%04d" % f, stat.S_IFREG | 0o644, dir_fd=fd)
        os.close(fd)
