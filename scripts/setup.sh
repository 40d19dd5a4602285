#!/usr/bin/env bash
# Installs what building and testing stratafs needs on a Debian machine (run as root).
set -euo pipefail
need=()
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v unshare >/dev/null || need+=(util-linux)
command -v mountpoint >/dev/null || need+=(util-linux)
command -v cc >/dev/null || need+=(gcc)
# (libc.a: the binary is linked statically, see .cargo/config.toml)
[ -e "/usr/lib/$(gcc -print-multiarch 2>/dev/null)/libc.a" ] || need+=(libc6-dev)
command -v setfacl >/dev/null || need+=(acl)
command -v setpriv >/dev/null || need+=(util-linux)
command -v losetup >/dev/null || need+=(mount)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
# (rsvg-convert: tests/show.rs renders `stratafs tree --svg`'s picture)
command -v rsvg-convert >/dev/null || need+=(librsvg2-bin)
command -v cargo >/dev/null || need+=(cargo rustc)
# clippy: the test command lints (cargo clippy --all-targets -- -D warnings)
command -v cargo >/dev/null && ! cargo clippy --version >/dev/null 2>&1 &&
    ! rustup component add clippy >/dev/null 2>&1 && need+=(rust-clippy)
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ! -e /dev/fuse ]; then
    modprobe fuse 2>/dev/null || true
    [ -e /dev/fuse ] || mknod -m 0666 /dev/fuse c 10 229
fi
# Plain users mount through fusermount3 and open /dev/fuse themselves (cloned
# connections, user namespaces): Debian's default mode is 0666.
chmod 0666 /dev/fuse
