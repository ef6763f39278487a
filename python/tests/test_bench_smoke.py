"""The Python SDK bench (python/bench/online_bench.py) runs end to end on debug builds:
every system answers and the report is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cluster import _target_bin

BENCH = Path(__file__).resolve().parent.parent / "bench" / "online_bench.py"


def test_bench_runs_every_system(tmp_path):
    env = {
        **os.environ,
        "QUIVER_NODE_BIN": _target_bin("quiver-node", "QUIVER_NODE_BIN"),
        "QUIVER_BENCH_BIN": _target_bin("quiver-bench", "QUIVER_BENCH_BIN"),
    }
    subprocess.run(
        [sys.executable, str(BENCH), "--out", str(tmp_path), "--entities", "300", "--cases", "1,20",
         "--warmup", "0.1", "--measure", "0.3", "--concurrency", "3"],
        check=True, env=env, timeout=600,
    )
    report = json.loads((tmp_path / "report.json").read_text())["results"]
    assert set(report) == {"1x50", "20x50"}
    for case in report.values():
        assert set(case) == {"quiver-python", "quiver-rust", "feast-python-sdk", "feast-feature-server",
                             "quiver-python threads=3", "quiver-python asyncio=3", "quiver-rust tasks=3",
                             "feast-python-sdk threads=3"}
        for r in case.values():
            assert r["calls"] > 0 and r["p50_us"] > 0 and r["calls_per_cpu_sec"] > 0
    md = (tmp_path / "report.md").read_text()
    assert "Python / Rust" in md and "quiver-python asyncio=3" in md
