#!/usr/bin/env python3
"""Validates what deploy/ ships, offline.

- Kubernetes: the base and every overlay render with kustomize (`kubectl kustomize`) and
  every resource validates against the Kubernetes schemas (`kubernetes-validate --strict`).
- Node configs: every quiver-node config shipped (compose's, and the node.toml inside each
  rendered ConfigMap) passes `quiver-node --check-config`, with the definition files they
  name (mount paths are mapped to the shipped files).
- Compose: the file parses; every service it depends on exists; every file it mounts exists.
- Prometheus: `promtool check config` and `promtool check rules`.
- Grafana: the dashboard parses, every panel queries the provisioned data source, and the
  variables `node` and `view` exist.

Usage: validate.py QUIVER_NODE_BINARY. Exits non-zero with every problem listed.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent.parent
problems = []


def problem(msg):
    problems.append(msg)
    print(f"FAIL {msg}", file=sys.stderr)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def check_config(node_bin, config_text, definitions, what):
    """quiver-node --check-config on config_text; definitions maps mount paths to files."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "node.toml"
        cfg.write_text(config_text)
        env = dict(os.environ)
        # What the image's entrypoint or the orchestrator provides per node.
        env["QUIVER_NODE_ID"] = "1"
        # ... and the Secret's token files.
        for key in ["bootstrap", "cluster"]:
            token = Path(tmp) / f"{key}-token"
            token.write_text(os.urandom(16).hex())
            env[f"QUIVER_AUTH_{key.upper()}_TOKEN_FILE"] = str(token)
        files = [str(definitions[p]) for p in definitions]
        if files:
            env["QUIVER_DEFINITIONS"] = ",".join(files)
        r = run([node_bin, "--check-config", "--config", str(cfg)], env=env)
        if r.returncode != 0:
            problem(f"{what}: quiver-node --check-config: {r.stderr.strip() or r.stdout.strip()}")
        else:
            print(f"ok   {what}: {r.stdout.strip()}")


def kubernetes(node_bin):
    kustomizations = [DEPLOY / "k8s/base"] + sorted(
        p for p in (DEPLOY / "k8s/overlays").iterdir() if p.is_dir()
    )
    for k in kustomizations:
        name = k.relative_to(DEPLOY)
        r = run(["kubectl", "kustomize", str(k)])
        if r.returncode != 0:
            problem(f"{name}: kustomize: {r.stderr.strip()}")
            continue
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(r.stdout)
            rendered = f.name
        v = run(["kubernetes-validate", "--strict", "--quiet", rendered])
        if v.returncode != 0:
            problem(f"{name}: kubernetes-validate: {v.stdout.strip()} {v.stderr.strip()}")
        else:
            print(f"ok   {name}: every resource validates against the Kubernetes schemas")
        docs = [d for d in yaml.safe_load_all(r.stdout) if d]
        os.unlink(rendered)
        kinds = {d["kind"] for d in docs}
        for want in ["StatefulSet", "Service", "PodDisruptionBudget", "ConfigMap"]:
            if want not in kinds:
                problem(f"{name}: no {want}")
        for cm in (d for d in docs if d["kind"] == "ConfigMap"):
            data = cm.get("data", {})
            if "node.toml" not in data:
                problem(f"{name}: ConfigMap {cm['metadata']['name']} has no node.toml")
                continue
            with tempfile.TemporaryDirectory() as tmp:
                defs = {}
                for key, text in data.items():
                    if key.endswith(".toml") and key != "node.toml":
                        p = Path(tmp) / key
                        p.write_text(text)
                        defs[f"/etc/quiver/{key}"] = p
                check_config(node_bin, data["node.toml"], defs, f"{name} ConfigMap node.toml")
        for sts in (d for d in docs if d["kind"] == "StatefulSet"):
            c = sts["spec"]["template"]["spec"]["containers"][0]
            probe = c.get("readinessProbe", {}).get("grpc", {})
            if probe.get("service") != "quiver.v1.Readiness":
                problem(f"{name}: readiness probe is not the gRPC health service quiver.v1.Readiness")
            if "preStop" not in c.get("lifecycle", {}):
                problem(f"{name}: no preStop drain")
            if not sts["spec"].get("volumeClaimTemplates"):
                problem(f"{name}: no volumeClaimTemplates")


def compose(node_bin):
    path = DEPLOY / "compose/docker-compose.yml"
    doc = yaml.safe_load(path.read_text())
    services = doc.get("services", {})
    for want in ["kafka", "kafka-init", "producer", "tansu", "tansu-init", "quiver1", "quiver2",
                 "quiver3", "prometheus", "grafana"]:
        if want not in services:
            problem(f"compose: no service {want}")
    for name, svc in services.items():
        deps = svc.get("depends_on", [])
        profiles = set(svc.get("profiles", []))
        for d in deps if isinstance(deps, list) else deps.keys():
            if d not in services:
                problem(f"compose: {name} depends on unknown service {d}")
                continue
            # A dependency must be up whenever its dependant is: no profile of its own,
            # or one the dependant always shares.
            dep_profiles = set(services[d].get("profiles", []))
            if dep_profiles and not (profiles and profiles <= dep_profiles):
                problem(f"compose: {name} depends on {d}, which only runs in profiles {sorted(dep_profiles)}")
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith(".") and not (path.parent / src).exists():
                problem(f"compose: {name} mounts missing file {src}")
        build = svc.get("build")
        if build and not (path.parent / build["context"] / build["dockerfile"]).exists():
            problem(f"compose: {name} builds from a missing Dockerfile")
    print(f"ok   compose: {len(services)} services, references resolve")
    check_config(
        node_bin,
        (DEPLOY / "compose/node.toml").read_text(),
        {"/etc/quiver/definitions.toml": DEPLOY / "compose/definitions.toml"},
        "compose node.toml",
    )


def prometheus():
    for args in (["check", "config", str(DEPLOY / "prometheus/prometheus.yml")],
                 ["check", "rules", str(DEPLOY / "prometheus/alerts.yml")]):
        r = run(["promtool"] + args)
        if r.returncode != 0:
            problem(f"promtool {' '.join(args[:2])}: {r.stdout.strip()} {r.stderr.strip()}")
        else:
            print(f"ok   promtool {args[1]} {Path(args[2]).name}")


def grafana():
    dash = json.loads((DEPLOY / "grafana/quiver.json").read_text())
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    variables = {v["name"] for v in dash["templating"]["list"]}
    for want in ["node", "view"]:
        if want not in variables:
            problem(f"dashboard: no variable {want}")
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    for p in panels:
        if not p.get("targets"):
            problem(f"dashboard panel {p['title']!r} has no query")
        for t in p.get("targets", []):
            if t.get("datasource", {}).get("uid") != uid or not t.get("expr"):
                problem(f"dashboard panel {p['title']!r}: query without the provisioned data source")
    print(f"ok   dashboard: {len(panels)} panels")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    node_bin = sys.argv[1]
    for tool in ["kubectl", "kubernetes-validate", "promtool"]:
        if not shutil.which(tool):
            problem(f"{tool} is not installed (scripts/setup.sh installs it)")
    if not problems:
        kubernetes(node_bin)
        compose(node_bin)
        prometheus()
        grafana()
    if problems:
        sys.exit(f"{len(problems)} problem(s) in deploy/")
    print("deploy/: all checks passed")


if __name__ == "__main__":
    main()
