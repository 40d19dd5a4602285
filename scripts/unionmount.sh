#!/usr/bin/env bash
# Runs unionmount-testsuite (github amir73il/unionmount-testsuite, checked out by
# hand: it is in no package registry, so this runs outside CI) against stratafs,
# kernel overlayfs or fuse-overlayfs, as root.
#
#   scripts/unionmount.sh CHECKOUT [--impl stratafs|kernel|fuse-overlayfs] [TEST...]
#
# Modes, each over the suite's default test list (as its `run` script builds it):
#   default  ./run --ov [--fuse=IMPL]            directory renames included (no --xdev)
#   verify   ./run --ov [--fuse=IMPL] --verify   every st_ino/layer check is enforced
#   ov=10    ./run --ov=10 [--fuse=IMPL]         each test once with up to 10 layers
#                                                (upper rotated into the lowers at
#                                                every remount) and once with two
# kernel = the suite's own --ov mode (no --fuse). fuse-overlayfs = Debian's package via
# --fuse=fuse-overlayfs, always with --xdev (it returns EXDEV for directory renames, so
# the suite runs rename-exdev instead of the directory rename tests).
#
# One ./run per test (the suite stops at its first failure), each under `timeout`,
# so every test gets a verdict. Prints per test `ok`/`FAIL`, one line per mode
#   unionmount MODE on IMPL: N passed, M failed
# and a total `unionmount on IMPL: N passed, M failed`; exits 1 if anything failed.
# Logs stay in UM_LOGDIR (default: a new /tmp/unionmount-logs.* directory).
#
# How --fuse=stratafs mounts: the suite runs `mount -t fuse.stratafs stratafs /mnt
# -orw -olowerdir=...,upperdir=...,workdir=...`; mount(8) execs /sbin/mount.fuse
# (-> mount.fuse3, package fuse3), which runs `/bin/sh -c "'stratafs' 'stratafs' '/mnt'
# '-o' 'rw,lowerdir=...'"`. mount(8) drops PATH from the helper's environment, so sh
# looks `stratafs` up in its built-in path (/usr/local/sbin:/usr/local/bin:/usr/sbin:...)
# and a directory in PATH is not enough. So everything runs in a private mount
# namespace (`unshare -m`), where a temporary directory holding a `stratafs` symlink
# (plus links to whatever /usr/local/sbin holds) is bind-mounted over /usr/local/sbin:
# nothing is installed on the host, and the bind mount dies with the namespace.
#
# The suite mounts tmpfs layers on /lower and /upper (inside the namespace); they are
# created if missing and removed again on exit. The union is mounted on a temporary
# directory (UNIONMOUNT_MNTPOINT) rather than the suite's default /mnt, which may hold
# other mounts on this machine.
#
# Environment:
#   STRATAFS_BIN      use this stratafs binary; else `cargo build --release` here and use
#                     ${CARGO_TARGET_DIR:-target}/<host>/release/stratafs
#   UM_MODES          modes to run (default "default verify ov=10")
#   UM_TEST_TIMEOUT   seconds per test (default 300)
#   UM_LOGDIR         where the per-test logs go
set -euo pipefail

die() { echo "unionmount.sh: $*" >&2; exit 2; }

SELF=$(readlink -f "$0")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)
# release_bin, umount_below
. "$ROOT/scripts/lib.sh"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)

# ---------------------------------------------------------------------------
# Inner part: runs inside `unshare -m`, with UM_* variables set by the outer part.
# ---------------------------------------------------------------------------
if [ "${1:-}" = "__inner" ]; then
    shift
    cd "$UM_CHECKOUT"
    mount --make-rprivate /

    if [ "$UM_IMPL" = stratafs ]; then
        # Make `stratafs` visible to mount.fuse3's sh (see above).
        if [ -d /usr/local/sbin ]; then
            for f in /usr/local/sbin/* /usr/local/sbin/.[!.]*; do
                [ -e "$f" ] || [ -L "$f" ] || continue
                ln -s "$f" "$UM_BINDIR/$(basename "$f")" 2>/dev/null || true
            done
        fi
        ln -sf "$UM_STRATAFS_BIN" "$UM_BINDIR/stratafs"
        mount --bind "$UM_BINDIR" /usr/local/sbin
        [ "$(env -u PATH /bin/sh -c 'command -v stratafs')" = /usr/local/sbin/stratafs ] ||
            die "stratafs is not found by sh's default path"
    fi
    # fusectl, to abort a hung FUSE connection.
    if [ -d /sys/fs/fuse/connections ] && ! mountpoint -q /sys/fs/fuse/connections; then
        mount -t fusectl fusectl /sys/fs/fuse/connections 2>/dev/null || true
    fi
    mynsid=$(readlink /proc/self/ns/mnt)
    tpid=
    trap '[ -z "$tpid" ] || kill -TERM "$tpid" 2>/dev/null; wait
          force_clean "$UM_LOGDIR/interrupted.cleanup"; exit 143' TERM INT

    # Undo whatever a test left: the suite's own clean-up, then by force.
    force_clean() {
        local log=$1 mp pid
        timeout 60 "$PY" ./run --clean-up >>"$log" 2>&1 || true
        # (FUSE connections aborted first, so umount does not wait on a hung daemon)
        for mp in "$UNIONMOUNT_MNTPOINT" /upper /lower; do
            umount_below "$mp" "$log" || true
        done
        # Daemons of this namespace only (ours), ended by pid.
        for pid in $(pgrep -x "$UM_DAEMON" 2>/dev/null || true); do
            [ "$(readlink "/proc/$pid/ns/mnt" 2>/dev/null)" = "$mynsid" ] || continue
            echo "killing leftover $UM_DAEMON pid $pid" >>"$log"
            kill "$pid" 2>/dev/null || true
        done
    }

    for mode in $UM_MODES; do
        case $mode in
            default) sel=--ov flags=() ;;
            verify) sel=--ov flags=(--verify) ;;
            ov=*) sel="--ov=${mode#ov=}" flags=() ;;
            *) die "unknown mode $mode" ;;
        esac
        args=("$sel")
        [ "$UM_IMPL" = kernel ] || args+=("--fuse=$UM_IMPL")
        [ "$UM_IMPL" != fuse-overlayfs ] || flags+=(--xdev)
        args+=("${flags[@]}")
        xdev=full
        [ "$UM_IMPL" != fuse-overlayfs ] || xdev=xdev
        if [ -n "$UM_TESTS" ]; then
            tests=$UM_TESTS
        else
            # The suite's default list, as its run script builds it.
            tests=$("$PY" - "$UM_CHECKOUT/run" "$xdev" <<'EOF'
import ast, sys
tree = ast.parse(open(sys.argv[1]).read())
base = extra = None
def listed(stmts):
    for s in stmts:
        if (isinstance(s, ast.AugAssign) and isinstance(s.target, ast.Name)
                and s.target.id == "tests" and isinstance(s.value, ast.List)):
            return [e.value for e in s.value.elts]
for node in ast.walk(tree):
    if (isinstance(node, ast.Assign) and isinstance(node.value, ast.List)
            and any(isinstance(t, ast.Name) and t.id == "tests" for t in node.targets)):
        base = [e.value for e in node.value.elts]
    if isinstance(node, ast.If):
        b, o = listed(node.body), listed(node.orelse)
        if b is not None and o is not None:
            extra = b if sys.argv[2] == "xdev" else o
if not base or extra is None:
    sys.exit("cannot find the test list in " + sys.argv[1])
print(" ".join(base + extra))
EOF
            )
        fi
        mdir="$UM_LOGDIR/${mode//=/}"
        mkdir -p "$mdir"
        echo "=== mode $mode: ./run ${args[*]} TEST"
        pass=0 fail=0
        for t in $tests; do
            log="$mdir/$t.log"
            start=$SECONDS
            set +e
            timeout -k 10 "$UM_TEST_TIMEOUT" "$PY" ./run "${args[@]}" "$t" >"$log" 2>&1 &
            tpid=$!
            wait $tpid
            rc=$?
            set -e
            force_clean "$log.cleanup"
            if [ $rc -eq 0 ]; then
                pass=$((pass + 1))
                echo "ok   $mode $t ($((SECONDS - start))s)"
            else
                fail=$((fail + 1))
                [ $rc -ne 124 ] && [ $rc -ne 137 ] || echo "TIMEOUT after ${UM_TEST_TIMEOUT}s" >>"$log"
                # The failing subtest, its last probe and what the suite printed.
                echo "FAIL $mode $t (rc $rc, $((SECONDS - start))s), log $log"
                { grep -E '^(\*\*\* \./run|TEST )' "$log" | tail -2
                  grep -E '^ \./run ' "$log" | tail -1
                  grep -vE '^( \./run |TEST |\*\*\*|Environment variables:|UNIONMOUNT_|$)' "$log" | tail -3
                } | sed 's/^/     | /' || true
            fi
        done
        echo "unionmount $mode on $UM_IMPL: $pass passed, $fail failed"
        echo "$mode $pass $fail" >>"$UM_LOGDIR/counts"
    done
    exit 0
fi

# ---------------------------------------------------------------------------
# Outer part.
# ---------------------------------------------------------------------------
usage() { echo "usage: $0 CHECKOUT [--impl stratafs|kernel|fuse-overlayfs] [TEST...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
CHECKOUT=$(readlink -f "$1")
shift
IMPL=stratafs
TESTS=()
while [ $# -gt 0 ]; do
    case $1 in
        --impl) [ $# -ge 2 ] || usage; IMPL=$2; shift 2 ;;
        --impl=*) IMPL=${1#--impl=}; shift ;;
        -h|--help) usage ;;
        -*) usage ;;
        *) TESTS+=("$1"); shift ;;
    esac
done
[ -f "$CHECKOUT/run" ] && [ -d "$CHECKOUT/tests" ] || die "$CHECKOUT is not a unionmount-testsuite checkout"
[ "$(id -u)" = 0 ] || die "must run as root"
[ -x "$PY" ] || die "python3 is needed"

case $IMPL in
    stratafs)
        command -v mount.fuse3 >/dev/null || [ -x /sbin/mount.fuse3 ] || die "mount.fuse3 is needed (apt-get install fuse3)"
        if [ -z "${STRATAFS_BIN:-}" ]; then
            (cd "$ROOT" && cargo build --release)
            STRATAFS_BIN=$(release_bin "$ROOT")
        fi
        STRATAFS_BIN=$(readlink -f "$STRATAFS_BIN")
        [ -x "$STRATAFS_BIN" ] || die "no stratafs binary at $STRATAFS_BIN"
        DAEMON=stratafs
        ;;
    kernel)
        grep -qw overlay /proc/filesystems || modprobe overlay || die "no kernel overlayfs"
        DAEMON=none
        ;;
    fuse-overlayfs)
        if ! [ -x /usr/bin/fuse-overlayfs ]; then
            apt-get install -y fuse-overlayfs || { apt-get update && apt-get install -y fuse-overlayfs; }
        fi
        echo "note: fuse-overlayfs runs with --xdev (it returns EXDEV for directory renames," \
            "so the suite runs rename-exdev instead of the directory rename tests)"
        DAEMON=fuse-overlayfs
        ;;
    *) usage ;;
esac

REAL_UMOUNT=$(command -v umount)
TMP=$(mktemp -d /tmp/unionmount.XXXXXX)
chmod 755 "$TMP" # the suite's as_bin checks (uid 1) walk down to the mount point
LOGDIR=${UM_LOGDIR:-$(mktemp -d /tmp/unionmount-logs.XXXXXX)}
mkdir -p "$LOGDIR"
: >"$LOGDIR/counts"
made=()
cleanup() {
    local d
    for d in "${made[@]}"; do rmdir "$d" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
for d in /lower /upper; do
    if ! [ -d "$d" ]; then mkdir "$d"; made+=("$d"); fi
done
mkdir "$TMP/bin" "$TMP/mnt"
if [ "$DAEMON" != none ] && [ "${UM_SYNC_UMOUNT:-1}" = 1 ]; then
    # `umount` of a FUSE mount returns before the daemon has exited, while the
    # daemon may still hold the layers; the suite unmounts /lower right after the
    # union, so it can get EBUSY (kernel overlayfs lets go of its layers within
    # umount). This `umount`, first in the suite's PATH, waits (up to 10 s) for the
    # daemon serving the target to exit (UM_SYNC_UMOUNT=0: plain umount).
    cat >"$TMP/bin/umount" <<'WRAPPER'
#!/bin/bash
pids=() ns=$(readlink /proc/self/ns/mnt)
for a in "$@"; do
    case $a in -*) continue ;; esac
    for pid in $(pgrep -x "$UM_DAEMON"); do
        [ "$(readlink "/proc/$pid/ns/mnt" 2>/dev/null)" = "$ns" ] || continue
        tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$a" && pids+=("$pid")
    done
done
"$UM_REAL_UMOUNT" "$@"
rc=$?
for pid in "${pids[@]}"; do
    for _ in $(seq 1000); do
        st=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
        [ -n "$st" ] && [ "$st" != Z ] || break
        sleep 0.01
    done
done
exit $rc
WRAPPER
    chmod 755 "$TMP/bin/umount"
fi

echo "unionmount-testsuite $(git -C "$CHECKOUT" rev-parse HEAD 2>/dev/null || echo '(not a git checkout)') on $IMPL${STRATAFS_BIN:+ ($STRATAFS_BIN)}; logs in $LOGDIR"
set +e
UM_CHECKOUT=$CHECKOUT UM_IMPL=$IMPL UM_BINDIR=$TMP/bin UM_STRATAFS_BIN=${STRATAFS_BIN:-} \
UM_DAEMON=$DAEMON UM_MODES=${UM_MODES:-default verify ov=10} UM_TESTS="${TESTS[*]}" \
UM_TEST_TIMEOUT=${UM_TEST_TIMEOUT:-300} UM_LOGDIR=$LOGDIR PATH="$TMP/bin:$PATH" \
UNIONMOUNT_MNTPOINT=$TMP/mnt UM_REAL_UMOUNT=$REAL_UMOUNT \
    unshare -m --propagation private -- bash "$SELF" __inner &
child=$!
trap 'kill -TERM $child 2>/dev/null; wait $child; exit 143' TERM INT
wait $child
rc=$?
trap - TERM INT
set -e
pass=0 fail=0
while read -r _ p f; do pass=$((pass + p)); fail=$((fail + f)); done <"$LOGDIR/counts"
echo "unionmount on $IMPL: $pass passed, $fail failed"
[ $rc -eq 0 ] || die "the run stopped early (exit $rc)"
[ "$fail" -eq 0 ]
