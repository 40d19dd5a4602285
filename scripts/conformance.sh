#!/usr/bin/env bash
# Runs the external conformance suites side by side on stratafs, kernel overlayfs and
# fuse-overlayfs (Debian package), and prints one `SUITE on IMPL: N passed, M failed`
# line each:
#   pjdfstest   scripts/pjdfstest.sh (the POSIX suite, in a test dir that starts in a
#               lower layer; the 0/0 char-device cases fail on every overlay, see
#               docs/conformance.md)
#   fsx         scripts/fsx.sh (fsx on files that start in a lower layer)
#   unionmount  scripts/unionmount.sh CHECKOUT, only when a checkout of
#               amir73il/unionmount-testsuite is given (it is in no registry)
#
#   scripts/conformance.sh [--impls stratafs,kernel,fuse-overlayfs] [UNIONMOUNT_CHECKOUT]
#
# Run as root. Each suite script installs what it needs. The full logs of every run
# go to a temp dir, named at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
IMPLS=stratafs,kernel,fuse-overlayfs
UM=
while [ $# -gt 0 ]; do
    case "$1" in
        --impls) IMPLS=$2; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) UM=$1 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "conformance.sh: run as root" >&2; exit 2; }
LOGS=$(mktemp -d /tmp/conformance.XXXXXX)
if [ -z "${STRATAFS_BIN:-}" ]; then
    cargo build --release >&2
    export STRATAFS_BIN=$(. scripts/lib.sh; release_bin "$PWD")
fi
summary=()
run() { # SUITE IMPL CMD...
    local suite=$1 impl=$2 log="$LOGS/$1-$2.log"
    shift 2
    echo "== $suite on $impl" >&2
    "$@" > "$log" 2>&1 || true
    local line
    line=$(grep -E "^$suite on $impl: " "$log" | tail -n 1 || true)
    [ -n "$line" ] || line="$suite on $impl: did not finish (see $log)"
    echo "$line" >&2
    summary+=("$line")
}
IFS=, read -r -a impls <<<"$IMPLS"
for impl in "${impls[@]}"; do
    run pjdfstest "$impl" scripts/pjdfstest.sh --impl "$impl"
    run fsx "$impl" scripts/fsx.sh --impl "$impl"
    if [ -n "$UM" ]; then
        run unionmount "$impl" scripts/unionmount.sh "$UM" --impl "$impl"
    fi
done
echo
echo "logs: $LOGS"
printf '%s\n' "${summary[@]}"
