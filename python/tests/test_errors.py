"""Bad input raises the right exception, names what was wrong, and sends nothing."""

from __future__ import annotations

import pytest

import quiver

from cluster import wait_until


@pytest.fixture(scope="module")
def ready(client):
    wait_until(lambda: client.get_online_features(["profile:*"], keys=["x"]), "view profile to serve")
    wait_until(lambda: client.get_online_features(["card_stats:*"], keys=[1]), "view card_stats to serve")
    return client


def sent(client) -> int:
    return client.stats()["sub_requests"]


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda c: c.get_online_features(["profile:nope"], keys=["u1"]), quiver.NotFound, ["nope"]),
        (lambda c: c.get_online_features(["ghost:*"], keys=["u1"]), quiver.NotFound, ["ghost"]),
        (lambda c: c.get_online_features(feature_service="ghost_service", keys=["u1"]), quiver.NotFound,
         ["ghost_service"]),
        (lambda c: c.get_online_features(["profile:score"], keys=[]), quiver.InvalidArgument, ["no entity keys"]),
        (lambda c: c.get_online_features(["profile:score"], keys=[1, 2]), quiver.InvalidArgument, ["string"]),
        (lambda c: c.get_online_features(["card_stats:spend"], keys=["10"]), quiver.InvalidArgument, ["int64"]),
        (lambda c: c.get_online_features(["profile:score"], keys=[True]), quiver.InvalidArgument, ["bool"]),
        (lambda c: c.get_online_features(["profile:score"], keys=[None]), quiver.InvalidArgument, ["null"]),
        (lambda c: c.get_online_features(["profile:score", "card_stats:spend"], keys=["u1"]),
         quiver.InvalidArgument, ["entity"]),
        (lambda c: c.get_online_features(["profile-score"], keys=["u1"]), quiver.InvalidArgument,
         ["view:feature"]),
        (lambda c: c.get_online_features(keys=["u1"]), quiver.InvalidArgument, ["features"]),
        (lambda c: c.get_online_features(["profile:score"], keys=["u1"], min_watermarks="garbage"),
         quiver.InvalidArgument, ["min_watermarks"]),
        (lambda c: c.get_online_features(["profile:score"], keys=["u1"], exclude_late_arrivals=True),
         quiver.InvalidArgument, ["as_of"]),
        (lambda c: c.get_online_features(["profile:score"], keys=["u1", "u2"], as_of=[1, 2, 3]),
         quiver.InvalidArgument, ["3 times for 2 keys"]),
        (lambda c: c.get_online_features(["profile:score"], entity_rows=[{"card": "u1"}]),
         quiver.InvalidArgument, ["card", "user"]),
        (lambda c: c.get_online_features(["profile:score"], keys="u1"), quiver.InvalidArgument, ["sequence"]),
    ],
)
def test_bad_lookups_raise_and_send_nothing(ready, call, exc, words):
    before = sent(ready)
    with pytest.raises(exc) as info:
        call(ready)
    for w in words:
        assert w in str(info.value), str(info.value)
    assert info.value.code == exc.code
    assert sent(ready) == before


@pytest.mark.parametrize(
    "rows, words",
    [
        ([{"user": "p1", "visits": "seven"}], ["row 0", "visits", "int64", "str"]),
        ([{"user": "p1", "visits": 1}, {"user": "p2", "score": [1.0]}], ["row 1", "score", "float64"]),
        ([{"user": "p1", "nope": 1}], ["row 0", "nope"]),
        ([{"usr": "p1", "visits": 1}], ["row 0", "user"]),
        ([{"user": "p1", "visits": 1.5}], ["visits", "int64"]),
        ([{"user": "p1", "embedding": ["a"]}], ["embedding", "float32_vector"]),
        ([{"user": "p1", "visits": 1}, {"user": 5, "visits": 2}], ["row 1", "int64", "string"]),
        ([], ["no rows"]),
    ],
)
def test_bad_pushes_raise_and_write_nothing(ready, rows, words):
    before = sent(ready)
    with pytest.raises(quiver.InvalidArgument) as info:
        ready.push("profile", rows)
    for w in words:
        assert w in str(info.value), str(info.value)
    assert sent(ready) == before
    # Nothing of the batch was written: p1 (valid in some batches) is still absent.
    r = ready.get_online_features(["profile:visits"], keys=["p1"], min_watermarks=ready.session_watermark or None)
    assert r.statuses("profile:visits").tolist() == ["NOT_FOUND"]


def test_push_to_unknown_view(ready):
    with pytest.raises(quiver.NotFound, match="ghost"):
        ready.push("ghost", [{"user": "u", "x": 1}])


def test_as_of_needs_history(ready):
    with pytest.raises(quiver.InvalidArgument, match="history"):
        ready.get_online_features(["profile:score"], keys=["u1"], as_of="2026-01-01T00:00:00Z")


def test_unreachable_seeds_are_unavailable():
    with pytest.raises(quiver.QuiverError) as info:
        quiver.Client(["127.0.0.1:1"], deadline=1)
    assert isinstance(info.value, (quiver.Unavailable, quiver.DeadlineExceeded)), repr(info.value)


def test_bad_client_arguments():
    with pytest.raises(quiver.InvalidArgument, match="seeds"):
        quiver.Client([])
    with pytest.raises(quiver.InvalidArgument, match="deadline"):
        quiver.Client(["127.0.0.1:1"], deadline=-1)
    with pytest.raises(quiver.InvalidArgument, match="token"):
        quiver.Client(["127.0.0.1:1"], token="a", token_file="/nonexistent")


def test_errors_are_catchable_by_code():
    e = quiver.errors._from_code("permission_denied", "no grant for view x")
    assert isinstance(e, quiver.PermissionDenied) and e.code == "permission_denied"
    assert isinstance(quiver.errors._from_code("quota_exhausted", "m"), quiver.ResourceExhausted)
    assert type(quiver.errors._from_code("something_new", "m")) is quiver.QuiverError
