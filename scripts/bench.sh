#!/usr/bin/env bash
# scripts/bench.py (Python 3, standard library) does it all; see its --help. The header
# of its report shows the command as it was given.
BENCH_ARGV0=$0 exec python3 "$(dirname "$0")/bench.py" "$@"
