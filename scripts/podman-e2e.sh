#!/usr/bin/env bash
# End-to-end test of stratafs as the `mount_program` of podman's overlay storage driver
# (containers-storage), rootless and as root. The same script run with
# `--impl fuse-overlayfs` (Debian's /usr/bin/fuse-overlayfs) is the reference.
#
#   scripts/podman-e2e.sh [--impl stratafs|fuse-overlayfs] [--mode root|rootless|both]
#                         [--quick] [--keep] [--user NAME] [-h|--help]
#
# Run as root on Debian. No container registry is needed (none is reached). The setup
# functions (steps 1-3, the config files and the user of step 4) are shared with
# scripts/bench-podman.sh in scripts/podman-common.sh. Steps:
#   1. apt-get installs what is missing: podman, buildah, uidmap, runc, fuse3, conmon
#      (and fuse-overlayfs for --impl fuse-overlayfs). runc and the cgroupfs manager are
#      used because crun refuses hybrid cgroup hierarchies;
#   2. builds stratafs (`cargo build --release`, CARGO_TARGET_DIR honoured) unless
#      STRATAFS_BIN=/path/to/stratafs is set, and copies the binary into the work dir
#      (where the unprivileged user can execute it);
#   3. makes a work dir (under $TMPDIR, default /var/tmp) and a base image tree from
#      Debian's busybox-static package (`apt-get download`, not installed): /bin/busybox
#      with its applet symlinks, a minimal /etc, and files and directories that the
#      build and the containers later change, delete and rename;
#   4. for each mode (root, then rootless):
#        root      podman runs with CONTAINERS_STORAGE_CONF and CONTAINERS_CONF pointing
#                  at files in the work dir: its own graphroot/runroot/tmp_dir/CNI dir,
#                  driver overlay with the mount program, runtime runc, cgroupfs,
#                  events in a file. Every run/build gets
#                  `--ulimit nofile=20000:20000 --ulimit nproc=4096:4096` (root lacks
#                  CAP_SYS_RESOURCE here, podman's defaults exceed the hard limits).
#        rootless  the same config files (graphroot given by rootless_storage_path,
#                  which rootless podman reads instead of graphroot; runroot under
#                  XDG_RUNTIME_DIR), used by the user $E2E_USER (default
#                  stratafs-e2e, created with useradd if missing, given /etc/subuid and
#                  /etc/subgid ranges if it has none, and /run/user/UID), through
#                  `runuser -u USER -- env -i ... podman ...`.
#      then, with `--network none` everywhere:
#        - `podman info` shows the overlay driver and the mount program;
#        - `podman import` of the base tarball, a run of it checks the tree;
#        - `podman build` of a 5-step Containerfile: RUN steps that create, append to,
#          chmod, chown and delete base files, delete a base dir, `rm -rf D && mkdir D`,
#          rename a base dir, hard-link a lower file and append through the new name
#          (a plain `ln` of a lower file is lost by podman's naive diff whatever the
#          mount program: the old name's mtime/size do not change, so the layer gets
#          only the new name), append to a lower hard link, make a fifo,
#          a COPY, and an append to a file hard-linked in an earlier layer;
#        - `podman run --rm` of the image checks the merged view (type, mode, owner,
#          link count, content, directory listings, same inode for hard links);
#          `--read-only` and (rootless) `--uidmap 0:1:5000 --gidmap 0:1:5000` runs;
#        - a container that changes the image (create, append, delete files and a dir,
#          `rm -rf D && mkdir D`, rename a dir, chmod, append to a hard link) and stops:
#          `podman diff` and `podman commit`, and a run of the committed image;
#        - the same changes in a running container (`podman run -d`): the view through
#          `podman exec`, the mount is a FUSE mount served by a daemon of the mount
#          program, `podman diff`, `podman commit`
#          while it runs, and a run of the committed image;
#        - no orphans: 50 (`--quick`: 10) `podman run --rm` in a row, then no daemon of
#          the mount program for this store is left and no mount under the work dir;
#        - the same after `podman system reset -f`.
#   5. always (trap EXIT): removes containers and images (`podman rm/rmi`,
#      `podman system reset -f` of the private stores), ends the rootless pause
#      process, stops leftover daemons of this run's store (by pid), unmounts leftovers
#      under the work dir, and removes the work dir (not with --keep). The user stays
#      (and /run/user/UID). Outside the work dir, podman itself still leaves its blob
#      info cache (/var/lib/containers/cache, root), the user's ~/.cache and
#      ~/.local/share/containers/cache, and its SHM lock segments (/dev/shm/libpod_*).
#
# Output: one line per check, `PASS name` or `FAIL name: why` (a failing podman command
# shows the end of what podman printed; errors of the mount program are part of it),
# then as the very last line
#   podman-e2e on IMPL: N passed, M failed
# Exit status: 0 iff M == 0. A setup error counts as a failed check.
#
# Options:
#   --impl I        stratafs (default) or fuse-overlayfs (/usr/bin/fuse-overlayfs); also
#                   kernel: no mount program (podman's native kernel overlay), to tell
#                   podman's own behaviour from the mount program's
#   --mode M        root, rootless or both (default)
#   --quick         10 instead of 50 runs in the orphan check
#   --keep          keep the work dir (logs, configs, base tree) for inspection
#   --user NAME     the unprivileged user (default stratafs-e2e, env E2E_USER)
# Environment: STRATAFS_BIN=/path skips the build; CARGO_TARGET_DIR is honoured by the
# build; E2E_TIMEOUT (seconds, default 180) bounds each podman command (builds get 4x).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# podman_install, make_work, install_stratafs, podman_user, write_store_configs, pm,
# podman_opts, run_pm, store_reset, store_daemons, kill_store_daemons, remove_tree,
# base_tree_*: shared with scripts/bench-podman.sh.
. "$REPO/scripts/podman-common.sh"

IMPL=stratafs
MODES=both
QUICK=0
KEEP=0
E2E_USER=${E2E_USER:-stratafs-e2e}
T=${E2E_TIMEOUT:-180}

usage() { usage_of "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case $1 in
        --impl) IMPL=${2:?}; shift 2 ;;
        --impl=*) IMPL=${1#*=}; shift ;;
        --mode) MODES=${2:?}; shift 2 ;;
        --mode=*) MODES=${1#*=}; shift ;;
        --quick) QUICK=1; shift ;;
        --keep) KEEP=1; shift ;;
        --user) E2E_USER=${2:?}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
case $IMPL in stratafs|fuse-overlayfs|kernel) ;; *) echo "--impl: stratafs, fuse-overlayfs or kernel" >&2; exit 2 ;; esac
check_modes
RUNS=50
[ "$QUICK" = 1 ] && RUNS=10

PASSED=0
FAILED=0
pass() { echo "PASS $1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $1: $2"; FAILED=$((FAILED + 1)); }

WORK=
MODE=
MODE_ACTIVE=0

# ---------------------------------------------------------------------------- cleanup

# Mount points under the work dir that are FUSE mounts or `merged` dirs, seen from the
# host and (rootless) from podman's user+mount namespace: "fstype mountpoint" lines.
store_mounts() {
    local mi
    [ -n "$WORK" ] || return 0
    mi=$(cat /proc/self/mountinfo)
    if [ "$MODE" = rootless ]; then
        mi+=$'\n'$(pm 60 unshare cat /proc/self/mountinfo 2>/dev/null || true)
    fi
    awk -v w="$WORK/" '{
        for (i = 7; i <= NF; i++) if ($i == "-") break
        fs = $(i + 1)
        if (index($5, w) == 1 && (fs ~ /^fuse/ || $5 ~ /\/merged$/)) print fs, $5
    }' <<<"$mi" | sort -u
}

pause_pids() {
    local f
    for f in "/run/user/${U_UID:-x}/libpod/tmp/pause.pid" "$WORK/$MODE/t/pause.pid"; do
        [ -f "$f" ] && cat "$f" && echo
    done 2>/dev/null | grep -E '^[0-9]+$' | sort -u || true
}

mode_cleanup() {
    local pid
    [ "$MODE_ACTIVE" = 1 ] || return 0
    MODE_ACTIVE=0
    store_reset
    if [ "$MODE" = rootless ]; then
        for pid in $(pause_pids); do
            [ "$(stat -c %U "/proc/$pid" 2>/dev/null)" = "$E2E_USER" ] && kill "$pid" 2>/dev/null || true
        done
        sleep 1
    fi
    kill_store_daemons
    # Leftover mounts on the host (root mode; the rootless ones died with the pause
    # process's namespace).
    umount_below "$WORK" || true
}

trap 'e2e_exit "podman-e2e on $IMPL"' EXIT
trap 'exit 130' INT TERM

setup_fail() { fail "setup" "$1"; DONE=1; exit 1; }

# ---------------------------------------------------------------------------- setup

podman_install "$IMPL"
make_work pe2e

if [ "$IMPL" = stratafs ]; then
    install_stratafs
    PROG=$WORK/bin/stratafs
elif [ "$IMPL" = fuse-overlayfs ]; then
    PROG=/usr/bin/fuse-overlayfs
else
    PROG=
fi
PROG_REAL=
[ -z "$PROG" ] || PROG_REAL=$(readlink -f "$PROG")

# The base image tree, from busybox-static (downloaded, not installed), plus files and
# dirs that the build and the containers change.
base_tree_start base/sub/deep data/sub deldir/sub olddir/sub
echo keep >"$R/base/keep.txt"
echo orig >"$R/base/append.txt"
echo chmod >"$R/base/chmod.txt"
echo chown >"$R/base/chown.txt"
echo delete >"$R/base/delete.txt"
echo hl >"$R/base/hl1"
ln "$R/base/hl1" "$R/base/hl2"
echo deep >"$R/base/sub/deep/file"
echo keep >"$R/data/keep.txt"
echo x >"$R/data/sub/x"
echo a >"$R/deldir/a"
echo b >"$R/deldir/sub/b"
echo f1 >"$R/olddir/f1"
echo f2 >"$R/olddir/sub/f2"
head -c 262144 /dev/urandom >"$R/big.bin"
base_tree_modes
chown 1000:1000 "$R/olddir" "$R/olddir/f1"
chmod 0750 "$R/olddir"
chmod 0640 "$R/olddir/f1"
base_tree_tar
MD5_BB=$(md5sum <"$R/bin/busybox" | cut -d' ' -f1)
MD5_BIG=$(md5sum <"$R/big.bin" | cut -d' ' -f1)
MD5_BIG2=$( (cat "$R/big.bin"; echo tail) | md5sum | cut -d' ' -f1)

# The build context.
echo copied >"$WORK/ctx/copied.txt"
chmod 0644 "$WORK/ctx/copied.txt"
cat >"$WORK/ctx/Containerfile" <<'EOF'
FROM localhost/e2e-base:latest
RUN echo created > /base/new.txt && echo appended >> /base/append.txt && chmod 0600 /base/chmod.txt && chown 1234:5678 /base/chown.txt && rm /base/delete.txt
RUN rm -rf /deldir && rm -rf /data && mkdir /data && echo fresh > /data/fresh.txt
RUN mv /olddir /newdir && ln /base/new.txt /base/new-link && echo linked >> /base/new-link && echo ln > /base/ln-a && ln /base/ln-a /base/ln-b && echo via-link >> /base/hl2 && mkfifo -m 0640 /base/fifo
COPY copied.txt /copied/copied.txt
RUN echo more >> /base/ln-a
EOF
chmod -R a+rX "$WORK/ctx"

# What a container does to the image (stopped and running containers alike).
CHANGES='set -e
echo added > /added.txt
echo c >> /base/append.txt
rm /base/keep.txt
rm -rf /data && mkdir /data && echo again > /data/again.txt
mv /newdir /renamed
rm -rf /base/sub
chmod 0700 /copied
echo x >> /base/hl1
echo tail >> /big.bin
rm /base/fifo
touch /tmp/ready'

# Expected views: ASPECT|PATH|BASE image|built IMAGE|after CHANGES ("^" = as the column
# to its left).
EXPECT="root listing|/|d [base big.bin bin data deldir dev etc olddir proc root run sys tmp]|d [base big.bin bin copied data dev etc newdir proc root run sys tmp]|d [added.txt base big.bin bin copied data dev etc proc renamed root run sys tmp]
base listing|/base|d 755 0:0 [append.txt chmod.txt chown.txt delete.txt hl1 hl2 keep.txt sub]|d 755 0:0 [append.txt chmod.txt chown.txt fifo hl1 hl2 keep.txt ln-a ln-b new-link new.txt sub]|d 755 0:0 [append.txt chmod.txt chown.txt hl1 hl2 ln-a ln-b new-link new.txt]
create|/base/new.txt|-|f 644 0:0 n2 created/linked/|^
create|/added.txt|-|-|f 644 0:0 n1 added/
create|/tmp|d 1777 0:0 []|^|d 1777 0:0 [ready]
create|/tmp/ready|-|-|f 644 0:0 n1 
append|/base/append.txt|f 644 0:0 n1 orig/|f 644 0:0 n1 orig/appended/|f 644 0:0 n1 orig/appended/c/
append|/big.bin|f 644 0:0 n1 md5:$MD5_BIG|^|f 644 0:0 n1 md5:$MD5_BIG2
chmod|/base/chmod.txt|f 644 0:0 n1 chmod/|f 600 0:0 n1 chmod/|^
chmod|/copied|-|d 755 0:0 [copied.txt]|d 700 0:0 [copied.txt]
chown|/base/chown.txt|f 644 0:0 n1 chown/|f 644 1234:5678 n1 chown/|^
delete file|/base/delete.txt|f 644 0:0 n1 delete/|-|-
delete file|/base/keep.txt|f 644 0:0 n1 keep/|^|-
delete dir|/deldir|d 755 0:0 [a sub]|-|-
delete dir|/deldir/a|f 644 0:0 n1 a/|-|-
delete dir|/deldir/sub/b|f 644 0:0 n1 b/|-|-
delete dir|/base/sub|d 755 0:0 [deep]|^|-
delete dir|/base/sub/deep/file|f 644 0:0 n1 deep/|^|-
rm -rf D && mkdir D|/data|d 755 0:0 [keep.txt sub]|d 755 0:0 [fresh.txt]|d 755 0:0 [again.txt]
rm -rf D && mkdir D|/data/keep.txt|f 644 0:0 n1 keep/|-|-
rm -rf D && mkdir D|/data/sub|d 755 0:0 [x]|-|-
rm -rf D && mkdir D|/data/sub/x|f 644 0:0 n1 x/|-|-
rm -rf D && mkdir D|/data/fresh.txt|-|f 644 0:0 n1 fresh/|-
rm -rf D && mkdir D|/data/again.txt|-|-|f 644 0:0 n1 again/
rename dir|/olddir|d 750 1000:1000 [f1 sub]|-|-
rename dir|/olddir/f1|f 640 1000:1000 n1 f1/|-|-
rename dir|/newdir|-|d 750 1000:1000 [f1 sub]|-
rename dir|/newdir/f1|-|f 640 1000:1000 n1 f1/|-
rename dir|/newdir/sub/f2|-|f 644 0:0 n1 f2/|-
rename dir|/renamed|-|-|d 750 1000:1000 [f1 sub]
rename dir|/renamed/f1|-|-|f 640 1000:1000 n1 f1/
rename dir|/renamed/sub/f2|-|-|f 644 0:0 n1 f2/
hard link (ln)|/base/new-link|-|f 644 0:0 n2 created/linked/|^
hard link (ln)|=/base/new.txt=/base/new-link|-|same|^
hard links kept by copy-up|/base/ln-a|-|f 644 0:0 n2 ln/more/|^
hard links kept by copy-up|/base/ln-b|-|f 644 0:0 n2 ln/more/|^
hard links kept by copy-up|=/base/ln-a=/base/ln-b|-|same|^
hard links kept by copy-up|/base/hl1|f 644 0:0 n2 hl/|f 644 0:0 n2 hl/via-link/|f 644 0:0 n2 hl/via-link/x/
hard links kept by copy-up|/base/hl2|f 644 0:0 n2 hl/|f 644 0:0 n2 hl/via-link/|f 644 0:0 n2 hl/via-link/x/
hard links kept by copy-up|=/base/hl1=/base/hl2|same|^|^
fifo|/base/fifo|-|p 640 0:0|-
COPY|/copied/copied.txt|-|f 644 0:0 n1 copied/|^
untouched|/bin/sh|l busybox|^|^
untouched|/bin/busybox|f 755 0:0 n1 md5:$MD5_BB|^|^"
VIEW_PATHS=()
while IFS='|' read -r _ path _; do VIEW_PATHS+=("$path"); done <<<"$EXPECT"

# podman diff of a container after CHANGES: podman's own mount points aside.
DIFF_EXPECT='A /added.txt
C /base
C /base/append.txt
D /base/fifo
C /base/hl1
C /base/hl2
D /base/keep.txt
D /base/sub
C /big.bin
C /copied
C /data
A /data/again.txt
D /data/fresh.txt
D /newdir
A /renamed
A /renamed/f1
A /renamed/sub
A /renamed/sub/f2
C /tmp
A /tmp/ready'
DIFF_IGNORE='^[ACD] (/|/dev|/dev/.*|/proc|/sys|/run|/run/\.containerenv|/run/secrets|/etc|/etc/hosts|/etc/hostname|/etc/resolv\.conf)$'

# ---------------------------------------------------------------------------- podman

# check_cmd NAME TIMEOUT ARGS...: PASS when podman exits 0.
check_cmd() {
    local name=$1
    run_pm "$@"
    if [ "$RC" = 0 ]; then pass "$name"; return 0; fi
    fail "$name" "$WHY"
    return 1
}

# check_view PREFIX COLUMN: compares $OUT (VIEW_SH output) with column 3/4/5 of EXPECT,
# one check per aspect.
check_view() {
    local prefix=$1 col=$2 aspect path c1 c2 c3 want got bad last= aspects=()
    declare -A got_of=() bad_of=()
    while IFS=$'\t' read -r path got; do got_of[$path]=$got; done <<<"$OUT"
    while IFS='|' read -r aspect path c1 c2 c3; do
        [ "$c2" = "^" ] && c2=$c1
        [ "$c3" = "^" ] && c3=$c2
        case $col in 1) want=$c1 ;; 2) want=$c2 ;; 3) want=$c3 ;; esac
        want=${want//\$MD5_BIG2/$MD5_BIG2}
        want=${want//\$MD5_BIG/$MD5_BIG}
        want=${want//\$MD5_BB/$MD5_BB}
        got=${got_of[$path]-<missing>}
        if [ "$aspect" != "$last" ]; then aspects+=("$aspect"); last=$aspect; fi
        if [ "$got" != "$want" ]; then
            bad_of[$aspect]+="$path: got '$got', want '$want'; "
        fi
    done <<<"$EXPECT"
    for aspect in "${aspects[@]}"; do
        bad=${bad_of[$aspect]-}
        if [ -z "$bad" ]; then pass "$prefix: $aspect"; else fail "$prefix: $aspect" "${bad%; }"; fi
    done
}

# view_run NAME COLUMN IMAGE: `podman run --rm IMAGE` the view script, check it.
view_run() {
    local name=$1 col=$2 img=$3
    run_pm "$name" "$T" run --rm "${RUNOPTS[@]}" "$img" sh -c "$VIEW_SH" sh "${VIEW_PATHS[@]}"
    if [ "$RC" != 0 ]; then fail "$name" "$WHY"; return 1; fi
    check_view "$name" "$col"
}

# check_diff NAME: compares $OUT (podman diff) with DIFF_EXPECT.
check_diff() {
    local name=$1 got extra missing
    got=$(grep -Ev "$DIFF_IGNORE" <<<"$OUT" | sed '/^$/d' | sort)
    missing=$(comm -23 <(sort <<<"$DIFF_EXPECT") <(echo "$got") | tr '\n' ',' | sed 's/,$//')
    extra=$(comm -13 <(sort <<<"$DIFF_EXPECT") <(echo "$got") | tr '\n' ',' | sed 's/,$//')
    if [ -z "$missing$extra" ]; then
        pass "$name"
    else
        fail "$name" "missing [${missing}] unexpected [${extra}]"
    fi
}

# A daemon may take a moment to see its session end (here about 2 s after the
# unmount, for fuse-overlayfs too; a concurrent `unshare -m` elsewhere keeps a copy of
# the mount alive meanwhile), so leftovers get 30 s to go away.
check_no_orphans() {
    local name=$1 d m i
    for i in $(seq 1 30); do
        d=$(store_daemons | cut -c1-300)
        m=$(store_mounts)
        [ -n "$d$m" ] || break
        sleep 1
    done
    if [ -z "$d$m" ]; then
        pass "$name"
    else
        fail "$name" "daemons left: [$(echo "$d" | tr '\n' ';')] mounts left: [$(echo "$m" | tr '\n' ';')]"
    fi
}


# ---------------------------------------------------------------------------- a mode

run_mode() {
    MODE=$1
    local dir=$WORK/$MODE p="$MODE" i ok t0 CID MERGED
    echo "== $MODE: podman $(podman --version | awk '{print $3}'), mount program $PROG" >&2
    if [ "$MODE" = rootless ]; then
        ensure_user || return 0
        mkdir -p "$dir"
        chown "$U_UID:$U_GID" "$dir"
    fi
    podman_opts
    write_store_configs "$dir" "$dir/run" "$PROG"
    [ "$MODE" = rootless ] && chown "$U_UID:$U_GID" "$dir"
    MODE_ACTIVE=1
    FSTYPE=fuse
    [ "$IMPL" = kernel ] && FSTYPE=overlay

    # podman info: driver and mount program.
    run_pm info "$T" info --format '{{.Store.GraphDriverName}} {{.Store.GraphOptions}}'
    if [ "$RC" != 0 ]; then
        fail "$p: podman info" "$WHY"
    elif [[ $OUT == overlay* && $OUT == *"$PROG"* && ( -n "$PROG" || $OUT != *mount_program* ) ]]; then
        pass "$p: podman info shows overlay with ${PROG:-no mount program}"
    else
        fail "$p: podman info shows overlay with ${PROG:-no mount program}" "got: $OUT"
    fi

    # Base image.
    if ! check_cmd "$p: podman import base tarball" "$T" import --change 'CMD ["/bin/sh"]' "$WORK/base.tar" localhost/e2e-base:latest; then
        fail "$p: rest of mode" "skipped: no base image"
        return 0
    fi
    view_run "$p: base image run" 1 localhost/e2e-base:latest || true

    # Build.
    if ! check_cmd "$p: podman build (5 steps, mount_program)" $((T * 4)) build --network none --pull=never --layers \
        "${RUNOPTS[@]:2}" -f "$WORK/ctx/Containerfile" -t localhost/e2e-img:latest "$WORK/ctx"; then
        fail "$p: rest of mode" "skipped: no built image"
        return 0
    fi
    run_pm layers "$T" image inspect --format '{{len .RootFS.Layers}}' localhost/e2e-img:latest
    if [ "$RC" = 0 ] && [ "$OUT" = 6 ]; then pass "$p: built image has 6 layers"
    else fail "$p: built image has 6 layers" "got '$OUT' ${WHY:-}"; fi
    view_run "$p: image run" 2 localhost/e2e-img:latest || true

    # --read-only, --uidmap.
    run_pm ro "$T" run --rm --read-only "${RUNOPTS[@]}" localhost/e2e-img:latest \
        sh -c 'cat /base/new.txt; if touch /base/x 2>/dev/null; then echo writable; else echo read-only; fi'
    if [ "$RC" = 0 ] && [ "$OUT" = $'created\nlinked\nread-only' ]; then pass "$p: run --read-only"
    else fail "$p: run --read-only" "${WHY:-got '$OUT'}"; fi
    # --uidmap only rootless: as root, containers-storage 1.43 hands the mount program
    # lowers that it has already chowned to the mapping (overlay/ID/mapped/0/l/...)
    # *and* uidmapping=/gidmapping=, so a program honouring them shifts ids twice
    # (fuse-overlayfs shows 1235:65534 for 1234:5678); podman's own fault.
    if [ "$MODE" = rootless ]; then
        run_pm uidmap "$T" run --rm --uidmap 0:1:5000 --gidmap 0:1:5000 "${RUNOPTS[@]}" localhost/e2e-img:latest \
            sh -c 'stat -c %u:%g /base/chown.txt /newdir/f1 /base/keep.txt; echo n > /base/n2; stat -c %u:%g /base/n2; cat /base/new.txt'
        if [ "$RC" = 0 ] && [ "$OUT" = $'1234:65534\n1000:1000\n0:0\n0:0\ncreated\nlinked' ]; then pass "$p: run --uidmap 0:1:5000 --gidmap 0:1:5000"
        else fail "$p: run --uidmap 0:1:5000 --gidmap 0:1:5000" "${WHY:-got '$(echo "$OUT" | tr '\n' ' ')', want '1234:65534 1000:1000 0:0 0:0 created linked'}"; fi
    fi

    # A stopped container: diff and commit.
    if check_cmd "$p: stopped container makes its changes" "$T" run --name e2e-stopped "${RUNOPTS[@]}" localhost/e2e-img:latest sh -c "$CHANGES"; then
        run_pm diff-stopped "$T" diff e2e-stopped
        if [ "$RC" = 0 ]; then check_diff "$p: podman diff (stopped)"; else fail "$p: podman diff (stopped)" "$WHY"; fi
        if check_cmd "$p: podman commit (stopped)" "$T" commit e2e-stopped localhost/e2e-commit-stopped:latest; then
            view_run "$p: committed (stopped) image run" 3 localhost/e2e-commit-stopped:latest || true
        fi
    fi
    pm 60 rm -f e2e-stopped >/dev/null 2>&1 || true

    # A running container: view, mount type, diff and commit while it runs.
    if check_cmd "$p: running container starts" "$T" run -d --name e2e-running "${RUNOPTS[@]}" localhost/e2e-img:latest \
        sh -c "$CHANGES"$'\nexec sleep 600'; then
        ok=0
        for i in $(seq 1 60); do
            if pm 30 exec e2e-running test -f /tmp/ready >/dev/null 2>&1; then ok=1; break; fi
            sleep 1
        done
        if [ "$ok" = 1 ]; then
            pass "$p: running container made its changes"
            run_pm exec-view "$T" exec e2e-running sh -c "$VIEW_SH" sh "${VIEW_PATHS[@]}"
            if [ "$RC" = 0 ]; then check_view "$p: running container exec" 3; else fail "$p: running container exec" "$WHY"; fi
            run_pm merged "$T" inspect --format '{{.GraphDriver.Data.MergedDir}}' e2e-running
            MERGED=$OUT
            if [ -n "$MERGED" ] && store_mounts | grep -q "^$FSTYPE[^ ]* $MERGED\$" &&
                { [ -z "$PROG" ] || store_daemons | grep -q " $MERGED *\$"; }; then
                pass "$p: running container is a $FSTYPE mount${PROG:+ served by a $IMPL daemon}"
            else
                fail "$p: running container is a $FSTYPE mount${PROG:+ served by a $IMPL daemon}" "merged '$MERGED'; mounts: $(store_mounts | tr '\n' ';'); daemons: $(store_daemons | cut -c1-200 | tr '\n' ';')"
            fi
            run_pm diff-running "$T" diff e2e-running
            if [ "$RC" = 0 ]; then check_diff "$p: podman diff (running)"; else fail "$p: podman diff (running)" "$WHY"; fi
            if check_cmd "$p: podman commit (running)" "$T" commit e2e-running localhost/e2e-commit-running:latest; then
                view_run "$p: committed (running) image run" 3 localhost/e2e-commit-running:latest || true
            fi
        else
            run_pm logs 30 logs e2e-running
            fail "$p: running container made its changes" "no /tmp/ready after 60 s; logs: $(echo "$OUT" | tail -n 5 | tr '\n' ' ')"
        fi
        check_cmd "$p: stop and remove the running container" "$T" rm -f -t 2 e2e-running || true
    fi
    pm 60 rm -f -t 0 e2e-running >/dev/null 2>&1 || true

    # No orphans after many `podman run --rm`.
    ok=0
    t0=$SECONDS
    local first_err=
    for i in $(seq 1 "$RUNS"); do
        run_pm "rm-run" "$T" run --rm "${RUNOPTS[@]}" localhost/e2e-img:latest cat /data/fresh.txt
        if [ "$RC" = 0 ] && [ "$OUT" = fresh ]; then ok=$((ok + 1)); else [ -n "$first_err" ] || first_err="run $i: ${WHY:-got '$OUT'}"; fi
    done
    if [ "$ok" = "$RUNS" ]; then pass "$p: $RUNS x podman run --rm ($((SECONDS - t0)) s)"
    else fail "$p: $RUNS x podman run --rm" "$ok of $RUNS ok; first error: $first_err"; fi
    check_no_orphans "$p: no daemon and no mount left after $RUNS x run --rm"

    # Cleanup of the private store, then again no orphans.
    check_cmd "$p: podman rmi -af" "$T" rmi -af || true
    check_cmd "$p: podman system reset -f" "$T" system reset -f || true
    check_no_orphans "$p: no daemon and no mount left after system reset"
    mode_cleanup
}

for m in $MODES; do
    run_mode "$m"
done
DONE=1
