#!/usr/bin/env bash
# Profiles a three-node cluster (R = 2) and its smart client at a fixed lookup rate.
#
#   benches/profile-three.sh CASE RATE OUT_PREFIX [SECONDS]
#   e.g. benches/profile-three.sh 100x50 400 /tmp/three 8
#
# Like profile-lookup.sh, for the default cluster: `perf record --call-graph dwarf`
# samples the three quiver-node processes and, separately, the bench process (the smart
# client), writing OUT_PREFIX.nodes.folded and OUT_PREFIX.bench.folded
# (inferno-flamegraph < X.folded > X.svg). QUIVER_BENCH_BIN and QUIVER_NODE_BIN pick
# the binaries.
set -eu
. "$(dirname "$0")/lib.sh"
case_=$1 rate=$2 out=$3 secs=${4:-8}
target=${CARGO_TARGET_DIR:-/var/tmp/quiver-target}
bench=${QUIVER_BENCH_BIN:-$target/release/quiver-bench}
export QUIVER_NODE_BIN=${QUIVER_NODE_BIN:-$target/release/quiver-node}
work=$(mktemp -d)
"$bench" lookup --out "$work/report" --entities 20000 \
    --cases "$case_" --peers echo --start-rate "$rate" --max-rate "$rate" \
    --step-secs $((secs + 30)) --refine 0 --measure-secs 1 --slo-p99-ms 100000 >"$work/bench.log" 2>&1 &
bench_pid=$!
node=$(await_nodes "$bench_pid" "$work/bench.log" 3) || exit 1
await_lookups "$bench_pid" "$work/bench.log" "$node" 500
sleep 3
pids=$(pgrep -x quiver-node | paste -sd,)
perf record -F 299 --call-graph dwarf,16384 -p "$pids" -o "$work/perf.data" -- sleep "$secs" >/dev/null 2>&1 &
perf record -F 299 --call-graph dwarf,16384 -p "$bench_pid" -o "$work/perfb.data" -- sleep "$secs" >/dev/null 2>&1
wait %2 2>/dev/null || sleep 2
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf > "$out.nodes.folded"
perf script -i "$work/perfb.data" 2>/dev/null | inferno-collapse-perf > "$out.bench.folded"
kill $bench_pid 2>/dev/null || true; wait $bench_pid 2>/dev/null || true
pkill -x quiver-node || true
echo "bench pid $bench_pid nodes $pids"; rm -rf "$work"
