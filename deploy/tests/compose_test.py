#!/usr/bin/env python3
"""The compose cluster end to end, as an operator runs it (scripts/test.sh runs this).

1. Builds the images with deploy/build-image.sh: the node image from the binaries the test
   command has just built, on a Debian base made locally with debootstrap (cached under
   the target directory), and the Tansu broker and Prometheus images from binaries on
   this host (no registry is reachable here).
2. Brings deploy/compose/docker-compose.yml up with podman-compose, unchanged: profile
   `tansu`, every service but Grafana (its image cannot be had here), on free loopback
   ports of this host.
3. Checks the image's health check (podman runs it on demand: no systemd timers here),
   waits for every node's readiness, pushes records through `quiverctl push` (produced to
   the broker, consumed by the replicas) and reads every one back with `quiverctl get`
   from the host, exactly.
4. Asks Prometheus for `up` of every node.
5. Kills one node container and checks every key is still served, with the same values.
6. Tears everything down and checks that no container, network or volume is left.

Prints the figures the deploy work reports: build time, image sizes, compose up to first
lookup served, the kill-one-node result.

Usage: compose_test.py --bin-dir DIR --tansu BIN [--prometheus BIN]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy/compose/docker-compose.yml"
PROJECT = "quiver-compose-test"
NODES = ["quiver1", "quiver2", "quiver3"]
SERVICES = ["tansu", "tansu-init", *NODES, "prometheus"]
KEYS = 120
IMAGES = {
    "QUIVER_IMAGE": "localhost/quiver:compose-test",
    "TANSU_IMAGE": "localhost/quiver-tansu:compose-test",
    "PROMETHEUS_IMAGE": "localhost/quiver-prometheus:compose-test",
}


def log(msg):
    print(f"compose-test: {msg}", flush=True)


def run(cmd, check=True, env=None, timeout=600):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(what, deadline_s, fn, interval=0.5):
    """Calls fn until it returns a true value or deadline_s pass; returns that value."""
    deadline = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except Exception as e:  # the last failure is reported at the deadline
            last = e
        time.sleep(interval)
    raise RuntimeError(f"timed out after {deadline_s} s waiting for {what} (last error: {last})")


class Cluster:
    def __init__(self, args):
        self.quiverctl = str(Path(args.bin_dir) / "quiverctl")
        self.ports = {n: free_port() for n in NODES}
        self.prometheus_port = free_port()
        self.env = dict(os.environ, **IMAGES)
        self.env.update({f"{n.upper()}_PORT": str(p) for n, p in self.ports.items()})
        self.env["PROMETHEUS_PORT"] = str(self.prometheus_port)
        self.env["QUIVER_PUBLISH_ADDR"] = "127.0.0.1"
        # Lookups from the host: the nodes advertise their compose names.
        self.env["QUIVER_CONNECT_TO"] = ",".join(
            f"{n}:7070=127.0.0.1:{p}" for n, p in self.ports.items())

    def compose(self, *args, check=True):
        return run(["podman-compose", "-p", PROJECT, "-f", str(COMPOSE_FILE),
                    "--profile", "tansu", *args], check=check, env=self.env)

    def ctl(self, node, *args, check=True):
        return run([self.quiverctl, "--addr", f"http://127.0.0.1:{self.ports[node]}", *args],
                   check=check, env=self.env, timeout=60)

    def container(self, service):
        return f"{PROJECT}_{service}_1"

    def leftovers(self):
        label = f"label=io.podman.compose.project={PROJECT}"
        found = []
        for kind, cmd in [
            ("container", ["podman", "ps", "-a", "--filter", label, "--format", "{{.Names}}"]),
            ("network", ["podman", "network", "ls", "--format", "{{.Name}}"]),
            ("volume", ["podman", "volume", "ls", "--format", "{{.Name}}"]),
        ]:
            for name in run(cmd).stdout.split():
                if kind == "container" or name.startswith(PROJECT):
                    found.append(f"{kind} {name}")
        return found

    def down(self):
        self.compose("down", "-v", "-t", "5", check=False)

    def dump_logs(self):
        for s in SERVICES:
            r = run(["podman", "logs", "--tail", "25", self.container(s)], check=False)
            print(f"----- {s}\n{r.stdout[-4000:]}{r.stderr[-4000:]}", file=sys.stderr)


def rows(now_micros):
    for i in range(KEYS):
        yield {"key": f"u{i}",
               "features": {"txn_count_1h": i * 7, "amount_sum_1h": i * 1.5 + 0.25},
               "event_time_micros": now_micros}


def check_all_keys(cluster, node, token):
    """Every pushed key through the smart client from the host, exactly; returns problems."""
    keys = ",".join(f"u{i}" for i in range(KEYS))
    out = cluster.ctl(node, "--output", "json", "get", "--features", "user_txn:*",
                      "--keys", keys, "--min-watermark", token).stdout
    got = {r["key"]: r["features"] for r in json.loads(out)["rows"]}
    problems = []
    for i in range(KEYS):
        f = got.get(f"u{i}")
        want = (i * 7, i * 1.5 + 0.25)
        have = None if f is None else (f["user_txn:txn_count_1h"].get("value"),
                                       f["user_txn:amount_sum_1h"].get("value"))
        if have != want:
            problems.append(f"u{i}: {have} != {want}")
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--tansu", required=True)
    ap.add_argument("--prometheus", default="/usr/bin/prometheus")
    args = ap.parse_args()

    t = time.monotonic()
    built = run(["bash", str(ROOT / "deploy/build-image.sh"), "--local-base",
                 "--prebuilt", args.bin_dir,
                 "--tag", IMAGES["QUIVER_IMAGE"],
                 "--tansu", args.tansu, "--tansu-tag", IMAGES["TANSU_IMAGE"],
                 "--prometheus", args.prometheus, "--prometheus-tag", IMAGES["PROMETHEUS_IMAGE"]],
                timeout=1800)
    for line in built.stdout.splitlines():
        log(line)
    log(f"images built in {time.monotonic() - t:.1f} s")

    cluster = Cluster(args)
    cluster.down()  # a run killed before its teardown
    ok = False
    try:
        up = time.monotonic()
        cluster.compose("up", "-d", *SERVICES)
        # The image's HEALTHCHECK (quiverctl health), run as the engine would.
        for n in NODES:
            poll(f"{n}'s container health check", 120, lambda n=n: run(
                ["podman", "healthcheck", "run", cluster.container(n)], check=False).returncode == 0)
        for n in NODES:
            poll(f"{n} ready", 240, lambda n=n: cluster.ctl(
                n, "health", "--service", "quiver.v1.Readiness", check=False).returncode == 0)
        log(f"three nodes ready {time.monotonic() - up:.1f} s after compose up")

        now_micros = int(time.time() * 1e6)
        push = ["push", "user_txn"]
        for r in rows(now_micros):
            push += ["--row", json.dumps(r)]
        pushed = poll("a push through the broker", 120, lambda: cluster.ctl("quiver1", *push).stdout)
        token = pushed.split("--min-watermark", 1)[1].split()[0]
        problems = poll("every key read back", 60,
                        lambda: check_all_keys(cluster, "quiver1", token) == [] or None)
        log(f"first lookup served {time.monotonic() - up:.1f} s after compose up "
            f"({KEYS} keys pushed and read back exactly; token {token})")

        def prometheus_up():
            url = (f"http://127.0.0.1:{cluster.prometheus_port}/api/v1/query?"
                   "query=up%7Bjob%3D%22quiver%22%7D")
            result = json.load(urllib.request.urlopen(url, timeout=5))["data"]["result"]
            up = {r["metric"]["instance"]: r["value"][1] for r in result}
            return up if up == {f"{n}:9100": "1" for n in NODES} else None
        log(f"prometheus: up = {poll('prometheus to scrape every node', 90, prometheus_up)}")

        # Placement settles after start-up (replicas move to balance the nodes): killing a
        # node while a shard's other replica is still bootstrapping would leave that shard
        # without a servable replica, which is not what this step tests.
        def settled():
            out = cluster.ctl("quiver1", "--output", "json", "status").stdout
            shards = json.loads(out.splitlines()[0])["cluster"]["shards"]
            return all(len(s["replicas"]) == 2 and
                       all(r["state"] == "serving" for r in s["replicas"])
                       for s in shards) or None
        poll("every shard to have two serving replicas", 120, settled)
        run(["podman", "kill", cluster.container("quiver2")])
        poll("quiver2 to stop", 30, lambda: run(
            ["podman", "inspect", "--format", "{{.State.Running}}", cluster.container("quiver2")]
        ).stdout.strip() == "false")
        killed = time.monotonic()
        problems = check_all_keys(cluster, "quiver1", token)
        if problems:
            raise RuntimeError(f"after killing quiver2, {len(problems)} keys wrong: {problems[:5]}")
        log(f"quiver2 killed: all {KEYS} keys still served exactly "
            f"({time.monotonic() - killed:.2f} s for the lookup)")
        ok = True
    finally:
        if not ok:
            cluster.dump_logs()
        cluster.down()
        left = cluster.leftovers()
        if left:
            print(f"compose-test: FAIL left behind: {left}", file=sys.stderr)
            ok = False
    if not ok:
        sys.exit(1)
    log("passed; nothing left behind")


if __name__ == "__main__":
    main()
