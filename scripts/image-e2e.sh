#!/usr/bin/env bash
# End-to-end test of stratafs's image tools (`stratafs image|container|diff|commit|
# system`) against the real clients: podman builds and saves the images, stratafs imports,
# mounts, diffs, commits and exports them, podman and skopeo read the results back. As
# root and rootless.
#
#   scripts/image-e2e.sh [--mode root|rootless|both] [--keep] [--user NAME] [-h|--help]
#
# Run as root on Debian; no registry is reached. Shares its setup with
# scripts/podman-e2e.sh through scripts/podman-common.sh (sourced, not changed). Steps:
#   1. apt-get installs what is missing: podman, buildah, uidmap, runc, fuse3, conmon,
#      skopeo, python3 (reads the JSON of `stratafs image inspect` and `skopeo inspect`),
#      util-linux (setpriv);
#   2. copies $STRATAFS_BIN (else the binary of `cargo build --release` of this checkout)
#      to the work dir (under $TMPDIR, default /var/tmp), where the plain user can run it;
#      builds a busybox base tree from Debian's busybox-static (downloaded, not installed);
#   3. for each mode, with a private podman store (storage.conf/containers.conf in the
#      work dir, podman's native kernel overlay, never the host's store) and a private
#      stratafs store (--store): as root, or (rootless) everything - podman and stratafs -
#      as the user $E2E_USER (default stratafs-imge2e, created if missing, with subuid
#      and subgid ranges) through `runuser -u USER -- env -i ...`:
#        - `podman import` of the base tree, then `podman build` of a Containerfile giving
#          >= 5 layers: a file deleted, a directory replaced by an opaque one (rm -rf D &&
#          mkdir D), a hard link, a fifo, a setuid file, a file owned 1000:1000, a deleted
#          directory, and (root only: rootless cannot mknod) a char device node
#          (`--cap-add MKNOD`); the saved layers must hold each of these (tar listing);
#        - `podman save` as docker-archive and oci-archive, `stratafs image import` of
#          both: the image ID and the DiffIDs of `stratafs image inspect` equal those of
#          `podman image inspect`; `image ls` lists both names, `image history` has
#          podman's number of entries;
#        - `container create` + `container mount`: `container ls` shows it mounted; the
#          merged view (types, modes, owners, link counts, contents, listings; setuid
#          bit, fifo, device; rootless: owners 0:0 and 1000:1000 from the override
#          xattr) is as expected, and is what `podman run` of the image shows;
#        - the same change script (append to a lower file, rm a lower file, rm -rf a
#          lower dir and mkdir it again, a new dir with a file, mv a lower dir, chmod a
#          lower file, rm the fifo) runs in the mounted container and in `podman run`;
#          `stratafs diff` equals `podman diff` (sorted; podman's injected paths aside);
#          in the stratafs container it runs as `chroot MOUNT /bin/sh -c ...`: as root, or
#          (rootless) as the user himself with CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_CHOWN
#          and CAP_SYS_CHROOT given by `setpriv --reuid USER --ambient-caps ...`: the
#          mount shows root's files as 0:0, which the plain user may not write; root
#          is refused by a plain user's FUSE mount (no allow_other); `podman unshare`
#          runs in podman's mount namespace, which does not see a mount made after it
#          (and maps no host uid 0 if it did). What the script creates there is owned
#          by the user (the expected views say so);
#          `stratafs diff` is compared with `podman diff` of podman's default store
#          (kernel overlay, native diff: an opaque directory shows as "D DIR" and its
#          new entries as "A", as docker's overlay2 shows it too; a vfs store or a
#          mount_program gives the naive form, "C DIR" and "D" for each old entry);
#        - `container umount`: no longer mounted, not in `container ls`, same diff;
#        - `commit -m MSG -a AUTHOR -c 'CMD [...]'`, `image history` shows MSG on top;
#          `image export` (docker-archive) -> `podman load` -> `podman run` prints the
#          expected output (sees the changes and the deletions), its view is as
#          expected, `podman history` has MSG on top of the old entries;
#          `image export --format oci` -> `skopeo inspect oci:DIR`: the config digest
#          and DiffIDs of the commit;
#        - round trip: `image export` of both imported images as docker-archive and
#          oci-archive: `skopeo inspect` gives podman's config digest and DiffIDs, and
#          `podman load` into a second, emptied private store (vfs) gives podman's
#          image ID and DiffIDs;
#        - `container rm`, `image rm` of every name, `system gc`: `image ls` and
#          `container ls` are empty and the store holds no layer dir and no blob.
#   4. always (trap EXIT): unmounts the stratafs containers, ends leftover stratafs
#      daemons of the work dir (by pid), removes podman's containers and images
#      (`podman system reset -f` of both private stores), ends the user's rootless pause
#      process, unmounts leftovers under the work dir, removes the work dir (not with
#      --keep). The user stays (and /run/user/UID).
#
# Output: one line per check, `PASS name` or `FAIL name: why`, then as the very last line
#   image-e2e: N passed, M failed
# Exit status: 0 iff M == 0. A setup error counts as a failed check.
#
# Options:
#   --mode M        root, rootless or both (default)
#   --keep          keep the work dir (logs, archives, stores) for inspection
#   --user NAME     the unprivileged user (default stratafs-imge2e, env E2E_USER)
# Environment: STRATAFS_BIN=/path skips the build; E2E_TIMEOUT (seconds, default 120)
# bounds each podman/stratafs command (builds get 3x).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# podman_install, make_work, install_stratafs, podman_user, write_store_configs, pm,
# remove_tree, base_tree_*.
. "$REPO/scripts/podman-common.sh"

MODES=both
KEEP=0
E2E_USER=${E2E_USER:-stratafs-imge2e}
T=${E2E_TIMEOUT:-120}

usage() { usage_of "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case $1 in
        --mode) MODES=${2:?}; shift 2 ;;
        --mode=*) MODES=${1#*=}; shift ;;
        --keep) KEEP=1; shift ;;
        --user) E2E_USER=${2:?}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
check_modes

PASSED=0
FAILED=0
pass() { echo "PASS $1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $1: $2"; FAILED=$((FAILED + 1)); }

WORK=
MODE=
MODE_ACTIVE=0
SX_STORE=
RUNOPTS=(--network none --ulimit nofile=20000:20000 --ulimit nproc=4096:4096)

# ---------------------------------------------------------------------------- helpers

# sx TIMEOUT ARGS...: stratafs ARGS on the mode's store ($SX_STORE); as root, or with
# MODE=rootless as $U_NAME (runuser, a clean environment).
sx() {
    local t=$1
    shift
    in_mode "$t" STRATAFS_STORE="$SX_STORE" -- "$WORK/bin/stratafs" "$@" </dev/null
}

# pm2 TIMEOUT ARGS...: podman on the second private store, driver vfs (round-trip loads,
# and the podman diff of containers-storage's naive diff, which podman uses with a
# mount program like fuse-overlayfs - or stratafs - as well).
pm2() {
    local t=$1
    shift
    pm "$t" --root "$WORK/$MODE/graph2" --runroot "$WORK/$MODE/run2" --storage-driver vfs "$@"
}

# in_ctr MOUNT SCRIPT ARGS...: `sh -c SCRIPT` chrooted into MOUNT; rootless as the user
# with the capabilities that let him past the 0-owned files of his own mount.
in_ctr() {
    local m=$1
    shift
    if [ "$MODE" = rootless ]; then
        local caps=+dac_override,+fowner,+chown,+sys_chroot
        timeout -k 10 "$T" setpriv --reuid="$U_UID" --regid="$U_GID" --clear-groups \
            --inh-caps="$caps" --ambient-caps="$caps" \
            env -i PATH=/bin HOME=/root "$CHROOT" "$m" /bin/sh -c "$@" </dev/null
    else
        timeout -k 10 "$T" env -i PATH=/bin HOME=/root "$CHROOT" "$m" /bin/sh -c "$@" </dev/null
    fi
}

# run_c NAME FN ARGS...: runs FN ARGS (pm, pm2, sx, in_ctr...), stdout in $OUT, stderr
# in $ERR_FILE, status in $RC, a description of a failure in $WHY.
run_c() {
    local name=$1 fn=$2
    shift 2
    ERR_FILE=$WORK/logs/$MODE-$(echo "$name" | tr -c 'A-Za-z0-9.-' '_').err
    RC=0
    OUT=$("$fn" "$@" 2>"$ERR_FILE") || RC=$?
    case $RC in
        0) WHY= ;;
        124|137) WHY="timed out: $fn $(echo "$*" | tr '\n' ' ' | cut -c1-200); stderr: $(tail -c 600 "$ERR_FILE" | tr '\n' ' ')" ;;
        *) WHY="status $RC: $fn $(echo "$*" | tr '\n' ' ' | cut -c1-200); stderr: $(tail -c 900 "$ERR_FILE" | tr '\n' ' ')" ;;
    esac
    return 0
}

# check_c NAME FN ARGS...: PASS when the command exits 0.
check_c() {
    local name=$1
    run_c "$@"
    if [ "$RC" = 0 ]; then pass "$name"; return 0; fi
    fail "$name" "$WHY"
    return 1
}

# same NAME GOT WANT: PASS when equal.
same() {
    if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "got '$(echo "$2" | tr '\n' ' ')', want '$(echo "$3" | tr '\n' ' ')'"; fi
}

# py CODE: python3 CODE on stdin (JSON readers).
py() { python3 -c "$1"; }
# "ID DIFFID..." from `stratafs image inspect` / `podman image inspect` JSON.
IDS_INSPECT='import json,sys
i=json.load(sys.stdin)[0]
print(i["Id"].split(":")[-1], " ".join(i["RootFS"]["Layers"]))'
# "CONFIG-DIGEST" from `skopeo inspect --raw` (a manifest) and "DIFFID..." from
# `skopeo inspect --config`.
CFG_DIGEST='import json,sys; print(json.load(sys.stdin)["config"]["digest"].split(":")[-1])'
CFG_DIFFIDS='import json,sys; print(" ".join(json.load(sys.stdin)["rootfs"]["diff_ids"]))'

# podman_ids IMAGE [pm|pm2]: "ID DIFFID..." as podman sees IMAGE.
podman_ids() {
    "${2:-pm}" "$T" image inspect "$1" | py "$IDS_INSPECT"
}
sx_ids() { sx "$T" image inspect "$1" | py "$IDS_INSPECT"; }
skopeo_ids() {
    local d c
    d=$(timeout "$T" skopeo inspect --raw "$1" | py "$CFG_DIGEST") || return 1
    c=$(timeout "$T" skopeo inspect --config "$1" | py "$CFG_DIFFIDS") || return 1
    echo "$d $c"
}

# ---------------------------------------------------------------------------- cleanup

# Our stratafs daemons: processes running $WORK/bin/stratafs.
sx_daemons() {
    local d exe
    [ -n "$WORK" ] || return 0
    for d in /proc/[0-9]*; do
        exe=$(readlink "$d/exe" 2>/dev/null) || continue
        [ "$exe" = "$WORK/bin/stratafs" ] && echo "${d#/proc/}"
    done
    return 0
}

# FUSE mounts of stratafs under the work dir (host mount namespace).
sx_mounts() {
    [ -n "$WORK" ] || return 0
    awk -v w="$WORK/" '{
        for (i = 7; i <= NF; i++) if ($i == "-") break
        if (index($5, w) == 1 && $(i + 1) == "fuse.stratafs") print $5
    }' /proc/self/mountinfo
}

pause_pids() {
    local f
    for f in "/run/user/${U_UID:-x}/libpod/tmp/pause.pid" "$WORK/$MODE/t/pause.pid"; do
        [ -f "$f" ] && cat "$f" && echo
    done 2>/dev/null | grep -E '^[0-9]+$' | sort -u || true
}

mode_cleanup() {
    local pid mp
    [ "$MODE_ACTIVE" = 1 ] || return 0
    MODE_ACTIVE=0
    for mp in $(sx_mounts | sort -r); do
        fusermount3 -u -z "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
    done
    for pid in $(sx_daemons); do kill "$pid" 2>/dev/null || true; done
    pm 60 rm -af -t 0 >/dev/null 2>&1 || true
    pm 60 rmi -af >/dev/null 2>&1 || true
    pm 120 system reset -f >/dev/null 2>&1 || true
    pm2 60 rmi -af >/dev/null 2>&1 || true
    pm2 120 system reset -f >/dev/null 2>&1 || true
    if [ "$MODE" = rootless ]; then
        for pid in $(pause_pids); do
            [ "$(stat -c %U "/proc/$pid" 2>/dev/null)" = "$E2E_USER" ] && kill "$pid" 2>/dev/null || true
        done
        sleep 1
    fi
    for mp in $(awk -v w="$WORK/" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
        fusermount3 -u -z "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
    done
}

trap 'e2e_exit "image-e2e"' EXIT
trap 'exit 130' INT TERM

setup_fail() { fail "setup" "$1"; DONE=1; exit 1; }

# ---------------------------------------------------------------------------- setup

podman_install
need=()
for p in skopeo:skopeo python3:python3 setpriv:util-linux; do
    command -v "${p%%:*}" >/dev/null || need+=("${p#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    log "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq || setup_fail "apt-get update failed"
    timeout 900 apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
        setup_fail "apt-get install ${need[*]} failed"
fi
CHROOT=$(command -v chroot) || setup_fail "no chroot"
make_work ie2e
install_stratafs

# The base tree: busybox and files the build and the containers change.
base_tree_start files data/sub olddir/sub deldir/sub opq/sub
for f in keep del chmod rm; do echo "$f" >"$R/files/$f.txt"; done
echo orig >"$R/files/append.txt"
echo dk >"$R/data/keep.txt"
echo x >"$R/data/sub/x"
echo f1 >"$R/olddir/f1"
echo f2 >"$R/olddir/sub/f2"
echo a >"$R/deldir/a"
echo b >"$R/deldir/sub/b"
echo o1 >"$R/opq/old1"
echo o2 >"$R/opq/sub/old2"
echo hello >"$R/etc/motd"
base_tree_modes
chown 1000:1000 "$R/olddir" "$R/olddir/f1"
chmod 0750 "$R/olddir"
chmod 0640 "$R/olddir/f1"
base_tree_tar
MD5_BB=$(md5sum <"$R/bin/busybox" | cut -d' ' -f1)

# The image: 6 layers (rootless) or 7 (root: + a device node).
write_containerfile() {
    cat <<'EOF'
FROM localhost/ie2e-base:latest
RUN rm /files/del.txt && echo added > /files/added.txt
RUN rm -rf /opq && mkdir /opq && echo new > /opq/new.txt
RUN echo linked > /files/hl-a && ln /files/hl-a /files/hl-b
RUN mkfifo -m 0640 /files/fifo && echo suid > /files/suid && chmod 4755 /files/suid && echo owned > /files/owned && chown 1000:1000 /files/owned
RUN rm -rf /deldir && echo v2 > /etc/motd
EOF
    [ "$MODE" = root ] && echo 'RUN mknod -m 0660 /files/null c 1 3'
    return 0
}

# The change script, run in the stratafs container and in `podman run`.
CHANGES='set -e
umask 022
echo changed >> /files/append.txt
rm /files/rm.txt
rm -rf /data && mkdir /data && echo again > /data/again.txt
mkdir -p /newdir/sub && echo n > /newdir/sub/n.txt
mv /olddir /renamed
chmod 0600 /files/chmod.txt
rm /files/fifo
echo changes-done'

# The committed image's CMD: what it sees of the changes and the deletions.
COMMIT_CMD='CMD ["/bin/sh","-c","cat /data/again.txt /newdir/sub/n.txt /files/append.txt; for p in /files/rm.txt /olddir /files/fifo /data/keep.txt /files/del.txt /opq/old1 /deldir; do if [ -e $p ]; then echo present $p; else echo gone $p; fi; done; stat -c %a /files/chmod.txt"]'
COMMIT_OUT='again
n
orig
changed
gone /files/rm.txt
gone /olddir
gone /files/fifo
gone /data/keep.txt
gone /files/del.txt
gone /opq/old1
gone /deldir
600'
COMMIT_MSG='image-e2e: the change script'
COMMIT_AUTHOR='image-e2e <image-e2e@example.invalid>'

# Expected views: ASPECT|PATH|IMAGE|after CHANGES ("^" = as the image). $NULL_LS is " null"
# (root) or "", $NULL the device's line, $NEW the owner of what the change script creates
# (0:0, or the user's ids in the stratafs container rootless).
expect_table() {
    cat <<EOF
root listing|/|d [bin data dev etc files olddir opq proc root run sys tmp]|d [bin data dev etc files newdir opq proc renamed root run sys tmp]
files listing|/files|d 755 0:0 [added.txt append.txt chmod.txt fifo hl-a hl-b keep.txt${NULL_LS} owned rm.txt suid]|d 755 0:0 [added.txt append.txt chmod.txt hl-a hl-b keep.txt${NULL_LS} owned suid]
file deleted (layer)|/files/del.txt|-|^
file added (layer)|/files/added.txt|f 644 0:0 n1 added/|^
untouched file|/files/keep.txt|f 644 0:0 n1 keep/|^
append (copy-up)|/files/append.txt|f 644 0:0 n1 orig/|f 644 0:0 n1 orig/changed/
rm lower file|/files/rm.txt|f 644 0:0 n1 rm/|-
chmod lower file|/files/chmod.txt|f 644 0:0 n1 chmod/|f 600 0:0 n1 chmod/
hard link|/files/hl-a|f 644 0:0 n2 linked/|^
hard link|/files/hl-b|f 644 0:0 n2 linked/|^
hard link|=/files/hl-a=/files/hl-b|same|^
fifo|/files/fifo|p 640 0:0|-
setuid file|/files/suid|f 4755 0:0 n1 suid/|^
owner 1000|/files/owned|f 644 1000:1000 n1 owned/|^
device node|/files/null|${NULL}|^
opaque dir (layer)|/opq|d 755 0:0 [new.txt]|^
opaque dir (layer)|/opq/old1|-|^
opaque dir (layer)|/opq/sub|-|^
deleted dir (layer)|/deldir|-|^
rm -rf D && mkdir D|/data|d 755 0:0 [keep.txt sub]|d 755 ${NEW} [again.txt]
rm -rf D && mkdir D|/data/keep.txt|f 644 0:0 n1 dk/|-
rm -rf D && mkdir D|/data/sub/x|f 644 0:0 n1 x/|-
rm -rf D && mkdir D|/data/again.txt|-|f 644 ${NEW} n1 again/
new dir|/newdir|-|d 755 ${NEW} [sub]
new dir|/newdir/sub/n.txt|-|f 644 ${NEW} n1 n/
rename dir|/olddir|d 750 1000:1000 [f1 sub]|-
rename dir|/olddir/f1|f 640 1000:1000 n1 f1/|-
rename dir|/renamed|-|d 750 1000:1000 [f1 sub]
rename dir|/renamed/f1|-|f 640 1000:1000 n1 f1/
rename dir|/renamed/sub/f2|-|f 644 0:0 n1 f2/
changed in a layer|/etc/motd|f 644 0:0 n1 v2/|^
base|/bin/sh|l busybox|^
base|/bin/busybox|f 755 0:0 n1 md5:$MD5_BB|^
base|/root|d 700 0:0 []|^
EOF
}

# check_view PREFIX COLUMN(1 image|2 after): compares $OUT (VIEW_SH output) with the
# table, one check per aspect.
check_view() {
    local prefix=$1 col=$2 aspect path c1 c2 want got bad last= aspects=()
    declare -A got_of=() bad_of=()
    while IFS=$'\t' read -r path got; do got_of[$path]=$got; done <<<"$OUT"
    while IFS='|' read -r aspect path c1 c2; do
        [ "$c2" = "^" ] && c2=$c1
        case $col in 1) want=$c1 ;; 2) want=$c2 ;; esac
        got=${got_of[$path]-<missing>}
        if [ "$aspect" != "$last" ]; then aspects+=("$aspect"); last=$aspect; fi
        [ "$got" = "$want" ] || bad_of[$aspect]+="$path: got '$got', want '$want'; "
    done <<<"$EXPECT"
    bad=
    for aspect in "${aspects[@]}"; do bad+=${bad_of[$aspect]-}; done
    if [ -z "$bad" ]; then
        pass "$prefix (${#aspects[@]} aspects)"
    else
        for aspect in "${aspects[@]}"; do
            [ -z "${bad_of[$aspect]-}" ] || fail "$prefix: $aspect" "${bad_of[$aspect]%; }"
        done
    fi
}

# podman diff without the paths podman injects into a container (podman diff itself
# hides most of them, but not the directory they are in: /etc/mtab, a symlink podman
# adds, makes "C /etc"). filter_podman_diff STRATAFS_DIFF < PODMAN_DIFF: drops the
# injected paths, and "C /etc" or "C /run" when podman lists nothing else below it,
# unless stratafs lists it too.
INJECTED='^(/dev|/dev/.*|/proc|/sys|/run/\.containerenv|/run/secrets|/run/secrets/.*|/etc/hosts|/etc/hostname|/etc/resolv\.conf|/etc/mtab)$'
filter_podman_diff() {
    awk -v inj="$INJECTED" -v sx="$1" '
        BEGIN { n = split(sx, l, "\n"); for (i = 1; i <= n; i++) theirs[l[i]] = 1 }
        { kind[NR] = $1; path[NR] = $2 }
        END {
            for (i = 1; i <= NR; i++) if (path[i] !~ inj) keep[i] = 1
            for (i = 1; i <= NR; i++) {
                if (!keep[i] || kind[i] != "C" || (path[i] != "/etc" && path[i] != "/run")) continue
                if (("C " path[i]) in theirs) continue
                others = 0
                for (j = 1; j <= NR; j++) if (j != i && keep[j] && index(path[j], path[i] "/") == 1) others = 1
                if (!others) keep[i] = 0
            }
            for (i = 1; i <= NR; i++) if (keep[i]) print kind[i], path[i]
        }'
}

# compare_diff NAME STRATAFS PODMAN: sorted A/C/D lists.
compare_diff() {
    if [ "$2" = "$3" ] && [ -n "$2" ]; then pass "$1 ($(echo "$2" | wc -l) lines)"
    else
        fail "$1" "only stratafs: [$(comm -23 <(echo "$2") <(echo "$3") | tr '\n' ',' | sed 's/,$//')] only podman: [$(comm -13 <(echo "$2") <(echo "$3") | tr '\n' ',' | sed 's/,$//')]"
    fi
}


# ---------------------------------------------------------------------------- a mode

run_mode() {
    MODE=$1
    local dir=$WORK/$MODE p=$MODE t0=$SECONDS n_layers M P_IDS P_HIST L out got want
    local sdiff pdiff
    echo "== $MODE: podman $(podman --version | awk '{print $3}'), skopeo $(skopeo --version | awk '{print $3}'), stratafs $SRC_BIN" >&2
    mkdir -p "$dir"
    if [ "$MODE" = rootless ]; then
        ensure_user || return 0
        chown "$U_UID:$U_GID" "$dir"
        NEW_OWN="$U_UID:$U_GID"
    else
        NEW_OWN=0:0
    fi
    write_store_configs "$dir" "$dir/run"
    [ "$MODE" = rootless ] && chown "$U_UID:$U_GID" "$dir"
    SX_STORE=$dir/st
    MODE_ACTIVE=1
    if [ "$MODE" = root ]; then
        NULL_LS=" null"; NULL="c 660 0:0 1,3"; n_layers=7
    else
        NULL_LS=""; NULL="-"; n_layers=6
    fi
    # The image and the podman containers create as root (in the container).
    NEW=0:0
    EXPECT_PODMAN=$(expect_table)
    NEW=$NEW_OWN
    EXPECT_SX=$(expect_table)

    # ---- podman builds the image and saves it.
    if ! check_c "$p: podman import base tarball" pm "$T" import --change 'CMD ["/bin/sh"]' "$WORK/base.tar" localhost/ie2e-base:latest; then
        fail "$p: rest of mode" "skipped: no base image"; return 0
    fi
    mkdir -p "$dir/ctx"
    write_containerfile >"$dir/ctx/Containerfile"
    chmod -R a+rX "$dir/ctx"
    local capadd=()
    [ "$MODE" = root ] && capadd=(--cap-add MKNOD)
    if ! check_c "$p: podman build ($n_layers layers)" pm $((T * 3)) build --pull=never --layers "${RUNOPTS[@]}" \
        "${capadd[@]}" -f "$dir/ctx/Containerfile" -t localhost/ie2e:built "$dir/ctx"; then
        fail "$p: rest of mode" "skipped: no built image"; return 0
    fi
    run_c p-ids podman_ids localhost/ie2e:built
    P_IDS=$OUT
    L=$(echo "$P_IDS" | wc -w)
    same "$p: podman image has $n_layers layers" "$((L - 1))" "$n_layers"
    run_c p-hist pm "$T" history -q --no-trunc localhost/ie2e:built
    P_HIST=$(echo "$OUT" | wc -l)
    mkdir -p "$dir/ar"
    [ "$MODE" = rootless ] && chown "$U_UID:$U_GID" "$dir/ar"
    check_c "$p: podman save docker-archive" pm "$T" save --format docker-archive -o "$dir/ar/podman-docker.tar" localhost/ie2e:built || true
    check_c "$p: podman save oci-archive" pm "$T" save --format oci-archive -o "$dir/ar/podman-oci.tar" localhost/ie2e:built || true

    # The saved layers hold what the image must test.
    if [ -f "$dir/ar/podman-docker.tar" ]; then
        mkdir -p "$dir/ar/x"
        tar -C "$dir/ar/x" -xf "$dir/ar/podman-docker.tar"
        L=$(for f in "$dir"/ar/x/*.tar; do tar -tvf "$f"; done 2>/dev/null)
        local feat=() miss=
        feat=('whiteout|^-.* files/\.wh\.del\.txt$' 'opaque dir|opq/\.wh\.\.wh\.\.opq$' 'deleted dir|^-.* \.wh\.deldir$'
            'hard link|^h.* files/hl-b link to files/hl-a$' 'fifo|^p.* files/fifo$' 'setuid|^-rws.* files/suid$'
            'owner 1000|^-.* 1000/1000 .* files/owned$')
        [ "$MODE" = root ] && feat+=('char device|^c.* 1,3 .* files/null$')
        for f in "${feat[@]}"; do grep -Eq "${f#*|}" <<<"$L" || miss+="${f%%|*}, "; done
        if [ -z "$miss" ]; then pass "$p: podman's layers hold a whiteout, an opaque dir, a deleted dir, a hard link, a fifo, a setuid file, an owner 1000${NULL_LS:+, a device}"
        else fail "$p: podman's layers hold what the test needs" "missing: ${miss%, }"; fi
        rm -rf "$dir/ar/x"
    fi

    # ---- stratafs imports both archives.
    check_c "$p: stratafs image import docker-archive" sx "$T" image import "$dir/ar/podman-docker.tar" --progress plain || true
    run_c sx-ids sx_ids localhost/ie2e:built
    same "$p: image ID and DiffIDs (docker-archive import) = podman image inspect" "$OUT" "$P_IDS"
    check_c "$p: stratafs image import oci-archive" sx "$T" image import "$dir/ar/podman-oci.tar" --name localhost/ie2e:oci --progress plain || true
    run_c sx-ids-oci sx_ids localhost/ie2e:oci
    same "$p: image ID and DiffIDs (oci-archive import) = podman image inspect" "$OUT" "$P_IDS"
    run_c ls sx "$T" image ls
    if [ "$RC" = 0 ] && grep -Eq "^localhost/ie2e +built +${P_IDS:0:12} " <<<"$OUT" && grep -Eq "^localhost/ie2e +oci +${P_IDS:0:12} " <<<"$OUT"; then
        pass "$p: image ls lists both names with podman's ID"
    else fail "$p: image ls lists both names with podman's ID" "${WHY:-got: $(echo "$OUT" | tr '\n' ';')}"; fi
    run_c history sx "$T" image history --no-trunc localhost/ie2e:built
    same "$p: image history has podman's $P_HIST entries" "$(($(echo "$OUT" | wc -l) - 1))" "$P_HIST"

    # ---- podman's view of the image (the reference) and the container's.
    EXPECT=$EXPECT_PODMAN
    run_c view-podman pm "$T" run --rm "${RUNOPTS[@]}" localhost/ie2e:built sh -c "$VIEW_SH" sh $(cut -d'|' -f2 <<<"$EXPECT")
    if [ "$RC" = 0 ]; then check_view "$p: podman run view of the image" 1; else fail "$p: podman run view of the image" "$WHY"; fi
    local podman_view=$OUT

    if ! check_c "$p: container create" sx "$T" container create localhost/ie2e:built --name ie2e-c; then
        fail "$p: container steps" "skipped: no container"
    else
        run_c mount sx "$T" container mount ie2e-c
        M=$(echo "$OUT" | tail -n 1)
        if [ "$RC" = 0 ] && [ -n "$M" ] && sx_mounts | grep -qxF "$M"; then pass "$p: container mount (a fuse.stratafs mount)"
        else fail "$p: container mount (a fuse.stratafs mount)" "${WHY:-printed '$OUT', mounts: $(sx_mounts | tr '\n' ' ')}"; fi
        run_c cls sx "$T" container ls
        if [ "$RC" = 0 ] && grep -E ' ie2e-c *$' <<<"$OUT" | grep -qF "Mounted at $M"; then pass "$p: container ls shows it mounted"
        else fail "$p: container ls shows it mounted" "${WHY:-got: $(echo "$OUT" | tr '\n' ';')}"; fi

        EXPECT=$EXPECT_SX
        run_c view-mount in_ctr "$M" "$VIEW_SH" sh $(cut -d'|' -f2 <<<"$EXPECT")
        if [ "$RC" = 0 ]; then
            check_view "$p: merged view of the mounted container" 1
            same "$p: merged view = podman run view" "$OUT" "$podman_view"
        else fail "$p: merged view of the mounted container" "$WHY"; fi

        # ---- the change script, here and in podman.
        run_c changes-sx in_ctr "$M" "$CHANGES"
        same "$p: change script in the stratafs container" "${WHY:-$OUT}" changes-done
        run_c changes-pm pm "$T" run --name ie2e-p "${RUNOPTS[@]}" localhost/ie2e:built sh -c "$CHANGES"
        same "$p: change script in podman run" "${WHY:-$OUT}" changes-done
        run_c view-after in_ctr "$M" "$VIEW_SH" sh $(cut -d'|' -f2 <<<"$EXPECT")
        if [ "$RC" = 0 ]; then check_view "$p: merged view after the changes" 2; else fail "$p: merged view after the changes" "$WHY"; fi
        run_c sdiff sx "$T" diff ie2e-c
        sdiff=$(LC_ALL=C sort <<<"$OUT")
        if [ "$RC" != 0 ]; then fail "$p: stratafs diff" "$WHY"; fi
        run_c pdiff pm "$T" diff ie2e-p
        pdiff=$(filter_podman_diff "$sdiff" <<<"$OUT" | LC_ALL=C sort)
        [ "$RC" = 0 ] || fail "$p: podman diff" "$WHY"
        compare_diff "$p: stratafs diff = podman diff (kernel overlay, native diff)" "$sdiff" "$pdiff"

        # ---- umount.
        check_c "$p: container umount" sx "$T" container umount ie2e-c || true
        if sx_mounts | grep -qxF "$M"; then fail "$p: unmounted" "$M is still mounted"; else pass "$p: unmounted"; fi
        run_c cls2 sx "$T" container ls
        if [ "$RC" = 0 ] && grep -qE ' ie2e-c *$' <<<"$OUT" && ! grep -E ' ie2e-c *$' <<<"$OUT" | grep -q Mounted; then pass "$p: container ls shows it not mounted"
        else fail "$p: container ls shows it not mounted" "${WHY:-got: $(echo "$OUT" | tr '\n' ';')}"; fi
        run_c sdiff2 sx "$T" diff ie2e-c
        same "$p: stratafs diff unmounted = mounted" "$(LC_ALL=C sort <<<"$OUT")" "$sdiff"

        # ---- commit, export, podman load and run.
        run_c commit sx "$T" commit -m "$COMMIT_MSG" -a "$COMMIT_AUTHOR" -c "$COMMIT_CMD" ie2e-c localhost/ie2e:committed
        local cid
        cid=$(echo "$OUT" | tail -n 1)
        cid=${cid#sha256:}
        if [ "$RC" = 0 ] && [[ $cid =~ ^[0-9a-f]{64}$ ]]; then pass "$p: commit -m -a -c 'CMD ...'"
        else fail "$p: commit -m -a -c 'CMD ...'" "${WHY:-printed '$OUT'}"; fi
        run_c c-ids sx_ids localhost/ie2e:committed
        local c_ids=$OUT
        same "$p: committed image: one more layer, the same ID in inspect" "$(echo "$c_ids" | cut -d' ' -f1-$((n_layers + 1)))" "${cid} ${P_IDS#* }"
        run_c chist sx "$T" image history --no-trunc localhost/ie2e:committed
        if [ "$RC" = 0 ] && [ "$(echo "$OUT" | wc -l)" = $((P_HIST + 2)) ] && sed -n 2p <<<"$OUT" | grep -qF "$COMMIT_MSG"; then
            pass "$p: image history shows the commit on top"
        else fail "$p: image history shows the commit on top" "${WHY:-got: $(echo "$OUT" | head -n 3 | tr '\n' ';')}"; fi
        check_c "$p: image export docker-archive (commit)" sx "$T" image export localhost/ie2e:committed -o "$dir/ar/commit-docker.tar" --progress plain || true
        if check_c "$p: podman load (commit)" pm "$T" load -i "$dir/ar/commit-docker.tar"; then
            run_c pc-ids podman_ids localhost/ie2e:committed
            same "$p: podman load: the commit's image ID and DiffIDs" "$OUT" "$c_ids"
            run_c crun pm "$T" run --rm "${RUNOPTS[@]}" localhost/ie2e:committed
            same "$p: podman run of the commit: its CMD sees the changes and deletions" "${WHY:-$OUT}" "$COMMIT_OUT"
            EXPECT=$EXPECT_SX
            run_c view-commit pm "$T" run --rm "${RUNOPTS[@]}" localhost/ie2e:committed sh -c "$VIEW_SH" sh $(cut -d'|' -f2 <<<"$EXPECT")
            if [ "$RC" = 0 ]; then check_view "$p: podman run view of the commit" 2; else fail "$p: podman run view of the commit" "$WHY"; fi
            run_c phist pm "$T" history --format '{{.Comment}}' localhost/ie2e:committed
            if [ "$RC" = 0 ] && [ "$(echo "$OUT" | head -n 1)" = "$COMMIT_MSG" ] && [ "$(echo "$OUT" | wc -l)" = $((P_HIST + 1)) ]; then
                pass "$p: podman history shows the commit on top"
            else fail "$p: podman history shows the commit on top" "${WHY:-got: $(echo "$OUT" | tr '\n' ';')}"; fi
            run_c pauthor pm "$T" image inspect --format '{{.Author}}' localhost/ie2e:committed
            same "$p: podman sees the commit's author" "$OUT" "$COMMIT_AUTHOR"
        fi
        if check_c "$p: image export --format oci (commit)" sx "$T" image export localhost/ie2e:committed -o "$dir/ar/commit-oci" --format oci --progress plain; then
            run_c skopeo-oci skopeo_ids "oci:$dir/ar/commit-oci"
            same "$p: skopeo inspect oci:DIR: the commit's config digest and DiffIDs" "${WHY:-$OUT}" "$c_ids"
            run_c skopeo-oci2 timeout "$T" skopeo inspect --format '{{.Architecture}} {{.Os}} {{len .Layers}}' "oci:$dir/ar/commit-oci"
            same "$p: skopeo inspect oci:DIR" "${WHY:-$OUT}" "amd64 linux $((n_layers + 1))"
        fi
    fi

    # ---- round trip of the unchanged imports.
    local src fmt f
    for src in built oci; do
        for fmt in docker-archive oci-archive; do
            f=$dir/ar/rt-$src-$fmt.tar
            check_c "$p: image export $fmt (import of $src)" sx "$T" image export "localhost/ie2e:$src" -o "$f" --format "$fmt" --progress plain || continue
            run_c skopeo-rt skopeo_ids "$fmt:$f"
            same "$p: round trip $src -> $fmt: skopeo sees podman's config digest and DiffIDs" "${WHY:-$OUT}" "$P_IDS"
            pm2 60 rmi -af >/dev/null 2>&1 || true
            if check_c "$p: round trip $src -> $fmt: podman load into an empty store" pm2 "$T" load -i "$f"; then
                run_c rt-list pm2 "$T" images -q --no-trunc
                run_c rt-ids podman_ids "$(echo "$OUT" | head -n 1)" pm2
                same "$p: round trip $src -> $fmt: podman's image ID and DiffIDs" "${WHY:-$OUT}" "$P_IDS"
            fi
        done
    done

    # ---- removal and gc.
    pm "$T" rm -f ie2e-p >/dev/null 2>&1 || true
    check_c "$p: container rm" sx "$T" container rm ie2e-c || true
    for src in built oci committed; do
        check_c "$p: image rm localhost/ie2e:$src" sx "$T" image rm "localhost/ie2e:$src" || true
    done
    check_c "$p: system gc" sx "$T" system gc || true
    run_c ils sx "$T" image ls
    local ils=$OUT
    run_c cls3 sx "$T" container ls
    same "$p: image ls and container ls empty" "$(tail -n +2 <<<"$ils")|$(tail -n +2 <<<"$OUT")" "|"
    out=$( (cd "$SX_STORE" && find overlay2 blobs -mindepth 1 ! -path overlay2/l ! -path blobs/sha256) 2>&1 | head -n 10 | tr '\n' ' ')
    same "$p: store clean after gc (no layer dir, no blob)" "$out" ""
    if [ -z "$(sx_daemons)" ] && [ -z "$(sx_mounts)" ]; then pass "$p: no stratafs daemon or mount left"
    else fail "$p: no stratafs daemon or mount left" "daemons: $(sx_daemons | tr '\n' ' ') mounts: $(sx_mounts | tr '\n' ' ')"; fi

    mode_cleanup
    echo "== $MODE: $((SECONDS - t0)) s" >&2
}

for m in $MODES; do
    run_mode "$m"
done
DONE=1
