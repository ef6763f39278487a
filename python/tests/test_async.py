"""asyncio: many lookups and pushes in flight from one event loop."""

from __future__ import annotations

import asyncio
import time

import pytest

import quiver

from cluster import wait_until


def test_concurrent_lookups_and_pushes(cluster, client):
    wait_until(lambda: client.get_online_features(["card_stats:*"], keys=[1]), "view card_stats to serve")

    async def main():
        ac = quiver.AsyncClient(cluster.seeds(), deadline=10)
        tokens = await asyncio.gather(*[
            ac.push("card_stats", [{"card": 1000 + i, "spend": float(i), "declines": i}]) for i in range(20)
        ])
        assert all(isinstance(t, str) and t for t in tokens)
        # Every lookup reads its own push (its token), all in flight at once.
        results = await asyncio.gather(*[
            ac.get_online_features(["card_stats:spend", "card_stats:declines"], keys=[1000 + i],
                                   min_watermarks=tokens[i])
            for i in range(20)
        ])
        for i, r in enumerate(results):
            assert r.to_dict() == {"card": [1000 + i], "card_stats:spend": [float(i)],
                                   "card_stats:declines": [i]}
        # Errors surface as the same exceptions.
        with pytest.raises(quiver.NotFound):
            await ac.get_online_features(["card_stats:nope"], keys=[1])
        views = await ac.list_views()
        assert "card_stats" in {v["name"] for v in views}

    asyncio.run(main())


def test_the_event_loop_is_not_blocked(cluster, client):
    """While lookups are awaited the loop keeps running other tasks (the GIL and the loop
    are free during the round trips)."""

    async def main():
        ac = quiver.AsyncClient(cluster.seeds(), deadline=10)
        ticks = 0
        stop = False

        async def ticker():
            nonlocal ticks
            while not stop:
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        start = time.monotonic()
        for _ in range(30):
            await ac.get_online_features(["card_stats:spend"], keys=list(range(50)))
        elapsed = time.monotonic() - start
        stop = True
        await t
        # The ticker ran between and during the lookups, not only at the end.
        assert ticks > 30, (ticks, elapsed)

    asyncio.run(main())
