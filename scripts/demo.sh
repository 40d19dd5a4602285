#!/usr/bin/env bash
# Builds three small demo layers, mounts them with stratafs, shows the merged view and
# where each entry comes from, then unmounts. Needs root (or a working /dev/fuse).
#
# scripts/demo.sh --class [--yes] [--lang en|vi]: the lesson of docs/teaching.md instead.
# An image's layers, two containers sharing them, copy-up, whiteout, opaque directory,
# redirect, the container's diff and commit, step by step, waiting for Enter between
# steps (--yes: not). Each claim it makes is checked ("ok: ..."); the first that does
# not hold ends it with status 1. Needs root (status 2 without). Texts:
# scripts/lesson/<lang>.sh; the image: scripts/lesson/mkimage.py.
#
# The lesson's commands are single-quoted and eval'd, its texts are printf formats, its
# checks are functions called through check():
# shellcheck disable=SC2016,SC2059,SC2317
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/lib.sh"

mode=demo yes=0 lang=en
while [ $# -gt 0 ]; do
    case $1 in
        --class) mode=class ;;
        --yes | -y) yes=1 ;;
        --lang) [ $# -ge 2 ] || set -- "$1" ''; lang=$2; shift ;;
        --lang=*) lang=${1#--lang=} ;;
        -h | --help) mode=help ;;
        *) mode="bad:$1"; break ;;
    esac
    shift
done
lesson=$here/scripts/lesson
declare -A T
# shellcheck source=scripts/lesson/en.sh
. "$lesson/en.sh"
if [ "$lang" != en ]; then
    [[ $lang =~ ^[a-z]+$ && -f $lesson/$lang.sh ]] || { printf "${T[bad_lang]}\n" "$lang" "$lang" >&2; exit 2; }
    # shellcheck source=scripts/lesson/vi.sh
    . "$lesson/$lang.sh"
fi
case $mode in
    help) printf '%s\n' "${T[usage]}"; exit 0 ;;
    bad:*) printf "${T[bad_arg]}\n" "${mode#bad:}" >&2; printf '%s\n' "${T[usage]}" >&2; exit 2 ;;
    demo) if [ $yes = 1 ] || [ "$lang" != en ]; then printf '%s\n' "${T[class_only]}" >&2; exit 2; fi ;;
    class)
        [ "$(id -u)" = 0 ] || { printf '%s\n' "${T[need_root]}" >&2; exit 2; }
        command -v python3 >/dev/null || { printf '%s\n' "${T[need_python]}" >&2; exit 2; } ;;
esac

bin=${STRATAFS:-$(release_bin "$here")}
[ -x "$bin" ] || bin=${bin%/release/stratafs}/debug/stratafs
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }

# ------------------------------------------------------------------------------------
# --class: the lesson. Runs in a temp dir with its own store; every mount, the trace and
# the dir go away on any exit (the EXIT trap; Ctrl-C and TERM exit through it).

t() { local f=${T[$1]}; shift; printf "$f" "$@"; }
c_head='' c_cmd='' c_ok='' c_bad='' c_note='' c_off=''
nchecks=0 trace_pid='' tmark=0 cls='' getfattr_standin=''

cls_cleanup() {
    local m
    cd /
    if [ -n "$trace_pid" ]; then kill "$trace_pid" 2>/dev/null || true; wait "$trace_pid" 2>/dev/null || true; fi
    [ -n "$cls" ] || return 0
    # Deepest first; a mount whose daemon died still unmounts (lazily).
    awk -v d="$cls/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$cls"
}
# Show a note (the step's explanation), a command and run it, a check.
note() { printf '%s' "$c_note"; t "$@" | sed 's/^/  /'; printf '%s\n' "$c_off"; }
show() { printf '%s$ %s%s\n' "$c_cmd" "$1" "$c_off"; }
run() { show "$1"; eval "$1" 2>&1 || fail "$(t cmd_failed "$1")"; }
fail() { printf '%sFAIL:%s %s\n' "$c_bad" "$c_off" "$1" >&2; exit 1; }
check() {
    local what=$1; shift
    if "$@"; then nchecks=$((nchecks + 1)); printf '%sok:%s %s\n' "$c_ok" "$c_off" "$what"; else fail "$what"; fi
}
step() {
    if [ "$1" != 1 ]; then
        if [ "$yes" = 0 ]; then printf '\n%s' "$(t enter)"; read -r _ || echo; fi
    fi
    printf '\n%s━━━ %s ━━━%s\n' "$c_head" "$(t step "$1" "$(t "s$1_title")")" "$c_off"
    note "s$1_text"
}
# The trace: wait for a line (at most 10 s), print the lines since the last call.
wait_line() {
    local i
    for ((i = 0; i < 200; i++)); do
        grep -Eq -- "$2" "$1" 2>/dev/null && return 0
        kill -0 "$trace_pid" 2>/dev/null || break
        sleep 0.05
    done
    grep -Eq -- "$2" "$1" 2>/dev/null
}
trace_new() {
    local n
    n=$(wc -l <trace.log)
    if [ "$n" -gt "$tmark" ]; then sed -n "$((tmark + 1)),${n}p" trace.log | sed 's/^/trace> /'; else t trace_none; echo; fi
    tmark=$n
}
await() { wait_line trace.log "$1" || fail "$(t no_event "$2")"; trace_new; }
stratafs() { "$bin" "$@"; }
# Where the attr package is missing: getfattr -n NAME PATH, the only form the lesson uses.
getfattr_py() {
    [ "$1" = -n ] || return 2
    python3 -c 'import os, sys
n, p = sys.argv[1:]
try:
    v = os.getxattr(p, n, follow_symlinks=False)
except OSError as e:
    sys.exit(p + ": " + n + ": " + e.strerror)
print("# file: " + p + "\n" + n + "=\"" + v.decode(errors="replace") + "\"\n")' "$2" "$3"
}
xattr() { python3 -c 'import os, sys; print(os.getxattr(sys.argv[2], sys.argv[1], follow_symlinks=False).decode())' "$1" "$2" 2>/dev/null; }
# same EXPECTED GOT: equal, or show the difference.
same() {
    [ "$1" = "$2" ] && return 0
    diff <(printf '%s\n' "$1") <(printf '%s\n' "$2") | sed 's/^/    /' >&2
    return 1
}
is_whiteout() { [ "$(stat -c '%F %t:%T' "$1" 2>/dev/null)" = 'character special file 0:0' ]; }
entries() { find "$1" -mindepth 1 -printf '%y %P\n' | LC_ALL=C sort -k2; }
# The layer directories of an image, bottom first, as store/overlay2/<id>.
layer_dirs() {
    stratafs image inspect "$1" | python3 -c 'import json, sys
for l in json.load(sys.stdin)[0]["Layers"]:
    print("store/overlay2/" + l["Dir"].rstrip("/").split("/")[-2])'
}
# copy-ups: count, bytes, and how many copied data (not metadata only)
copyups() {
    stratafs stats c1 --json | python3 -c 'import json, sys
c = json.load(sys.stdin)["copy_ups"]
print(c["count"], c["bytes"], c["count"] - c["by_method"].get("metadata only", {}).get("count", 0))'
}

class_lesson() {
    trap cls_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    cls=$(mktemp -d /tmp/stratafs-class.XXXXXX)
    cd "$cls"
    if [ -t 1 ]; then
        c_head=$'\033[1;36m' c_cmd=$'\033[1m' c_ok=$'\033[32m' c_bad=$'\033[1;31m' c_note=$'\033[33m' c_off=$'\033[0m'
    fi
    if ! command -v getfattr >/dev/null; then
        getfattr_standin=1
        getfattr() { getfattr_py "$@"; }
    fi
    export STRATAFS_STORE=$cls/store
    printf '%s%s%s\n' "$c_head" "$(t title)" "$c_off"
    note intro
    note workdir "$cls" "$bin"
    [ -z "$getfattr_standin" ] || note getfattr_standin

    # 1 -------------------------------------------------------------------------------
    step 1
    show 'python3 scripts/lesson/mkimage.py app.tar'
    python3 "$lesson/mkimage.py" app.tar || fail "$(t cmd_failed mkimage.py)"
    run 'tar tf app.tar'
    run 'stratafs image import app.tar'
    run 'stratafs image history lesson/app:1'
    note s1_history
    local hist
    hist=$(stratafs image history lesson/app:1)
    check "$(t c_history)" test "$(printf '%s\n' "$hist" | tail -n +2 | grep -c 'ADD file:lesson-base\|COPY dir:app\|Welcome to the app image')" = 3 -a \
        "$(printf '%s\n' "$hist" | wc -l)" = 4
    run 'ls store store/overlay2'
    run "find store/overlay2/l -type l -printf '%f -> %l\n' | sort"
    local dirs L1 L2 L3
    dirs=$(layer_dirs lesson/app:1)
    { read -r L1; read -r L2; read -r L3; } <<<"$dirs"
    note s1_vars
    printf '%s$ L1=%s%s   # ADD file:lesson-base in /\n' "$c_cmd" "$L1" "$c_off"
    printf '%s$ L2=%s%s   # COPY dir:app in /app\n' "$c_cmd" "$L2" "$c_off"
    printf '%s$ L3=%s%s   # RUN echo ... > /etc/motd && rm -rf /usr/share/doc\n' "$c_cmd" "$L3" "$c_off"
    run 'ls $L1 $L3'
    run 'for L in $L1 $L2 $L3; do echo "link: $(cat $L/link)   lower: $(cat $L/lower 2>/dev/null)"; done'
    run "find \$L3/diff -mindepth 1 -printf '%y %P\\n' | sort -k2"
    note s1_store
    layers_ok() {
        local L
        for L in "$L1" "$L2" "$L3"; do
            [ -d "$L/diff" ] && [ -s "$L/link" ] || return 1
            [ "$(readlink -f "store/overlay2/l/$(cat "$L/link")")" = "$(readlink -f "$L/diff")" ] || return 1
        done
    }
    check "$(t c_layers)" layers_ok
    lower_ok() {
        [ ! -e "$L1/lower" ] &&
            [ "$(cat "$L2/lower")" = "l/$(cat "$L1/link")" ] &&
            [ "$(cat "$L3/lower")" = "l/$(cat "$L2/link"):l/$(cat "$L1/link")" ]
    }
    check "$(t c_lower)" lower_ok

    # 2 -------------------------------------------------------------------------------
    step 2
    # shellcheck disable=SC2034  # set and used by the commands run() evals
    local id1 id2 C1 C2 M1 M2 O1
    run 'id1=$(stratafs container create lesson/app:1 --name c1) && echo $id1'
    run 'id2=$(stratafs container create lesson/app:1 --name c2) && echo $id2'
    run 'C1=store/overlay2/$id1 C2=store/overlay2/$id2'
    run 'M1=$(stratafs container mount c1) && echo $M1'
    run 'M2=$(stratafs container mount c2) && echo $M2'
    run 'stratafs container ls'
    run 'ls $M1; echo ---; ls $M2'
    run 'cat $M1/etc/motd $M2/etc/motd'
    run 'ls $C1 $C1/diff $C2/diff'
    run 'cat $C1/lower; echo; cat $C2/lower; echo'
    note s2_mount
    run "O1=\"lowerdir=\$(sed 's|l/|store/overlay2/l/|g' \$C1/lower),upperdir=\$C1/diff\" && echo \$O1"
    check "$(t c_same_view)" test "$(cd "$M1" && find . | sort)" = "$(cd "$M2" && find . | sort)"
    check "$(t c_same_lower)" test "$(cat "$C1/lower")" = "$(cat "$C2/lower")" -a \
        "$(cat "$C1/lower")" = "l/$(cat "$L3/link"):l/$(cat "$L2/link"):l/$(cat "$L1/link")"
    check "$(t c_empty)" test -z "$(ls -A "$C1/diff")$(ls -A "$C2/diff")"

    # 3 -------------------------------------------------------------------------------
    step 3
    show 'stratafs trace c1 > trace.log &'
    "$bin" trace c1 >trace.log 2>trace.err &
    trace_pid=$!
    wait_line trace.err '^tracing ' || { cat trace.err >&2; fail "$(t no_tracing)"; }
    cat trace.err
    run 'echo "hello from c1" >> $M1/etc/motd'
    await '^COPY-UP +etc/motd ' 'COPY-UP etc/motd'
    note s3_first
    check "$(t c_copyup_ev)" grep -Eq '^COPY-UP +etc/motd ' trace.log
    run "stratafs stats c1 | sed -n '/^copy-ups/,/^\$/p'"
    local cu1 cu2 image_motd_size n bytes data
    cu1=$(copyups)
    image_motd_size=$(stat -c %s "$L3/diff/etc/motd")
    read -r n bytes data <<<"$cu1"
    check "$(t c_stats_one "$image_motd_size" $((n - data)))" test "$data" = 1 -a "$bytes" = "$image_motd_size"
    local mark2=$tmark
    run 'echo "a second line" >> $M1/etc/motd'
    sleep 0.3
    trace_new
    run "stratafs stats c1 | sed -n '/^copy-ups/,/^\$/p'"
    cu2=$(copyups)
    read -r n bytes data <<<"$cu2"
    check "$(t c_stats_same "$n" "$bytes")" test "$cu2" = "$cu1"
    run 'cat $M1/etc/motd; echo ---; cat $M2/etc/motd; echo ---; cat $L3/diff/etc/motd'
    run 'ls -l $C1/diff/etc'
    note s3_second
    check "$(t c_old_motd)" test "$(cat "$M2/etc/motd")" = 'Welcome to the app image' -a \
        "$(cat "$L3/diff/etc/motd")" = 'Welcome to the app image' -a \
        "$(cat "$M1/etc/motd")" = $'Welcome to the app image\nhello from c1\na second line'

    # 4 -------------------------------------------------------------------------------
    step 4
    run 'rm $M1/app/plugins/b.so'
    await '^WHITEOUT +app/plugins/b\.so( |$)' 'WHITEOUT app/plugins/b.so'
    check "$(t c_whiteout_ev)" grep -Eq '^WHITEOUT +app/plugins/b\.so( |$)' trace.log
    # The trace is in order: what came between the second write and this whiteout is the
    # rm's (its parent dirs copied up, the whiteout), nothing of the second write.
    second_write_quiet() {
        [ "$(grep -Ec '^COPY-UP +etc/motd ' trace.log)" = 1 ] || return 1
        ! sed -n "$((mark2 + 1)),\$p" trace.log | sed '/^WHITEOUT *app\/plugins\/b\.so/q' | grep -v ' by rm\[' | grep -q .
    }
    check "$(t c_one_copyup)" second_write_quiet
    run 'ls $M1/app/plugins; echo ---; ls $M2/app/plugins; echo ---; ls $L2/diff/app/plugins'
    run 'ls -l $C1/diff/app/plugins'
    run "stratafs explain -o \"\$O1\" app/plugins/b.so | sed -n '/^app\\/plugins\\/b.so /,\$p'"
    check "$(t c_whiteout_dev)" is_whiteout "$C1/diff/app/plugins/b.so"
    check "$(t c_hidden)" test ! -e "$M1/app/plugins/b.so" -a -f "$M2/app/plugins/b.so" -a -f "$L2/diff/app/plugins/b.so"

    # 5 -------------------------------------------------------------------------------
    step 5
    run 'ls $M1/app/cache'
    run 'rm -rf $M1/app/cache && mkdir $M1/app/cache && echo fresh > $M1/app/cache/new'
    await '^CREATE +app/cache/new ' 'CREATE app/cache/new'
    check "$(t c_opaque_ev)" grep -Eq '^OPAQUE +app/cache( |$)' trace.log
    run 'ls $M1/app/cache; echo ---; ls $C1/diff/app/cache'
    run 'getfattr -n trusted.overlay.opaque $C1/diff/app/cache'
    check "$(t c_opaque_x)" test "$(xattr trusted.overlay.opaque "$C1/diff/app/cache")" = y
    check "$(t c_opaque_view)" test "$(ls -A "$M1/app/cache")" = new
    run "stratafs explain -o \"\$O1\" app/cache | sed -n '/^app\\/cache /,\$p'"
    check "$(t c_opaque_explain)" eval 'stratafs explain -o "$O1" app/cache | grep -q "opaque directory (trusted.overlay.opaque=y)"'

    # 6 -------------------------------------------------------------------------------
    step 6
    run 'mv $M1/app/data $M1/app/store'
    await '^REDIRECT +app/store( |$)' 'REDIRECT app/store'
    check "$(t c_redirect_ev)" grep -Eq '^REDIRECT +app/store( |$)' trace.log
    run 'ls $M1/app; echo ---; ls $M1/app/store'
    run 'ls -l $C1/diff/app; echo ---; ls -A $C1/diff/app/store'
    run 'getfattr -n trusted.overlay.redirect $C1/diff/app/store'
    local redirect
    redirect=$(xattr trusted.overlay.redirect "$C1/diff/app/store" || true)
    check "$(t c_redirect_x "$redirect")" test "$redirect" = /app/data -o "$redirect" = data
    check "$(t c_redirect_view)" test "$(cat "$M1/app/store/users.db")" = $'alice\nbob' -a ! -e "$C1/diff/app/store/users.db"
    check "$(t c_redirect_wh)" is_whiteout "$C1/diff/app/data"
    run "stratafs explain -o \"\$O1\" app/store | sed -n '/^app\\/store /,\$p'"

    # 7 -------------------------------------------------------------------------------
    step 7
    run "find \$C1/diff -mindepth 1 -printf '%y %P\\n' | sort -k2"
    check "$(t c_upper)" same "d app
d app/cache
f app/cache/new
c app/data
d app/plugins
c app/plugins/b.so
d app/store
d etc
f etc/motd" "$(entries "$C1/diff")"
    run 'stratafs tree -o "$O1" --hidden'
    run 'stratafs diff c1'
    run 'stratafs diff c2'
    note s7_diff
    check "$(t c_diff)" same "C /app
D /app/cache
A /app/cache/new
D /app/data
C /app/plugins
D /app/plugins/b.so
A /app/store
A /app/store/users.db
C /etc
C /etc/motd" "$(stratafs diff c1)"
    check "$(t c_diff_c2)" test -z "$(stratafs diff c2)"

    # 8 -------------------------------------------------------------------------------
    step 8
    run 'ls store/overlay2'
    run 'stratafs commit -m "lesson: motd, plugins, cache, store" c1 lesson/app:2'
    run 'stratafs image history lesson/app:2'
    run 'stratafs image ls'
    hist_ok() {
        local h
        h=$(stratafs image history lesson/app:2 | tail -n +2)
        [ "$(printf '%s\n' "$h" | wc -l)" = 4 ] || return 1
        printf '%s\n' "$h" | head -1 | grep -q 'lesson: motd, plugins, cache, store$' || return 1
        [ "$(printf '%s\n' "$h" | head -1 | cut -c1-12)" = "$(stratafs image inspect lesson/app:2 | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["Id"][7:19])')" ] || return 1
        [ "$(printf '%s\n' "$h" | tail -n 3 | cut -c16-)" = "$(stratafs image history lesson/app:1 | tail -n 3 | cut -c16-)" ]
    }
    check "$(t c_hist_top)" hist_ok
    local L4
    L4=$(layer_dirs lesson/app:2 | tail -1)
    note s8_vars
    printf '%s$ L4=%s%s\n' "$c_cmd" "$L4" "$c_off"
    run 'ls store/overlay2; echo ---; ls $L4'
    run 'echo "lower: $(cat $L4/lower)"; echo "c1:    $(cat $C1/lower)"'
    run "find \$L4/diff -mindepth 1 -printf '%y %P\\n' | sort -k2"
    new_layer_ok() {
        [ -d "$L4/diff" ] && [ -s "$L4/link" ] && [ "$(cat "$L4/lower")" = "$(cat "$C1/lower")" ] &&
            [ "$(readlink -f "store/overlay2/l/$(cat "$L4/link")")" = "$(readlink -f "$L4/diff")" ] &&
            ! printf '%s\n' "$dirs" | grep -qx "$L4"
    }
    check "$(t c_new_layer)" new_layer_ok
    run 'stratafs container create lesson/app:2 --name c3 && M3=$(stratafs container mount c3)'
    run 'cat $M3/etc/motd; echo ---; (cd $M3 && find app | sort)'
    check "$(t c_c3)" test "$(cat "$M3/etc/motd")" = "$(cat "$M1/etc/motd")" -a ! -e "$M3/app/plugins/b.so" -a \
        ! -e "$M3/app/cache/old-1" -a ! -e "$M3/app/data" -a "$(cat "$M3/app/store/users.db")" = $'alice\nbob'

    echo
    t all_done "$nchecks" "$cls"
    echo
    if [ "$yes" = 0 ]; then printf '\n%s' "$(t enter_end)"; read -r _ || echo; fi
}

if [ "$mode" = class ]; then
    class_lesson
    exit 0
fi

# ------------------------------------------------------------------------------------
# The demo.

demo=$(mktemp -d /tmp/stratafs-demo.XXXXXX)
mnt=$demo/merged
cleanup() {
    if mountpoint -q "$mnt" 2>/dev/null; then umount -l "$mnt" || true; fi
    rm -rf "$demo"
}
trap cleanup EXIT
mkdir -p "$demo"/{base,app-layer,upper,work,merged}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# Layer 1 (bottom): a tiny "base image".
b=$demo/base
mkdir -p "$b"/etc "$b"/usr/share/doc/tool "$b"/app/plugins "$b"/var/log
echo "demo-host" > "$b"/etc/hostname
echo "Welcome to the base image" > "$b"/etc/motd
echo "tool manual" > "$b"/usr/share/doc/tool/README
echo "old setting=1" > "$b"/app/config
echo "plugin a" > "$b"/app/plugins/a.so
echo "plugin b" > "$b"/app/plugins/b.so
echo "boot ok" > "$b"/var/log/boot.log
ln -s ../etc/motd "$b"/var/motd-link

# Layer 2: an image layer that changes and deletes things (OCI/AUFS whiteouts), and
# replaces a directory by an opaque one.
a=$demo/app-layer
mkdir -p "$a"/etc "$a"/usr/share "$a"/app/plugins "$a"/var/log
echo "Welcome to the app image" > "$a"/etc/motd          # changed file
touch "$a"/usr/share/.wh.doc                              # deleted directory
touch "$a"/var/log/.wh.boot.log                           # deleted file
touch "$a"/app/plugins/.wh..wh..opq                       # opaque: old plugins gone
echo "plugin c" > "$a"/app/plugins/c.so
echo "new setting=2" > "$a"/app/config

# The upper layer: a kernel-style whiteout (char device 0/0) left by an earlier run.
mkdir -p "$demo"/upper/etc
mknod "$demo"/upper/etc/hostname c 0 0
echo "written by the container" > "$demo"/upper/notes.txt

say "Layers (topmost first)"
for l in upper app-layer base; do
    echo "-- $l:"; (cd "$demo/$l" && find . -mindepth 1 -printf '   %y %p\n' | sort -k2)
done

opts="lowerdir=$demo/app-layer:$demo/base,upperdir=$demo/upper,workdir=$demo/work"
say "Mount: stratafs -o $opts $mnt"
"$bin" -o "$opts" "$mnt"

say "The merged view"
(cd "$mnt" && find . -mindepth 1 -printf '   %y %p\n' | sort -k2)

say "Where each entry comes from (stratafs which)"
(cd "$mnt" && find . -mindepth 1 | sort | sed 's|^\./||') | while read -r p; do
    "$bin" which -o "$opts" "$p"
done | sed 's/^/   /'

say "Hidden by whiteouts and opaque directories"
for p in etc/hostname usr/share/doc var/log/boot.log app/plugins/a.so; do
    if [ -e "$mnt/$p" ]; then echo "   $p: visible (unexpected)"; else echo "   $p: hidden"; fi
done

say "Contents"
for p in etc/motd app/config var/motd-link notes.txt; do printf '   %-16s %s\n' "$p" "$(cat "$mnt/$p")"; done

say "Unmount"
umount "$mnt" && echo "   unmounted; the daemon exits by itself"
