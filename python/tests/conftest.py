"""Fixtures: one shared cluster (3 nodes, R = 2) with a view of every feature type, an
int-keyed view, a view with history, a feature service and one spanning two entities."""

from __future__ import annotations

from pathlib import Path

import pytest

import quiver

from cluster import Cluster

TYPES = {
    "active": "bool",
    "visits": "int64",
    "score": "float64",
    "country": "string",
    "blob": "bytes",
    "embedding": "float32_vector",
    "recent_items": "int64_list",
    "recent_amounts": "float64_list",
    "tags": "string_list",
}


def _view(name: str, entity: str, features: dict, extra: str = "") -> str:
    text = f"""
[[view]]
name = "{name}"
entity = "{entity}"
{extra}
[view.source]
topic = "{name}"
event_time_field = "ts"
event_time_unit = "micros"
"""
    for f, t in features.items():
        text += f'[[view.feature]]\nname = "{f}"\ntype = "{t}"\n'
    return text


DEFINITIONS = (
    """
[[entity]]
name = "user"
key_type = "string"

[[entity]]
name = "card"
key_type = "int64"
"""
    + _view("profile", "user", TYPES, 'ttl = "1h"')
    + _view("card_stats", "card", {"spend": "float64", "declines": "int64"})
    + _view("balance", "user", {"amount": "float64", "txns": "int64"}, 'history = "7d"')
    + """
[[feature_service]]
name = "risk_model"
features = ["profile:score", "profile:visits", "balance:amount"]

[[feature_service]]
name = "card_risk"
features = ["card_stats:spend", "profile:score", "card_stats:declines"]
"""
)

# The example's view too (python/examples/train_and_serve.py).
EXAMPLE_VIEWS = (Path(__file__).parent.parent / "examples" / "views.toml").read_text()
DEFINITIONS += EXAMPLE_VIEWS

TOPICS = ["profile", "card_stats", "balance", "txn_stats"]


@pytest.fixture(scope="session")
def cluster():
    c = Cluster(DEFINITIONS, TOPICS)
    yield c
    c.close()


@pytest.fixture(scope="session")
def client(cluster) -> quiver.Client:
    return quiver.Client(cluster.seeds(), deadline=10)
