"""As-of lookups and point-in-time training sets against an oracle of what was pushed."""

from __future__ import annotations

import datetime as dt
import random

import numpy as np
import pandas as pd
import pytest

from cluster import wait_until

BASE = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(days=2)
USERS = [f"h{i}" for i in range(12)]


def _versions(seed: int = 7):
    """Per user, versions at random event times over the last two days (out of order)."""
    rng = random.Random(seed)
    out = []
    for u in USERS:
        for _ in range(rng.randint(1, 6)):
            t = BASE + dt.timedelta(minutes=rng.randint(0, 2 * 24 * 60))
            out.append({"user": u, "amount": round(rng.uniform(0, 100), 2), "txns": rng.randint(0, 50),
                        "event_timestamp": t})
    rng.shuffle(out)
    return out


def oracle(versions, user, t):
    """By event time: the version with the greatest event time at or before t."""
    best = None
    for v in versions:
        if v["user"] == user and v["event_timestamp"] <= t:
            if best is None or v["event_timestamp"] >= best["event_timestamp"]:
                best = v
    return best


@pytest.fixture(scope="module")
def history(client):
    wait_until(lambda: client.get_online_features(["balance:*"], keys=["x"]), "view balance to serve")
    versions = _versions()
    # Distinct event times per user, so "the latest at or before t" is one version.
    seen = set()
    versions = [v for v in versions if (v["user"], v["event_timestamp"]) not in seen
                and not seen.add((v["user"], v["event_timestamp"]))]
    token = client.push("balance", versions)
    client.get_online_features(["balance:amount"], keys=USERS, min_watermarks=token)
    pushed_at = dt.datetime.now(dt.timezone.utc)
    return versions, token, pushed_at


def _label_times(versions, seed=3, n=200):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        u = rng.choice(USERS + ["h-none"])
        t = BASE + dt.timedelta(minutes=rng.randint(-60, 2 * 24 * 60 + 60), seconds=rng.randint(0, 59))
        rows.append((u, t))
    # Exactly at a version's event time too.
    for v in versions[:20]:
        rows.append((v["user"], v["event_timestamp"]))
    return rows


def test_as_of_one_time_for_all_keys(client, history):
    versions, token, _ = history
    t = BASE + dt.timedelta(days=1)
    r = client.get_online_features(["balance:amount", "balance:txns"], keys=USERS, as_of=t,
                                   min_watermarks=token)
    d = r.to_dict()
    for i, u in enumerate(USERS):
        v = oracle(versions, u, t)
        assert d["balance:amount"][i] == (v["amount"] if v else None), u
        assert d["balance:txns"][i] == (v["txns"] if v else None), u


def test_as_of_per_key_matches_the_oracle(client, history):
    versions, token, _ = history
    rows = _label_times(versions)
    keys = [u for u, _ in rows]
    times = pd.Series([t for _, t in rows])
    r = client.get_online_features(["balance:amount"], keys=keys, as_of=times, min_watermarks=token)
    got = r.to_dict()["balance:amount"]
    want = [(oracle(versions, u, t) or {}).get("amount") for u, t in rows]
    assert got == want


def test_as_of_per_key_above_the_batch_limit(client, history):
    """1,500 (key, time) pairs: split into lookups of 1,000, each key with its own time."""
    versions, token, _ = history
    rows = _label_times(versions, seed=5, n=1480)
    assert len(rows) > 1000
    keys = [u for u, _ in rows]
    r = client.get_online_features(["balance:amount"], keys=keys, as_of=[t for _, t in rows],
                                   min_watermarks=token)
    assert r.to_dict()["balance:amount"] == [(oracle(versions, u, t) or {}).get("amount") for u, t in rows]


def test_training_set_is_point_in_time_correct(client, history):
    versions, token, _ = history
    rows = _label_times(versions, seed=11)
    client.get_online_features(["balance:amount"], keys=USERS, min_watermarks=token)
    labels = pd.DataFrame({
        "user": [u for u, _ in rows],
        "event_timestamp": pd.to_datetime([t for _, t in rows], utc=True),
        "label": np.arange(len(rows)) % 2,
    })
    progress = []
    train = client.get_historical_features(labels, ["balance:amount", "balance:txns"], progress=progress.append,
                                           nullable=True)
    assert len(train) == len(labels) and progress and progress[-1] == len(labels)
    assert list(train["label"]) == list(labels["label"])  # label columns kept, in order
    assert list(train["user"]) == list(labels["user"])
    assert str(train["balance:txns"].dtype) == "Int64"
    for i, (u, t) in enumerate(rows):
        v = oracle(versions, u, t)
        if v is None:
            assert pd.isna(train["balance:amount"][i]), (u, t)
        else:
            assert train["balance:amount"][i] == v["amount"], (u, t)
            assert train["balance:txns"][i] == v["txns"], (u, t)


def test_training_set_as_served_excludes_late_arrivals(client, history):
    """Every version was pushed just now with an event time in the past: at those past
    times none had arrived, so an as-served training set holds nothing there — and holds
    the latest after the push."""
    versions, _, pushed_at = history
    after = pushed_at + dt.timedelta(seconds=1)
    labels = pd.DataFrame({
        "user": USERS * 2,
        "event_timestamp": pd.to_datetime([BASE + dt.timedelta(days=2)] * len(USERS) + [after] * len(USERS),
                                          utc=True),
    })
    wait_until(lambda: dt.datetime.now(dt.timezone.utc) > after + dt.timedelta(milliseconds=50), "time to pass")
    train = client.get_historical_features(labels, feature_service=None, features=["balance:amount"],
                                           exclude_late_arrivals=True, status_columns=True)
    n = len(USERS)
    assert train["balance:amount"][:n].isna().all()
    assert set(train["balance:amount__status"][:n]) == {"NOT_FOUND"}
    latest = [oracle(versions, u, after)["amount"] for u in USERS]
    assert list(train["balance:amount"][n:]) == latest


def test_training_set_bad_input(client, history):
    import quiver

    with pytest.raises(quiver.InvalidArgument, match="timestamp column"):
        client.get_historical_features(pd.DataFrame({"user": ["h1"]}), ["balance:amount"])
    with pytest.raises(quiver.InvalidArgument, match="history"):
        client.get_historical_features(
            pd.DataFrame({"user": ["h1"], "event_timestamp": pd.to_datetime(["2026-01-01"], utc=True)}),
            ["profile:score"])


def test_training_set_file_to_file(cluster, client, history, tmp_path):
    """export_training_set: label file (Parquet and CSV) in, Parquet out, in small chunks
    so the stream has many — through the smart client and through each node's
    ExportFeatures stream; every value equals the oracle; bad input leaves no output."""
    import pyarrow.parquet as pq
    import quiver

    versions, token, _ = history
    client.get_online_features(["balance:amount"], keys=USERS, min_watermarks=token)
    rows = _label_times(versions, seed=13, n=300)
    labels = pd.DataFrame({
        "user": [u for u, _ in rows],
        "event_timestamp": pd.to_datetime([t for _, t in rows], utc=True),
        "label": np.arange(len(rows)) % 3,
    })
    want = [(oracle(versions, u, t) or {}).get("amount") for u, t in rows]
    parquet_in = tmp_path / "labels.parquet"
    labels.to_parquet(parquet_in, index=False)
    csv_in = tmp_path / "labels.csv"
    csv_labels = labels.copy()
    csv_labels["event_timestamp"] = [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in labels["event_timestamp"]]
    csv_labels.to_csv(csv_in, index=False)
    runs = [(parquet_in, None), (csv_in, None)] + [(parquet_in, seed) for seed in cluster.seeds()]
    for i, (source, node) in enumerate(runs):
        out = tmp_path / f"train-{i}.parquet"
        progress = []
        n = client.export_training_set(source, out, ["balance:amount"], chunk_rows=37, parallel=3,
                                       progress=progress.append, status_columns=True, through_node=node)
        assert n == len(rows) and progress[-1] == len(rows) and len(progress) >= len(rows) // 37
        train = pq.read_table(out).to_pandas()
        assert list(train["user"]) == list(labels["user"]) and list(train["label"]) == list(labels["label"])
        got = [None if pd.isna(x) else x for x in train["balance:amount"]]
        assert got == want, (source, node)
        assert set(train["balance:amount__status"]) <= {"PRESENT", "NOT_FOUND"}

    bad = tmp_path / "bad.parquet"
    labels.rename(columns={"user": "who"}).to_parquet(bad, index=False)
    out = tmp_path / "never.parquet"
    with pytest.raises(quiver.InvalidArgument, match="user"):
        client.export_training_set(bad, out, ["balance:amount"])
    assert not out.exists()
    with pytest.raises(quiver.InvalidArgument, match="chunk_rows"):
        client.export_training_set(parquet_in, out, ["balance:amount"], chunk_rows=0)
    with pytest.raises(quiver.InvalidArgument, match="time_unit"):
        client.export_training_set(parquet_in, out, ["balance:amount"], time_unit="fortnights")
