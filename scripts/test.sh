#!/usr/bin/env bash
# The README's second command: installs what is missing, then checks formatting and lints
# and runs every test (unit, in-process integration against librdkafka's mock cluster,
# process-level against a real Tansu broker and a real Prometheus, the chaos smoke set, doc
# tests, each benchmark once, deploy/'s manifests and configs, and the README's demo).
# Needs root (the chaos tests create network namespaces); checked first by setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh test
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace --all-targets
cargo test --locked --workspace --doc
# deploy/: Kubernetes schemas, compose references, promtool, the dashboard, and every
# shipped node config through quiver-node --check-config.
python3 deploy/tests/validate.py "$CARGO_TARGET_DIR/debug/quiver-node"
# deploy/'s image and compose cluster, built and run for real (podman, podman-compose).
python3 deploy/tests/compose_test.py --bin-dir "$CARGO_TARGET_DIR/debug" --tansu "$QUIVER_TANSU_BIN"
# The README's first command, so it can never silently break.
bash scripts/demo.sh
