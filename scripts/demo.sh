#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, and runs the embedded
# demo (mock Kafka, two in-process nodes, sample data, verified lookups). Exits 0 on success.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec cargo run --locked -q -p quiver-node --bin quiver-node -- demo "$@"
