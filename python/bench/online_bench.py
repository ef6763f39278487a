"""Python SDK bench: `get_online_features(...).to_pandas()` against the Rust client and
against Feast's Python SDK and feature server, on the same rows, in one run.

    python3 python/bench/online_bench.py --out docs/bench/DATE/python-sdk

Starts the Tansu broker and one release `quiver-node` (R = 1), writes ENTITIES rows of 50
float64 features through the SDK, and the same rows into Redis for Feast. Each system is
driven in a closed loop (one call at a time, one client) for each case (keys × features):
latency p50/p99, calls/s, and calls per second of *client* CPU (user + system of every
thread of the calling process — for quiver that includes the client's tokio runtime).
Then the throughput of one client process serving concurrent callers (--concurrency:
quiver with threads and with asyncio tasks, the Rust client with tasks, Feast's
synchronous SDK with threads). The Rust client runs as `quiver-bench client-loop`
(release). Writes `report.json` and `report.md` into --out.

Needs: release builds of quiver-node and quiver-bench (`cargo build --release -p
quiver-node -p quiver-bench`), the SDK installed (`pip install ./python`), feast[redis]
and redis-server (scripts/setup.sh installs both).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import List

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import quiver  # noqa: E402
from cluster import Cluster, free_port, wait_port, wait_until  # noqa: E402

FEATURES = 50


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def keys_of(n: int):
    return [f"u{i:07d}" for i in range(n)]


def values(entities: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1024, size=(entities, FEATURES))


def closed_loop(call, batches, warmup: float, measure: float) -> dict:
    """Calls ``call(keys)`` one at a time, cycling through ``batches``."""
    i = 0
    end = time.monotonic() + warmup
    while time.monotonic() < end:
        call(batches[i % len(batches)])
        i += 1
    lat = []
    c0, t0 = cpu(), time.monotonic()
    while time.monotonic() - t0 < measure:
        s = time.perf_counter()
        call(batches[i % len(batches)])
        lat.append(time.perf_counter() - s)
        i += 1
    return summary(lat, time.monotonic() - t0, cpu() - c0)


def concurrent_loop(call, batches, threads: int, warmup: float, measure: float) -> dict:
    """``threads`` callers, each calling ``call(keys)`` one at a time (as a threaded
    server's workers would); throughput and the CPU of the whole process."""
    stop, measuring = threading.Event(), threading.Event()
    lat: List[List[float]] = [[] for _ in range(threads)]

    def worker(n: int) -> None:
        i = n
        while not stop.is_set():
            s = time.perf_counter()
            call(batches[i % len(batches)])
            if measuring.is_set():
                lat[n].append(time.perf_counter() - s)
            i += 1

    pool = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(threads)]
    for t in pool:
        t.start()
    time.sleep(warmup)  # a benchmark's warm-up, not synchronisation
    c0, t0 = cpu(), time.monotonic()
    measuring.set()
    time.sleep(measure)
    measuring.clear()
    wall, cpu_s = time.monotonic() - t0, cpu() - c0
    stop.set()
    for t in pool:
        t.join()
    return summary([x for per in lat for x in per], wall, cpu_s)


def async_loop(acall, batches, tasks: int, warmup: float, measure: float) -> dict:
    """``tasks`` asyncio tasks on one event loop, each awaiting ``acall(keys)`` in turn
    (as an asyncio server's handlers would)."""
    lat: List[float] = []

    async def run() -> tuple:
        state = {"measuring": False, "stop": False}

        async def worker(n: int) -> None:
            i = n
            while not state["stop"]:
                s = time.perf_counter()
                await acall(batches[i % len(batches)])
                if state["measuring"]:
                    lat.append(time.perf_counter() - s)
                i += 1

        workers = [asyncio.ensure_future(worker(n)) for n in range(tasks)]
        await asyncio.sleep(warmup)
        c0, t0 = cpu(), time.monotonic()
        state["measuring"] = True
        await asyncio.sleep(measure)
        state["measuring"] = False
        wall, cpu_s = time.monotonic() - t0, cpu() - c0
        state["stop"] = True
        await asyncio.gather(*workers)
        return wall, cpu_s

    wall, cpu_s = asyncio.run(run())
    return summary(lat, wall, cpu_s)


def summary(lat: List[float], wall: float, cpu_s: float) -> dict:
    us = np.array(lat) * 1e6
    return {
        "calls": len(lat),
        "p50_us": float(np.percentile(us, 50)),
        "p99_us": float(np.percentile(us, 99)),
        "calls_per_sec": len(lat) / wall,
        "cpu_secs": cpu_s,
        "calls_per_cpu_sec": len(lat) / cpu_s if cpu_s > 0 else 0.0,
    }


def batches_for(keys, batch: int, n: int = 64):
    rng = np.random.default_rng(batch)
    return [list(rng.choice(keys, size=batch, replace=False)) for _ in range(n)]


# ---- quiver ---------------------------------------------------------------------------

VIEW = "bench"
DEFS = (
    '[[entity]]\nname = "user"\nkey_type = "string"\n'
    f'[[view]]\nname = "{VIEW}"\nentity = "user"\n[view.source]\ntopic = "{VIEW}"\n'
    'event_time_field = "ts"\nevent_time_unit = "micros"\n'
    + "".join(f'[[view.feature]]\nname = "f{i}"\ntype = "float64"\n' for i in range(FEATURES))
)


def load_quiver(client: quiver.Client, keys, vals) -> None:
    token = ""
    for start in range(0, len(keys), 1000):
        rows = [{"user": k, **{f"f{j}": float(v[j]) for j in range(FEATURES)}}
                for k, v in zip(keys[start:start + 1000], vals[start:start + 1000])]
        token = client.push(VIEW, rows)
    client.get_online_features([f"{VIEW}:f0"], keys=keys[:1], min_watermarks=token)


def rust_loop(bench_bin: str, seeds, entities: int, batch: int, warmup: float, measure: float,
              concurrency: int = 1) -> dict:
    out = subprocess.run(
        [bench_bin, "client-loop", "--seeds", ",".join(seeds), "--view", VIEW,
         "--features", str(FEATURES), "--entities", str(entities), "--batch", str(batch),
         "--warmup", f"{warmup}s", "--measure", f"{measure}s", "--concurrency", str(concurrency)],
        check=True, capture_output=True, text=True,
    )
    r = json.loads(out.stdout)
    r["calls_per_sec"] = r["calls"] / r["wall_secs"]
    return r


# ---- Feast ------------------------------------------------------------------------------

def start_feast(work: Path, keys, vals):
    """Redis + a Feast repo with the same rows; returns (redis, store, server, port)."""
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(redis_port, "redis", redis)
    repo = work / "feast_repo"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text(
        "project: quiverpybench\nregistry: registry.db\nprovider: local\nonline_store:\n"
        f"  type: redis\n  connection_string: \"127.0.0.1:{redis_port},db=1\"\n"
        "entity_key_serialization_version: 3\n")
    (repo / "definitions.py").write_text(
        "from datetime import timedelta\nfrom feast import Entity, FeatureView, Field, FileSource, ValueType\n"
        "from feast.types import Float64\n"
        "user = Entity(name='user', join_keys=['user_id'], value_type=ValueType.STRING)\n"
        "source = FileSource(path='data.parquet', timestamp_field='ts')\n"
        f"bench = FeatureView(name='{VIEW}', entities=[user], ttl=timedelta(days=3650), online=True, "
        f"source=source, schema=[Field(name=f'f{{i}}', dtype=Float64) for i in range({FEATURES})])\n")
    now = pd.Timestamp.now(tz="UTC")
    df = pd.DataFrame({"user_id": keys, "ts": [now] * len(keys),
                       **{f"f{j}": vals[:, j] for j in range(FEATURES)}})
    df.iloc[:1].to_parquet(repo / "data.parquet")
    subprocess.run(["feast", "apply"], cwd=repo, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    for start in range(0, len(df), 2000):
        store.write_to_online_store(VIEW, df.iloc[start:start + 2000])
    port = free_port()
    server = subprocess.Popen(["feast", "serve", "-h", "127.0.0.1", "-p", str(port), "--no-access-log"],
                              cwd=repo, stdout=subprocess.DEVNULL, stderr=open(work / "feast_serve.log", "wb"))
    wait_port(port, "feast serve", server)
    return redis, store, server, port


def feast_server_call(port: int, refs):
    conn = http.client.HTTPConnection("127.0.0.1", port)

    def post(body):
        conn.request("POST", "/get-online-features", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        return r, r.read()

    def call(keys):
        body = json.dumps({"features": refs, "entities": {"user_id": list(keys)}})
        try:
            r, data = post(body)
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # The server closed an idle keep-alive connection: reconnect once.
            conn.close()
            r, data = post(body)
        if r.status != 200:
            raise RuntimeError(f"feast serve: HTTP {r.status}: {data[:200]!r}")
        doc = json.loads(data)
        names = doc["metadata"]["feature_names"]
        return pd.DataFrame({n: res["values"] for n, res in zip(names, doc["results"])})

    return call


# ---- run --------------------------------------------------------------------------------

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--entities", type=int, default=5000)
    p.add_argument("--cases", default="1,100", help="keys per call, comma separated (50 features each)")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--measure", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=32,
                   help="callers in the concurrent runs (threads, asyncio tasks); 0 skips them")
    p.add_argument("--no-feast", action="store_true")
    a = p.parse_args()
    target = Path(os.environ.get("CARGO_TARGET_DIR", "/var/tmp/quiver-target")) / "release"
    node_bin = os.environ.get("QUIVER_NODE_BIN", str(target / "quiver-node"))
    bench_bin = os.environ.get("QUIVER_BENCH_BIN", str(target / "quiver-bench"))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="quiver-pybench-"))
    keys, vals = keys_of(a.entities), values(a.entities, 42)
    refs = [f"{VIEW}:f{i}" for i in range(FEATURES)]
    cases = [int(c) for c in a.cases.split(",")]
    results = {}
    cluster = Cluster(DEFS, [VIEW], n=1, replication=1, node_bin=node_bin)
    feast = None
    try:
        client = quiver.Client(cluster.seeds(), deadline=5)
        wait_until(lambda: client.get_online_features(refs[:1], keys=keys[:1]), "view bench to serve")
        load_quiver(client, keys, vals)
        if not a.no_feast:
            feast = start_feast(work, keys, vals)
        aclient = quiver.AsyncClient(cluster.seeds(), deadline=5)
        for batch in cases:
            name = f"{batch}x{FEATURES}"
            bs = batches_for(keys, batch)

            def py_call(k):
                return client.get_online_features(refs, keys=k).to_pandas()

            async def py_acall(k):
                return (await aclient.get_online_features(refs, keys=k)).to_pandas()

            res = {}
            res["quiver-python"] = closed_loop(py_call, bs, a.warmup, a.measure)
            got = py_call(bs[0])
            row = keys.index(bs[0][0])
            assert abs(got[f"{VIEW}:f3"][0] - vals[row, 3]) == 0, "quiver returned a wrong value"
            res["quiver-rust"] = rust_loop(bench_bin, cluster.seeds(), a.entities, batch, a.warmup, a.measure)
            feast_sdk = None
            if feast is not None:
                _, store, _, port = feast

                def feast_sdk(k):
                    return store.get_online_features(features=refs, entity_rows=[{"user_id": x} for x in k]).to_df()

                res["feast-python-sdk"] = closed_loop(feast_sdk, bs, a.warmup, a.measure)
                res["feast-feature-server"] = closed_loop(feast_server_call(port, refs), bs, a.warmup, a.measure)
            if a.concurrency > 0:
                c = a.concurrency
                res[f"quiver-python threads={c}"] = concurrent_loop(py_call, bs, c, a.warmup, a.measure)
                res[f"quiver-python asyncio={c}"] = async_loop(py_acall, bs, c, a.warmup, a.measure)
                res[f"quiver-rust tasks={c}"] = rust_loop(bench_bin, cluster.seeds(), a.entities, batch,
                                                          a.warmup, a.measure, c)
                if feast_sdk is not None:
                    res[f"feast-python-sdk threads={c}"] = concurrent_loop(feast_sdk, bs, c, a.warmup, a.measure)
            results[name] = res
            print(name, json.dumps({k: {m: round(v, 1) for m, v in r.items()} for k, r in res.items()}), flush=True)
    finally:
        if feast is not None:
            redis, _, server, _ = feast
            for proc in (server, redis):
                proc.terminate()
                proc.wait()
        cluster.close()
        shutil.rmtree(work, ignore_errors=True)
    report(out, results, a)


def report(out: Path, results: dict, a) -> None:
    (out / "report.json").write_text(json.dumps({"entities": a.entities, "measure_secs": a.measure,
                                                 "results": results}, indent=2))
    lines = [
        "# Python SDK: online lookups, closed loop, one client",
        "",
        f"{a.entities} entities × {FEATURES} float64 features; one quiver node (R = 1) and Tansu; Feast 0.67 on "
        f"Redis; {a.measure:.0f} s measured per system and case; `to_pandas()` / `to_df()` on every call.",
        "",
        "| case | system | p50 µs | p99 µs | calls/s | calls per client CPU s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for case, res in results.items():
        for system, r in res.items():
            lines.append(f"| {case} | {system} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | {r['calls_per_sec']:.0f} "
                         f"| {r['calls_per_cpu_sec']:.0f} |")
    lines += ["", "| case | p50 Python / Rust | throughput Python / Feast SDK | Python / Feast server |",
              "|---|---:|---:|---:|"]
    for case, res in results.items():
        py, rust = res["quiver-python"], res["quiver-rust"]
        sdk, srv = res.get("feast-python-sdk"), res.get("feast-feature-server")
        per_call = f"{py['p50_us'] / rust['p50_us']:.2f}×"
        vs_sdk = f"{py['calls_per_sec'] / sdk['calls_per_sec']:.1f}×" if sdk else "–"
        vs_srv = f"{py['calls_per_sec'] / srv['calls_per_sec']:.1f}×" if srv else "–"
        lines.append(f"| {case} | {per_call} | {vs_sdk} | {vs_srv} |")
    if a.concurrency > 0:
        c = a.concurrency
        lines += ["", f"Throughput of one client process, one call at a time and with {c} callers "
                      "(threads; asyncio tasks), against Feast's SDK in its best mode (one at a time, or "
                      f"{c} threads: it is synchronous) — each ratio against Feast's higher number:", "",
                  "| case | quiver mode | calls/s | calls per client CPU s | Feast SDK best calls/s "
                  "| best per client CPU s | ratio calls/s | ratio per CPU s |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        for case, res in results.items():
            feast_modes = [res[m] for m in ("feast-python-sdk", f"feast-python-sdk threads={c}") if m in res]
            if not feast_modes:
                continue
            best_calls = max(f["calls_per_sec"] for f in feast_modes)
            best_cpu = max(f["calls_per_cpu_sec"] for f in feast_modes)
            for mode in ("quiver-python", f"quiver-python threads={c}", f"quiver-python asyncio={c}"):
                q = res.get(mode)
                if q is None:
                    continue
                lines.append(f"| {case} | {mode} | {q['calls_per_sec']:.0f} | {q['calls_per_cpu_sec']:.0f} "
                             f"| {best_calls:.0f} | {best_cpu:.0f} | {q['calls_per_sec'] / best_calls:.1f}× "
                             f"| {q['calls_per_cpu_sec'] / best_cpu:.1f}× |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
