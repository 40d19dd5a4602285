#!/usr/bin/env bash
# Benchmarks stratafs against kernel overlayfs and fuse-overlayfs, side by side.
#
#   scripts/bench.sh [--quick] [--reps N] [--dir D] [--only IMPL[,IMPL]] [WORKLOAD...]
#
# Run as root. Each workload runs on the three implementations interleaved
# (kernel, fuse-ovl, stratafs, kernel, fuse-ovl, stratafs, ...) for N repetitions
# (default 3); then one table per workload shows the median of each metric and the
# ratios stratafs/kernel and stratafs/fuse-overlayfs. Lower layers are prepared once
# and kept (read-only, shared by every run); each repetition mounts a fresh, empty
# upper and work dir. Page, dentry and inode caches are dropped before every timed
# (cold) measurement. Everything lives under one directory (default
# /var/tmp/stratafs-bench); every mount is undone on exit.
#
# Workloads (no WORKLOAD argument = all of them):
#   rename  mv MNT/tree MNT/tree2, a rename(2) of a lower directory holding 10,000
#           files / 1 GiB (--quick: 1,000 files / 100 MiB). Kernel overlayfs and
#           stratafs set a redirect; fuse-overlayfs returns EXDEV and mv copies it all.
#           The result is checked (file count, source gone, sample contents).
#   stall   copy-up of a 1 GiB lower file (opened O_WRONLY|O_APPEND through the mount)
#           while a prober stats other/fN (cycling through 1,000 names), lists other/
#           and stats the root; reports the copy-up time and the prober's latency
#           (max, p99, max per kind of call) during the copy-up. After the caches are
#           dropped, the lower layer's other/ is listed directly (not through the
#           mount) so the prober does not wait for the disk; big stays cold.
#
# Options:
#   --quick          smaller rename tree (1,000 files / 100 MiB)
#   --reps N         repetitions per implementation (default 3)
#   --dir D          work directory (default /var/tmp/stratafs-bench)
#   --only LIST      comma-separated subset of: kernel, fuse-ovl (or fuse-overlayfs), stratafs
#
# Environment: STRATAFS_BIN=/path/to/stratafs skips `cargo build --release`.
#
# Adding a workload: write prep_NAME (prepares its lower layer once, under $LOWER_ROOT)
# and run_NAME IMPL REP (mounts with `mount_fresh`, measures, calls `record`), and add
# NAME to ALL_WORKLOADS. Each run_NAME runs in a subshell under `set -e`; a failure is
# recorded as FAIL for that run and the benchmark goes on.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CMDLINE=$0
for a in "$@"; do
    if [[ $a =~ ^[][A-Za-z0-9_./,:=@%+-]+$ ]]; then CMDLINE+=" $a"; else CMDLINE+=" $(printf '%q' "$a")"; fi
done

ALL_WORKLOADS=(rename stall)
ALL_IMPLS=(kernel fuse-ovl stratafs)

QUICK=0
REPS=3
DIR=/var/tmp/stratafs-bench
IMPLS=("${ALL_IMPLS[@]}")
WORKLOADS=()

die() { echo "bench.sh: $*" >&2; exit 1; }
log() { printf '%s\n' "$*" >&2; }

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------
parse_args() {
    while [ $# -gt 0 ]; do
        case $1 in
            --quick) QUICK=1 ;;
            --reps) [ $# -ge 2 ] || die "--reps needs a number"; REPS=$2; shift ;;
            --reps=*) REPS=${1#*=} ;;
            --dir) [ $# -ge 2 ] || die "--dir needs a directory"; DIR=$2; shift ;;
            --dir=*) DIR=${1#*=} ;;
            --only) [ $# -ge 2 ] || die "--only needs a list"; set_only "$2"; shift ;;
            --only=*) set_only "${1#*=}" ;;
            -h|--help) usage; exit 0 ;;
            -*) die "unknown option: $1 (see --help)" ;;
            *) WORKLOADS+=("$1") ;;
        esac
        shift
    done
    [[ $REPS =~ ^[1-9][0-9]*$ ]] || die "--reps must be a positive integer, not '$REPS'"
    [ ${#WORKLOADS[@]} -gt 0 ] || WORKLOADS=("${ALL_WORKLOADS[@]}")
    local w
    for w in "${WORKLOADS[@]}"; do
        declare -F "run_$w" >/dev/null || die "unknown workload: $w (known: ${ALL_WORKLOADS[*]})"
    done
    [[ $DIR != *[[:space:]]* ]] || die "--dir must not contain white space"
    case $DIR in /*) ;; *) DIR=$PWD/$DIR ;; esac
    DIR=${DIR%/}
    [ -n "$DIR" ] && [ "$DIR" != / ] || die "--dir must not be /"
}

set_only() {
    local want=() i
    IFS=, read -r -a want <<< "$1"
    IMPLS=()
    for i in "${ALL_IMPLS[@]}"; do          # keep the canonical order
        local w
        for w in "${want[@]}"; do
            [ "$w" = fuse-overlayfs ] && w=fuse-ovl
            [ "$w" = "$i" ] && { IMPLS+=("$i"); break; }
        done
    done
    for i in "${want[@]}"; do
        case $i in kernel|fuse-ovl|fuse-overlayfs|stratafs) ;; *) die "--only: unknown implementation '$i' (kernel, fuse-ovl, stratafs)" ;; esac
    done
    [ ${#IMPLS[@]} -gt 0 ] || die "--only: no implementation given"
}

has_impl() { local i; for i in "${IMPLS[@]}"; do [ "$i" = "$1" ] && return 0; done; return 1; }

# ---------------------------------------------------------------------------------------
# Setup: tools, stratafs binary, directories
# ---------------------------------------------------------------------------------------
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    log "installing: $*"
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}

ensure_tools() {
    local need=()
    command -v python3 >/dev/null || need+=(python3)
    command -v mountpoint >/dev/null || need+=(util-linux)
    command -v awk >/dev/null || need+=(gawk)
    command -v pgrep >/dev/null || need+=(procps)
    if has_impl fuse-ovl; then
        [ -x /usr/bin/fuse-overlayfs ] || need+=(fuse-overlayfs)
    fi
    if has_impl stratafs || has_impl fuse-ovl; then
        command -v fusermount3 >/dev/null || need+=(fuse3)
        [ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
        [ -e /dev/fuse ] || die "/dev/fuse is missing"
    fi
    [ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
    if has_impl kernel; then
        grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
        grep -qw overlay /proc/filesystems || die "kernel overlayfs is not available"
    fi
    PYTHON=$(command -v python3)
}

ensure_stratafs() {
    has_impl stratafs || return 0
    if [ -n "${STRATAFS_BIN:-}" ]; then
        [ -x "$STRATAFS_BIN" ] || die "STRATAFS_BIN=$STRATAFS_BIN is not executable"
    else
        log "building stratafs (cargo build --release)"
        (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
        STRATAFS_BIN=$REPO/target/release/stratafs
    fi
}

# All mounts under $DIR, deepest first.
mounts_under_dir() {
    awk -v d="$DIR/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r
}

unmount_leftovers() {
    local m
    for m in $(mounts_under_dir); do
        log "unmounting leftover $m"
        umount -l "$m" 2>/dev/null || true
    done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    unmount_leftovers
    [ -n "${DIR:-}" ] && [ -d "$DIR/runs" ] && rm -rf "$DIR/runs"
    exit $rc
}

# ---------------------------------------------------------------------------------------
# Helpers for workloads
# ---------------------------------------------------------------------------------------
now() { echo "$EPOCHREALTIME"; }                       # seconds, µs resolution
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# record WORKLOAD METRIC IMPL REP VALUE: one measurement (a number, or ok/FAIL).
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$RESULTS"; }

# mount_fresh IMPL LOWERDIRS NAME: mounts IMPL over LOWERDIRS (colon-separated) with a
# fresh upper and work dir in $DIR/runs/NAME; sets MNT, UPPER and RUN.
mount_fresh() {
    local impl=$1 lower=$2
    RUN=$DIR/runs/$3
    rm -rf "$RUN"
    mkdir -p "$RUN"/{upper,work,mnt}
    UPPER=$RUN/upper MNT=$RUN/mnt
    local opts="lowerdir=$lower,upperdir=$UPPER,workdir=$RUN/work"
    case $impl in
        kernel)   mount -t overlay overlay -o "$opts,redirect_dir=on,index=on" "$MNT" ;;
        fuse-ovl) /usr/bin/fuse-overlayfs -o "$opts" "$MNT" ;;
        stratafs) "$STRATAFS_BIN" -o "$opts" "$MNT" ;;
        *) die "unknown implementation $impl" ;;
    esac
    local i
    for i in $(seq 100); do mountpoint -q "$MNT" && return 0; sleep 0.1; done
    die "$impl: $MNT did not get mounted"
}

# unmount_run: unmounts $MNT, waits for a FUSE daemon serving it to exit, removes $RUN.
unmount_run() {
    [ -n "${MNT:-}" ] || return 0
    if mountpoint -q "$MNT"; then
        umount "$MNT" 2>/dev/null || { sleep 1; umount "$MNT" 2>/dev/null; } || umount -l "$MNT"
    fi
    local i
    for i in $(seq 100); do             # only waits: the daemon exits on its own
        pgrep -f -- "$MNT\$" >/dev/null || break
        sleep 0.1
    done
    rm -rf "$RUN"
    MNT=
}

# ---------------------------------------------------------------------------------------
# Workload: rename
# ---------------------------------------------------------------------------------------
rename_shape() {      # sets R_DIRS, R_FILES (per dir), R_SIZE (bytes per file), R_LOWER
    R_FILES=100
    if [ "$QUICK" = 1 ]; then R_DIRS=10; R_SIZE=$(( 100 * 1024 * 1024 / 1000 ))
    else R_DIRS=100; R_SIZE=$(( 1024 * 1024 * 1024 / 10000 )); fi
    R_LOWER=$LOWER_ROOT/rename-$((R_DIRS * R_FILES))
}

prep_rename() {
    rename_shape
    [ -e "$R_LOWER.ok" ] && return 0
    log "preparing $R_LOWER: $((R_DIRS * R_FILES)) files of $R_SIZE bytes"
    rm -rf "$R_LOWER"
    local d dir
    for ((d = 0; d < R_DIRS; d++)); do
        dir=$R_LOWER/tree/$(printf 'd%02d' "$d")
        mkdir -p "$dir"
        head -c $((R_FILES * R_SIZE)) /dev/urandom | split -b "$R_SIZE" -d -a 2 - "$dir/f"
    done
    sync
    touch "$R_LOWER.ok"
}

run_rename() {
    local impl=$1 rep=$2
    rename_shape
    mount_fresh "$impl" "$R_LOWER" "rename-$impl-$rep"
    ls "$MNT" >/dev/null
    drop_caches
    local t0 t1 rc=0 secs
    t0=$(now)
    mv "$MNT/tree" "$MNT/tree2" || rc=$?
    t1=$(now)
    secs=$(elapsed "$t0" "$t1")
    # Check the result (not timed).
    local want=$((R_DIRS * R_FILES)) got status=ok why=
    got=$( { find "$MNT/tree2" -type f 2>/dev/null || true; } | wc -l)
    [ $rc -eq 0 ] || { status=FAIL; why+=" mv exited $rc;"; }
    [ "$got" -eq "$want" ] || { status=FAIL; why+=" tree2 has $got files, want $want;"; }
    [ ! -e "$MNT/tree" ] || { status=FAIL; why+=" tree still exists;"; }
    local f
    for f in d00/f00 "$(printf 'd%02d/f%02d' $((R_DIRS - 1)) $((R_FILES - 1)))"; do
        cmp -s "$MNT/tree2/$f" "$R_LOWER/tree/$f" || { status=FAIL; why+=" tree2/$f differs;"; }
    done
    log "  rename $impl rep $rep: ${secs}s $status${why:+ (${why% ;})}"
    record rename "rename (s)" "$impl" "$rep" "$secs"
    record rename "rename check" "$impl" "$rep" "$status"
    unmount_run
}

# ---------------------------------------------------------------------------------------
# Workload: stall
# ---------------------------------------------------------------------------------------
S_BIG_MIB=1024
S_OTHER=1000

prep_stall() {
    S_LOWER=$LOWER_ROOT/stall
    [ -e "$S_LOWER.ok" ] && return 0
    log "preparing $S_LOWER: big ($S_BIG_MIB MiB of random data) and other/ ($S_OTHER files)"
    rm -rf "$S_LOWER"
    mkdir -p "$S_LOWER/other"
    head -c $((S_BIG_MIB * 1024 * 1024)) /dev/urandom > "$S_LOWER/big"
    local i
    for ((i = 0; i < S_OTHER; i++)); do echo "small file $i" > "$S_LOWER/other/f$i"; done
    sync
    touch "$S_LOWER.ok"
}

# The prober: stat(other/fN) with N cycling, listdir(other), stat(root), round-robin,
# until STOPFILE appears; STOPFILE holds "T0 T1", the copy-up's start and end (epoch
# seconds). Writes "key value" lines about the calls that overlapped [T0, T1].
STALL_PROBER=$(cat <<'EOF'
import os, sys, time
mnt, n, ready, stop, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
other = os.path.join(mnt, "other")
clock = time.time
calls = []                                  # (start, end, kind)
i = 0
rounds = 0
while True:
    for kind in ("stat", "listdir", "statroot"):
        t0 = clock()
        if kind == "stat":
            os.stat(os.path.join(other, "f%d" % i)); i = (i + 1) % n
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
c0, c1 = map(float, open(stop).read().split())
during = [(e - s, k) for s, e, k in calls if e >= c0 and s <= c1]
lat = sorted(d for d, _ in during)
def ms(x): return "%.3f" % (x * 1000)
with open(out, "w") as f:
    f.write("probes %d\n" % len(lat))
    if lat:
        f.write("max %s\n" % ms(lat[-1]))
        f.write("p99 %s\n" % ms(lat[max(0, -(-len(lat) * 99 // 100) - 1)]))
        f.write("median %s\n" % ms(lat[(len(lat) - 1) // 2]))
    for k in ("stat", "listdir", "statroot"):
        ks = [d for d, kk in during if kk == k]
        f.write("max_%s %s\n" % (k, ms(max(ks)) if ks else "nan"))
EOF
)

run_stall() {
    local impl=$1 rep=$2
    S_LOWER=$LOWER_ROOT/stall
    mount_fresh "$impl" "$S_LOWER" "stall-$impl-$rep"
    local ready=$RUN/prober.ready stop=$RUN/prober.stop out=$RUN/prober.out prober=
    # If anything below fails, the subshell's EXIT trap stops the prober and unmounts.
    trap '[ -n "$prober" ] && kill "$prober" 2>/dev/null; unmount_run' EXIT
    drop_caches
    # Warm the lower layer's metadata of other/ (directly, not through the mount), so
    # that the prober measures the implementation, not cold ext4 inode reads queued
    # behind the copy-up's I/O; big's data and the mount's own caches stay cold.
    ls -l "$S_LOWER/other" > /dev/null
    "$PYTHON" -c "$STALL_PROBER" "$MNT" "$S_OTHER" "$ready" "$stop" "$out" &
    prober=$!
    local i
    for i in $(seq 300); do [ -e "$ready" ] && break; sleep 0.05; done
    [ -e "$ready" ] || die "stall $impl: the prober did not start"
    local t0 t1 rc=0
    t0=$(now)
    : >> "$MNT/big" || rc=$?      # open(O_WRONLY|O_APPEND) + close: copies big up
    t1=$(now)
    echo "$t0 $t1" > "$stop.tmp" && mv "$stop.tmp" "$stop"
    wait "$prober" || die "stall $impl: the prober failed"
    prober=
    # Check the copy (not timed): the upper must hold an identical copy.
    local status=ok
    [ $rc -eq 0 ] || status=FAIL
    cmp -s "$UPPER/big" "$S_LOWER/big" || status=FAIL
    declare -A P=()
    local k v
    while read -r k v; do P[$k]=$v; done < "$out"
    local secs; secs=$(elapsed "$t0" "$t1")
    log "  stall $impl rep $rep: copy-up ${secs}s, ${P[probes]} probes, max ${P[max]:-nan} ms," \
        "p99 ${P[p99]:-nan} ms (stat ${P[max_stat]}, listdir ${P[max_listdir]}, statroot ${P[max_statroot]}) $status"
    record stall "copy-up (s)" "$impl" "$rep" "$secs"
    record stall "max (ms)" "$impl" "$rep" "${P[max]:-nan}"
    record stall "p99 (ms)" "$impl" "$rep" "${P[p99]:-nan}"
    record stall "max stat (ms)" "$impl" "$rep" "${P[max_stat]}"
    record stall "max listdir (ms)" "$impl" "$rep" "${P[max_listdir]}"
    record stall "max stat / (ms)" "$impl" "$rep" "${P[max_statroot]}"
    record stall "probes (n)" "$impl" "$rep" "${P[probes]}"
    record stall "copy-up check" "$impl" "$rep" "$status"
    trap - EXIT
    unmount_run
}

# ---------------------------------------------------------------------------------------
# Driver and report
# ---------------------------------------------------------------------------------------
run_workload() {
    local wl=$1 rep impl rc
    log "== $wl"
    for ((rep = 1; rep <= REPS; rep++)); do
        for impl in "${IMPLS[@]}"; do
            set +e
            ( set -e; trap unmount_run EXIT; "run_$wl" "$impl" "$rep" )
            rc=$?
            set -e
            if [ $rc -ne 0 ]; then
                log "  $wl $impl rep $rep: FAILED (exit $rc)"
                record "$wl" "$wl run" "$impl" "$rep" FAIL
            fi
        done
    done
}

# Prints the table of one workload from $RESULTS: medians, and stratafs's ratios.
report() {
    local wl=$1
    awk -F '\t' -v wl="$wl" -v impls="${IMPLS[*]}" '
        function fmt(x) {
            if (x == 0) return "0"
            if (x >= 100) return sprintf("%.0f", x)
            if (x >= 10) return sprintf("%.1f", x)
            if (x >= 1) return sprintf("%.2f", x)
            return sprintf("%.2g", x)
        }
        function isnum(x) { return x ~ /^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$/ }
        # summary of the values of one metric for one implementation
        # (numbers: the median; a FAIL anywhere: FAIL(k/n); otherwise the first word)
        function summary(vals,    n, v, i, j, t, k, num, fails) {
            n = split(vals, v, " ")
            if (n == 0) return "-"
            k = 0; fails = 0
            for (i = 1; i <= n; i++) {
                if (v[i] == "FAIL") fails++
                else if (isnum(v[i])) num[++k] = v[i] + 0
            }
            if (fails) return "FAIL(" fails "/" n ")"
            if (k == 0) return v[1]
            for (i = 2; i <= k; i++) for (j = i; j > 1 && num[j-1] > num[j]; j--) { t = num[j]; num[j] = num[j-1]; num[j-1] = t }
            return (k % 2) ? num[(k+1)/2] : (num[k/2] + num[k/2+1]) / 2
        }
        function ratio(a, b) {
            if (!isnum(a) || !isnum(b)) return "-"
            if (b + 0 == 0) return (a + 0 == 0) ? "1x" : "-"
            return fmt(a / b) "x"
        }
        $1 == wl {
            key = $2 SUBSEP $3
            if (!($2 in seen)) { seen[$2] = 1; order[++nm] = $2 }
            val[key] = (key in val) ? val[key] " " $5 : $5
        }
        END {
            ni = split(impls, im, " ")
            name["kernel"] = "kernel"; name["fuse-ovl"] = "fuse-ovl"; name["stratafs"] = "stratafs"
            has["kernel"] = 0; has["fuse-ovl"] = 0; has["stratafs"] = 0
            for (i = 1; i <= ni; i++) has[im[i]] = 1
            line = sprintf("%-18s", wl)
            for (i = 1; i <= ni; i++) line = line sprintf(" %10s", name[im[i]])
            if (has["stratafs"] && has["kernel"]) line = line sprintf(" %10s", "s/kernel")
            if (has["stratafs"] && has["fuse-ovl"]) line = line sprintf(" %10s", "s/fuse-ovl")
            print line
            for (m = 1; m <= nm; m++) {
                line = sprintf("%-18s", order[m])
                for (i = 1; i <= ni; i++) {
                    s[im[i]] = summary(val[order[m] SUBSEP im[i]])
                    line = line sprintf(" %10s", isnum(s[im[i]]) ? fmt(s[im[i]]) : s[im[i]])
                }
                if (has["stratafs"] && has["kernel"]) line = line sprintf(" %10s", ratio(s["stratafs"], s["kernel"]))
                if (has["stratafs"] && has["fuse-ovl"]) line = line sprintf(" %10s", ratio(s["stratafs"], s["fuse-ovl"]))
                print line
            }
        }' "$RESULTS"
}

header() {
    echo "# $(date '+%Y-%m-%d %H:%M:%S %Z')  kernel $(uname -r)  nproc $(nproc)  reps $REPS$([ "$QUICK" = 1 ] && echo "  quick")"
    echo "# command: $CMDLINE"
    local v=()
    has_impl fuse-ovl && v+=("fuse-overlayfs $(/usr/bin/fuse-overlayfs --version 2>&1 | sed -n 's/^fuse-overlayfs: version //p')")
    if has_impl stratafs; then
        local rev; rev=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)
        v+=("stratafs $STRATAFS_BIN ($rev)")
    fi
    local line= x
    for x in "${v[@]}"; do line+="${line:+; }$x"; done
    [ -z "$line" ] || echo "# $line"
    echo "# medians of $REPS runs; data in $DIR"
}

main() {
    parse_args "$@"
    [ "$(id -u)" -eq 0 ] || die "must be run as root (mounts, drops caches)"
    ensure_tools
    ensure_stratafs
    mkdir -p "$DIR"
    LOWER_ROOT=$DIR/lower
    RESULTS=$DIR/results.tsv
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    unmount_leftovers
    rm -rf "$DIR/runs"
    mkdir -p "$LOWER_ROOT" "$DIR/runs"
    : > "$RESULTS"

    local wl
    for wl in "${WORKLOADS[@]}"; do "prep_$wl"; done
    for wl in "${WORKLOADS[@]}"; do run_workload "$wl"; done

    local report_file=$DIR/report.txt
    {
        header
        for wl in "${WORKLOADS[@]}"; do echo; report "$wl"; done
    } | tee "$report_file"
    if cut -f5 "$RESULTS" | grep -qx FAIL; then
        die "some runs or checks FAILED (details above; raw results in $RESULTS)"
    fi
}

main "$@"
