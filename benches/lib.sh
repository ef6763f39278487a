# Shared by the profiling and CPU scripts in benches/: waiting for a quiver-bench run's
# nodes and for its load. Source it; each function gives up (exit 1, with the bench's
# log) if the bench process has died, instead of waiting out its deadline.

# await_nodes BENCH_PID LOG COUNT: waits for COUNT quiver-node processes, prints the newest's pid.
await_nodes() {
    local bench_pid=$1 log=$2 count=$3 n
    for _ in $(seq 1200); do
        n=$(pgrep -x quiver-node | wc -l || true)
        if [ "$n" -ge "$count" ]; then
            pgrep -n -x quiver-node
            return 0
        fi
        kill -0 "$bench_pid" 2>/dev/null || break
        sleep 0.5
    done
    echo "quiver-bench started no $count quiver-node(s):" >&2
    cat "$log" >&2
    exit 1
}

# served_lookups NODE_PID: GetOnlineFeatures requests the node has answered (its /metrics).
served_lookups() {
    local port
    for port in $(ss -ltnpH 2>/dev/null | grep "pid=$1," | awk '{print $4}' | sed 's/.*://'); do
        curl -s --max-time 1 "http://127.0.0.1:$port/metrics" 2>/dev/null |
            awk '/^quiver_serve_requests_total\{.*get_online_features/ {s += $2} END {print s + 0}'
    done | sort -n | tail -1
}

# await_lookups BENCH_PID LOG NODE_PID MIN: waits until the node has answered MIN lookups.
await_lookups() {
    local bench_pid=$1 log=$2 node_pid=$3 min=$4
    for _ in $(seq 1200); do
        [ "$(served_lookups "$node_pid")" -gt "$min" ] 2>/dev/null && return 0
        kill -0 "$bench_pid" 2>/dev/null || break
        sleep 0.5
    done
    echo "no load reached quiver-node $node_pid:" >&2
    cat "$log" >&2
    exit 1
}

# await_busy BENCH_PID LOG PID: waits until process PID uses CPU (over 0.2 s in a second),
# i.e. until the bench's load has reached it (the echo server, which has no metrics).
await_busy() {
    local bench_pid=$1 log=$2 pid=$3 c0 c1
    c0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    for _ in $(seq 1200); do
        sleep 1
        c1=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null) || break
        [ $((c1 - c0)) -gt $(($(getconf CLK_TCK) / 5)) ] && return 0
        c0=$c1
        kill -0 "$bench_pid" 2>/dev/null || break
    done
    echo "no load reached process $pid:" >&2
    cat "$log" >&2
    exit 1
}
