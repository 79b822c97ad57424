#!/usr/bin/env bash
# Runs Berth's test suite: formatting, lints, and every crate's unit and integration tests.
# Needs root (tests create namespaces, cgroups and mounts).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Integration tests start real containers and daemons; each cleans up after itself.
cargo test --workspace --locked -- --test-threads="${BERTH_TEST_THREADS:-4}"
