#!/usr/bin/env bash
# Profiles a release quiver-node serving lookups at a fixed rate and writes a flamegraph.
#
#   benches/profile-lookup.sh CASE RATE OUT.svg [SECONDS]
#   e.g. benches/profile-lookup.sh 1x50 4000 docs/bench/2026-11-30/profile-1x50-after.svg
#
# quiver-bench drives one node (R = 1) at RATE requests/s of CASE (keys × features) for
# long enough; once the load runs, `perf record --call-graph dwarf` samples the node for
# SECONDS (default 10), and inferno turns the stacks into an SVG. Needs perf (Debian:
# linux-perf) and inferno (`cargo install inferno`); the release binaries keep line
# tables (Cargo.toml) so every frame has a name. QUIVER_NODE_BIN picks another node
# binary (e.g. an older build, for a before/after pair from the same load).
# QUIVER_BENCH_ARGS adds arguments to the bench (e.g. "--aggregations --history-events 24",
# which measures plain `quiver` then `quiver-aggs`, each for a step of SECONDS + 30), and
# QUIVER_PROFILE_SKIP waits that many seconds after the load starts before sampling
# (e.g. SECONDS + 40 to sample the second system's step instead of the first's).
# QUIVER_PROFILE_ECHO=1 samples the echo server instead, during its own step at the same
# rate (quiver's step runs first): the transport's floor, profiled at equal load, for a
# side-by-side reading with benches/folded-diff.py. QUIVER_PROFILE_BENCH=1 samples the
# bench process instead (the load generator and quiver's smart client; with
# QUIVER_PROFILE_ECHO=1 as well, during the echo's step: its plain tonic client).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
case_=$1 rate=$2 out=$3 secs=${4:-10}
target=${CARGO_TARGET_DIR:-/var/tmp/quiver-target}
bench=${QUIVER_BENCH_BIN:-$target/release/quiver-bench}
work=$(mktemp -d)
trap 'kill "$bench_pid" 2>/dev/null || true; wait "$bench_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
"$bench" lookup --out "$work/report" --nodes 1 --replication 1 --entities 20000 \
    --cases "$case_" --peers echo --start-rate "$rate" --max-rate "$rate" \
    --step-secs $((secs + 30)) --refine 0 --measure-secs 1 --slo-p99-ms 100000 \
    ${QUIVER_BENCH_ARGS:-} >"$work/bench.log" 2>&1 &
bench_pid=$!
# The node is up once it listens; the load has started once its lookup counter moves.
node_pid=$(await_nodes "$bench_pid" "$work/bench.log" 1) || exit 1
await_lookups "$bench_pid" "$work/bench.log" "$node_pid" 1000
target_pid=$node_pid
if [ -n "${QUIVER_PROFILE_ECHO:-}" ]; then
    target_pid=$(pgrep -n -f "quiver-bench serve-echo")
    await_busy "$bench_pid" "$work/bench.log" "$target_pid"
fi
[ -n "${QUIVER_PROFILE_BENCH:-}" ] && target_pid=$bench_pid
sleep $((3 + ${QUIVER_PROFILE_SKIP:-0}))
perf record -F 499 --call-graph dwarf,32768 -p "$target_pid" -o "$work/perf.data" -- sleep "$secs" \
    >/dev/null 2>&1
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf > "$work/stacks.folded"
what=quiver-node; [ -n "${QUIVER_PROFILE_ECHO:-}" ] && what="the echo floor"
if [ -n "${QUIVER_PROFILE_BENCH:-}" ]; then
    what="the bench process (quiver's smart client)"
    [ -n "${QUIVER_PROFILE_ECHO:-}" ] && what="the bench process (the echo's client)"
fi
inferno-flamegraph --title "$what, $case_ lookups at $rate req/s" \
    < "$work/stacks.folded" > "$out"
cp "$work/stacks.folded" "${out%.svg}.folded"
echo "wrote $out ($what, pid $target_pid, $(wc -l < "$work/stacks.folded") distinct stacks)"
