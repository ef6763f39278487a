#!/bin/bash
# Sample producer: one JSON record per user every second for users u0..u999, keyed by user
# id (Kafka's default murmur2 partitioner, which quiver's shard map matches).
set -euo pipefail
i=0
while true; do
    now=$(($(date +%s%N) / 1000000))
    for u in $(seq 0 999); do
        echo "u$u|{\"ts\":$now,\"txn_count_1h\":$(( (i + u) % 50 )),\"amount_sum_1h\":$(( (i * u) % 10000 )).5}"
    done
    i=$((i + 1))
    sleep 1
done | /opt/kafka/bin/kafka-console-producer.sh --bootstrap-server broker:9092 --topic features \
    --property parse.key=true --property key.separator='|'
