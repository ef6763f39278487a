#!/usr/bin/env bash
# The README's first command: installs what the demo needs if missing (the build
# dependencies only), builds, and runs the embedded demo (mock Kafka, two in-process
# nodes, sample data, verified lookups). Exits 0 on success. The test command runs it too.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh demo
exec cargo run --locked -q -p quiver-node --bin quiver-node -- demo "$@"
