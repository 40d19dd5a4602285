#!/usr/bin/env bash
# Runs every test: unit tests and the integration tests, which mount for real
# (root and /dev/fuse needed). Installs what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --all-targets
cargo test -- --test-threads="${TEST_THREADS:-4}"
