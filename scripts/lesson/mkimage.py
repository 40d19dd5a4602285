#!/usr/bin/env python3
"""Writes the lesson's image, a docker-archive with three layers, to the file given.

Standard library only, so the demo needs neither docker nor podman. The archive is the
one `docker save` writes: each layer an uncompressed tar, a config whose
rootfs.diff_ids are the sha256 of those tars, and manifest.json naming both. Every
time is fixed, so the image ID is the same on every run.
"""
import hashlib
import io
import json
import sys
import tarfile

T = 1700000000  # 2023-11-14, fixed: the same image ID every run


def layer(entries):
    """entries: (path, kind, data) with kind 'd' dir, 'f' file, 'l' symlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for path, kind, data in entries:
            i = tarfile.TarInfo(path)
            i.mtime = T
            i.uid = i.gid = 0
            i.uname = i.gname = "root"
            if kind == "d":
                i.type, i.mode = tarfile.DIRTYPE, 0o755
                t.addfile(i)
            elif kind == "l":
                i.type, i.mode, i.linkname = tarfile.SYMTYPE, 0o777, data
                t.addfile(i)
            else:
                b = data.encode()
                i.mode, i.size = 0o644, len(b)
                t.addfile(i, io.BytesIO(b))
    return buf.getvalue()


# Layer 1: FROM a tiny base system.
base = layer([
    ("etc", "d", None),
    ("etc/hostname", "f", "lesson\n"),
    ("etc/motd", "f", "Welcome to the base image\n"),
    ("etc/os-release", "f", 'NAME="Lesson Linux"\nVERSION_ID=1\n'),
    ("bin", "d", None),
    ("bin/hello", "f", "#!/bin/sh\necho hello from the image\n"),
    ("usr", "d", None),
    ("usr/share", "d", None),
    ("usr/share/doc", "d", None),
    ("usr/share/doc/README", "f", "the base image's manual\n"),
])
# Layer 2: COPY app/ /app/
app = layer([
    ("app", "d", None),
    ("app/config", "f", "setting=1\n"),
    ("app/plugins", "d", None),
    ("app/plugins/a.so", "f", "plugin a\n"),
    ("app/plugins/b.so", "f", "plugin b\n"),
    ("app/cache", "d", None),
    ("app/cache/old-1", "f", "cached 1\n"),
    ("app/cache/old-2", "f", "cached 2\n"),
    ("app/data", "d", None),
    ("app/data/users.db", "f", "alice\nbob\n"),
])
# Layer 3: RUN echo ... > /etc/motd && rm -rf /usr/share/doc (a change and a whiteout)
tweak = layer([
    ("etc", "d", None),
    ("etc/motd", "f", "Welcome to the app image\n"),
    ("usr", "d", None),
    ("usr/share", "d", None),
    ("usr/share/.wh.doc", "f", ""),
])

layers = [base, app, tweak]
steps = [
    ("/bin/sh -c #(nop) ADD file:lesson-base in / ", ""),
    ("/bin/sh -c #(nop) COPY dir:app in /app ", ""),
    ("/bin/sh -c echo 'Welcome to the app image' > /etc/motd && rm -rf /usr/share/doc", ""),
]


def sha(b):
    return hashlib.sha256(b).hexdigest()


created = "2023-11-14T22:13:20Z"
config = json.dumps({
    "architecture": "amd64",
    "os": "linux",
    "created": created,
    "config": {"Cmd": ["/bin/hello"], "Env": ["PATH=/bin"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(l) for l in layers]},
    "history": [{"created": created, "created_by": s} for s, _ in steps],
}, separators=(",", ":")).encode()
cname = sha(config) + ".json"
lnames = [sha(l) + "/layer.tar" for l in layers]
manifest = json.dumps([{"Config": cname, "RepoTags": [sys.argv[2] if len(sys.argv) > 2 else "lesson/app:1"],
                        "Layers": lnames}]).encode()

with tarfile.open(sys.argv[1], mode="w", format=tarfile.PAX_FORMAT) as out:
    def add(name, data):
        i = tarfile.TarInfo(name)
        i.mtime, i.mode, i.size = T, 0o644, len(data)
        out.addfile(i, io.BytesIO(data))
    for n, l in zip(lnames, layers):
        d = tarfile.TarInfo(n.split("/")[0])
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, T
        out.addfile(d)
        add(n, l)
    add(cname, config)
    add("manifest.json", manifest)
