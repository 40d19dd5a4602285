#!/usr/bin/env bash
# Runs the Rust pjdfstest POSIX suite (crates.io `pjdfstest`, pinned below) on an
# overlay mount whose test directory starts in a LOWER layer: the suite's first mkdir in
# it copies it up, and everything the tests make lands in the upper beside the lower
# files (pjdfstest always works in fresh directories of its own, so the objects it tests
# are new upper objects; lower files are not its subject).
#
#   scripts/pjdfstest.sh [--impl stratafs|kernel|fuse-overlayfs] [OPTIONS] [PATTERN...]
#
# Run as root (some tests switch users, make devices, chown). Steps:
#   1. installs pjdfstest $PJDFSTEST_VERSION with `cargo install --locked` if the one on
#      PATH is missing or another version;
#   2. builds stratafs (`cargo build --release`) unless STRATAFS_BIN is set (only for
#      --impl stratafs);
#   3. makes a temp dir (under $TMPDIR or /tmp) holding two lower layers that both have
#      t/ (so MNT/t is a merged lower directory, with a file from each layer), an empty
#      upper and work dir, and mounts the chosen implementation on mnt/:
#        stratafs        $STRATAFS_BIN -f -o lowerdir=..,upperdir=..,workdir=.. MNT
#        kernel          mount -t overlay overlay -o lowerdir=..,upperdir=..,workdir=..,redirect_dir=on,index=on MNT
#        fuse-overlayfs  fuse-overlayfs -f -o lowerdir=..,upperdir=..,workdir=.. MNT
#                        (Debian package fuse-overlayfs, apt-get installed if missing)
#      FUSE daemons run in the foreground (-f) as children of this script, so their
#      pid is known and they can be stopped if a mount hangs;
#   4. mounts a small tmpfs (second/) as the secondary file system for EXDEV cases;
#   5. runs `pjdfstest -c CONF -p MNT/t -s second/ [PATTERN...]` under `timeout`; with
#      no PATTERN and remounts allowed, in two passes: the EROFS tests (`::erofs_`) first,
#      then all the others (see run_pass below for why), the counts added up;
#   6. always unmounts everything and removes the temp dir (trap EXIT).
#
# The dummy users pjdfstest switches to are existing accounts, so nothing outside the
# temp dir is changed: nobody (with its primary group) and `tests` if that user exists,
# else daemon. The features enabled are those Linux has: posix_fallocate, utimensat,
# utime_now, rename_ctime.
#
# Options:
#   --impl I           stratafs (default), kernel, or fuse-overlayfs
#   --timeout S        limit for the pjdfstest run, in seconds (default 1800)
#   --naptime S        pjdfstest's naptime setting (default 0.01; at the suite's example
#                      0.001 the kernel's coarse timestamps make time tests flaky)
#   --no-remount       skip the EROFS tests. By default they run (allow_remount =
#                      true): they remount MNT read-only and back with
#                      `mount -o remount,ro MNT`; for a FUSE mount mount(8) would call
#                      the mount.fuse3 helper, which starts a new daemon, so pjdfstest
#                      gets a `mount` on its PATH that runs `mount -i` (plain MS_REMOUNT)
#   --log FILE         also save pjdfstest's full output to FILE
#   --keep             keep the temp dir (layers, config, logs) after unmounting
#   --jobs N           run N pjdfstest instances at once on the one mount, each in a
#                      directory of its own under MNT/t (default 1): the concurrent
#                      load under which node ids, caches and locks are shared. The
#                      EROFS pass (which remounts) still runs alone, first; the
#                      counts are the sums over all instances
#   --expected FILE    test names (one a line, # comments) allowed to fail: the exit
#                      status is then 0 when every failure is listed there (CI uses
#                      tests/pjdfstest-expected-failures.txt: the 0/0 char devices,
#                      which an overlay refuses as the kernel does)
#   -h, --help         this text
#   PATTERN...         only tests whose name contains one of them (pjdfstest filters)
#
# Environment: STRATAFS_BIN=/path/to/stratafs skips the build; CARGO_TARGET_DIR is
# honoured by the build (the binary is then taken from there). PJDFSTEST_BIN=/path
# runs that pjdfstest binary as it is (no version check, no install).
#
# Output: pjdfstest's own lines, then the failing test names with what they printed,
# then as the very last line
#   pjdfstest on IMPL: N passed, M failed, K skipped
# Exit status: 0 when nothing failed, 1 when some test failed or the run did not finish
# (timeout, crash: the counts are then those of the tests that did report), 2 on a
# setup error.
#
# Expect 41 `...::char` failures on every overlay, kernel included: pjdfstest 0.2.2 makes
# its character devices with rdev 0, i.e. 0/0, which an overlay takes for a whiteout
# (mknod gives EPERM on the kernel and stratafs; fuse-overlayfs makes it and then hides
# it, ENOENT). They hide nothing else: with rdev 1/3 those tests pass on both.
set -euo pipefail

PJDFSTEST_VERSION=0.2.2

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# release_bin, ovl_mount, ovl_umount, ovl_stop_daemon
. "$REPO/scripts/lib.sh"

IMPL=stratafs
RUN_TIMEOUT=1800
NAPTIME=0.01
ALLOW_REMOUNT=true
LOG_COPY=
KEEP=0
JOBS=1
EXPECTED=
PATTERNS=()

die() { echo "pjdfstest.sh: $*" >&2; exit 2; }
log() { printf 'pjdfstest.sh: %s\n' "$*" >&2; }
usage() { usage_of "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case $1 in
        --impl) [ $# -ge 2 ] || die "--impl needs a value"; IMPL=$2; shift ;;
        --impl=*) IMPL=${1#*=} ;;
        --timeout) [ $# -ge 2 ] || die "--timeout needs seconds"; RUN_TIMEOUT=$2; shift ;;
        --timeout=*) RUN_TIMEOUT=${1#*=} ;;
        --naptime) [ $# -ge 2 ] || die "--naptime needs seconds"; NAPTIME=$2; shift ;;
        --naptime=*) NAPTIME=${1#*=} ;;
        --no-remount) ALLOW_REMOUNT=false ;;
        --allow-remount) ALLOW_REMOUNT=true ;;
        --log) [ $# -ge 2 ] || die "--log needs a file"; LOG_COPY=$2; shift ;;
        --log=*) LOG_COPY=${1#*=} ;;
        --keep) KEEP=1 ;;
        --jobs) [ $# -ge 2 ] || die "--jobs needs a number"; JOBS=$2; shift ;;
        --jobs=*) JOBS=${1#*=} ;;
        --expected) EXPECTED=$(realpath "$2"); shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; PATTERNS+=("$@"); break ;;
        -*) die "unknown option: $1 (see --help)" ;;
        *) PATTERNS+=("$1") ;;
    esac
    shift
done
case $IMPL in
    stratafs|kernel) ;;
    fuse-overlayfs|fuse-ovl) IMPL=fuse-overlayfs ;;
    *) die "--impl must be stratafs, kernel or fuse-overlayfs, not '$IMPL'" ;;
esac
[[ $RUN_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive integer"
[[ $NAPTIME =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--naptime must be a number of seconds"
[[ $JOBS =~ ^[1-9][0-9]?$ ]] || die "--jobs must be a number from 1 to 99"
[ "$(id -u)" -eq 0 ] || die "run as root"
if [ "$IMPL" != kernel ]; then [ -c /dev/fuse ] || die "/dev/fuse is missing"; fi

# ---------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------
export PATH="$PATH:${HOME:-/root}/.cargo/bin"

PJDFSTEST=${PJDFSTEST_BIN:-$(command -v pjdfstest || true)}
if [ -n "${PJDFSTEST_BIN:-}" ]; then
    [ -x "$PJDFSTEST_BIN" ] || die "PJDFSTEST_BIN=$PJDFSTEST_BIN is not an executable"
elif [ -z "$PJDFSTEST" ] || [ "$("$PJDFSTEST" --version 2>/dev/null)" != "pjdfstest $PJDFSTEST_VERSION" ]; then
    command -v cargo >/dev/null || die "cargo is needed to install pjdfstest (scripts/setup.sh installs Rust)"
    log "installing pjdfstest $PJDFSTEST_VERSION (cargo install --locked)"
    timeout 1800 cargo install pjdfstest --version "$PJDFSTEST_VERSION" --locked --force >&2 ||
        die "cargo install pjdfstest $PJDFSTEST_VERSION failed"
    PJDFSTEST=${HOME:-/root}/.cargo/bin/pjdfstest
fi

case $IMPL in
    stratafs)
        if [ -z "${STRATAFS_BIN:-}" ]; then
            log "building stratafs (cargo build --release)"
            (cd "$REPO" && timeout 1800 cargo build --release >&2) || die "cargo build --release failed"
            STRATAFS_BIN=$(release_bin "$REPO")
            case $STRATAFS_BIN in /*) ;; *) STRATAFS_BIN=$REPO/$STRATAFS_BIN ;; esac
        fi
        [ -x "$STRATAFS_BIN" ] || die "no stratafs binary at $STRATAFS_BIN"
        ;;
    fuse-overlayfs)
        if ! command -v fuse-overlayfs >/dev/null; then
            log "installing fuse-overlayfs (apt-get)"
            { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y fuse-overlayfs; } >&2 ||
                die "apt-get install fuse-overlayfs failed"
        fi
        ;;
esac

# Dummy users: existing accounts, each with its primary group (pjdfstest wants exactly 2).
user_entry() {
    local u=$1 g
    g=$(getent group "$(id -g "$u")" | cut -d: -f1) || return 1
    [ -n "$g" ] || return 1
    printf '["%s", "%s"]' "$u" "$g"
}
USER1=$(user_entry nobody) || die "pjdfstest needs the user nobody"
if id tests >/dev/null 2>&1; then USER2=$(user_entry tests); else USER2=$(user_entry daemon); fi ||
    die "pjdfstest needs a second unprivileged user (tests or daemon)"

# ---------------------------------------------------------------------------------------
# Layers, mounts, cleanup
# ---------------------------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pjdfstest-$IMPL.XXXXXX")
LOWER_TOP=$TMP/lower1
LOWER_BASE=$TMP/lower2
UPPER=$TMP/upper
WORK=$TMP/work
MNT=$TMP/mnt
SECOND=$TMP/second
OUT=$TMP/pjdfstest.out
DAEMON_LOG=$TMP/daemon.log
OVL_PID=
RUN_PID=
TAIL_PID=
MOUNTED=()

cleanup() {
    local rc=$? i
    set +e
    cd / || true
    if [ -n "$RUN_PID" ] && kill -0 "$RUN_PID" 2>/dev/null; then
        log "stopping the pjdfstest run (pid $RUN_PID)"
        kill -TERM "$RUN_PID" 2>/dev/null
        for i in $(seq 50); do kill -0 "$RUN_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$RUN_PID" 2>/dev/null
        wait "$RUN_PID" 2>/dev/null
    fi
    [ -n "$TAIL_PID" ] && { kill "$TAIL_PID" 2>/dev/null; wait "$TAIL_PID" 2>/dev/null; }
    # umount (5 tries, a second apart), lazily as a last resort; then the daemon's exit.
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do ovl_umount "${MOUNTED[i]}"; done
    ovl_stop_daemon "$OVL_PID"
    if [ "$KEEP" = 1 ]; then
        log "kept $TMP"
    elif [ -d "$TMP" ]; then
        if findmnt -rn -o TARGET | grep -qF "$TMP/"; then
            log "something is still mounted under $TMP; not removing it"
        else
            rm -rf --one-file-system "$TMP"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# mktemp makes TMP 0700: the dummy users must be able to reach MNT through it.
chmod 0755 "$TMP"
mkdir -p "$LOWER_TOP/t" "$LOWER_BASE/t" "$UPPER" "$WORK" "$MNT" "$SECOND"
chmod 0755 "$LOWER_TOP" "$LOWER_BASE" "$LOWER_TOP/t" "$LOWER_BASE/t" "$MNT"
echo "from the top lower layer" > "$LOWER_TOP/t/top-file"
echo "from the base lower layer" > "$LOWER_BASE/t/base-file"
chmod 0644 "$LOWER_TOP/t/top-file" "$LOWER_BASE/t/base-file"

ovl_mount "$IMPL" "$LOWER_TOP:$LOWER_BASE" "$UPPER" "$WORK" "$MNT" "$DAEMON_LOG" ||
    die "$IMPL did not mount $MNT"
MOUNTED+=("$MNT")
mount -t tmpfs -o size=16m,mode=0755 pjdfstest-second "$SECOND" || die "mounting the tmpfs failed"
MOUNTED+=("$SECOND")
[ -f "$MNT/t/top-file" ] && [ -f "$MNT/t/base-file" ] || die "the merged view lacks t/top-file or t/base-file"

write_conf() {          # write_conf FILE ALLOW_REMOUNT
    cat > "$1" <<EOF
# written by scripts/pjdfstest.sh
[features]
posix_fallocate = {}
utimensat = {}
utime_now = {}
rename_ctime = {}

[settings]
naptime = $NAPTIME
allow_remount = $2

[dummy_auth]
entries = [ $USER1, $USER2 ]
EOF
}

RUN_PATH=$PATH
if [ "$ALLOW_REMOUNT" = true ]; then
    mkdir -p "$TMP/bin"
    printf '#!/bin/sh\n# no mount.<type> helper: a plain MS_REMOUNT of the live mount\nexec %s -i "$@"\n' \
        "$(command -v mount)" > "$TMP/bin/mount"
    chmod 0755 "$TMP/bin/mount"
    RUN_PATH=$TMP/bin:$PATH
fi

# ---------------------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------------------
# run_pass NAME CONF [PATTERN...]: runs pjdfstest once (its output shown and appended to
# $OUT) and sets P_PASS P_FAIL P_SKIP P_COMPLETE P_RC and P_EROFS_SKIPPED.
# run_jobs N OUT CONF [PATTERN...]: N pjdfstest instances at once, instance J in
# MNT/t/jobJ with SECOND/jobJ; their outputs go to OUT one after the other once all
# ended; the exit status is the first non-zero one. A TERM stops them all.
run_jobs() {
    local n=$1 out=$2 conf=$3 j rc=0 pids=()
    shift 3
    trap 'kill -TERM "${pids[@]}" 2>/dev/null; exit 143' TERM
    for ((j = 1; j <= n; j++)); do
        mkdir -p "$MNT/t/job$j" "$SECOND/job$j"
        chmod 0755 "$MNT/t/job$j" "$SECOND/job$j"
        local cmd=("$PJDFSTEST" -c "$conf" -p "$MNT/t/job$j" -s "$SECOND/job$j")
        [ $# -gt 0 ] && cmd+=(-- "$@")
        (cd "$MNT/t/job$j" && PATH=$RUN_PATH NO_COLOR=1 CLICOLOR=0 RUST_BACKTRACE=0 \
            exec timeout -k 15 "$RUN_LEFT" "${cmd[@]}") </dev/null >"$out.$j" 2>&1 &
        pids+=($!)
    done
    for j in "${pids[@]}"; do wait "$j" || [ "$rc" -ne 0 ] || rc=$?; done
    : > "$out"
    for ((j = 1; j <= n; j++)); do cat "$out.$j" >> "$out"; done
    return "$rc"
}

RUN_LEFT=$RUN_TIMEOUT
run_pass() {
    local name=$1 conf=$2 out=$TMP/pass-$1.out start
    shift 2
    local cmd=("$PJDFSTEST" -c "$conf" -p "$MNT/t" -s "$SECOND")
    [ $# -gt 0 ] && cmd+=(-- "$@")
    local jobs=$JOBS
    [ "$name" = erofs ] && jobs=1
    [ "$RUN_LEFT" -gt 0 ] || RUN_LEFT=1
    start=$(date +%s)
    set +e
    if [ "$jobs" -gt 1 ]; then
        run_jobs "$jobs" "$out" "$conf" "$@" &
        RUN_PID=$!
        log "pass $name: $jobs instances at once, in $MNT/t/job1..$jobs"
    else
        log "pass $name: ${cmd[*]}"
        # In the background, and waited for with `wait`, so that a signal to this script
        # runs the cleanup at once (which stops the run: RUN_PID is `timeout` itself).
        (cd "$MNT/t" && PATH=$RUN_PATH NO_COLOR=1 CLICOLOR=0 RUST_BACKTRACE=0 \
            exec timeout -k 15 "$RUN_LEFT" "${cmd[@]}") </dev/null >"$out" 2>&1 &
        RUN_PID=$!
    fi
    tail -n +1 --pid="$RUN_PID" -f "$out" 2>/dev/null &
    TAIL_PID=$!
    wait "$RUN_PID"
    P_RC=$?
    wait "$TAIL_PID"
    RUN_PID="" TAIL_PID=""
    set -e
    RUN_LEFT=$((RUN_LEFT - ($(date +%s) - start)))
    sed 's/\x1b\[[0-9;]*m//g' "$out" > "$out.clean"
    cat "$out" >> "$OUT"
    local summary summaries
    summaries=$(grep -E '^Summary: [0-9]+ failed, [0-9]+ skipped, [0-9]+ passed' "$out.clean" || true)
    if [ -n "$summaries" ] && [ "$(wc -l <<<"$summaries")" -eq "$jobs" ]; then
        # (one summary per instance: the counts are their sums)
        P_COMPLETE=1 P_FAIL=0 P_SKIP=0 P_PASS=0
        while read -r summary; do
            P_FAIL=$((P_FAIL + $(sed -E 's/^Summary: ([0-9]+) failed.*/\1/' <<<"$summary")))
            P_SKIP=$((P_SKIP + $(sed -E 's/.* ([0-9]+) skipped.*/\1/' <<<"$summary")))
            P_PASS=$((P_PASS + $(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$summary")))
            P_PASS=$((P_PASS + $(sed -E 's/.* ([0-9]+) expected failures.*/\1/' <<<"$summary")))
        done <<<"$summaries"
    else
        P_COMPLETE=0
        P_PASS=$(grep -cE '^[^[:space:]]+ +(ok|failed as expected)$' "$out.clean" || true)
        P_FAIL=$(grep -cE '^[^[:space:]]+ +(FAILED|PASSED UNEXPECTEDLY)$' "$out.clean" || true)
        P_SKIP=$(grep -cE '^[^[:space:]]+ +skipped$' "$out.clean" || true)
    fi
    P_EROFS_SKIPPED=$(grep -cE '^[^[:space:]]+::erofs_[^[:space:]]* +skipped$' "$out.clean" || true)
}

log "impl=$IMPL pjdfstest=$("$PJDFSTEST" --version) mount=$MNT (lowerdir=lower1:lower2) second=$SECOND"
[ "$IMPL" = stratafs ] && log "stratafs binary: $STRATAFS_BIN"
log "users: $USER1 $USER2; naptime=$NAPTIME allow_remount=$ALLOW_REMOUNT timeout=${RUN_TIMEOUT}s"

: > "$OUT"
START=$(date +%s)
PJD_RC=0
COMPLETE=1
if [ "$ALLOW_REMOUNT" = true ] && [ ${#PATTERNS[@]} -eq 0 ]; then
    # Two passes. Some pjdfstest 0.2.2 tests (in open:: and posix_fallocate::) leave a
    # descriptor open for writing, and then `mount -o remount,ro` fails with EBUSY on any
    # file system; so the EROFS tests run first, in a fresh process, and the rest after
    # with allow_remount = false (where the EROFS tests are skipped and not counted).
    write_conf "$TMP/pjdfstest-erofs.toml" true
    write_conf "$TMP/pjdfstest.toml" false
    run_pass erofs "$TMP/pjdfstest-erofs.toml" '::erofs_'
    PASSED=$P_PASS FAILED=$P_FAIL SKIPPED=$P_SKIP COMPLETE=$P_COMPLETE PJD_RC=$P_RC
    if [ "$P_COMPLETE" = 1 ]; then
        run_pass main "$TMP/pjdfstest.toml"
        PASSED=$((PASSED + P_PASS)) FAILED=$((FAILED + P_FAIL))
        SKIPPED=$((SKIPPED + P_SKIP - P_EROFS_SKIPPED))
        [ "$P_COMPLETE" = 1 ] || COMPLETE=0
        [ "$PJD_RC" -ne 0 ] || PJD_RC=$P_RC
    fi
else
    write_conf "$TMP/pjdfstest.toml" "$ALLOW_REMOUNT"
    run_pass main "$TMP/pjdfstest.toml" ${PATTERNS[@]+"${PATTERNS[@]}"}
    PASSED=$P_PASS FAILED=$P_FAIL SKIPPED=$P_SKIP COMPLETE=$P_COMPLETE PJD_RC=$P_RC
fi
ELAPSED=$(( $(date +%s) - START ))
[ -n "$LOG_COPY" ] && cp "$OUT" "$LOG_COPY"
CLEAN=$TMP/pjdfstest.clean
sed 's/\x1b\[[0-9;]*m//g' "$OUT" > "$CLEAN"

echo
if [ "$FAILED" -gt 0 ]; then
    # A failing test is its result line followed by the panic message: a tab-indented
    # first line, then for assert_eq! the "  left: ..." and " right: ..." lines.
    awk '/^[^[:space:]]+ +(ok|FAILED|skipped|failed as expected|PASSED UNEXPECTEDLY)$/ || /^Summary: / || /^$/ {
             if (name != "") print name "\t" msg
             name = ""; msg = ""
             if ($NF == "FAILED" || $NF == "UNEXPECTEDLY") name = $1
             next
         }
         name != "" { line = $0; sub(/^[[:space:]]+/, "", line); msg = (msg == "" ? line : msg " / " line) }
         END { if (name != "") print name "\t" msg }' "$CLEAN" | sort > "$TMP/failures.tsv"
    echo "failing tests on $IMPL ($(wc -l < "$TMP/failures.tsv")):"
    awk -F'\t' '{ print "  " $1 ": " $2 }' "$TMP/failures.tsv"
    echo "the same, grouped by what they printed:"
    awk -F'\t' '{ n[$2]++; names[$2] = names[$2] (n[$2] > 1 ? ", " : "") $1 }
                END { for (m in n) print n[m] "\t" m "\t" names[m] }' "$TMP/failures.tsv" |
        sort -t "$(printf '\t')" -k1,1nr -k2,2 |
        awk -F'\t' '{ printf "  %3d x %s\n        %s\n", $1, $2, $3 }'
fi
if [ "$COMPLETE" = 0 ]; then
    if [ "$PJD_RC" -eq 124 ] || [ "$PJD_RC" -eq 137 ]; then
        echo "the run did not finish: timed out after ${RUN_TIMEOUT}s (counts are of the tests that reported)"
    else
        echo "the run did not finish: pjdfstest exited with status $PJD_RC and no summary (counts are of the tests that reported)"
    fi
    FAILED=$((FAILED + 1))   # the unfinished run itself counts as a failure
fi
if [ -n "$OVL_PID" ] && ! kill -0 "$OVL_PID" 2>/dev/null; then
    echo "the $IMPL daemon died during the run; its log:"; tail -n 20 "$DAEMON_LOG"
fi
if [ -s "$DAEMON_LOG" ] && [ "$IMPL" != kernel ]; then
    echo "$IMPL daemon stderr ($(wc -l < "$DAEMON_LOG") lines), last 5:"; tail -n 5 "$DAEMON_LOG" | sed 's/^/  /'
fi
echo "pjdfstest took ${ELAPSED}s (exit status $PJD_RC)"
SKIP_PART=
[ "$SKIPPED" -gt 0 ] && SKIP_PART=", $SKIPPED skipped"
if [ -n "$EXPECTED" ]; then
    # Failures not listed as expected, and listed ones that now pass.
    grep -v '^#' "$EXPECTED" | sed '/^$/d' | sort -u > "$TMP/expected.txt"
    cut -f1 "$TMP/failures.tsv" 2>/dev/null | sort -u > "$TMP/failed.txt" || true
    UNEXPECTED=$(comm -23 "$TMP/failed.txt" "$TMP/expected.txt" | wc -l)
    comm -23 "$TMP/failed.txt" "$TMP/expected.txt" | sed 's/^/unexpected failure: /'
    EXPECTED_N=$(comm -12 "$TMP/failed.txt" "$TMP/expected.txt" | wc -l)
    echo "pjdfstest on $IMPL: $PASSED passed, $FAILED failed$SKIP_PART ($EXPECTED_N expected, $UNEXPECTED unexpected)"
    [ "$UNEXPECTED" -eq 0 ] && [ "$COMPLETE" != 0 ]
    exit
fi
echo "pjdfstest on $IMPL: $PASSED passed, $FAILED failed$SKIP_PART"
[ "$FAILED" -eq 0 ]
