#!/usr/bin/env bash
# CPU per lookup of the client (the bench process) and of the nodes at a fixed rate.
#
#   benches/cpu-per-request.sh BENCH_BIN NODE_BIN CASE RATE [NODES]
#   e.g. benches/cpu-per-request.sh target/release/quiver-bench target/release/quiver-node 100x50 300 3
#
# Runs one quiver-bench step of CASE at RATE requests/s (NODES = 1: one node, R = 1;
# otherwise the default three nodes, R = 2), waits for the load, then reads the
# processes' CPU ticks over 20 s. Prints µs of CPU per request for the bench process
# (the smart client plus the load generator) and for the nodes summed (idle threads
# included). Alternate two builds' binaries, several times, to compare them.
set -u
. "$(dirname "$0")/lib.sh"
bench=$1 node=$2 case_=$3 rate=$4 nodes=${5:-3}
extra=""; [ "$nodes" = 1 ] && extra="--nodes 1 --replication 1"
work=$(mktemp -d)
QUIVER_NODE_BIN=$node $bench lookup --out $work/r --entities 20000 --cases $case_ --peers echo $extra \
  --start-rate $rate --max-rate $rate --step-secs 40 --refine 0 --measure-secs 1 --slo-p99-ms 100000 > $work/log 2>&1 &
bp=$!
np=$(await_nodes "$bp" "$work/log" "$nodes") || exit 1
await_lookups "$bp" "$work/log" "$np" 300
sleep 4
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
pids="$(pgrep -x quiver-node)"
b0=$(cpu $bp); n0=0; for p in $pids; do n0=$((n0+$(cpu $p))); done
sleep 20
b1=$(cpu $bp); n1=0; for p in $pids; do n1=$((n1+$(cpu $p))); done
tck=$(getconf CLK_TCK)
echo "$case_ @$rate nodes=$nodes client_us_per_req=$(( (b1-b0)*1000000/tck/(rate*20) )) nodes_us_per_req=$(( (n1-n0)*1000000/tck/(rate*20) ))"
kill $bp; wait $bp 2>/dev/null; pkill -x quiver-node; sleep 1; rm -rf $work
