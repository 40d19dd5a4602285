# Sourced by the scripts: helpers they share.

# release_bin REPO: where `cargo build --release` in REPO puts stratafs. The host is
# named as the target in .cargo/config.toml (for the static link), so binaries are
# under target/<host tuple>/release/; CARGO_TARGET_DIR is honoured.
release_bin() {
    local repo=$1 host
    host=$(rustc -vV | sed -n 's/^host: //p')
    printf '%s/%s/release/stratafs\n' "${CARGO_TARGET_DIR:-$repo/target}" "$host"
}
