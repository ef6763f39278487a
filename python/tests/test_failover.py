"""Failover across a kill -9: a node of a 3-node cluster (R = 2) is killed while lookups
run, and no call fails."""

from __future__ import annotations

import threading
import time

import quiver

from cluster import Cluster, wait_until
from conftest import DEFINITIONS, TOPICS


def test_kill_9_fails_no_call():
    c = Cluster(DEFINITIONS, TOPICS, dead_after_ms=120_000)
    try:
        client = quiver.Client(c.seeds(), deadline=5)
        wait_until(lambda: client.get_online_features(["card_stats:*"], keys=[1]), "view card_stats to serve")
        keys = list(range(200))
        token = client.push("card_stats", [{"card": k, "spend": k * 1.5, "declines": k} for k in keys])
        expect = [k * 1.5 for k in keys]
        assert client.get_online_features(["card_stats:spend"], keys=keys, min_watermarks=token).to_dict()[
            "card_stats:spend"] == expect

        failures, calls = [], [0]
        stop = threading.Event()

        def reader():
            while not stop.is_set():
                try:
                    got = client.get_online_features(["card_stats:spend"], keys=keys).to_dict()
                    if got["card_stats:spend"] != expect:
                        failures.append(f"wrong values after {calls[0]} calls")
                except quiver.QuiverError as e:
                    failures.append(repr(e))
                calls[0] += 1

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        wait_until(lambda: calls[0] >= 20, "lookups before the kill")
        c.nodes[2].kill_9()
        before = calls[0]
        wait_until(lambda: calls[0] >= before + 100, "lookups after the kill", timeout=120)
        stop.set()
        for t in threads:
            t.join()
        assert not failures, failures[:5]
        # The dead node still holds replicas in the map (dead_after is 2 minutes): the
        # client routed around it rather than the cluster moving the shards away.
        m = client.cluster_map()
        assert any(node == 2 for s in m["shards"] for node, _ in s["replicas"])
    finally:
        c.close()
