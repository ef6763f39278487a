#!/usr/bin/env bash
# The README's second command: installs what is missing, then checks formatting and lints
# and runs every test (unit, in-process integration against librdkafka's mock cluster,
# process-level against a real Tansu broker and a real Prometheus, the chaos smoke set, doc
# tests, each benchmark once, the Python SDK's suite, deploy/'s manifests and configs, and
# the README's demo).
# Needs root (the chaos tests create network namespaces); checked first by setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh test
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace --all-targets
cargo test --locked --workspace --doc
# The Python SDK (python/, its own cargo workspace): lints, its Rust unit tests (linked
# against libpython, which the wheel leaves to the interpreter), the wheel built and
# installed, then its pytest suite against real quiver-node processes and the broker.
cargo fmt --manifest-path python/Cargo.toml -- --check
cargo clippy --locked --manifest-path python/Cargo.toml --all-targets -- -D warnings
LD_LIBRARY_PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')" \
    cargo test --locked --manifest-path python/Cargo.toml --no-default-features
python3 -m pip install -q --disable-pip-version-check --no-build-isolation ./python
python3 -m pytest -q python/tests
# deploy/: Kubernetes schemas, compose references, promtool, the dashboard, and every
# shipped node config through quiver-node --check-config.
python3 deploy/tests/validate.py "$CARGO_TARGET_DIR/debug/quiver-node"
# deploy/'s image and compose cluster, built and run for real (podman, podman-compose).
python3 deploy/tests/compose_test.py --bin-dir "$CARGO_TARGET_DIR/debug" --tansu "$QUIVER_TANSU_BIN"
# The README's first command, so it can never silently break.
bash scripts/demo.sh
