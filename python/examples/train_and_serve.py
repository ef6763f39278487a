"""Train on a point-in-time training set, then score live requests — one feature path.

    python python/examples/train_and_serve.py --seeds 127.0.0.1:7070

Needs a quiver cluster with python/examples/views.toml applied. The script first writes
two weeks of per-customer feature history (in production a streaming job produces it to
the view's topic), builds labels from simulated fraud reports, exports the training set
as of each label's time with `get_historical_features`, fits a scikit-learn model, and
scores live transactions with `get_online_features` through the same feature service.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
from typing import Dict

import numpy as np
import pandas as pd

import quiver

SERVICE = "fraud_model_v1"
FEATURES = ["txn_stats:txn_count_24h", "txn_stats:amount_avg_24h", "txn_stats:foreign_ratio_24h"]


def write_history(client: quiver.Client, customers, now: dt.datetime, rng: random.Random) -> Dict[str, bool]:
    """Hourly feature snapshots over 14 days; fraudsters drift to many, small, foreign
    transactions. Returns who is a fraudster."""
    fraud = {c: rng.random() < 0.3 for c in customers}
    rows = []
    for c in customers:
        for h in range(14 * 24, 0, -6):
            t = now - dt.timedelta(hours=h)
            f = fraud[c] and h < 7 * 24
            rows.append({
                "customer": c,
                "event_time": t,
                "txn_count_24h": rng.randint(15, 40) if f else rng.randint(0, 8),
                "amount_avg_24h": rng.uniform(5, 30) if f else rng.uniform(20, 200),
                "foreign_ratio_24h": rng.uniform(0.5, 1.0) if f else rng.uniform(0.0, 0.2),
            })
    token = ""
    for i in range(0, len(rows), 500):
        token = client.push("txn_stats", rows[i:i + 500], event_time_column="event_time")
    # Read-your-writes: one lookup with the token waits until every shard has them.
    client.get_online_features(feature_service=SERVICE, keys=customers, min_watermarks=token)
    return fraud


def labels(customers, fraud, now: dt.datetime, rng: random.Random) -> pd.DataFrame:
    """Labelled transactions: a customer, the time of the transaction, was it fraud."""
    out = []
    for c in customers:
        for _ in range(8):
            t = now - dt.timedelta(hours=rng.uniform(1, 13 * 24))
            out.append({"customer": c, "event_timestamp": t,
                        "is_fraud": int(fraud[c] and t > now - dt.timedelta(days=7))})
    return pd.DataFrame(out)


def run(seeds, n_customers: int = 200, seed: int = 1) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    rng = random.Random(seed)
    client = quiver.Client(seeds, deadline=10)
    now = dt.datetime.now(dt.timezone.utc)
    customers = [f"cust-{i}" for i in range(n_customers)]
    fraud = write_history(client, customers, now, rng)

    # Training: each label row joined with the features as of its own time.
    train = client.get_historical_features(labels(customers, fraud, now, rng), feature_service=SERVICE)
    X = train[FEATURES].to_numpy(dtype=float, na_value=0.0)
    y = train["is_fraud"].to_numpy()
    model = LogisticRegression(max_iter=1000).fit(X, y)
    print(f"trained on {len(train)} point-in-time rows")

    # Serving: the same feature service, the latest values, one batched lookup.
    live = client.get_online_features(feature_service=SERVICE, keys=customers)
    X_live = np.column_stack([live.to_numpy(f, fill=0.0) for f in FEATURES])
    scores = model.predict_proba(X_live)[:, 1]
    truth = np.array([fraud[c] for c in customers])
    auc = roc_auc_score(truth, scores)
    print(f"live AUC on {len(customers)} customers: {auc:.3f}")
    return auc


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="127.0.0.1:7070", help="node host:port, comma separated")
    p.add_argument("--customers", type=int, default=200)
    a = p.parse_args()
    run(a.seeds.split(","), a.customers)
