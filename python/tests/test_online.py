"""Online lookups through every conversion, against the real cluster."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import quiver

from cluster import wait_until

NOW = dt.datetime.now(dt.timezone.utc)

# Two full rows, one with nulls, one that is too old for the view's TTL (1 h).
ROWS = [
    {
        "user": "u-full",
        "active": True,
        "visits": 2**53 + 1,  # not representable as a float64: must stay an int
        "score": 0.1 + 0.2,
        "country": "Ελλάδα",
        "blob": b"\x00\xffbin",
        "embedding": [0.5, -1.25, 3.0],
        "recent_items": [7, -8, 2**40],
        "recent_amounts": [1.5, float("inf")],
        "tags": ["a", "", "ünï"],
        "event_timestamp": NOW - dt.timedelta(minutes=1),
    },
    {
        "user": "u-nulls",
        "active": False,
        "visits": None,
        "score": float("nan"),  # a float64 NaN is a value, not a null
        "country": None,
        "blob": None,
        "embedding": [1.0, 2.0, 3.0],
        "recent_items": [],
        "recent_amounts": None,
        "tags": None,
        "event_timestamp": NOW - dt.timedelta(minutes=2),
    },
    {
        "user": "u-old",
        "visits": 5,
        "event_timestamp": NOW - dt.timedelta(hours=2),
    },
]
KEYS = ["u-full", "u-nulls", "u-old", "u-never", "u-full"]
ALL = ["profile:*"]


@pytest.fixture(scope="module")
def written(client):
    wait_until(lambda: client.get_online_features(ALL, keys=["x"]), "view profile to serve")
    token = client.push("profile", ROWS)
    assert isinstance(token, str) and token
    return token


def test_statuses_present_null_not_found_and_expired(client, written):
    r = client.get_online_features(ALL, keys=KEYS, min_watermarks=written)
    assert len(r) == 5
    assert r.feature_names == [f"profile:{f}" for f in
                               ["active", "visits", "score", "country", "blob", "embedding",
                                "recent_items", "recent_amounts", "tags"]]
    st = r.statuses("profile:visits")
    assert list(st) == ["PRESENT", "PRESENT", "EXPIRED", "NOT_FOUND", "PRESENT"]
    # PRESENT with a null value is not valid; EXPIRED and NOT_FOUND are not either.
    assert list(r.valid("profile:visits")) == [True, False, False, False, True]


def test_to_pandas_keeps_types_and_nulls(client, written):
    df = client.get_online_features(ALL, keys=KEYS, min_watermarks=written).to_pandas(nullable=True)
    assert list(df["user"]) == KEYS
    assert str(df["profile:visits"].dtype) == "Int64"
    assert df["profile:visits"][0] == 2**53 + 1
    assert df["profile:visits"].isna().tolist() == [False, True, True, True, False]
    assert str(df["profile:score"].dtype) == "Float64"
    assert df["profile:score"][0] == 0.1 + 0.2
    assert str(df["profile:active"].dtype) == "boolean"
    assert df["profile:active"].tolist()[:2] == [True, False]
    assert df["profile:active"].isna().tolist() == [False, False, True, True, False]
    assert isinstance(df["profile:country"].dtype, pd.StringDtype)
    assert df["profile:country"][0] == "Ελλάδα" and df["profile:country"].isna()[1]
    assert df["profile:blob"][0] == b"\x00\xffbin" and df["profile:blob"][1] is None
    np.testing.assert_array_equal(df["profile:embedding"][0], np.array([0.5, -1.25, 3.0], dtype=np.float32))
    assert list(df["profile:recent_items"][0]) == [7, -8, 2**40]
    assert list(df["profile:recent_items"][1]) == []
    assert list(df["profile:tags"][0]) == ["a", "", "ünï"]



def test_to_df_has_numpy_dtypes(client, written):
    """The default (Feast's to_df): NumPy dtypes, NaN/None where missing."""
    plain = client.get_online_features(ALL, keys=KEYS, min_watermarks=written).to_df()
    assert list(plain.columns) == ["user"] + [f"profile:{f}" for f in
                                              ["active", "visits", "score", "country", "blob", "embedding",
                                               "recent_items", "recent_amounts", "tags"]]
    assert list(plain["user"]) == KEYS
    assert plain["profile:score"].dtype == np.float64
    assert plain["profile:score"][0] == 0.1 + 0.2 and math.isnan(plain["profile:score"][1])
    assert plain["profile:visits"].dtype == np.float64  # widened by its missing values
    assert math.isnan(plain["profile:visits"][1]) and math.isnan(plain["profile:visits"][3])
    assert plain["profile:active"].tolist() == [True, False, None, None, True]
    assert plain["profile:country"].tolist() == ["Ελλάδα", None, None, None, "Ελλάδα"]
    assert plain["profile:blob"][0] == b"\x00\xffbin"
    assert list(plain["profile:recent_items"][0]) == [7, -8, 2**40]
    assert plain["profile:tags"][3] is None
    # Without missing values an int64 column stays int64 (exact beyond 2^53).
    full = client.get_online_features(["profile:visits", "profile:score"], keys=["u-full"],
                                      min_watermarks=written).to_df()
    assert full["profile:visits"].dtype == np.int64 and full["profile:visits"][0] == 2**53 + 1
    # All-float results are one block, in request order.
    floats = client.get_online_features(["profile:score", "balance:amount"],
                                        keys=["u-full", "u-never"], min_watermarks=written).to_df()
    assert list(floats.columns) == ["user", "profile:score", "balance:amount"]
    assert floats.iloc[0, 1] == 0.1 + 0.2 and math.isnan(floats.iloc[1, 1]) and math.isnan(floats.iloc[0, 2])


def test_float64_nan_is_a_value(client, written):
    r = client.get_online_features(["profile:score"], keys=["u-nulls"], min_watermarks=written)
    assert r.statuses("profile:score")[0] == "PRESENT" and r.valid("profile:score")[0]
    assert math.isnan(r.to_dict()["profile:score"][0])


def test_to_arrow_types(client, written):
    t = client.get_online_features(ALL, keys=KEYS, min_watermarks=written).to_arrow(include_statuses=True)
    types = {f.name: f.type for f in t.schema}
    assert types["user"] == pa.string()
    assert types["profile:active"] == pa.bool_()
    assert types["profile:visits"] == pa.int64()
    assert types["profile:score"] == pa.float64()
    assert types["profile:country"] == pa.string()
    assert types["profile:blob"] == pa.binary()
    assert types["profile:embedding"] == pa.list_(pa.float32(), 3)
    assert types["profile:recent_items"] == pa.list_(pa.int64())
    assert types["profile:recent_amounts"] == pa.list_(pa.float64())
    assert types["profile:tags"] == pa.list_(pa.string())
    t.validate(full=True)
    assert t.column("profile:visits__status").to_pylist()[2:4] == ["EXPIRED", "NOT_FOUND"]
    assert t.column("profile:recent_amounts").to_pylist()[0] == [1.5, float("inf")]


def test_to_dict_is_python_values(client, written):
    d = client.get_online_features(ALL, keys=KEYS, min_watermarks=written).to_dict()
    assert d["user"] == KEYS
    assert d["profile:visits"] == [2**53 + 1, None, None, None, 2**53 + 1]
    assert d["profile:tags"][0] == ["a", "", "ünï"] and d["profile:tags"][1] is None
    assert d["profile:embedding"][1] == [1.0, 2.0, 3.0]


def test_to_numpy(client, written):
    r = client.get_online_features(ALL, keys=KEYS, min_watermarks=written)
    score = r.to_numpy("profile:score")
    assert score.dtype == np.float64 and score[0] == 0.1 + 0.2 and np.isnan(score[2:4]).all()
    visits = r.to_numpy("profile:visits")
    assert visits.dtype == np.float64 and np.isnan(visits[1])
    filled = r.to_numpy("profile:visits", fill=-1)
    assert filled.dtype == np.int64 and filled.tolist() == [2**53 + 1, -1, -1, -1, 2**53 + 1]
    emb = r.to_numpy("profile:embedding")
    assert emb.shape == (5, 3) and emb.dtype == np.float32
    assert emb[1].tolist() == [1.0, 2.0, 3.0] and np.isnan(emb[3]).all()
    tags = r.to_numpy("profile:tags")
    assert list(tags[0]) == ["a", "", "ünï"]
    assert tags[3] is None


def test_event_times(client, written):
    r = client.get_online_features(["profile:visits"], keys=KEYS, min_watermarks=written, event_times=True)
    t = r.event_times("profile:visits")
    expect = np.datetime64(int((ROWS[0]["event_timestamp"].timestamp()) * 1_000_000), "us")
    assert abs(t[0] - expect) <= np.timedelta64(1, "us")
    assert np.isnat(t[3])
    with pytest.raises(quiver.InvalidArgument):
        client.get_online_features(["profile:visits"], keys=KEYS).event_times("profile:visits")


def test_feature_service_and_entity_rows(client, written):
    r = client.get_online_features(feature_service="risk_model", entity_rows=[{"user": "u-full"}],
                                   min_watermarks=written)
    assert r.feature_names == ["profile:score", "profile:visits", "balance:amount"]
    assert r.to_dict()["profile:visits"] == [2**53 + 1]


def test_a_service_spanning_two_entities_takes_several_join_keys(client, written):
    """card_risk reads a card's and a user's features: Feast-style entity rows with both
    join keys (or keys per entity); the frame has a column per join key."""
    wait_until(lambda: client.get_online_features(["card_stats:*"], keys=[1]), "view card_stats to serve")
    token = client.push("card_stats", [{"card": 901, "spend": 5.5, "declines": 1},
                                       {"card": 902, "spend": 7.0, "declines": 0}])
    rows = [{"card": 902, "user": "u-full"}, {"card": 901, "user": "u-never"},
            {"card": 999, "user": "u-full"}]
    both = token + "," + written  # tokens join with a comma (the highest offset wins)
    r = client.get_online_features(feature_service="card_risk", entity_rows=rows, min_watermarks=both)
    assert r.feature_names == ["card_stats:spend", "profile:score", "card_stats:declines"]
    d = r.to_dict()
    assert d["card"] == [902, 901, 999]
    assert d["user"] == ["u-full", "u-never", "u-full"]
    assert d["card_stats:spend"] == [7.0, 5.5, None]
    assert d["profile:score"] == [0.1 + 0.2, None, 0.1 + 0.2]
    df = r.to_pandas()
    assert list(df.columns) == ["card", "user", "card_stats:spend", "profile:score", "card_stats:declines"]
    assert df["card_stats:spend"].iloc[0] == 7.0
    # The same as keys per entity.
    r2 = client.get_online_features(feature_service="card_risk",
                                    keys={"card": [902, 901, 999], "user": ["u-full", "u-never", "u-full"]},
                                    min_watermarks=both)
    assert r2.to_dict() == d
    # Rows naming different entities, one entity's keys only, or a missing entity: refused.
    with pytest.raises(quiver.InvalidArgument, match="every row names the same entities"):
        client.get_online_features(feature_service="card_risk",
                                   entity_rows=[{"card": 1, "user": "u"}, {"card": 2, "merchant": "m"}])
    with pytest.raises(quiver.InvalidArgument, match="must share an entity"):
        client.get_online_features(feature_service="card_risk", keys=[901])
    with pytest.raises(quiver.InvalidArgument, match="entity \"user\", which has no keys"):
        client.get_online_features(feature_service="card_risk", keys={"card": [901]})


def test_int_keys_from_numpy(client):
    wait_until(lambda: client.get_online_features(["card_stats:*"], keys=[1]), "view card_stats to serve")
    df = pd.DataFrame({"card": [10, 11], "spend": [12.5, 99.0], "declines": [0, 3]})
    token = client.push("card_stats", df)
    r = client.get_online_features(["card_stats:spend", "card_stats:declines"],
                                   keys=np.array([11, 10, 12]), min_watermarks=token)
    d = r.to_dict()
    assert d["card"] == [11, 10, 12]
    assert d["card_stats:spend"] == [99.0, 12.5, None]
    assert d["card_stats:declines"] == [3, 0, None]


def test_delete_then_not_found(client):
    token = client.push("card_stats", [{"card": 77, "spend": 1.0}])
    assert client.get_online_features(["card_stats:spend"], keys=[77], min_watermarks=token).to_dict()[
        "card_stats:spend"] == [1.0]
    token = client.delete("card_stats", [77])
    r = client.get_online_features(["card_stats:spend"], keys=[77], min_watermarks=token)
    assert r.statuses("card_stats:spend").tolist() == ["NOT_FOUND"]


def test_registry(client):
    views = {v["name"]: v for v in client.list_views()}
    assert views["profile"]["entity"] == "user"
    assert ("embedding", "float32_vector") in [tuple(f) for f in views["profile"]["features"]]
    services = {s["name"]: s for s in client.list_feature_services()}
    assert services["risk_model"]["features"] == ["profile:score", "profile:visits", "balance:amount"]
    d = client.describe_view("balance")
    assert d["name"] == "balance" and "risk_model" in d["used_by_feature_services"]
    with pytest.raises(quiver.NotFound, match="nope"):
        client.describe_view("nope")


def test_batches_above_the_limit_are_split_and_joined_in_order(client):
    """max_batch_keys is 1,000: 1,200 rows go as two pushes, 2,500 keys as three lookups."""
    wait_until(lambda: client.get_online_features(["card_stats:*"], keys=[1]), "view card_stats to serve")
    rows = [{"card": 50_000 + i, "spend": i * 0.25, "declines": i} for i in range(1200)]
    token = client.push("card_stats", rows)
    keys = [50_000 + (i * 7) % 1300 for i in range(2500)]  # duplicates, and 100 unknown keys
    before = client.stats()["requests"]
    r = client.get_online_features(["card_stats:spend", "card_stats:declines"], keys=keys,
                                   min_watermarks=token)
    assert client.stats()["requests"] - before == 3
    d = r.to_dict()
    assert d["card"] == keys
    assert d["card_stats:spend"] == [(k - 50_000) * 0.25 if k < 51_200 else None for k in keys]
    assert d["card_stats:declines"] == [k - 50_000 if k < 51_200 else None for k in keys]
