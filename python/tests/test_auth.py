"""Tokens against a cluster with authentication on: the SDK's token and token_file reach
the nodes, and the nodes' refusals arrive as Unauthenticated / PermissionDenied."""

from __future__ import annotations

import pytest

import quiver

from cluster import Cluster, wait_until
from conftest import DEFINITIONS, TOPICS


@pytest.fixture(scope="module")
def secured():
    c = Cluster(DEFINITIONS, TOPICS, auth=True)
    yield c
    c.close()


def test_tokens_and_grants(secured, tmp_path):
    admin = quiver.Client(secured.seeds(), token_file=str(secured.admin_token_file), deadline=10)
    wait_until(lambda: admin.get_online_features(["card_stats:*"], keys=[1]), "view card_stats to serve")
    token = admin.push("card_stats", [{"card": 5, "spend": 2.5}])

    reader_token = secured.quiverctl_run("token", "create", "--name", "py-reader", "--role", "reader",
                                         "--view", "card_stats").strip()
    reader = quiver.Client(secured.seeds(), token=reader_token, deadline=10)
    r = reader.get_online_features(["card_stats:spend"], keys=[5], min_watermarks=token)
    assert r.to_dict()["card_stats:spend"] == [2.5]
    # A view the token is not granted is invisible to it (the schema it gets lists only
    # its views), so asking for one is NotFound, as for a view that does not exist.
    with pytest.raises(quiver.NotFound, match="profile"):
        reader.get_online_features(["profile:score"], keys=["u1"])
    assert {v["name"] for v in reader.list_views()} == {"card_stats"}
    # A reader may not write.
    with pytest.raises(quiver.PermissionDenied):
        reader.push("card_stats", [{"card": 6, "spend": 1.0}])

    # The same token from a file.
    f = tmp_path / "reader.token"
    f.write_text(reader_token + "\n")
    from_file = quiver.Client(secured.seeds(), token_file=str(f), deadline=10)
    r = from_file.get_online_features(["card_stats:spend"], keys=[5], min_watermarks=token)
    assert r.to_dict()["card_stats:spend"] == [2.5]

    # No token, or a wrong one: Unauthenticated.
    with pytest.raises(quiver.Unauthenticated):
        quiver.Client(secured.seeds(), deadline=5)
    with pytest.raises(quiver.Unauthenticated):
        quiver.Client(secured.seeds(), token="qvr_000000000000_not-a-real-secret", deadline=5)
