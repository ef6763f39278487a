#!/usr/bin/env bash
# The README's second command: installs what is missing, then checks formatting and lints
# and runs every test (unit, in-process integration against librdkafka's mock cluster,
# process-level against a real Tansu broker, the chaos smoke set, doc tests, and each
# benchmark once).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace --all-targets
cargo test --locked --workspace --doc
