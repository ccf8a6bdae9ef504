#!/usr/bin/env bash
# THE test command: host setup, formatting, lints, build, then the whole test suite.
# Run as root (the integration tests use namespaces, TAP devices and hugepages).
set -euo pipefail
cd "$(dirname "$0")/.."

# rustup installs into ~/.cargo/bin, which `sudo`'s PATH often lacks.
command -v cargo >/dev/null 2>&1 || export PATH="${HOME:-/root}/.cargo/bin:/root/.cargo/bin:$PATH"

run() {
    printf '\n==> %s\n' "$*"
    "$@"
}

run scripts/setup.sh
run cargo fmt --all -- --check
run cargo clippy --workspace --all-targets -- -D warnings
run cargo build --workspace --bins
# --no-fail-fast: every test binary runs and prints its "test result:" line.
run cargo test --workspace --no-fail-fast -- --test-threads=4
printf '\n==> all checks passed\n'
