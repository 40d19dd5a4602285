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
# cold measurement; a warm one repeats it right after. Everything lives under one
# directory (default /var/tmp/stratafs-bench); every mount is undone on exit.
#
# Every timed step checks its result (counts, sizes, contents, a digest) and is
# reported as FAIL instead of a time when it is wrong. Next to each time "NAME (s)" is
# "NAME cpu (s)": user+system time of the command and its children plus that of the
# FUSE daemon over the same interval (from /proc/PID/stat; kernel overlayfs's work is
# in the command's system time). Each table ends with the daemon's peak RSS (VmHWM
# read right before unmount; the largest over the run's mounts).
#
# Workloads (no WORKLOAD argument = all of them); sizes in brackets are --quick's:
#   walk    lowerdir = an image-like layer (every 41st file of the root fs whited out,
#           every 37th rewritten, usr/share/doc opaque with new contents, usr/share/man
#           and usr/share/locale whited out, a new opt/app tree) : a layer of small
#           files : a Debian root fs (debootstrap --variant=minbase bookworm, made once;
#           if debootstrap fails, a cp -a of this machine's /usr/lib, /usr/share, /etc)
#           [only its usr/share]. 100,000 [10,000] small files (0-4 KiB) in 1,000
#           [200] dirs, each dir merged from the top two layers. Cold and warm: `find`,
#           a stat walk (`find -printf '%y %s'`), tar read-all (`tar -cf - . | wc -c`),
#           each on a fresh mount. Checked against the merged view computed from the
#           layers (entries, bytes, tar size bounds).
#   io      sequential read (cold) and write (dd bs=1M, then fsync timed separately) of
#           1 GiB [100 MiB]; 10,000 [2,000] random 4 KiB preads of the cold lower file
#           (digest compared with the same reads of the lower file).
#   copyup  copy-up (open O_WRONLY|O_APPEND) of 2,000 [500] lower files of 0-64 KiB
#           and of the 1 GiB [100 MiB] lower file, cold; then 20,000 [2,000]
#           open+append(100 B)+close on 100 [50] files of the upper; then the copy-up
#           of the small files again on a fresh mount with `-o volatile` ("vol.").
#   untar   tar -xf of 20,000 [5,000] files (0-8 KiB, in 200 [50] dirs); rm -rf of
#           that tree; rm -rf (cold) of the same tree lying in the lower layer.
#   bigdir  a directory of 50,000 [5,000] names, a third from each of the lower,
#           middle and upper layers (1-2% whited out by the layers above): `ls -f`,
#           cold and warm; stat of 20,000 [2,000] distinct missing names in it, cold.
#   src     a git repository (committed in the lower layer) of a generated C project
#           (60 modules) plus 2,000 other source files: `git status` cold and warm,
#           `grep -r` cold and warm, `make -j2` cold (the program's output checked).
#   rename  mv MNT/tree MNT/tree2, a rename(2) of a lower directory holding 10,000
#           files / 1 GiB [1,000 files / 100 MiB]. Kernel overlayfs and
#           stratafs set a redirect; fuse-overlayfs returns EXDEV and mv copies it all.
#           The result is checked (file count, source gone, sample contents).
#   podman  (only when named; not in the default list) podman as root and rootless with
#           native kernel overlay, fuse-overlayfs and stratafs as mount_program:
#           `podman run --rm IMAGE true` and a 6-step `podman build --no-cache`, by
#           scripts/bench-podman.sh (installs podman, buildah, runc, uidmap; adds a user)
#   stall   copy-up of a 1 GiB lower file (opened O_WRONLY|O_APPEND through the mount)
#           while a prober stats other/fN (cycling through 1,000 names), lists other/
#           and stats the root; reports the copy-up time and the prober's latency
#           (max, p99, max per kind of call) during the copy-up. After the caches are
#           dropped, the lower layer's other/ is listed directly (not through the
#           mount) so the prober does not wait for the disk; big stays cold.
#   mounts  mount time at 8, 128 and 500 lower layers (each layer a directory with one
#           file, given by relative paths; a fresh upper and work dir): the median of 10 [5] mounts per
#           repetition, from the mount command's start until it returns with the mount
#           live (a FUSE daemon returns once it is), each checked to show the layers'
#           files, then unmounted. What `podman run` pays per container start.
#   memory  (only when named; not in the default list) the FUSE daemon's memory for a
#           lower layer of 1,000,000 [100,000] empty files in 1,000 [100] dirs (empty
#           upper); fuse-overlayfs and stratafs only (kernel overlayfs has no daemon: its
#           rows are '-'). A cold stat walk (`find -printf '%s'`, which looks up every
#           entry; the entry count checked), then the daemon's RSS (VmRSS) right after
#           it and after `echo 2 > /proc/sys/vm/drop_caches` and 3 s (the kernel forgets
#           its inodes, so the daemon can free its inode table), and its peak RSS.
#
# Options:
#   --quick          the smaller sizes above, 1 repetition unless --reps is given (all
#                    workloads in under 3 minutes once the data is prepared)
#   --reps N         repetitions per implementation (default 3)
#   --dir D          work directory (default /var/tmp/stratafs-bench)
#   --only LIST      comma-separated subset of: kernel, fuse-ovl (or fuse-overlayfs), stratafs
#
# Environment: STRATAFS_BIN=/path/to/stratafs skips `cargo build --release`.
#
# Adding a workload: write prep_NAME (prepares its lower layer once, under $LOWER_ROOT)
# and run_NAME IMPL REP (mounts with `mount_fresh`, measures with `measure` and records
# with `result`/`finish_run`, or calls `record`), and add NAME to ALL_WORKLOADS. Each
# run_NAME runs in a subshell under `set -e`; a failure is recorded as FAIL for that run
# and the benchmark goes on.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CMDLINE=$0
for a in "$@"; do
    if [[ $a =~ ^[][A-Za-z0-9_./,:=@%+-]+$ ]]; then CMDLINE+=" $a"; else CMDLINE+=" $(printf '%q' "$a")"; fi
done

ALL_WORKLOADS=(walk io copyup untar bigdir src rename stall mounts)
OPT_WORKLOADS=(podman memory)       # run only when named
ALL_IMPLS=(kernel fuse-ovl stratafs)

QUICK=0
REPS=3
QUICK_REPS=1
DIR=/var/tmp/stratafs-bench
IMPLS=("${ALL_IMPLS[@]}")
WORKLOADS=()
REPS_GIVEN=0
# Per run (set by each run_NAME, in its subshell): the implementation, the repetition,
# the FUSE daemon's pid and peak RSS, and why the current measurement's check failed.
IMPL= REP= DPID= PEAK_RSS_KB=0 WHY=

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
            --reps) [ $# -ge 2 ] || die "--reps needs a number"; REPS=$2; REPS_GIVEN=1; shift ;;
            --reps=*) REPS=${1#*=}; REPS_GIVEN=1 ;;
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
    [ "$QUICK" = 0 ] || [ "$REPS_GIVEN" = 1 ] || REPS=$QUICK_REPS
    [[ $REPS =~ ^[1-9][0-9]*$ ]] || die "--reps must be a positive integer, not '$REPS'"
    [ ${#WORKLOADS[@]} -gt 0 ] || WORKLOADS=("${ALL_WORKLOADS[@]}")
    local w
    for w in "${WORKLOADS[@]}"; do
        declare -F "run_$w" >/dev/null || die "unknown workload: $w (known: ${ALL_WORKLOADS[*]} ${OPT_WORKLOADS[*]})"
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
    [ -x /usr/bin/time ] || need+=(time)
    command -v tar >/dev/null || need+=(tar)
    local w
    for w in "${WORKLOADS[@]}"; do
        case $w in
            src) command -v git >/dev/null || need+=(git)
                 command -v make >/dev/null || need+=(make)
                 command -v gcc >/dev/null || need+=(gcc libc6-dev) ;;
            walk) command -v debootstrap >/dev/null || need+=(debootstrap) ;;
        esac
    done
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
    export PYTHON
    export -f w_find w_statwalk w_tar w_seqread w_seqwrite w_fsync w_open_append w_untar \
        w_rmrf w_lsf w_gitstatus w_grep w_make w_py w_sizewalk
}

ensure_stratafs() {
    has_impl stratafs || return 0
    if [ -n "${STRATAFS_BIN:-}" ]; then
        [ -x "$STRATAFS_BIN" ] || die "STRATAFS_BIN=$STRATAFS_BIN is not executable"
    else
        log "building stratafs (cargo build --release)"
        (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
        STRATAFS_BIN=$(. "$REPO/scripts/lib.sh"; release_bin "$REPO")
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

# mount_fresh IMPL LOWERDIRS NAME [TEMPLATE]: mounts IMPL over LOWERDIRS (colon-separated)
# with a fresh upper and work dir in $DIR/runs/NAME (the upper a copy of TEMPLATE's
# contents if given), adding the mount options in $EXTRA_OPTS if set; sets MNT, UPPER,
# RUN and DPID (the FUSE daemon's pid).
mount_fresh() {
    local impl=$1 lower=$2
    RUN=$DIR/runs/$3
    rm -rf "$RUN"
    mkdir -p "$RUN"/{upper,work,mnt}
    UPPER=$RUN/upper MNT=$RUN/mnt
    [ -z "${4:-}" ] || cp -a "$4/." "$UPPER/"
    local opts="lowerdir=$lower,upperdir=$UPPER,workdir=$RUN/work${EXTRA_OPTS:+,$EXTRA_OPTS}"
    case $impl in
        kernel)   mount -t overlay overlay -o "$opts,redirect_dir=on,index=on" "$MNT" ;;
        fuse-ovl) /usr/bin/fuse-overlayfs -o "$opts" "$MNT" ;;
        stratafs) "$STRATAFS_BIN" -o "$opts" "$MNT" ;;
        *) die "unknown implementation $impl" ;;
    esac
    local i
    for i in $(seq 100); do mountpoint -q "$MNT" && { find_daemon; return 0; }; sleep 0.1; done
    die "$impl: $MNT did not get mounted"
}

# unmount_run: notes the FUSE daemon's peak RSS, unmounts $MNT, waits for the daemon to
# exit, removes $RUN.
unmount_run() {
    [ -n "${MNT:-}" ] || return 0
    note_daemon_peak
    DPID=
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
# Measuring: wall time, CPU time (command plus daemon), the daemon's peak RSS
# ---------------------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)

# find_daemon: sets DPID to the pid of the FUSE daemon serving $MNT (the process named
# stratafs, fuse-overlayfs or like $STRATAFS_BIN whose last argument is $MNT); empty for
# kernel overlayfs.
find_daemon() {
    DPID=
    [ "${IMPL:-kernel}" != kernel ] || return 0
    local i p last cands bin
    bin=$(basename "${STRATAFS_BIN:-stratafs}" | cut -c 1-15)      # comm is cut at 15
    for i in $(seq 40); do          # a daemonizing parent may still be around: wait for one
        cands=()
        for p in $(pgrep -f -- " $MNT\$" || true); do
            case $(cat "/proc/$p/comm" 2>/dev/null) in stratafs|fuse-overlayfs|"$bin") ;; *) continue ;; esac
            last=$(tr '\0' '\n' < "/proc/$p/cmdline" 2>/dev/null | tail -n 1) || continue
            [ "$last" = "$MNT" ] && cands+=("$p")
        done
        [ ${#cands[@]} -eq 1 ] && { DPID=${cands[0]}; return 0; }
        sleep 0.05
    done
    [ ${#cands[@]} -gt 0 ] && DPID=$(printf '%s\n' "${cands[@]}" | sort -n | tail -n 1)
    return 0
}

# daemon_cpu: user+system seconds used so far by the daemon (all its threads); 0 without.
daemon_cpu() {
    local s
    if [ -z "${DPID:-}" ] || ! s=$(cat "/proc/$DPID/stat" 2>/dev/null); then echo 0; return 0; fi
    s=${s##*) }                      # fields from the 3rd (state) on; utime is the 14th
    set -f; set -- $s; set +f
    awk -v u="${12}" -v k="${13}" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (u + k) / t }'
}

# note_daemon_peak: folds the daemon's VmHWM (peak RSS) into PEAK_RSS_KB.
note_daemon_peak() {
    [ -n "${DPID:-}" ] || return 0
    local kb
    kb=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$DPID/status" 2>/dev/null) || return 0
    [ -n "$kb" ] && [ "$kb" -gt "${PEAK_RSS_KB:-0}" ] && PEAK_RSS_KB=$kb
    return 0
}

# daemon_mib FIELD: the daemon's FIELD of /proc/PID/status (VmRSS, VmHWM) in MiB, one
# decimal; n/a without a daemon (or once it is gone).
daemon_mib() {
    local kb=
    [ -z "${DPID:-}" ] || kb=$(awk -v f="$1:" '$1 == f { print $2 }' "/proc/$DPID/status" 2>/dev/null) || kb=
    if [ -n "$kb" ]; then awk -v k="$kb" 'BEGIN { printf "%.1f", k / 1024 }'; else echo n/a; fi
}

# measure FUNC ARG...: runs the exported shell function FUNC (in `bash -c`, under
# pipefail), its stdout into $RUN/out and stderr into $RUN/err. Sets M_RC (exit status),
# M_SECS (wall seconds) and M_CPU (user+system seconds of FUNC and all its children, plus
# those of the FUSE daemon over the same interval; for kernel overlayfs its work is in
# the command's system time).
measure() {
    local d0 d1 t0 t1
    d0=$(daemon_cpu)
    M_RC=0
    t0=$(now)
    /usr/bin/time -f '%U %S' -o "$RUN/time" bash -c 'set -o pipefail; "$@"' measure "$@" \
        > "$RUN/out" 2> "$RUN/err" || M_RC=$?
    t1=$(now)
    d1=$(daemon_cpu)
    M_SECS=$(elapsed "$t0" "$t1")
    M_CPU=$(awk -v d0="$d0" -v d1="$d1" 'NF == 2 { c = $1 + $2 } END { printf "%.2f", c + d1 - d0 }' "$RUN/time")
}

# out: the first line of the last measured command's output.
out() { head -n 1 "$RUN/out"; }

# want WHAT GOT WANTED: adds to WHY (the reasons a check failed) unless GOT = WANTED.
want() { [ "$2" = "$3" ] || WHY+=" $1 is '$2', want '$3';"; }

# result WL NAME: records the last measurement as "NAME (s)" and "NAME cpu (s)", or FAIL
# for both when it exited non-zero or a check added to WHY; logs it; clears WHY.
result() {
    local wl=$1 name=$2 secs=$M_SECS cpu=$M_CPU
    [ "$M_RC" -eq 0 ] || WHY+=" exit status $M_RC: $(head -c 300 "$RUN/err" | tr '\n' ' ');"
    [ -z "$WHY" ] || { secs=FAIL; cpu=FAIL; }
    log "  $wl $IMPL rep $REP: $name ${M_SECS}s cpu ${M_CPU}s${WHY:+ FAIL:${WHY%;}}"
    record "$wl" "$name (s)" "$IMPL" "$REP" "$secs"
    record "$wl" "$name cpu (s)" "$IMPL" "$REP" "$cpu"
    WHY=
}

# finish_run WL: unmounts, and records the FUSE daemon's peak RSS over the run's mounts.
finish_run() {
    unmount_run
    local v=-
    if [ "$IMPL" != kernel ]; then
        v=n/a
        [ "${PEAK_RSS_KB:-0}" -gt 0 ] && v=$(awk -v k="$PEAK_RSS_KB" 'BEGIN { printf "%.1f", k / 1024 }')
    fi
    record "$1" "daemon peak RSS (MiB)" "$IMPL" "$REP" "$v"
}

# The timed commands (exported: `measure` runs them in a child bash).
w_find()      { find "$1" | wc -l; }
w_statwalk()  { find "$1" -printf '%y %s\n' | awk '{ n++ } $1 == "f" { b += $2 } END { print n + 0, b + 0 }'; }
w_tar()       { tar -C "$1" -cf - . | wc -c; }
w_seqread()   { dd if="$1" of=/dev/null bs=1M 2>&1 | awk '/bytes/ { print $1 }'; }
w_seqwrite()  { dd if=/dev/zero of="$1" bs=1M count="$2" 2>&1 | awk '/bytes/ { print $1 }'; }
w_fsync()     { sync "$1"; }
w_open_append() { : >> "$1"; }
w_untar()     { tar -C "$2" -xf "$1"; }
w_rmrf()      { rm -rf "$1"; }
w_lsf()       { ls -f "$1" | wc -l; }
w_gitstatus() { git -C "$1" status --porcelain | wc -l; }
w_grep()      { grep -r "$2" "$1" | wc -l; }
w_make()      { make -C "$1" -j2 -s; }
w_py()        { "$PYTHON" -c "$@"; }
w_sizewalk()  { find "$1" -printf '%s\n' | wc -l; }

# Python helpers (run with w_py, or directly while preparing).
PY_RANDREAD=$(cat <<'PYEOF'
import os, sys, random, hashlib
path, n = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDONLY)
blocks = os.fstat(fd).st_size // 4096
rnd = random.Random(12345)
h = hashlib.sha1()
for _ in range(n):
    b = os.pread(fd, 4096, rnd.randrange(blocks) * 4096)
    if len(b) != 4096:
        sys.exit("short read")
    h.update(b)
print(h.hexdigest())
PYEOF
)

PY_COPYUP=$(cat <<'PYEOF'
import os, sys
n = 0
for root, dirs, files in os.walk(sys.argv[1]):
    dirs.sort()
    for f in sorted(files):
        os.close(os.open(os.path.join(root, f), os.O_WRONLY | os.O_APPEND))
        n += 1
print(n)
PYEOF
)

PY_APPEND=$(cat <<'PYEOF'
import os, sys
d, nfiles, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
line = b"x" * 99 + b"\n"
paths = [os.path.join(d, "log%04d" % i) for i in range(nfiles)]
for r in range(rounds):
    for p in paths:
        fd = os.open(p, os.O_WRONLY | os.O_APPEND)
        os.write(fd, line)
        os.close(fd)
print(nfiles * rounds)
PYEOF
)

PY_MISSING=$(cat <<'PYEOF'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
missing = 0
for i in range(n):
    try:
        os.stat(os.path.join(d, "missing-%06d.conf" % i))
    except FileNotFoundError:
        missing += 1
print(missing)
PYEOF
)

# PY_GEN_FILES TOP N NDIRS PREFIX MAXSIZE: N files TOP/dNNNN/PREFIXnnnnnn (in NDIRS dirs)
# of 0..MAXSIZE bytes of random data.
PY_GEN_FILES=$(cat <<'PYEOF'
import os, sys, random
top, n, nd, pre, maxsize = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
rnd = random.Random(pre + str(n))
buf = os.urandom(maxsize + 65536)
for d in range(nd):
    os.makedirs(os.path.join(top, "d%04d" % d), exist_ok=True)
for i in range(n):
    size, off = rnd.randrange(0, maxsize + 1), rnd.randrange(0, 65536)
    with open(os.path.join(top, "d%04d" % (i % nd), "%s%06d" % (pre, i)), "wb") as f:
        f.write(buf[off:off + size])
PYEOF
)

# PY_GEN_IMAGE BASE IMAGE OPAQUE WHDIRS: an image-like layer over BASE: every 41st regular
# file whited out, every 37th rewritten, OPAQUE an opaque dir with new contents, the dirs
# of WHDIRS (comma-separated) whited out, and a new tree opt/app.
PY_GEN_IMAGE=$(cat <<'PYEOF'
import os, sys, stat
base, img, opq = sys.argv[1], sys.argv[2], sys.argv[3]
whdirs = [d for d in sys.argv[4].split(",") if d and os.path.isdir(os.path.join(base, d))]
def mkparents(rel):
    cur = ""
    for p in os.path.dirname(rel).split("/"):
        if not p:
            continue
        cur = cur + "/" + p if cur else p
        d = os.path.join(img, cur)
        if not os.path.isdir(d):
            os.mkdir(d)
            try:
                os.chmod(d, stat.S_IMODE(os.lstat(os.path.join(base, cur)).st_mode))
            except FileNotFoundError:
                pass
def whiteout(rel):
    mkparents(rel)
    os.mknod(os.path.join(img, rel), stat.S_IFCHR | 0o600, os.makedev(0, 0))
skip = set([opq] + whdirs)
n = wh = rw = 0
for root, dirs, files in os.walk(base):
    r = os.path.relpath(root, base)
    r = "" if r == "." else r
    dirs[:] = sorted(d for d in dirs if os.path.join(r, d) not in skip)
    for f in sorted(files):
        rel = os.path.join(r, f)
        st = os.lstat(os.path.join(base, rel))
        if not stat.S_ISREG(st.st_mode):
            continue
        n += 1
        if n % 41 == 0:
            whiteout(rel); wh += 1
        elif n % 37 == 0:
            mkparents(rel)
            p = os.path.join(img, rel)
            with open(p, "wb") as fh:
                fh.write(b"rewritten by the image layer: %s\n" % rel.encode() * (1 + n % 50))
            os.chmod(p, stat.S_IMODE(st.st_mode)); rw += 1
mkparents(opq)
d = os.path.join(img, opq)
os.mkdir(d)
os.setxattr(d, "trusted.overlay.opaque", b"y")
for i in range(20):
    with open(os.path.join(d, "README-%d" % i), "w") as fh:
        fh.write("replaces the lower directory's contents %d\n" % i)
for w in whdirs:
    whiteout(w)
for i in range(10):
    os.makedirs(os.path.join(img, "opt/app/d%d" % i))
    for j in range(50):
        with open(os.path.join(img, "opt/app/d%d/f%d" % (i, j)), "w") as fh:
            fh.write("application file %d/%d\n" % (i, j) * (1 + j))
print("%d regular files in the base: %d whited out, %d rewritten; opaque %s; whited-out dirs %s"
      % (n, wh, rw, opq, " ".join(whdirs) or "none"))
PYEOF
)

# PY_MERGE PREFIX LAYER... (topmost first): what the merged view of LAYERS holds, as shell
# assignments PREFIX_ENTRIES (as `find` lists them, the root included), PREFIX_FILES,
# PREFIX_BYTES (regular files' sizes), PREFIX_TARMIN / PREFIX_TARMAX (bounds on the size
# of `tar -cf - .` of it). Whiteouts are 0/0 char devices; opaque dirs have
# trusted.overlay.opaque=y.
PY_MERGE=$(cat <<'PYEOF'
import os, sys, stat
pre, layers = sys.argv[1], sys.argv[2:]
def opaque(p):
    try:
        return os.getxattr(p, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False
def blocks(n): return (n + 511) // 512 * 512
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
                        cur[1].append(e.path); cur[2] = opaque(e.path)
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
print("%s_ENTRIES=%d" % (pre, tot["entries"]))
print("%s_FILES=%d" % (pre, tot["files"]))
print("%s_BYTES=%d" % (pre, tot["bytes"]))
print("%s_TARMIN=%d" % (pre, 512 * tot["entries"] + tot["uniq"] + 1024))
print("%s_TARMAX=%d" % (pre, 512 * tot["entries"] + tot["all"] + 2 * tot["long"] + 1024 + 20480))
PYEOF
)

# PY_GEN_BIGDIR ROOT N: ROOT/{low,mid,up}/big, whose merged view holds N names: about a
# third from each layer, with 1% of low's names whited out in mid, 1% more in up, and
# 1% of mid's in up. up/ is the upper layer's template (copied into each fresh upper).
PY_GEN_BIGDIR=$(cat <<'PYEOF'
import os, sys, stat
root, n = sys.argv[1], int(sys.argv[2])
w = max(1, n // 100)
third = n // 3
nl, nm = third + 2 * w, third + w
nu = n - (nl - 2 * w) - (nm - w)
for layer in ("low", "mid", "up"):
    os.makedirs(os.path.join(root, layer, "big"))
def mk(layer, name):
    with open(os.path.join(root, layer, "big", name), "w") as f:
        f.write(name + "\n")
def wh(layer, name):
    os.mknod(os.path.join(root, layer, "big", name), stat.S_IFCHR | 0o600, os.makedev(0, 0))
for i in range(nl): mk("low", "low-%06d" % i)
for i in range(nm): mk("mid", "mid-%06d" % i)
for i in range(nu): mk("up", "up-%06d" % i)
for i in range(w):
    wh("mid", "low-%06d" % i)
    wh("up", "low-%06d" % (w + i))
    wh("up", "mid-%06d" % i)
PYEOF
)

# PY_GEN_SRC DIR NMODS NEXTRA TOKEN: a C project (NMODS modules under lib/ and include/,
# main.c, a Makefile) plus NEXTRA other source files under third_party/ (not built).
# Prints SRC_GREP (lines holding TOKEN) and SRC_OUTPUT (what the built ./prog prints).
PY_GEN_SRC=$(cat <<'PYEOF'
import os, sys
d, nmods, nextra, token = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
for sub in ("lib", "include", "third_party"):
    os.makedirs(os.path.join(d, sub))
grep = 0
def w(rel, text):
    with open(os.path.join(d, rel), "w") as f:
        f.write(text)
w("include/common.h", "#ifndef COMMON_H\n#define COMMON_H\n#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#endif\n")
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
        body.append("/* %s: marker in module %d */" % (token, i)); grep += 1
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
            lines.append("/* %s %d */" % (token, j)); grep += 1
        lines.append("static const int table_%d_%d[] = { %s };" % (i, j, ", ".join(str((i * j + k) % 1000) for k in range(12))))
    w("%s/file%04d.c" % (sub, i), "\n".join(lines) + "\n")
print("SRC_GREP=%d" % grep)
print("SRC_OUTPUT='sum %d'" % sum(1 + i for i in range(nmods)))
PYEOF
)

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
# Workload: mounts
# ---------------------------------------------------------------------------------------
MT_COUNTS=(8 128 500)

prep_mounts() {
    MT_LOWER=$LOWER_ROOT/mounts
    [ -e "$MT_LOWER.ok" ] && return 0
    log "preparing $MT_LOWER: 500 layers of one file each"
    rm -rf "$MT_LOWER"
    local i
    for ((i = 1; i <= 500; i++)); do
        mkdir -p "$MT_LOWER/l$i"
        echo "$i" > "$MT_LOWER/l$i/f$i"
    done
    touch "$MT_LOWER.ok"
}

run_mounts() {
    local impl=$1 rep=$2 n i k t0 t1 rc times opts lower
    IMPL=$1 REP=$2
    MT_LOWER=$LOWER_ROOT/mounts
    local per=10
    [ "$QUICK" = 1 ] && per=5
    RUN=$DIR/runs/mounts-$impl-$rep
    # Layer paths relative to the layers' directory: the kernel takes at most a page
    # of mount options, which 500 absolute paths exceed (this runs in a subshell).
    local bin
    bin=$(realpath "$STRATAFS_BIN")
    cd "$MT_LOWER"
    for n in "${MT_COUNTS[@]}"; do
        lower=$(for ((i = 1; i <= n; i++)); do printf 'l%s:' "$i"; done)
        lower=${lower%:}
        times=() WHY=
        for ((k = 0; k < per; k++)); do
            rm -rf "$RUN"; mkdir -p "$RUN"/{upper,work,mnt}
            MNT=$RUN/mnt
            opts="lowerdir=$lower,upperdir=$RUN/upper,workdir=$RUN/work"
            rc=0
            t0=$(now)
            case $impl in
                kernel)   mount -t overlay overlay -o "$opts,redirect_dir=on,index=on" "$MNT" || rc=$? ;;
                fuse-ovl) /usr/bin/fuse-overlayfs -o "$opts" "$MNT" || rc=$? ;;
                stratafs) "$bin" -o "$opts" "$MNT" || rc=$? ;;
            esac
            t1=$(now)
            [ $rc -eq 0 ] || WHY+=" mount exited $rc;"
            [ -e "$MNT/f1" ] && [ -e "$MNT/f$n" ] || WHY+=" the layers' files are not shown;"
            times+=("$(elapsed "$t0" "$t1")")
            unmount_run
        done
        local med
        med=$(printf '%s\n' "${times[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
        [ -z "$WHY" ] || med=FAIL
        log "  mounts $impl rep $rep: $n layers ${med}s (median of $per)${WHY:+ FAIL:${WHY%;}}"
        record mounts "mount $n layers (s)" "$impl" "$rep" "$med"
        WHY=
    done
    rm -rf "$RUN"
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
# Workload: walk (find, stat walk, tar read-all; cold and warm)
# ---------------------------------------------------------------------------------------
# The bottom layer: a Debian root filesystem, made once with debootstrap (or, if that
# fails, a copy of this machine's /usr/lib, /usr/share and /etc); $LOWER_ROOT/rootfs.source
# says which.
prep_rootfs() {
    local r=$LOWER_ROOT/rootfs
    [ -e "$r.ok" ] && return 0
    rm -rf "$r" "$r.tmp"
    command -v debootstrap >/dev/null || apt_install debootstrap || true
    log "preparing $r: debootstrap --variant=minbase bookworm (once; a minute or two)"
    if command -v debootstrap >/dev/null &&
        debootstrap --variant=minbase bookworm "$r.tmp" http://deb.debian.org/debian \
            > "$LOWER_ROOT/debootstrap.log" 2>&1; then
        echo "debootstrap --variant=minbase bookworm" > "$r.source"
    else
        log "debootstrap failed (see $LOWER_ROOT/debootstrap.log): copying this machine's /usr/lib, /usr/share and /etc instead"
        unmount_leftovers
        rm -rf "$r.tmp"
        mkdir -p "$r.tmp/usr"
        cp -a /usr/lib /usr/share "$r.tmp/usr/"
        cp -a /etc "$r.tmp/"
        echo "cp -a of this machine's /usr/lib, /usr/share, /etc (debootstrap failed)" > "$r.source"
    fi
    mv "$r.tmp" "$r"
    sync
    touch "$r.ok"
}

walk_shape() {      # sets W_* (quick: only usr/share of the root fs, 10k small files)
    if [ "$QUICK" = 1 ]; then W_SMALL=10000 W_SDIRS=200 W_SUB=usr/share W_OPQ=doc W_WHD=man,locale
    else W_SMALL=100000 W_SDIRS=1000 W_SUB= W_OPQ=usr/share/doc W_WHD=usr/share/man,usr/share/locale; fi
    W_BASE=$LOWER_ROOT/rootfs${W_SUB:+/$W_SUB}
    W_DATA=$LOWER_ROOT/walk-$W_SMALL
    W_LAYERS=$W_DATA/image:$W_DATA/small:$W_BASE
}

prep_walk() {
    prep_rootfs
    walk_shape
    [ -e "$W_DATA.ok" ] && return 0
    log "preparing $W_DATA: an image layer over $W_BASE; $W_SMALL small files in $W_SDIRS dirs merged from two layers"
    rm -rf "$W_DATA"
    mkdir -p "$W_DATA/image" "$W_DATA/small"
    "$PYTHON" -c "$PY_GEN_IMAGE" "$W_BASE" "$W_DATA/image" "$W_OPQ" "$W_WHD" > "$W_DATA/image.txt"
    "$PYTHON" -c "$PY_GEN_FILES" "$W_DATA/image/small" $((W_SMALL / 2)) "$W_SDIRS" a 4096
    "$PYTHON" -c "$PY_GEN_FILES" "$W_DATA/small/small" $((W_SMALL - W_SMALL / 2)) "$W_SDIRS" b 4096
    sync
    "$PYTHON" -c "$PY_MERGE" X ${W_LAYERS//:/ } > "$W_DATA/expect"
    touch "$W_DATA.ok"
}

run_walk() {
    IMPL=$1 REP=$2
    walk_shape
    local X_ENTRIES X_FILES X_BYTES X_TARMIN X_TARMAX tool temp
    . "$W_DATA/expect"
    for tool in find "stat walk" "tar read-all"; do
        mount_fresh "$IMPL" "$W_LAYERS" "walk-$IMPL-$REP"
        drop_caches
        for temp in cold warm; do
            case $tool in
                find)
                    measure w_find "$MNT"
                    want entries "$(out)" "$X_ENTRIES" ;;
                "stat walk")
                    measure w_statwalk "$MNT"
                    want "entries, bytes" "$(out)" "$X_ENTRIES $X_BYTES" ;;
                "tar read-all")
                    measure w_tar "$MNT"
                    local n; n=$(out)
                    [ "${n:-0}" -ge "$X_TARMIN" ] && [ "$n" -le "$X_TARMAX" ] ||
                        WHY+=" tar wrote $n bytes, want $X_TARMIN..$X_TARMAX;" ;;
            esac
            result walk "$tool $temp"
        done
        unmount_run
    done
    finish_run walk
}

# ---------------------------------------------------------------------------------------
# Workload: io (sequential read and write, 4k random reads)
# ---------------------------------------------------------------------------------------
io_shape() {
    if [ "$QUICK" = 1 ]; then IO_MIB=100 IO_RAND=2000; else IO_MIB=1024 IO_RAND=10000; fi
    IO_LOWER=$LOWER_ROOT/io-$IO_MIB
}

prep_io() {
    io_shape
    [ -e "$IO_LOWER.ok" ] && return 0
    log "preparing $IO_LOWER: big ($IO_MIB MiB of random data)"
    rm -rf "$IO_LOWER"
    mkdir -p "$IO_LOWER"
    head -c $((IO_MIB * 1024 * 1024)) /dev/urandom > "$IO_LOWER/big"
    sync
    touch "$IO_LOWER.ok"
}

run_io() {
    IMPL=$1 REP=$2
    io_shape
    local bytes=$((IO_MIB * 1024 * 1024))
    mount_fresh "$IMPL" "$IO_LOWER" "io-$IMPL-$REP"
    drop_caches
    measure w_seqread "$MNT/big"
    want "bytes read" "$(out)" "$bytes"
    cmp -s <(tail -c 65536 "$MNT/big") <(tail -c 65536 "$IO_LOWER/big") || WHY+=" the end of big differs;"
    result io "seq read ${IO_MIB}M cold"

    drop_caches
    measure w_seqwrite "$MNT/new" "$IO_MIB"
    want "bytes written" "$(out)" "$bytes"
    result io "seq write ${IO_MIB}M"
    measure w_fsync "$MNT/new"
    want "upper size" "$(stat -c %s "$UPPER/new" 2>&1)" "$bytes"
    want "non-zero bytes at the end" "$(tail -c 1048576 "$UPPER/new" | tr -d '\0' | wc -c)" 0
    result io "fsync after write"
    rm -f "$MNT/new"

    drop_caches
    measure w_py "$PY_RANDREAD" "$MNT/big" "$IO_RAND"
    want "digest" "$(out)" "$("$PYTHON" -c "$PY_RANDREAD" "$IO_LOWER/big" "$IO_RAND")"
    result io "4k rand read x$IO_RAND"
    finish_run io
}

# ---------------------------------------------------------------------------------------
# Workload: copyup (copy-up of many lower files and of the big file; appends)
# ---------------------------------------------------------------------------------------
cu_shape() {
    io_shape
    if [ "$QUICK" = 1 ]; then CU_FILES=500 AP_FILES=50 AP_ROUNDS=40
    else CU_FILES=2000 AP_FILES=100 AP_ROUNDS=200; fi
    CU_LOWER=$LOWER_ROOT/copyup-$CU_FILES
}

prep_copyup() {
    prep_io
    cu_shape
    [ -e "$CU_LOWER.ok" ] && return 0
    log "preparing $CU_LOWER: $CU_FILES files of 0-64 KiB in 20 dirs"
    rm -rf "$CU_LOWER"
    "$PYTHON" -c "$PY_GEN_FILES" "$CU_LOWER/files" "$CU_FILES" 20 f 65536
    sync
    touch "$CU_LOWER.ok"
}

run_copyup() {
    IMPL=$1 REP=$2
    cu_shape
    mount_fresh "$IMPL" "$CU_LOWER:$IO_LOWER" "copyup-$IMPL-$REP"
    drop_caches
    measure w_py "$PY_COPYUP" "$MNT/files"
    want "files opened" "$(out)" "$CU_FILES"
    want "files in the upper" "$(find "$UPPER/files" -type f | wc -l)" "$CU_FILES"
    diff -r -q "$UPPER/files" "$CU_LOWER/files" > /dev/null 2>&1 || WHY+=" the upper's copies differ from the lower files;"
    result copyup "copy-up $CU_FILES files"

    drop_caches
    measure w_open_append "$MNT/big"
    cmp -s "$UPPER/big" "$IO_LOWER/big" || WHY+=" the upper's big differs from the lower's;"
    result copyup "copy-up ${IO_MIB}M file"

    mkdir "$MNT/logs"
    local i
    for ((i = 0; i < AP_FILES; i++)); do printf '%099d\n' 0 > "$MNT/logs/$(printf 'log%04d' "$i")"; done
    measure w_py "$PY_APPEND" "$MNT/logs" "$AP_FILES" "$AP_ROUNDS"
    want "appends" "$(out)" $((AP_FILES * AP_ROUNDS))
    want "upper sizes" "$(stat -c %s "$UPPER"/logs/* | sort -u | tr '\n' ' ')" "$((100 * (AP_ROUNDS + 1))) "
    result copyup "append x$((AP_FILES * AP_ROUNDS))"
    unmount_run

    # The same copy-up of the small files on a `volatile` mount (no sync before the
    # rename: the kernel's and stratafs's; fuse-overlayfs never syncs anyway).
    EXTRA_OPTS=volatile mount_fresh "$IMPL" "$CU_LOWER:$IO_LOWER" "copyup-vol-$IMPL-$REP"
    drop_caches
    measure w_py "$PY_COPYUP" "$MNT/files"
    want "files opened" "$(out)" "$CU_FILES"
    want "files in the upper" "$(find "$UPPER/files" -type f | wc -l)" "$CU_FILES"
    result copyup "vol. copy-up $CU_FILES"
    finish_run copyup
}

# ---------------------------------------------------------------------------------------
# Workload: untar (untar, rm -rf of it, rm -rf of a lower-only tree)
# ---------------------------------------------------------------------------------------
ut_shape() {
    if [ "$QUICK" = 1 ]; then UT_FILES=5000; else UT_FILES=20000; fi
    UT_LOWER=$LOWER_ROOT/untar-$UT_FILES
}

prep_untar() {
    ut_shape
    [ -e "$UT_LOWER.ok" ] && return 0
    log "preparing $UT_LOWER: a tarball of $UT_FILES files (0-8 KiB) and the same tree as lower/lo"
    rm -rf "$UT_LOWER"
    "$PYTHON" -c "$PY_GEN_FILES" "$UT_LOWER/src/ut" "$UT_FILES" $((UT_FILES / 100)) f 8192
    tar -C "$UT_LOWER/src" -cf "$UT_LOWER/ut.tar" ut
    mkdir "$UT_LOWER/lower"
    mv "$UT_LOWER/src/ut" "$UT_LOWER/lower/lo"
    rmdir "$UT_LOWER/src"
    sync
    touch "$UT_LOWER.ok"
}

run_untar() {
    IMPL=$1 REP=$2
    ut_shape
    mount_fresh "$IMPL" "$UT_LOWER/lower" "untar-$IMPL-$REP"
    # An ext4 without a journal makes each new inode skip past the inodes deleted in
    # the last minute whose table blocks are still cached (ext4's recently_deleted):
    # after the previous run's rm -rf that costs seconds. Written out and dropped
    # here, so that no run pays for the one before it.
    drop_caches
    cat "$UT_LOWER/ut.tar" > /dev/null            # the tarball itself is read warm
    measure w_untar "$UT_LOWER/ut.tar" "$MNT"
    want "files" "$(find "$MNT/ut" -type f | wc -l)" "$UT_FILES"
    result untar "untar $UT_FILES files"

    measure w_rmrf "$MNT/ut"
    [ ! -e "$MNT/ut" ] || WHY+=" ut still exists;"
    [ ! -e "$UPPER/ut" ] || [ -c "$UPPER/ut" ] || WHY+=" ut is still in the upper;"   # a whiteout may stay (fuse-overlayfs)
    result untar "rm -rf untarred"

    drop_caches
    measure w_rmrf "$MNT/lo"
    want "mount's entries" "$(ls -A "$MNT" | wc -l)" 0
    [ -e "$UT_LOWER/lower/lo/d0000" ] || WHY+=" the lower tree was touched;"
    result untar "rm -rf lower tree"
    finish_run untar
}

# ---------------------------------------------------------------------------------------
# Workload: bigdir (ls -f of a dir merged from 3 layers; lookups of missing names)
# ---------------------------------------------------------------------------------------
bd_shape() {
    if [ "$QUICK" = 1 ]; then BD_N=5000 BD_MISS=2000; else BD_N=50000 BD_MISS=20000; fi
    BD_ROOT=$LOWER_ROOT/bigdir-$BD_N
}

prep_bigdir() {
    bd_shape
    [ -e "$BD_ROOT.ok" ] && return 0
    log "preparing $BD_ROOT: big/ with $BD_N names over lower, middle and upper layers"
    rm -rf "$BD_ROOT"
    "$PYTHON" -c "$PY_GEN_BIGDIR" "$BD_ROOT" "$BD_N"
    sync
    "$PYTHON" -c "$PY_MERGE" X "$BD_ROOT/up" "$BD_ROOT/mid" "$BD_ROOT/low" > "$BD_ROOT/expect"
    touch "$BD_ROOT.ok"
}

run_bigdir() {
    IMPL=$1 REP=$2
    bd_shape
    local X_ENTRIES X_FILES X_BYTES X_TARMIN X_TARMAX
    . "$BD_ROOT/expect"
    # ls -f lists . and .. and the dir's names; X_ENTRIES counts the root, big/ and them.
    want "names in the merged view" "$X_ENTRIES" $((BD_N + 2))
    mount_fresh "$IMPL" "$BD_ROOT/mid:$BD_ROOT/low" "bigdir-$IMPL-$REP" "$BD_ROOT/up"
    drop_caches
    measure w_lsf "$MNT/big"
    want "ls -f lines" "$(out)" $((BD_N + 2))
    result bigdir "ls -f ${BD_N} cold"
    measure w_lsf "$MNT/big"
    want "ls -f lines" "$(out)" $((BD_N + 2))
    result bigdir "ls -f ${BD_N} warm"

    drop_caches
    measure w_py "$PY_MISSING" "$MNT/big" "$BD_MISS"
    want "ENOENT answers" "$(out)" "$BD_MISS"
    result bigdir "$BD_MISS missing names"
    finish_run bigdir
}

# ---------------------------------------------------------------------------------------
# Workload: src (git status, grep -r, make -j2 in a source tree of a lower layer)
# ---------------------------------------------------------------------------------------
SRC_MODS=60
SRC_EXTRA=2000
SRC_TOKEN=XYZZY_BENCH_MARK

src_shape() { SRC_LOWER=$LOWER_ROOT/src-$SRC_MODS-$SRC_EXTRA; }

prep_src() {
    src_shape
    [ -e "$SRC_LOWER.ok" ] && return 0
    log "preparing $SRC_LOWER: a git repository of a C project ($SRC_MODS modules built, $SRC_EXTRA more files)"
    rm -rf "$SRC_LOWER"
    mkdir -p "$SRC_LOWER"
    "$PYTHON" -c "$PY_GEN_SRC" "$SRC_LOWER/src" "$SRC_MODS" "$SRC_EXTRA" "$SRC_TOKEN" > "$SRC_LOWER/expect"
    git -C "$SRC_LOWER/src" init -q
    git -C "$SRC_LOWER/src" add -A
    git -C "$SRC_LOWER/src" -c user.name=bench -c user.email=bench@localhost commit -q -m "generated source tree"
    sync
    touch "$SRC_LOWER.ok"
}

run_src() {
    IMPL=$1 REP=$2
    src_shape
    local SRC_GREP SRC_OUTPUT
    . "$SRC_LOWER/expect"
    mount_fresh "$IMPL" "$SRC_LOWER" "src-$IMPL-$REP"
    drop_caches
    measure w_gitstatus "$MNT/src"
    want "changed paths" "$(out)" 0
    result src "git status cold"
    measure w_gitstatus "$MNT/src"
    want "changed paths" "$(out)" 0
    result src "git status warm"

    drop_caches
    measure w_grep "$MNT/src" "$SRC_TOKEN"
    want "matching lines" "$(out)" "$SRC_GREP"
    result src "grep -r cold"
    measure w_grep "$MNT/src" "$SRC_TOKEN"
    want "matching lines" "$(out)" "$SRC_GREP"
    result src "grep -r warm"

    drop_caches
    measure w_make "$MNT/src"
    want "./prog says" "$("$MNT/src/prog" 2>&1)" "$SRC_OUTPUT"
    want "objects in the upper" "$(find "$UPPER/src" -name '*.o' | wc -l)" $((SRC_MODS + 1))
    result src "make -j2 ($((SRC_MODS + 1)) .c)"
    finish_run src
}

# ---------------------------------------------------------------------------------------
# Workload: memory (the FUSE daemon's RSS after looking up every entry of a huge tree,
# and after the kernel forgets them)
# ---------------------------------------------------------------------------------------
# PY_GEN_EMPTY TOP NDIRS NFILES: TOP/dNNNN/fNNNN, NDIRS dirs of NFILES empty files each.
PY_GEN_EMPTY=$(cat <<'PYEOF'
import os, sys, stat
top, nd, nf = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(top)
for d in range(nd):
    name = os.path.join(top, "d%04d" % d)
    os.mkdir(name)
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY)
    for f in range(nf):
        os.mknod("f%04d" % f, stat.S_IFREG | 0o644, dir_fd=fd)
    os.close(fd)
PYEOF
)

mem_shape() {
    if [ "$QUICK" = 1 ]; then MEM_DIRS=100; else MEM_DIRS=1000; fi
    MEM_FILES=1000                      # per dir
    MEM_N=$((MEM_DIRS * MEM_FILES))
    MEM_LOWER=$LOWER_ROOT/memory-$MEM_N
}

prep_memory() {
    mem_shape
    [ -e "$MEM_LOWER.ok" ] && return 0
    log "preparing $MEM_LOWER: $MEM_N empty files in $MEM_DIRS dirs"
    rm -rf "$MEM_LOWER"
    "$PYTHON" -c "$PY_GEN_EMPTY" "$MEM_LOWER" "$MEM_DIRS" "$MEM_FILES"
    sync
    touch "$MEM_LOWER.ok"
}

run_memory() {
    IMPL=$1 REP=$2
    mem_shape
    local walk="stat walk cold" m
    if [ "$IMPL" = kernel ]; then       # no daemon: nothing to measure
        for m in "$walk (s)" "$walk cpu (s)" "entries (n)" "RSS after walk (MiB)" \
            "RSS drop_caches+3s (MiB)" "daemon peak RSS (MiB)"; do
            record memory "$m" "$IMPL" "$REP" -
        done
        log "  memory kernel rep $REP: skipped (no daemon)"
        return 0
    fi
    mount_fresh "$IMPL" "$MEM_LOWER" "memory-$IMPL-$REP"
    drop_caches
    measure w_sizewalk "$MNT"           # `find` lists the root, the dirs and the files
    local n; n=$(out)
    want entries "$n" $((1 + MEM_DIRS + MEM_N))
    result memory "$walk"
    record memory "entries (n)" "$IMPL" "$REP" "${n:-0}"
    local after dropped
    after=$(daemon_mib VmRSS)
    sync; echo 2 > /proc/sys/vm/drop_caches  # dentries and inodes: FORGETs to the daemon
    sleep 3
    dropped=$(daemon_mib VmRSS)
    log "  memory $IMPL rep $REP: $n entries; RSS ${after} MiB after the walk, ${dropped} MiB after drop_caches"
    record memory "RSS after walk (MiB)" "$IMPL" "$REP" "$after"
    record memory "RSS drop_caches+3s (MiB)" "$IMPL" "$REP" "$dropped"
    finish_run memory
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
            line = sprintf("%-26s", wl)
            for (i = 1; i <= ni; i++) line = line sprintf(" %10s", name[im[i]])
            if (has["stratafs"] && has["kernel"]) line = line sprintf(" %10s", "s/kernel")
            if (has["stratafs"] && has["fuse-ovl"]) line = line sprintf(" %10s", "s/fuse-ovl")
            print line
            for (m = 1; m <= nm; m++) {
                line = sprintf("%-26s", order[m])
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
    if [ -e "$LOWER_ROOT/rootfs.source" ] && [[ " ${WORKLOADS[*]} " == *" walk "* ]]; then
        walk_shape
        echo "# walk: bottom layer $W_BASE ($(cat "$LOWER_ROOT/rootfs.source"))," \
            "$(awk -F= '/_ENTRIES=/ { print $2 }' "$W_DATA/expect") entries merged"
    fi
    echo "# medians of $REPS runs; data in $DIR; cpu = user+sys of the command plus the FUSE daemon's"
}

# podman runs on its own storage, by its own script (see the workload list above).
prep_podman() { :; }
run_podman() { :; }

main() {
    parse_args "$@"
    [ "$(id -u)" -eq 0 ] || die "must be run as root (mounts, drops caches)"
    if printf '%s\n' "${WORKLOADS[@]}" | grep -qx podman; then
        "$REPO/scripts/bench-podman.sh" --reps "$REPS" || die "bench-podman.sh failed"
        local keep=() w
        for w in "${WORKLOADS[@]}"; do [ "$w" = podman ] || keep+=("$w"); done
        [ ${#keep[@]} -gt 0 ] || exit 0
        WORKLOADS=("${keep[@]}")
    fi
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
