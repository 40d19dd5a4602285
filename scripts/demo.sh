#!/usr/bin/env bash
# Builds three small demo layers, mounts them with stratafs, shows the merged view and
# where each entry comes from, then unmounts. Needs root (or a working /dev/fuse).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/lib.sh"
bin=${STRATAFS:-$(release_bin "$here")}
[ -x "$bin" ] || bin=${bin%/release/stratafs}/debug/stratafs
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }

demo=$(mktemp -d /tmp/stratafs-demo.XXXXXX)
mnt=$demo/merged
cleanup() {
    if mountpoint -q "$mnt" 2>/dev/null; then umount -l "$mnt" || true; fi
    rm -rf "$demo"
}
trap cleanup EXIT
mkdir -p "$demo"/{base,app-layer,upper,work,merged}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# Layer 1 (bottom): a tiny "base image".
b=$demo/base
mkdir -p "$b"/etc "$b"/usr/share/doc/tool "$b"/app/plugins "$b"/var/log
echo "demo-host" > "$b"/etc/hostname
echo "Welcome to the base image" > "$b"/etc/motd
echo "tool manual" > "$b"/usr/share/doc/tool/README
echo "old setting=1" > "$b"/app/config
echo "plugin a" > "$b"/app/plugins/a.so
echo "plugin b" > "$b"/app/plugins/b.so
echo "boot ok" > "$b"/var/log/boot.log
ln -s ../etc/motd "$b"/var/motd-link

# Layer 2: an image layer that changes and deletes things (OCI/AUFS whiteouts), and
# replaces a directory by an opaque one.
a=$demo/app-layer
mkdir -p "$a"/etc "$a"/usr/share "$a"/app/plugins "$a"/var/log
echo "Welcome to the app image" > "$a"/etc/motd          # changed file
touch "$a"/usr/share/.wh.doc                              # deleted directory
touch "$a"/var/log/.wh.boot.log                           # deleted file
touch "$a"/app/plugins/.wh..wh..opq                       # opaque: old plugins gone
echo "plugin c" > "$a"/app/plugins/c.so
echo "new setting=2" > "$a"/app/config

# The upper layer: a kernel-style whiteout (char device 0/0) left by an earlier run.
mkdir -p "$demo"/upper/etc
mknod "$demo"/upper/etc/hostname c 0 0
echo "written by the container" > "$demo"/upper/notes.txt

say "Layers (topmost first)"
for l in upper app-layer base; do
    echo "-- $l:"; (cd "$demo/$l" && find . -mindepth 1 -printf '   %y %p\n' | sort -k2)
done

opts="lowerdir=$demo/app-layer:$demo/base,upperdir=$demo/upper,workdir=$demo/work"
say "Mount: stratafs -o $opts $mnt"
"$bin" -o "$opts" "$mnt"

say "The merged view"
(cd "$mnt" && find . -mindepth 1 -printf '   %y %p\n' | sort -k2)

say "Where each entry comes from (stratafs which)"
(cd "$mnt" && find . -mindepth 1 | sort | sed 's|^\./||') | while read -r p; do
    "$bin" which -o "$opts" "$p"
done | sed 's/^/   /'

say "Hidden by whiteouts and opaque directories"
for p in etc/hostname usr/share/doc var/log/boot.log app/plugins/a.so; do
    if [ -e "$mnt/$p" ]; then echo "   $p: visible (unexpected)"; else echo "   $p: hidden"; fi
done

say "Contents"
for p in etc/motd app/config var/motd-link notes.txt; do printf '   %-16s %s\n' "$p" "$(cat "$mnt/$p")"; done

say "Unmount"
umount "$mnt" && echo "   unmounted; the daemon exits by itself"
