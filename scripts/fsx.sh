#!/usr/bin/env bash
# Runs the fsx file-system exerciser (the Rust one, crates.io `fsx`) on files that
# start in a LOWER layer of an overlay mount, so that fsx's first write copies them up.
#
#   scripts/fsx.sh [--impl stratafs|kernel|fuse-overlayfs] [--ops N] [--seeds a,b,c]
#                  [--modes full,keep] [--timeout SECS] [--keep]
#
# Run as root. Installs fsx (pinned, `cargo install fsx --version $FSX_VERSION`) if it
# is missing, builds stratafs (`cargo build --release`, skipped when STRATAFS_BIN is
# set), and makes a temp dir (under ${TMPDIR:-/var/tmp}) holding two lower layers
# (lower1 on top of lower2), an upper and a work dir. Every fsx run gets its own
# lower-layer file of 256 KiB of random data: half of them sit at the top of lower2
# (the bottom layer), half in sub/dir/ of lower1 (the top layer) over a different
# file of the same name in lower2, so copy-up also has to copy parent directories up.
# One mount, in a private mount namespace, serves all the runs; it is always undone
# on exit (trap EXIT).
#
# Each seed gives one run per mode (--modes, default both):
#   full  every operation fsx has, weighted: read, write, mapread, mapwrite (mmap +
#         msync), truncate, msync(MS_INVALIDATE), fsync, fdatasync, posix_fallocate,
#         punch hole (FALLOC_FL_PUNCH_HOLE|KEEP_SIZE), sendfile, posix_fadvise,
#         copy_file_range (within the file), close/open. fsx opens the file with
#         O_CREAT|O_TRUNC, so the copy-up happens at open and carries no data.
#   keep  fsx's block mode: the file is opened O_RDWR without O_TRUNC (copy-up of the
#         full 256 KiB), fsx overwrites it with zeros, then runs every operation
#         that keeps the size (no truncate, posix_fallocate or close/open).
# fsx 0.3.2 has no zero-range, collapse-range or insert-range operation.
#
# A run passes when: the merged view shows the lower file's data before fsx starts;
# fsx ends with "All operations completed A-OK!" within --timeout seconds (default
# 600); the lower file is unchanged afterwards; the mount still answers; and, after
# the unmount, the upper layer holds exactly the data the mount showed at the end.
# Failures print the fsx error, the tail of its op log (fsx runs with -v, logging
# every op) and the daemon's stderr. The last line is exactly
#   fsx on IMPL: N passed, M failed
# and the exit status is 0 only if every run passed. The temp dir is removed unless a
# run failed or --keep is given.
#
# Options:
#   --impl I       stratafs (default), kernel (mount -t overlay ... redirect_dir=on,
#                  index=on) or fuse-overlayfs (the Debian package, installed if missing)
#   --ops N        fsx operations per run (default 20000)
#   --seeds LIST   comma-separated fsx seeds (default 1,2,3,4)
#   --modes LIST   comma-separated subset of full,keep (default full,keep)
#   --timeout S    per-run limit in seconds (default 600)
#   --keep         keep the temp dir even when everything passed
#
# Environment: STRATAFS_BIN=/path/to/stratafs skips the build; FSX_BIN=/path/to/fsx
# skips the install; TMPDIR picks where the temp dir goes.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# release_bin, ovl_mount, ovl_umount, ovl_stop_daemon, ovl_is_mounted
. "$REPO/scripts/lib.sh"

# Run in a private mount namespace of our own: mount namespaces that other processes
# create meanwhile then get no copy of our mount (such a copy keeps the FUSE connection,
# and so the daemon, alive after our umount), and if this script dies, the kernel
# undoes our mount when the namespace's last process exits.
if [ -z "${STRATAFS_FSX_NS:-}" ] && command -v unshare >/dev/null; then
    STRATAFS_FSX_NS=1 exec unshare -m --propagation private -- bash "$REPO/scripts/fsx.sh" "$@"
fi
FSX_VERSION=0.3.2
FILE_SIZE=$((256 * 1024))

IMPL=stratafs
OPS=20000
SEEDS=1,2,3,4
MODES=full,keep
RUN_TIMEOUT=600
KEEP=0

die() { echo "fsx.sh: $*" >&2; exit 2; }
log() { printf '%s\n' "$*"; }
usage() { usage_of "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case $1 in
        --impl) [ $# -ge 2 ] || die "--impl needs a value"; IMPL=$2; shift ;;
        --impl=*) IMPL=${1#*=} ;;
        --ops) [ $# -ge 2 ] || die "--ops needs a number"; OPS=$2; shift ;;
        --ops=*) OPS=${1#*=} ;;
        --seeds) [ $# -ge 2 ] || die "--seeds needs a list"; SEEDS=$2; shift ;;
        --seeds=*) SEEDS=${1#*=} ;;
        --modes) [ $# -ge 2 ] || die "--modes needs a list"; MODES=$2; shift ;;
        --modes=*) MODES=${1#*=} ;;
        --timeout) [ $# -ge 2 ] || die "--timeout needs a number"; RUN_TIMEOUT=$2; shift ;;
        --timeout=*) RUN_TIMEOUT=${1#*=} ;;
        --keep) KEEP=1 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
case $IMPL in
    stratafs|kernel|fuse-overlayfs) ;;
    fuse-ovl) IMPL=fuse-overlayfs ;;
    *) die "--impl must be stratafs, kernel or fuse-overlayfs, not '$IMPL'" ;;
esac
[[ $OPS =~ ^[1-9][0-9]*$ ]] || die "--ops must be a positive integer, not '$OPS'"
[[ $RUN_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive integer"
IFS=, read -r -a SEED_LIST <<< "$SEEDS"
[ ${#SEED_LIST[@]} -gt 0 ] || die "--seeds: no seed given"
for s in "${SEED_LIST[@]}"; do [[ $s =~ ^[0-9]+$ ]] || die "--seeds: '$s' is not a number"; done
IFS=, read -r -a MODE_LIST <<< "$MODES"
[ ${#MODE_LIST[@]} -gt 0 ] || die "--modes: no mode given"
for m in "${MODE_LIST[@]}"; do [[ $m = full || $m = keep ]] || die "--modes: unknown mode '$m'"; done
[ "$(id -u)" = 0 ] || die "run as root (mounting needs it)"

# ---------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    log "installing (apt): $*"
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}

need=()
command -v timeout >/dev/null || need+=(coreutils)
command -v findmnt >/dev/null || need+=(util-linux)
if [ "$IMPL" != kernel ]; then
    command -v fusermount3 >/dev/null || need+=(fuse3)
fi
[ "$IMPL" = fuse-overlayfs ] && { [ -x /usr/bin/fuse-overlayfs ] || need+=(fuse-overlayfs); }
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
if [ "$IMPL" = kernel ]; then
    grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
    grep -qw overlay /proc/filesystems || die "kernel overlayfs is not available"
else
    [ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
    [ -e /dev/fuse ] || die "/dev/fuse is missing"
fi

if [ -z "${FSX_BIN:-}" ]; then
    FSX_BIN=$(command -v fsx || true)
    [ -n "$FSX_BIN" ] || { [ -x "$HOME/.cargo/bin/fsx" ] && FSX_BIN=$HOME/.cargo/bin/fsx; } || true
    if [ -z "$FSX_BIN" ] || [ "$("$FSX_BIN" --version 2>/dev/null)" != "fsx $FSX_VERSION" ]; then
        command -v cargo >/dev/null || "$REPO/scripts/setup.sh"
        log "installing fsx $FSX_VERSION (cargo install)"
        cargo install --quiet --locked fsx --version "$FSX_VERSION"
        FSX_BIN=$(command -v fsx || echo "$HOME/.cargo/bin/fsx")
    fi
fi
[ -x "$FSX_BIN" ] || die "fsx not found (FSX_BIN=$FSX_BIN)"

if [ "$IMPL" = stratafs ]; then
    if [ -n "${STRATAFS_BIN:-}" ]; then
        [ -x "$STRATAFS_BIN" ] || die "STRATAFS_BIN=$STRATAFS_BIN is not executable"
    else
        log "building stratafs (cargo build --release)"
        (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
        STRATAFS_BIN=$(release_bin "$REPO")
    fi
fi

# ---------------------------------------------------------------------------------------
# Temp dir, mount, cleanup
# ---------------------------------------------------------------------------------------
T=$(mktemp -d "${TMPDIR:-/var/tmp}/stratafs-fsx.XXXXXX")
[[ $T != *[[:space:]]* ]] || die "temp dir path must not contain white space"
MNT=$T/mnt
OVL_PID=
FAILED_ANY=0
DAEMON_LINGERED=0

# Undoes the mount (one umount, then aborting the FUSE connection and detaching it),
# waits for the FUSE daemon we started, and kills it (by its pid) if it does not go away.
unmount_all() {
    ovl_umount "$MNT" 1 || true
    ovl_stop_daemon "$OVL_PID" || DAEMON_LINGERED=1
    OVL_PID=
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    unmount_all
    if ovl_is_mounted "$MNT"; then
        echo "fsx.sh: $MNT is still mounted; leaving $T in place" >&2
    elif [ "$KEEP" = 1 ] || [ "$FAILED_ANY" = 1 ] || [ $rc -ne 0 ]; then
        echo "fsx.sh: kept $T" >&2
    else
        rm -rf "$T"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$T"/{lower1,lower2,upper,work,mnt,logs,artifacts,sums}

mount_overlay() {
    ovl_mount "$IMPL" "$T/lower1:$T/lower2" "$T/upper" "$T/work" "$MNT" "$T/logs/daemon.log" ||
        die "$IMPL did not mount $MNT"
    log "mounted $IMPL on $MNT (lowerdir=lower1:lower2)"
}

# ---------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------
write_config() {     # write_config MODE FILE
    {
        echo "flen = $FILE_SIZE"
        if [ "$1" = keep ]; then echo "blockmode = true"; echo "nosizechecks = true"; fi
        echo "[opsize]"
        echo "max = 65536"
        echo "min = 0"
        echo "align = 1"
        echo "[weights]"
        echo "read = 10"
        echo "write = 10"
        echo "mapread = 10"
        echo "mapwrite = 10"
        echo "invalidate = 1"
        echo "fsync = 1"
        echo "fdatasync = 1"
        echo "punch_hole = 2"
        echo "sendfile = 2"
        echo "posix_fadvise = 1"
        echo "copy_file_range = 2"
        if [ "$1" = full ]; then
            echo "close_open = 1"
            echo "truncate = 2"
            echo "posix_fallocate = 2"
        else
            echo "close_open = 0"
            echo "truncate = 0"
            echo "posix_fallocate = 0"
        fi
    } > "$2"
}

RUN_NAMES=() RUN_SEEDS=() RUN_MODES=() RUN_PATHS=() RUN_LOWERS=() RUN_STATUS=() RUN_WHY=()
k=0
for s in "${SEED_LIST[@]}"; do
    for m in "${MODE_LIST[@]}"; do
        name=fsx-$m-s$s
        if [ $((k % 2)) -eq 0 ]; then
            rel=$name; lower=lower2
        else
            rel=sub/dir/$name; lower=lower1
            mkdir -p "$T/lower2/sub/dir"
            head -c "$FILE_SIZE" /dev/urandom > "$T/lower2/$rel"    # hidden by lower1's
        fi
        mkdir -p "$(dirname "$T/$lower/$rel")"
        head -c "$FILE_SIZE" /dev/urandom > "$T/$lower/$rel"
        write_config "$m" "$T/logs/$name.toml"
        RUN_NAMES+=("$name") RUN_SEEDS+=("$s") RUN_MODES+=("$m") RUN_PATHS+=("$rel")
        RUN_LOWERS+=("$lower") RUN_STATUS+=(pass) RUN_WHY+=("")
        k=$((k + 1))
    done
done
sync

fail_run() {         # fail_run INDEX REASON
    RUN_STATUS[$1]=FAIL
    RUN_WHY[$1]+="${RUN_WHY[$1]:+; }$2"
    FAILED_ANY=1
}

show_fsx_log() {     # show_fsx_log LOGFILE: the error, then the op log's tail
    local f=$1 first
    first=$(grep -n -m1 -E 'ERROR|panicked|does not support|unexpectedly|miscompare|short (read|write)' "$f" | cut -d: -f1 || true)
    if [ -n "$first" ]; then
        log "    --- fsx error (from line $first of $f) ---"
        awk -v a="$first" 'NR >= a && NR < a + 25 { print "    | " $0 } NR >= a && /LOG DUMP/ { exit }' "$f"
    fi
    log "    --- last 40 lines of $f ---"
    tail -n 40 "$f" | sed 's/^/    | /'
}

show_daemon_log() {
    [ -s "$T/logs/daemon.log" ] || return 0
    log "    --- last 15 lines of the daemon's stderr ---"
    tail -n 15 "$T/logs/daemon.log" | sed 's/^/    | /'
}

mount_overlay
total=${#RUN_NAMES[@]}
for ((i = 0; i < total; i++)); do
    name=${RUN_NAMES[$i]} rel=${RUN_PATHS[$i]} lower=${RUN_LOWERS[$i]}
    flog=$T/logs/$name.log
    lsum=$(sha256sum < "$T/$lower/$rel")
    # Before: the merged view shows the topmost lower file.
    if ! timeout -k 5 60 cmp -s "$MNT/$rel" "$T/$lower/$rel"; then
        fail_run "$i" "before fsx, $rel through the mount differs from $lower/$rel"
    fi
    mkdir -p "$T/artifacts/$name"
    t0=$EPOCHREALTIME
    rc=0
    NO_COLOR=1 timeout -k 10 "$RUN_TIMEOUT" "$FSX_BIN" -v -N "$OPS" -S "${RUN_SEEDS[$i]}" \
        -f "$T/logs/$name.toml" -P "$T/artifacts/$name" "$MNT/$rel" > "$flog" 2>&1 || rc=$?
    secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        fail_run "$i" "fsx timed out after ${RUN_TIMEOUT}s"
    elif [ $rc -ne 0 ]; then
        fail_run "$i" "fsx exited $rc"
    elif ! grep -q 'All operations completed A-OK!' "$flog"; then
        fail_run "$i" "fsx did not report A-OK"
    fi
    [ "$(sha256sum < "$T/$lower/$rel")" = "$lsum" ] || fail_run "$i" "the lower file $lower/$rel changed"
    if [ -n "$OVL_PID" ] && ! kill -0 "$OVL_PID" 2>/dev/null; then
        fail_run "$i" "the $IMPL daemon died"
    fi
    # What the mount shows now, to compare with the upper layer after the unmount.
    if ! timeout -k 5 60 sha256sum < "$MNT/$rel" > "$T/sums/$name" 2>/dev/null; then
        fail_run "$i" "cannot read $rel through the mount after fsx"
        rm -f "$T/sums/$name"
    fi
    log "run $((i + 1))/$total: mode=${RUN_MODES[$i]} seed=${RUN_SEEDS[$i]} file=$lower/$rel ops=$OPS: ${RUN_STATUS[$i]} (${secs}s)${RUN_WHY[$i]:+: ${RUN_WHY[$i]}}"
    if [ "${RUN_STATUS[$i]}" = FAIL ]; then
        show_fsx_log "$flog"
        show_daemon_log
    fi
done

unmount_all
ovl_is_mounted "$MNT" && die "$MNT is still mounted"
# After: the upper layer holds the copied-up file with the data the mount showed.
for ((i = 0; i < total; i++)); do
    name=${RUN_NAMES[$i]} rel=${RUN_PATHS[$i]}
    [ -f "$T/sums/$name" ] || continue
    if [ ! -f "$T/upper/$rel" ]; then
        fail_run "$i" "no copy-up: upper/$rel does not exist after unmount"
        log "after unmount, run $((i + 1)) ($name): FAIL: upper/$rel missing"
    elif [ "$(sha256sum < "$T/upper/$rel")" != "$(cat "$T/sums/$name")" ]; then
        fail_run "$i" "upper/$rel differs from what the mount showed"
        log "after unmount, run $((i + 1)) ($name): FAIL: upper/$rel differs from what the mount showed at the end of the run"
    fi
done

passed=0 failed=0
for ((i = 0; i < total; i++)); do
    if [ "${RUN_STATUS[$i]}" = pass ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
if [ $failed -gt 0 ]; then
    log "failed runs:"
    for ((i = 0; i < total; i++)); do
        [ "${RUN_STATUS[$i]}" = pass ] ||
            log "  ${RUN_NAMES[$i]} (seed ${RUN_SEEDS[$i]}, ${RUN_LOWERS[$i]}/${RUN_PATHS[$i]}): ${RUN_WHY[$i]}"
    done
    log "logs: $T/logs"
fi
[ "$DAEMON_LINGERED" = 0 ] || log "warning: the $IMPL daemon did not exit within 10s of the unmount (not counted as a failure)"
log "fsx on $IMPL: $passed passed, $failed failed"
[ $failed -eq 0 ]
