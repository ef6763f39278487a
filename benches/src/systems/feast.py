# Prepares and loads the Feast peer of quiver-bench (run by the tool, not by hand).
#   feast.py prepare REPO FEATURES          dummy offline source for `feast apply`
#   feast.py load REPO ENTITIES SEED FEATURES  writes the bench dataset to the online store
# Values are the bench dataset's (splitmix64 of seed, entity, feature), vectorised.
import datetime
import sys

import numpy as np
import pandas as pd

M = np.uint64


def mix(z):
    with np.errstate(over="ignore"):
        z = z + M(0x9E3779B97F4A7C15)
        z = (z ^ (z >> M(30))) * M(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> M(27))) * M(0x94D049BB133111EB)
        return z ^ (z >> M(31))


def frame(keys, ks, seed, f, now):
    cols = {"user_id": keys, "ts": [now] * len(keys)}
    base = M(seed) ^ (ks << M(20))
    for i in range(f):
        # Same bits as Dataset::value: a 53-bit significand scaled into [0, 1024).
        cols[f"f{i}"] = (mix(base ^ M(i)) >> M(11)).astype(np.float64) / 2.0**53 * 1024.0
    return pd.DataFrame(cols)


def main():
    mode, repo = sys.argv[1], sys.argv[2]
    now = datetime.datetime.now(datetime.timezone.utc)
    if mode == "prepare":
        features = [int(x) for x in sys.argv[3].split(",")]
        frame(["u0000000"], np.arange(1, dtype=np.uint64), 0, max(features), now).to_parquet(
            f"{repo}/data.parquet"
        )
        return
    from feast import FeatureStore

    entities, seed = int(sys.argv[3]), int(sys.argv[4])
    features = [int(x) for x in sys.argv[5].split(",")]
    store = FeatureStore(repo_path=repo)
    ks = np.arange(entities, dtype=np.uint64)
    keys = [f"u{i:07d}" for i in range(entities)]
    for f in features:
        df = frame(keys, ks, seed, f, now)
        step = 2000
        for start in range(0, entities, step):
            store.write_to_online_store(f"bench_f{f}", df.iloc[start : start + step])
            print(f"{f} {min(start + step, entities)}", flush=True)


main()
