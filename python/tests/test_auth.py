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


@pytest.fixture(scope="module")
def mutual_tls():
    c = Cluster(DEFINITIONS, TOPICS, tls=True)
    yield c
    c.close()


def test_mutual_tls_identities(mutual_tls):
    """Over mutual TLS the client certificate is the identity: the administrator's pushes,
    the reader's certificate reads its view and may not write, and a client without a
    certificate, with one from another CA, not trusting the nodes' CA or in plaintext gets
    no answer at all."""
    c, pki = mutual_tls, mutual_tls.pki
    admin = quiver.Client(c.seeds(), tls=pki.client_tls("quiver-tool"), deadline=10)
    wait_until(lambda: admin.get_online_features(["card_stats:*"], keys=[1]), "view card_stats to serve")
    token = admin.push("card_stats", [{"card": 7, "spend": 4.25}])
    r = admin.get_online_features(["card_stats:spend"], keys=[7], min_watermarks=token)
    assert r.to_dict()["card_stats:spend"] == [4.25]

    reader = quiver.Client(c.seeds(), tls=pki.client_tls("ranker"), deadline=10)
    r = reader.get_online_features(["card_stats:spend"], keys=[7], min_watermarks=token)
    assert r.to_dict()["card_stats:spend"] == [4.25]
    assert {v["name"] for v in reader.list_views()} == {"card_stats"}
    with pytest.raises(quiver.PermissionDenied):
        reader.push("card_stats", [{"card": 8, "spend": 1.0}])
    with pytest.raises(quiver.NotFound, match="profile"):
        reader.get_online_features(["profile:score"], keys=["u1"])

    ca = str(pki.ca.file)
    rogue_cert, rogue_key = pki.rogue_cert
    refused = {
        "no client certificate": dict(tls=quiver.TLS(ca=ca, server_name="localhost")),
        "a certificate from another CA": dict(tls=quiver.TLS(ca=ca, cert=rogue_cert, key=rogue_key,
                                                             server_name="localhost")),
        "not trusting the nodes' CA": dict(tls=quiver.TLS(ca=str(pki.rogue.file), cert=pki.certs["ranker"][0],
                                                          key=pki.certs["ranker"][1], server_name="localhost")),
        "plaintext": dict(),
    }
    for what, kwargs in refused.items():
        with pytest.raises(quiver.QuiverError) as e:
            quiver.Client(c.seeds(), deadline=3, **kwargs)
        # The connection itself failed, and the message says why (not only "transport error").
        print(what, "->", repr(e.value))
        assert isinstance(e.value, quiver.Unavailable), (what, e.value)
    # A client certificate whose key does not match is refused before connecting.
    with pytest.raises(quiver.QuiverError, match="(?i)key|certificate|tls"):
        quiver.Client(c.seeds(), tls=quiver.TLS(ca=ca, cert=pki.certs["ranker"][0], key=rogue_key,
                                                server_name="localhost"), deadline=3).list_views()
