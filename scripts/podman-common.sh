# shellcheck shell=bash disable=SC2034,SC2153  # (globals shared with the sourcing script)
# Setup shared by scripts/podman-e2e.sh, scripts/image-e2e.sh and scripts/bench-podman.sh,
# sourced by them (not run on its own): podman's packages, the work dir, the stratafs
# binary, the rootless user, the storage.conf / containers.conf of a private store,
# podman run with them (and its options, timing and failure report), emptying a store
# and ending its daemons, the busybox base image tree, the end-to-end scripts' exit and
# their view script (VIEW_SH). Only functions (with scripts/lib.sh's) and that one
# variable; nothing runs when sourced.
#
# The sourcing script defines `setup_fail MSG` (reports MSG and exits) and sets REPO
# (the checkout) before calling these. Globals read: WORK, MODE (root|rootless), IMPL,
# CONF, SCONF, GRAPH, PROG_REAL, XDG (rootless XDG_RUNTIME_DIR) and U_NAME/U_HOME (from
# podman_user). Globals set: see each function.

# release_bin, umount_below
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# log MSG...: progress, to stderr.
log() { printf '%s\n' "$*" >&2; }

# podman_install [fuse-overlayfs]: apt-get installs what is missing of podman, buildah,
# uidmap, runc, fuse3, conmon (and /usr/bin/fuse-overlayfs when asked for), then makes
# sure /dev/fuse exists and is usable by everyone.
podman_install() {
    local need=() p
    export DEBIAN_FRONTEND=noninteractive
    for p in podman:podman buildah:buildah newuidmap:uidmap runc:runc fusermount3:fuse3 conmon:conmon; do
        command -v "${p%%:*}" >/dev/null || need+=("${p#*:}")
    done
    [ "${1:-}" = fuse-overlayfs ] && { [ -x /usr/bin/fuse-overlayfs ] || need+=(fuse-overlayfs); }
    if [ ${#need[@]} -gt 0 ]; then
        log "installing: ${need[*]}"
        timeout 300 apt-get update -qq || setup_fail "apt-get update failed"
        timeout 900 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
            setup_fail "apt-get install ${need[*]} failed"
    fi
    [ -e /dev/fuse ] || { modprobe fuse 2>/dev/null || true; }
    [ -e /dev/fuse ] || mknod -m 0666 /dev/fuse c 10 229
    chmod 0666 /dev/fuse
}

# make_work PREFIX: WORK=a fresh dir $TMPDIR/PREFIX.XXXXXX (default /var/tmp), mode 0755,
# with bin/ (mount programs), logs/ and ctx/ (the build context).
make_work() {
    WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/$1.XXXXXX")
    chmod 0755 "$WORK"
    mkdir -p "$WORK/bin" "$WORK/logs" "$WORK/ctx"
}

# install_stratafs: copies $STRATAFS_BIN, or else the binary of a `cargo build --release`
# of $REPO (CARGO_TARGET_DIR honoured), to $WORK/bin/stratafs, where the unprivileged
# user can execute it. SRC_BIN=the path it was copied from.
install_stratafs() {
    if [ -n "${STRATAFS_BIN:-}" ]; then
        SRC_BIN=$STRATAFS_BIN
    else
        (cd "$REPO" && timeout 1800 cargo build --release >"$WORK/logs/cargo.log" 2>&1) ||
            setup_fail "cargo build --release failed: $(tail -n 5 "$WORK/logs/cargo.log" | tr '\n' ' ')"
        SRC_BIN=$(release_bin "$REPO")
    fi
    [ -x "$SRC_BIN" ] || setup_fail "no stratafs binary at $SRC_BIN"
    install -m 0755 "$SRC_BIN" "$WORK/bin/stratafs"
}

# check_modes: MODES (root, rootless or both, from --mode) becomes the list of modes
# to run; anything else, or not being root, ends the script with status 2.
check_modes() {
    case $MODES in
        root|rootless) ;;
        both) MODES="root rootless" ;;
        *) echo "--mode: root, rootless or both" >&2; exit 2 ;;
    esac
    [ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }
}

# podman_user NAME: the unprivileged user NAME, created (useradd, home, own group) if
# missing, with /etc/subuid and /etc/subgid ranges (65536 ids above every range there,
# at least from 100000) if it has none. Sets U_NAME, U_UID, U_GID, U_HOME. Returns 1
# when useradd fails.
podman_user() {
    local start f
    if ! id -u "$1" >/dev/null 2>&1; then
        useradd --create-home --user-group --shell /bin/sh "$1" || return 1
    fi
    U_NAME=$1
    U_UID=$(id -u "$1")
    U_GID=$(id -g "$1")
    U_HOME=$(getent passwd "$1" | cut -d: -f6)
    for f in /etc/subuid /etc/subgid; do
        touch "$f"
        if ! grep -q "^$1:" "$f"; then
            start=$(awk -F: '{ e = $2 + $3; if (e > m) m = e } END { print (m > 100000 ? m : 100000) }' "$f")
            echo "$1:$start:65536" >>"$f"
        fi
    done
}

# write_store_configs DIR RUNROOT [MOUNT_PROGRAM [MOUNTOPT]]: a private store in DIR.
# Writes CONF=DIR/containers.conf (netns none, runc, cgroupfs, events in
# DIR/events.log, tmp_dir DIR/t, network dir DIR/net) and SCONF=DIR/storage.conf
# (driver overlay, graphroot and rootless_storage_path GRAPH=DIR/graph, RUNROOT, and
# the mount_program and the options storage adds to its -o, if given), both 0644.
write_store_configs() {
    local dir=$1 runroot=$2 prog=${3:-} mountopt=${4:-}
    mkdir -p "$dir"
    CONF=$dir/containers.conf
    SCONF=$dir/storage.conf
    GRAPH=$dir/graph
    cat >"$SCONF" <<EOF
[storage]
driver = "overlay"
graphroot = "$GRAPH"
runroot = "$runroot"
# rootless podman ignores graphroot here and takes this one:
rootless_storage_path = "$GRAPH"
EOF
    [ -z "$prog" ] || printf '\n[storage.options.overlay]\nmount_program = "%s"\n' "$prog" >>"$SCONF"
    [ -z "$mountopt" ] || printf 'mountopt = "%s"\n' "$mountopt" >>"$SCONF"
    cat >"$CONF" <<EOF
[containers]
netns = "none"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$dir/events.log"
tmp_dir = "$dir/t"

[network]
network_config_dir = "$dir/net"
EOF
    chmod 0644 "$CONF" "$SCONF"
}

# in_mode TIMEOUT [VAR=VALUE]... -- COMMAND [ARG]...: COMMAND in $WORK with the given
# variables, bounded by TIMEOUT seconds; as root, or with MODE=rootless as $U_NAME
# (runuser, a clean environment, XDG_RUNTIME_DIR=$XDG).
in_mode() {
    local t=$1 envs=()
    shift
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    if [ "$MODE" = rootless ]; then
        (cd "$WORK" && timeout -k 10 "$t" runuser -u "$U_NAME" -- env -i \
            HOME="$U_HOME" USER="$U_NAME" LOGNAME="$U_NAME" SHELL=/bin/sh \
            PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin \
            XDG_RUNTIME_DIR="$XDG" TMPDIR=/var/tmp "${envs[@]}" "$@")
    else
        (cd "$WORK" && env "${envs[@]}" timeout -k 10 "$t" "$@")
    fi
}

# VIEW_SH: a shell script, run in a container with paths as arguments, that describes
# them as the end-to-end scripts compare them: one "PATH<TAB>DESC" line each. DESC is
# "-" (absent), "d MODE U:G [ENTRIES]", "f MODE U:G nLINKS CONTENT" (newlines as "/",
# md5 for files over 100 bytes), "p MODE U:G", "c MODE U:G MAJ,MIN", "l TARGET";
# "=A=B" gives "same" when A and B are one inode. "/" is only listed: the mode of the
# root directory is set by containers-storage (0555 or the parent layer's), not by the
# overlay.
VIEW_SH='desc() {
  p=$1
  case $p in
  =*) a=${p#=}; b=${a#*=}; a=${a%%=*}
      if [ -e "$a" ] && [ -e "$b" ]; then
        if [ "$(stat -c %i "$a")" = "$(stat -c %i "$b")" ]; then echo same; else echo differ; fi
      else echo -; fi
      return ;;
  esac
  if [ -L "$p" ]; then echo "l $(readlink "$p")"
  elif [ -p "$p" ]; then echo "p $(stat -c "%a %u:%g" "$p")"
  elif [ -c "$p" ]; then echo "c $(stat -c "%a %u:%g" "$p") $((0x$(stat -c %t "$p"))),$((0x$(stat -c %T "$p")))"
  elif [ "$p" = / ]; then echo "d [$(ls -A / | tr "\n" " " | sed "s/ $//")]"
  elif [ -d "$p" ]; then echo "d $(stat -c "%a %u:%g" "$p") [$(ls -A "$p" | tr "\n" " " | sed "s/ $//")]"
  elif [ -f "$p" ]; then
    if [ "$(stat -c %s "$p")" -gt 100 ]; then c=md5:$(md5sum < "$p" | cut -d" " -f1)
    else c=$(tr "\n" "/" < "$p"); fi
    echo "f $(stat -c "%a %u:%g n%h" "$p") $c"
  elif [ -e "$p" ]; then echo "? $(stat -c %F "$p")"
  else echo -; fi
}
for p in "$@"; do printf "%s\t%s\n" "$p" "$(desc "$p")"; done'

# ensure_user: the end-to-end scripts' user $E2E_USER (see podman_user) with
# /run/user/UID, which is XDG_RUNTIME_DIR for its podman; a failure is reported with
# the script's `fail`.
ensure_user() {
    podman_user "$E2E_USER" || { fail "setup rootless" "useradd $E2E_USER failed"; return 1; }
    XDG=/run/user/$U_UID
    mkdir -p "$XDG"
    chown "$U_UID:$U_GID" "$XDG"
    chmod 0700 "$XDG"
}

# pm TIMEOUT ARGS...: podman ARGS with the store's $CONF and $SCONF (in_mode).
pm() {
    local t=$1
    shift
    in_mode "$t" CONTAINERS_CONF="$CONF" CONTAINERS_STORAGE_CONF="$SCONF" -- podman "$@"
}

# e2e_exit LABEL: the end of an end-to-end script (its EXIT trap): mode_cleanup (the
# script's), the work dir removed (kept with KEEP=1), an aborted run counted as a
# failure, then "LABEL: N passed, M failed" and the exit status.
e2e_exit() {
    local rc=$? label=$1
    trap - EXIT INT TERM
    mode_cleanup || true
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "$KEEP" = 1 ]; then
            echo "work dir kept: $WORK" >&2
        else
            remove_tree "$WORK"
        fi
    fi
    if [ "$rc" != 0 ] && [ "${DONE:-0}" != 1 ]; then
        fail "script" "aborted (status $rc)"
    fi
    echo "$label: $PASSED passed, $FAILED failed"
    [ "$FAILED" = 0 ] && exit 0 || exit 1
}

# podman_opts: RUNOPTS, the options every `podman run` and `podman build` gets in $MODE:
# --network none, and as root `--ulimit nofile=20000:20000 --ulimit nproc=4096:4096`
# (root lacks CAP_SYS_RESOURCE here; podman's defaults exceed the hard limits).
podman_opts() {
    RUNOPTS=(--network none)
    [ "$MODE" = rootless ] || RUNOPTS+=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096)
}

# stamp_lines: copies stdin to stdout, each line after the time it came (seconds since
# the epoch, to the microsecond): podman's own log times are whole seconds.
stamp_lines() {
    python3 -c 'import sys, time
for line in sys.stdin:
    sys.stdout.write("%.6f %s" % (time.time(), line))'
}

# run_pm NAME TIMEOUT ARGS...: `pm TIMEOUT ARGS` with its output in OUT, its stderr in
# ERR_FILE ($WORK/logs/MODE-IMPL-NAME.err), its exit status in RC, its wall time in
# ELAPSED (seconds, 3 decimals) and in WHY, if it failed, how (with the end of its
# stderr; empty on success). Returns 0. With PM_STAMP set, each line of ERR_FILE starts
# with the time it came (stamp_lines, which may still be writing the last lines when
# this returns).
run_pm() {
    local name=$1 t=$2 t0 us
    shift 2
    ERR_FILE=$WORK/logs/$MODE-$IMPL-$(echo "$name" | tr -c 'A-Za-z0-9.-' '_').err
    RC=0
    t0=${EPOCHREALTIME/[.,]/}
    if [ -n "${PM_STAMP:-}" ]; then
        OUT=$(pm "$t" "$@" 2> >(stamp_lines >"$ERR_FILE")) || RC=$?
    else
        OUT=$(pm "$t" "$@" 2>"$ERR_FILE") || RC=$?
    fi
    us=$((${EPOCHREALTIME/[.,]/} - t0))
    printf -v ELAPSED '%d.%03d' $((us / 1000000)) $((us % 1000000 / 1000))
    case $RC in
        0) WHY= ;;
        124|137) WHY="timed out after ${t}s: podman $*; stderr: $(tail -c 600 "$ERR_FILE" | tr '\n' ' ')" ;;
        *) WHY="status $RC: podman $*; stderr: $(tail -c 900 "$ERR_FILE" | tr '\n' ' ')" ;;
    esac
    return 0
}

# store_reset: empties the selected store (podman rm -af, rmi -af, system reset -f),
# ignoring failures.
store_reset() {
    pm 120 rm -af -t 0 >/dev/null 2>&1 || true
    pm 120 rmi -af >/dev/null 2>&1 || true
    pm 180 system reset -f >/dev/null 2>&1 || true
}

# kill_store_daemons: ends (by pid) the mount program's daemons still serving the store.
kill_store_daemons() {
    local pid
    for pid in $(store_daemons | cut -d' ' -f1); do kill "$pid" 2>/dev/null || true; done
}

# store_daemons: the daemons of the mount program ($PROG_REAL) that serve the store's
# graph ($GRAPH), "PID CMDLINE" lines; nothing when either is unset.
store_daemons() {
    local d pid exe cmd
    [ -n "${PROG_REAL:-}" ] && [ -n "${GRAPH:-}" ] || return 0
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        exe=$(readlink "$d/exe" 2>/dev/null) || continue
        [ "$exe" = "$PROG_REAL" ] || continue
        cmd=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null) || continue
        case $cmd in *"$GRAPH"*) echo "$pid $cmd" ;; esac
    done
}

# remove_tree DIR: lazily unmounts whatever is still mounted below DIR (umount_below),
# then removes DIR. Never fails.
remove_tree() {
    umount_below "$1" || true
    rm -rf --one-file-system "$1" 2>/dev/null || rm -rf "$1" || true
}

# base_tree_start [DIR...]: R=$WORK/base, the start of a base image tree from Debian's
# busybox-static (`apt-get download`, not installed): /bin/busybox with its applet
# symlinks, a minimal /etc (passwd and group with root, app 1000 and nobody; empty hosts
# and resolv.conf; hostname "base"), the usual top dirs and DIRs (relative to R).
base_tree_start() {
    local a
    (cd "$WORK/logs" && timeout 300 apt-get download busybox-static >/dev/null 2>&1) ||
        setup_fail "apt-get download busybox-static failed"
    mkdir -p "$WORK/bb"
    dpkg-deb -x "$WORK"/logs/busybox-static_*.deb "$WORK/bb"
    R=$WORK/base
    mkdir -p "$R"/{bin,etc,dev,proc,sys,run,root,tmp} "${@/#/$R/}"
    install -m 0755 "$WORK/bb/bin/busybox" "$R/bin/busybox"
    for a in $("$R/bin/busybox" --list); do
        [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"
    done
    printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'app:x:1000:1000:app:/tmp:/bin/sh' \
        'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$R/etc/passwd"
    printf '%s\n' 'root:x:0:' 'app:x:1000:' 'nogroup:x:65534:' >"$R/etc/group"
    : >"$R/etc/hosts"
    : >"$R/etc/resolv.conf"
    echo base >"$R/etc/hostname"
}

# base_tree_modes: the modes of the tree $R: directories 0755, files 0644 (busybox keeps
# 0755), /tmp 1777, /root 0700.
base_tree_modes() {
    find "$R" -type d -exec chmod 0755 {} +
    find "$R" -type f ! -name busybox -exec chmod 0644 {} +
    chmod 1777 "$R/tmp"
    chmod 0700 "$R/root"
}

# base_tree_tar: $WORK/base.tar (numeric owners, mode 0644) of the tree $R, for
# `podman import`.
base_tree_tar() {
    tar --numeric-owner -C "$R" -cf "$WORK/base.tar" .
    chmod 0644 "$WORK/base.tar"
}
