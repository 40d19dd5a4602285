# shellcheck shell=bash
# Sourced by the scripts: helpers they share.

# release_bin REPO: where `cargo build --release` in REPO puts stratafs. The host is
# named as the target in .cargo/config.toml (for the static link), so binaries are
# under target/<host tuple>/release/; CARGO_TARGET_DIR is honoured.
release_bin() {
    local repo=$1 host
    host=$(rustc -vV | sed -n 's/^host: //p')
    printf '%s/%s/release/stratafs\n' "${CARGO_TARGET_DIR:-$repo/target}" "$host"
}

# usage_of SCRIPT: the comment block at the top of SCRIPT (its usage), without the '# '.
usage_of() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$1"; }

# ---------------------------------------------------------------------------------------
# Mounting an overlay (stratafs, kernel overlayfs or fuse-overlayfs) and undoing it.
# Mount points are looked up in /proc/self/mountinfo and never statted: a hung FUSE
# daemon would hang the stat.
# ---------------------------------------------------------------------------------------

# ovl_is_mounted DIR: whether DIR is a mount point.
ovl_is_mounted() { awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; }

# ovl_mount IMPL LOWERDIRS UPPER WORK MNT LOG: mounts IMPL on MNT, with
#   stratafs        $STRATAFS_BIN -f -o lowerdir=LOWERDIRS,upperdir=UPPER,workdir=WORK MNT
#   kernel          mount -t overlay overlay -o lowerdir=..,upperdir=..,workdir=..,redirect_dir=on,index=on MNT
#   fuse-overlayfs  fuse-overlayfs -f -o lowerdir=..,upperdir=..,workdir=.. MNT
# A FUSE daemon runs in the foreground (-f) as a child of the calling shell (so do not
# call this in a subshell), with stdin /dev/null and stdout and stderr appended to LOG;
# OVL_PID is its pid (empty for kernel), for ovl_stop_daemon. Waits up to 10 s for the
# mount; returns 1 (LOG shown on stderr) if it does not appear.
ovl_mount() {
    local impl=$1 mnt=$5 log=$6 bin i
    local opts="lowerdir=$2,upperdir=$3,workdir=$4"
    OVL_PID=
    case $impl in
        kernel) mount -t overlay overlay -o "$opts,redirect_dir=on,index=on" "$mnt" || return 1 ;;
        stratafs) bin=$STRATAFS_BIN ;;
        fuse-overlayfs) bin=$(command -v fuse-overlayfs || echo /usr/bin/fuse-overlayfs) ;;
        *) echo "ovl_mount: unknown implementation '$impl'" >&2; return 1 ;;
    esac
    if [ "$impl" != kernel ]; then
        "$bin" -f -o "$opts" "$mnt" </dev/null >>"$log" 2>&1 &
        OVL_PID=$!
    fi
    for i in $(seq 100); do
        ovl_is_mounted "$mnt" && return 0
        [ -z "$OVL_PID" ] || kill -0 "$OVL_PID" 2>/dev/null || break
        sleep 0.1
    done
    ovl_is_mounted "$mnt" && return 0
    cat "$log" >&2 2>/dev/null
    return 1
}

# fuse_abort DIR: aborts the FUSE connection of the mount on DIR, if it is a FUSE mount
# (through fusectl, /sys/fs/fuse/connections): its requests fail at once, so that
# nothing waits on a hung daemon. The connection id is the minor of the mount's device.
fuse_abort() {
    local conn
    awk -v m="$1" '$5 == m && / - fuse/ { split($3, d, ":"); print d[2] }' /proc/self/mountinfo |
        while read -r conn; do
            if [ -w "/sys/fs/fuse/connections/$conn/abort" ]; then
                echo 1 >"/sys/fs/fuse/connections/$conn/abort" 2>/dev/null || true
            fi
        done
}

# ovl_umount DIR [TRIES]: unmounts DIR if it is mounted: umount (each bounded by 30 s), up
# to TRIES times (default 5) a second apart; as a last resort aborts its FUSE connection
# (if it has one) and detaches it (umount -l). Returns 1 if even that failed.
ovl_umount() {
    local d=$1 tries=${2:-5} i
    for ((i = 1; i <= tries; i++)); do
        ovl_is_mounted "$d" || return 0
        [ "$i" = 1 ] || sleep 1
        timeout -k 5 30 umount "$d" 2>/dev/null && return 0
    done
    ovl_is_mounted "$d" || return 0
    echo "umount $d failed; aborting its FUSE connection (if any) and detaching it" >&2
    fuse_abort "$d"
    umount -l "$d" && return 0
    echo "umount -l $d failed too" >&2
    return 1
}

# ovl_stop_daemon PID: waits up to 10 s for the FUSE daemon PID (a child of this shell)
# to exit after its unmount; if it does not, shows its threads on stderr, ends it (TERM,
# KILL a second later) and returns 1. Reaps it either way. Nothing to do without PID.
ovl_stop_daemon() {
    local pid=$1 i t rc=0
    [ -n "$pid" ] || return 0
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "daemon $pid still running 10s after the unmount; killing it. Its threads:" >&2
        for t in /proc/"$pid"/task/*; do
            echo "    $(cat "$t/comm" 2>/dev/null) $(grep -m1 '^State' "$t/status" 2>/dev/null) wchan=$(cat "$t/wchan" 2>/dev/null)" >&2
        done
        kill "$pid" 2>/dev/null || true
        sleep 1
        kill -9 "$pid" 2>/dev/null || true
        rc=1
    fi
    wait "$pid" 2>/dev/null || true
    return $rc
}

# umount_below DIR [LOG]: detaches (umount -l) every mount at or below DIR, the most
# recent first, each after aborting its FUSE connection (see fuse_abort); notes each in
# LOG (default: none).
umount_below() {
    local dir=$1 log=${2:-/dev/null} mp
    [ -n "$dir" ] && [ "$dir" != / ] || return 1
    while mp=$(awk -v m="$dir" '$5 == m || index($5, m "/") == 1 { p = $5 } END { if (p == "") exit 1; print p }' \
            /proc/self/mountinfo); do
        fuse_abort "$mp"
        echo "force-unmounting $mp" >>"$log"
        umount -l "$mp" 2>>"$log" || return 1
    done
}
