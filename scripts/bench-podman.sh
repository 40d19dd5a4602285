#!/usr/bin/env bash
# Times podman with three storage setups side by side: podman's native kernel overlay
# (driver overlay, no mount program), fuse-overlayfs (Debian's /usr/bin/fuse-overlayfs as
# mount_program) and stratafs (as mount_program), as root and rootless.
#
#   scripts/bench-podman.sh [--reps N] [--mode root|rootless|both] [--base debian|busybox]
#                           [--keep] [--user NAME] [-h|--help]
#
# Run as root on Debian. No container registry is needed (none is reached). The setup is
# that of scripts/podman-e2e.sh (the functions both source, scripts/podman-common.sh):
#   1. apt-get installs what is missing: podman, buildah, uidmap, runc, fuse3, conmon,
#      fuse-overlayfs (runc and the cgroupfs manager: crun refuses hybrid cgroups);
#   2. builds stratafs (`cargo build --release`, CARGO_TARGET_DIR honoured) unless
#      STRATAFS_BIN=/path/to/stratafs is set, and copies the binary into the work dir
#      (where the unprivileged user can execute it);
#   3. makes a work dir (under $TMPDIR, default /var/tmp), a base image tarball plus a
#      few files, and a build context. The base (--base) is a Debian root fs
#      (`debootstrap --variant=minbase bookworm`, about 6,700 entries; made once and kept
#      in /var/tmp/stratafs-bench/lower/rootfs, where bench.sh's walk keeps it too; if
#      debootstrap fails, busybox with a note) or Debian's busybox-static package
#      (`apt-get download`, not installed: about 450 entries);
#   4. for each mode (root, then rootless) one private store per setup, each with its
#      own CONTAINERS_STORAGE_CONF and CONTAINERS_CONF (graphroot/rootless_storage_path,
#      runroot, tmp_dir, network dir; runc, cgroupfs, events in a file, netns none).
#      Rootless runs as $BENCH_USER (default stratafs-e2e, created if missing, with
#      /etc/subuid and /etc/subgid ranges) through `runuser`, with an XDG_RUNTIME_DIR
#      per store (rootless podman takes its runroot from there, not from storage.conf);
#      each store has its own pause process (pid file in its tmp_dir) and user
#      namespace. Runroots and runtime dirs live under a short /run/pbx.XXXXXX: with a
#      runtime dir path of 41 characters (39 was fine) every rootless `podman run` here
#      waited 20 s ("Exceeded conmon timeout waiting for container to exit"). As root
#      every run/build gets `--ulimit nofile=20000:20000 --ulimit nproc=4096:4096` (root
#      lacks CAP_SYS_RESOURCE here; podman's defaults exceed the hard limits).
#      Rootless native kernel overlay (kernel >= 5.13) is tried: when `podman info` or a
#      run on it fails, that column is skipped with a note.
#      Each store gets the base image (`podman import`), one untimed warm-up run and
#      build, then N repetitions, interleaved (kernel, fuse-ovl, stratafs, kernel, ...):
#        run    `podman run --rm --network none IMAGE true` (wall time), three times
#               a repetition (it is short and the machine noisy);
#        build  `podman build --no-cache` of a Containerfile with 5 RUN steps (create,
#               append to, copy up, rename and delete files and directories) and one
#               COPY of 300 small files: 7 layers with the base (wall time). After each
#               build (untimed) the image's layer count and content are checked, then
#               it is removed (`podman rmi`, `podman image prune -f`). Builds run with
#               `--log-level debug`, each log line stamped with the time it came
#               (PM_STAMP), for the phase table.
#      A command that fails (or a build whose image is wrong) makes its cell FAIL; the
#      reasons are listed under the table.
#   5. always (trap EXIT): `podman system reset -f` of every private store, ends the
#      rootless pause processes of the private stores (found by their XDG_RUNTIME_DIR,
#      by pid), stops leftover daemons of the private stores (by pid), unmounts
#      leftovers under the work dir and /run/pbx.XXXXXX, removes both (the work dir
#      not with --keep).
#
# Output (stdout): a header (date, kernel, cores, podman and fuse-overlayfs versions,
# stratafs binary, command), then per mode a table of medians (seconds) with the ratios
# stratafs/kernel and stratafs/fuse-overlayfs, the individual times, and where a build
# step's time goes: the median of each phase over the timed builds' steps, from podman's
# debug log (scripts/bench/podman_phases.py). Progress goes
# to stderr. Exit status 0 iff every timed command succeeded.
#
# Options:
#   --reps N        repetitions (default 5)
#   --mode M        root, rootless or both (default)
#   --base B        debian (default) or busybox
#   --keep          keep the work dir (logs, configs) for inspection
#   --user NAME     the unprivileged user (default stratafs-e2e, env BENCH_USER)
# Environment: STRATAFS_MOUNTOPT=OPTS has storage.conf give the stratafs stores
# `mountopt = "OPTS"` (added to every -o); STRATAFS_BIN=/path skips the build; CARGO_TARGET_DIR is honoured by the
# build; BENCH_TIMEOUT (seconds, default 180) bounds each podman command (builds 4x).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# log, podman_install, make_work, install_stratafs, podman_user, write_store_configs, pm,
# podman_opts, run_pm, store_reset, store_daemons, kill_store_daemons, remove_tree,
# base_tree_*: shared with scripts/podman-e2e.sh.
. "$REPO/scripts/podman-common.sh"
CMDLINE="$0"
for a in "$@"; do CMDLINE+=" $(printf '%q' "$a")"; done

REPS=5
MODES=both
KEEP=0
BASE=debian
ROOTFS_CACHE=/var/tmp/stratafs-bench/lower/rootfs
BENCH_USER=${BENCH_USER:-stratafs-e2e}
T=${BENCH_TIMEOUT:-180}
IMPLS=(kernel fuse-ovl stratafs)

usage() { usage_of "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case $1 in
        --reps) REPS=${2:?}; shift 2 ;;
        --reps=*) REPS=${1#*=}; shift ;;
        --mode) MODES=${2:?}; shift 2 ;;
        --mode=*) MODES=${1#*=}; shift ;;
        --base) BASE=${2:?}; shift 2 ;;
        --base=*) BASE=${1#*=}; shift ;;
        --keep) KEEP=1; shift ;;
        --user) BENCH_USER=${2:?}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
[[ $REPS =~ ^[1-9][0-9]*$ ]] || { echo "--reps: a positive integer" >&2; exit 2; }
case $BASE in debian|busybox) ;; *) echo "--base: debian or busybox" >&2; exit 2 ;; esac
check_modes

setup_fail() { log "bench-podman: $*"; exit 1; }

START=$SECONDS
WORK=
RUNB=
ANY_FAIL=0

# ---------------------------------------------------------------------------- stores

# select_store MODE IMPL: sets the globals that pm and the cleanup use.
select_store() {
    MODE=$1
    IMPL=$2
    SDIR=$WORK/$MODE-$IMPL
    CONF=$SDIR/containers.conf
    SCONF=$SDIR/storage.conf
    GRAPH=$SDIR/graph
    XDG=$RUNB/$IMPL
    case $IMPL in
        kernel) PROG= ;;
        fuse-ovl) PROG=/usr/bin/fuse-overlayfs ;;
        stratafs) PROG=$WORK/bin/stratafs ;;
    esac
    PROG_REAL=
    [ -z "$PROG" ] || PROG_REAL=$(readlink -f "$PROG")
    podman_opts
}

# write_configs: the selected store's config files (runroot $RUNB/r-IMPL); rootless,
# its dir and XDG_RUNTIME_DIR belong to the user.
write_configs() {
    local mountopt=
    [ "$IMPL" != stratafs ] || mountopt=${STRATAFS_MOUNTOPT:-}
    write_store_configs "$SDIR" "$RUNB/r-$IMPL" "$PROG" "$mountopt"
    if [ "$MODE" = rootless ]; then
        mkdir -p "$XDG"
        chmod 0700 "$XDG"
        chown -R "$U_UID:$U_GID" "$SDIR" "$XDG"
    fi
}

# Processes of the user left by the private stores (rootless pause processes, a stray
# conmon): those whose XDG_RUNTIME_DIR lies under $RUNB. PIDs.
user_leftovers() {
    local d env
    [ -n "${RUNB:-}" ] && [ -n "${U_UID:-}" ] || return 0
    for d in /proc/[0-9]*; do
        [ "$(stat -c %u "$d" 2>/dev/null)" = "$U_UID" ] || continue
        env=$(tr '\0' '\n' 2>/dev/null <"$d/environ") || continue
        case $'\n'$env in *$'\n'"XDG_RUNTIME_DIR=$RUNB/"*) echo "${d#/proc/}" ;; esac
    done
    return 0
}

CLEAN_STORES=()
cleanup_mode() {
    local mode=$1 s pid
    local left=()
    for s in "${CLEAN_STORES[@]}"; do
        if [ "${s%%:*}" != "$mode" ]; then left+=("$s"); continue; fi
        select_store "$mode" "${s#*:}"
        store_reset
    done
    CLEAN_STORES=("${left[@]+"${left[@]}"}")
    if [ "$mode" = rootless ]; then
        for pid in $(user_leftovers); do kill "$pid" 2>/dev/null || true; done
        sleep 1
    fi
    for impl in fuse-ovl stratafs; do
        select_store "$mode" "$impl"
        kill_store_daemons
    done
    umount_below "$WORK" || true
    [ -z "$RUNB" ] || umount_below "$RUNB" || true
}

on_exit() {
    local rc=$? m
    trap - EXIT INT TERM
    if [ -n "$WORK" ]; then
        for m in root rootless; do cleanup_mode "$m" || true; done
        if [ -d "$WORK" ]; then
            if [ "$KEEP" = 1 ]; then
                log "work dir kept: $WORK"
            else
                remove_tree "$WORK"
            fi
        fi
    fi
    if [ -n "${RUNB:-}" ] && [ -d "$RUNB" ]; then
        remove_tree "$RUNB"
    fi
    [ "$rc" = 0 ] || log "bench-podman: exit status $rc"
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# ensure_user: the user $BENCH_USER (see podman_user).
ensure_user() {
    podman_user "$BENCH_USER" || { log "useradd $BENCH_USER failed"; return 1; }
}

# ---------------------------------------------------------------------------- setup

podman_install fuse-overlayfs
make_work pbench
RUNB=$(mktemp -d /run/pbx.XXXXXX)
chmod 0755 "$RUNB"

[ -n "${STRATAFS_BIN:-}" ] || log "building stratafs (cargo build --release)"
install_stratafs

# debian_rootfs: ROOTFS_CACHE made (debootstrap, once) unless it is there. Returns 1
# when debootstrap fails or the cache holds something else (bench.py's fallback copy).
debian_rootfs() {
    if [ ! -e "$ROOTFS_CACHE.ok" ]; then
        command -v debootstrap >/dev/null ||
            timeout 300 apt-get install -y -qq debootstrap >/dev/null 2>&1 || return 1
        log "debootstrap --variant=minbase bookworm into $ROOTFS_CACHE (once; a minute or two)"
        mkdir -p "$(dirname "$ROOTFS_CACHE")"
        rm -rf "$ROOTFS_CACHE" "$ROOTFS_CACHE.tmp"
        timeout 900 debootstrap --variant=minbase bookworm "$ROOTFS_CACHE.tmp" \
            http://deb.debian.org/debian >"$WORK/logs/debootstrap.log" 2>&1 || return 1
        echo "debootstrap --variant=minbase bookworm" >"$ROOTFS_CACHE.source"
        mv "$ROOTFS_CACHE.tmp" "$ROOTFS_CACHE"
        sync
        touch "$ROOTFS_CACHE.ok"
    fi
    grep -q '^debootstrap' "$ROOTFS_CACHE.source" 2>/dev/null
}

# The base image, with files that the build appends to (copy-up) or deletes: a Debian
# root fs (its /dev emptied: podman mounts one), or busybox-static (downloaded, not
# installed) with a minimal /etc.
EXTRA=(var/lib/app usr/share/data olddir/sub)
if [ "$BASE" = debian ] && ! debian_rootfs; then
    log "no Debian root fs (see $WORK/logs/debootstrap.log): the base is busybox"
    BASE="busybox (debootstrap failed)"
fi
if [ "$BASE" = debian ]; then
    R=$WORK/base
    cp -a "$ROOTFS_CACHE" "$R"
    find "$R/dev" -mindepth 1 -delete
    mkdir -p "${EXTRA[@]/#/$R/}"
else
    base_tree_start "${EXTRA[@]}"
fi
for i in $(seq 1 100); do echo "config $i" >"$R/var/lib/app/c$i.conf"; done
for i in $(seq 1 50); do head -c $((i * 97)) /dev/zero | tr '\0' d >"$R/usr/share/data/d$i"; done
for i in $(seq 1 20); do echo "old $i" >"$R/olddir/o$i"; echo "sub $i" >"$R/olddir/sub/s$i"; done
head -c 1048576 /dev/urandom >"$R/big.bin"
if [ "$BASE" = debian ]; then
    chmod -R u=rwX,go=rX "${EXTRA[@]/#/$R/}" "$R/big.bin"
else
    base_tree_modes
fi
base_tree_tar
BASE_DESC="$BASE, $(find "$R" | wc -l) entries, $(du -sm "$R" | cut -f1) MB"

# The build context: 300 small files in 10 dirs, and the Containerfile.
for d in $(seq 0 9); do
    mkdir -p "$WORK/ctx/files/d$d"
    for i in $(seq 1 30); do
        printf 'file %d/%d %s\n' "$d" "$i" "$(head -c $(((d * 30 + i) % 50 * 20)) /dev/zero | tr '\0' x)" >"$WORK/ctx/files/d$d/f$i"
    done
done
cat >"$WORK/ctx/Containerfile" <<'EOF'
FROM localhost/bench-base:latest
RUN mkdir -p /work/a /work/b && for i in $(seq 1 200); do echo "line $i" > /work/a/f$i; done && for i in $(seq 1 100); do echo changed >> /var/lib/app/c$i.conf; done && rm -f /usr/share/data/d1*
COPY files/ /srv/files/
RUN for i in $(seq 1 200); do echo more >> /work/a/f$i; done && cat /srv/files/d*/f* > /work/b/all && rm -f /work/a/f1* && rm -rf /srv/files/d0
RUN mv /olddir /newdir && cp -a /srv/files/d1 /work/b/copy && echo tail >> /big.bin && echo h > /work/b/h && ln /work/b/h /work/b/h2 && mkdir -p /var/cache/x && for i in $(seq 1 100); do echo $i > /var/cache/x/$i; done
RUN tar -cf /tmp/t.tar /work /srv && mkdir /x && tar -xf /tmp/t.tar -C /x && rm /tmp/t.tar && rm -rf /var/cache/x && find / -xdev -type f | wc -l > /count
RUN rm -rf /x && sha1sum /work/b/all /big.bin > /sums && ls /work/a | wc -l > /work/a-count && ls /srv/files | wc -l > /srv-count
EOF
chmod -R a+rX "$WORK/ctx"
# What the built image must show (checked after every build).
CHECK_CMD='cat /work/a-count /srv-count; ls /work/b/copy | wc -l; ls /newdir /newdir/sub | wc -l; test ! -e /olddir && test ! -e /x && test ! -e /var/cache/x && echo gone; cat /var/lib/app/c7.conf; stat -c %h /work/b/h; ls /usr/share/data | wc -l'
CHECK_WANT=$'89\n9\n30\n44\ngone\nconfig 7\nchanged\n2\n39'
# 200 - 111 (f1, f10-f19, f100-f199) = 89 files; d0 deleted: 9 dirs; 20+1 + 20 + 3 lines
# of ls output for two dirs; d1, d10-d19 deleted: 39.
LAYERS_WANT=7

# ---------------------------------------------------------------------------- header

PODMAN_V=$(podman --version | awk '{print $3}')
FOVL_V=$(/usr/bin/fuse-overlayfs --version 2>&1 | awk '/fuse-overlayfs/ {print $3; exit}')
STRATA_REV=$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo '?')
echo "bench-podman: $(date '+%Y-%m-%d %H:%M:%S %Z')"
echo "kernel $(uname -r), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), podman $PODMAN_V, runc $(runc --version | awk 'NR==1 {print $3}'), fuse-overlayfs ${FOVL_V:-?}"
echo "stratafs $SRC_BIN ($("$WORK/bin/stratafs" -V 2>&1 | head -n 1); ${STRATAFS_BIN:+given by STRATAFS_BIN, }repo HEAD now $STRATA_REV)"
[ -z "${STRATAFS_MOUNTOPT:-}" ] || echo "stratafs stores: mountopt = \"$STRATAFS_MOUNTOPT\""
echo "command: $CMDLINE   (reps $REPS, interleaved kernel / fuse-ovl / stratafs)"
echo "run:   podman run --rm --network none localhost/bench-base true"
echo "build: podman build --no-cache of 5 RUN + 1 COPY (300 files) on localhost/bench-base ($BASE_DESC)"

# ---------------------------------------------------------------------------- a mode

declare -A TIMES=() FAILS=() SKIP=() LOGS=()
REASONS=()

# prepare MODE IMPL: config, podman info, base image, warm-up. Returns 1 (and marks the
# column skipped or failed) when the store cannot be used.
prepare() {
    select_store "$1" "$2"
    write_configs
    CLEAN_STORES+=("$MODE:$IMPL")
    log "== $MODE / $IMPL: ${PROG:-kernel overlay, no mount program}"
    run_pm info "$T" info --format '{{.Store.GraphDriverName}} {{.Store.GraphRoot}} {{.Store.RunRoot}} {{.Store.GraphOptions}}'
    if [ "$RC" != 0 ] || [[ $OUT != overlay* ]] || [[ $OUT != *"$PROG"* ]] ||
        { [ -z "$PROG" ] && [[ $OUT == *mount_program* ]]; }; then
        note_unusable "podman info: ${WHY:-got '$OUT'}"
        return 1
    fi
    log "   info: $OUT"
    run_pm import "$T" import --change 'CMD ["/bin/sh"]' "$WORK/base.tar" localhost/bench-base:latest
    [ "$RC" = 0 ] || { note_unusable "import: $WHY"; return 1; }
    run_pm warm-run "$T" run --rm "${RUNOPTS[@]}" localhost/bench-base:latest true
    [ "$RC" = 0 ] || { note_unusable "warm-up run: $WHY"; return 1; }
    do_build warm-build || { note_unusable "warm-up build: $WHY"; return 1; }
    log "   warm-up build ${ELAPSED}s ok"
    return 0
}

# Rootless kernel overlay may not work here: skipped with a note. Anything else: FAIL.
note_unusable() {
    if [ "$MODE" = rootless ] && [ "$IMPL" = kernel ]; then
        SKIP[$MODE,$IMPL]="skipped: rootless native overlay does not work here: $1"
    else
        SKIP[$MODE,$IMPL]=FAIL
        REASONS+=("$MODE/$IMPL setup: $1")
        ANY_FAIL=1
    fi
    log "   unusable: $1"
}

# do_build NAME: a timed build ($ELAPSED; its stamped debug log in $BUILD_LOG), then
# (untimed) its image is checked and removed. Returns 1 with $WHY on failure.
do_build() {
    local name=$1 el why=
    PM_STAMP=1 run_pm "$name" $((T * 4)) --log-level debug build --no-cache --pull=never \
        "${RUNOPTS[@]}" -f "$WORK/ctx/Containerfile" -t localhost/bench-img:latest "$WORK/ctx"
    el=$ELAPSED
    BUILD_LOG=$ERR_FILE
    if [ "$RC" != 0 ]; then
        why=$WHY
    else
        run_pm layers "$T" image inspect --format '{{len .RootFS.Layers}}' localhost/bench-img:latest
        if [ "$RC" != 0 ] || [ "$OUT" != "$LAYERS_WANT" ]; then
            why="image has '$OUT' layers, want $LAYERS_WANT ${WHY}"
        else
            run_pm check "$T" run --rm "${RUNOPTS[@]}" localhost/bench-img:latest sh -c "$CHECK_CMD"
            if [ "$RC" != 0 ] || [ "$OUT" != "$CHECK_WANT" ]; then
                why="image content: got '$(echo "$OUT" | tr '\n' ' ')', want '$(echo "$CHECK_WANT" | tr '\n' ' ')' ${WHY}"
            fi
        fi
    fi
    pm "$T" rmi -f localhost/bench-img:latest >/dev/null 2>&1 || true
    pm "$T" image prune -f >/dev/null 2>&1 || true
    ELAPSED=$el
    WHY=$why
    [ -z "$why" ]
}

record() { # record BENCH: appends $ELAPSED or a failure for the selected store
    local key="$MODE,$1,$IMPL"
    if [ -z "$WHY" ]; then
        TIMES[$key]+="$ELAPSED "
        [ "$1" != build ] || LOGS[$MODE,$IMPL]+="$IMPL=$BUILD_LOG "
        log "   $1 $IMPL ${ELAPSED}s"
    else
        FAILS[$key]=$((${FAILS[$key]:-0} + 1))
        REASONS+=("$MODE/$IMPL $1: $WHY")
        ANY_FAIL=1
        log "   $1 $IMPL FAIL: $WHY"
    fi
}

median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# cell MODE BENCH IMPL: the median, FAIL or "-"; sets MED_<impl> for the ratios.
cell() {
    local key="$1,$2,$3" m
    if [ "${SKIP[$1,$3]:-}" = FAIL ] || [ -n "${FAILS[$key]:-}" ]; then echo FAIL; return; fi
    if [ -n "${SKIP[$1,$3]:-}" ]; then echo -; return; fi
    m=$(median <<<"${TIMES[$key]:-}")
    [ -n "$m" ] && printf '%.2f' "$m" || echo -
}

ratio() { # ratio A B: A/B as 1.23x, "-" when either is not a number
    if [[ $1 =~ ^[0-9.]+$ ]] && [[ $2 =~ ^[0-9.]+$ ]]; then
        awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'
    else echo -; fi
}

print_table() {
    local mode=$1 b label k f s i
    echo
    printf '%-24s %8s %10s %10s %10s %10s\n' "podman ($mode)" kernel fuse-ovl stratafs s/kernel s/fuse-ovl
    for b in run build; do
        case $b in run) label="run --rm true (s)" ;; build) label="build --no-cache (s)" ;; esac
        k=$(cell "$mode" $b kernel); f=$(cell "$mode" $b fuse-ovl); s=$(cell "$mode" $b stratafs)
        printf '%-24s %8s %10s %10s %10s %10s\n' "$label" "$k" "$f" "$s" "$(ratio "$s" "$k")" "$(ratio "$s" "$f")"
    done
    for i in "${IMPLS[@]}"; do
        [ -z "${SKIP[$mode,$i]:-}" ] || [ "${SKIP[$mode,$i]}" = FAIL ] || echo "  $i: ${SKIP[$mode,$i]}"
    done
    echo "  individual times (s, in run order):"
    for b in run build; do
        for i in "${IMPLS[@]}"; do
            [ -n "${TIMES[$mode,$b,$i]:-}" ] || [ -n "${FAILS[$mode,$b,$i]:-}" ] || continue
            printf '    %-6s %-9s %s%s\n' "$b" "$i" "${TIMES[$mode,$b,$i]:-}" \
                "${FAILS[$mode,$b,$i]:+ (${FAILS[$mode,$b,$i]} failed)}"
        done
    done
    local logs=()
    for i in "${IMPLS[@]}"; do
        # shellcheck disable=SC2206
        logs+=(${LOGS[$mode,$i]:-})
    done
    if [ ${#logs[@]} -gt 0 ]; then
        echo "  where a build step's time goes (podman's debug log; the diff of a mount"
        echo "  program's step ends at a whole second or later: containers/storage's naive diff):"
        python3 "$REPO/scripts/bench/podman_phases.py" "${logs[@]}" || true
    fi
}

run_mode() {
    local mode=$1 impl rep usable=()
    local t0=$SECONDS
    if [ "$mode" = rootless ]; then
        ensure_user || { for impl in "${IMPLS[@]}"; do SKIP[$mode,$impl]=FAIL; done; REASONS+=("rootless: no user"); ANY_FAIL=1; return 0; }
    fi
    for impl in "${IMPLS[@]}"; do
        if prepare "$mode" "$impl"; then usable+=("$impl"); fi
    done
    for rep in $(seq 1 "$REPS"); do
        log "-- $mode rep $rep/$REPS"
        for k in 1 2 3; do
            for impl in "${usable[@]+"${usable[@]}"}"; do
                select_store "$mode" "$impl"
                run_pm run "$T" run --rm "${RUNOPTS[@]}" localhost/bench-base:latest true
                record run
            done
        done
        for impl in "${usable[@]+"${usable[@]}"}"; do
            select_store "$mode" "$impl"
            do_build "build-$rep" || true
            record build
        done
    done
    cleanup_mode "$mode"
    print_table "$mode"
    echo "  ($mode: $((SECONDS - t0)) s including setup and cleanup)"
}

for m in $MODES; do
    run_mode "$m"
done

if [ ${#REASONS[@]} -gt 0 ]; then
    echo
    echo "failures:"
    for r in "${REASONS[@]}"; do echo "  $r" | cut -c1-1200; done
fi
echo
echo "total: $((SECONDS - START)) s, load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$ANY_FAIL" = 0 ]
