#!/usr/bin/env bash
# Builds quiver's container image from this repository in one step: compiles quiver-node
# and quiverctl on the host (cargo, the persistent target directory), stages them with the
# entrypoint and builds deploy/docker/Dockerfile on the base image the operator names.
# Optionally also builds the compose cluster's Tansu broker and Prometheus images from
# binaries on the host, for machines that cannot pull images. Prints each image's size.
#
# Usage: deploy/build-image.sh [options]
#   --base IMAGE          base image (default docker.io/library/debian:bookworm-slim)
#   --local-base          no registry: a minimal Debian bookworm root filesystem made with
#                         debootstrap (cached under $CARGO_TARGET_DIR/images, so it is
#                         made once), imported as localhost/quiver-base:bookworm. Needs
#                         root, debootstrap and a Debian mirror ($QUIVER_DEBIAN_MIRROR).
#   --profile P           cargo profile of the binaries: release (default) or debug
#   --prebuilt DIR        take quiver-node and quiverctl from DIR instead of running cargo
#                         (e.g. the debug binaries the test command has just built)
#   --tag TAG             node image tag (default localhost/quiver:dev)
#   --tansu BIN           also build the Tansu broker image from BIN
#   --tansu-tag TAG       its tag (default localhost/quiver-tansu:dev)
#   --prometheus BIN      also build the Prometheus image from BIN
#   --prometheus-tag TAG  its tag (default localhost/quiver-prometheus:dev)
#
# The container engine is $CONTAINER_ENGINE, else podman, else docker. Builds are
# reproducible for the same binaries and base: file and image timestamps are the last
# commit's time (SOURCE_DATE_EPOCH), and binaries are stripped of debug information.
set -euo pipefail
cd "$(dirname "$0")/.."

base=docker.io/library/debian:bookworm-slim
local_base=false
profile=release
prebuilt=
tag=localhost/quiver:dev
tansu_bin=
tansu_tag=localhost/quiver-tansu:dev
prometheus_bin=
prometheus_tag=localhost/quiver-prometheus:dev
while [ $# -gt 0 ]; do
    case "$1" in
        --base) base="$2"; shift 2 ;;
        --local-base) local_base=true; shift ;;
        --profile) profile="$2"; shift 2 ;;
        --prebuilt) prebuilt="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        --tansu) tansu_bin="$2"; shift 2 ;;
        --tansu-tag) tansu_tag="$2"; shift 2 ;;
        --prometheus) prometheus_bin="$2"; shift 2 ;;
        --prometheus-tag) prometheus_tag="$2"; shift 2 ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "build-image: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$profile" in
    release|debug) ;;
    *) echo "build-image: --profile must be release or debug, not $profile" >&2; exit 2 ;;
esac

engine="${CONTAINER_ENGINE:-}"
if [ -z "$engine" ]; then
    if command -v podman >/dev/null; then engine=podman; else engine=docker; fi
fi
command -v "$engine" >/dev/null || { echo "build-image: $engine not found" >&2; exit 1; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/quiver-target}"
# Not exported: cargo's build scripts must see the same environment as other builds.
source_date_epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
started=$(date +%s)

image_exists() {
    "$engine" image inspect "$1" >/dev/null 2>&1
}

# A minimal Debian root filesystem, imported as an image (debian:bookworm-slim's content,
# less apt's caches, documentation and locales).
make_local_base() {
    local image=localhost/quiver-base:bookworm
    local cache="$CARGO_TARGET_DIR/images/debian-bookworm-minbase.tar"
    if ! [ -s "$cache" ]; then
        command -v debootstrap >/dev/null || { echo "build-image: --local-base needs debootstrap" >&2; exit 1; }
        [ "$(id -u)" -eq 0 ] || { echo "build-image: --local-base needs root (debootstrap)" >&2; exit 1; }
        local tmp
        tmp="$(mktemp -d "$CARGO_TARGET_DIR/debootstrap.XXXXXX")"
        echo "build-image: making a Debian bookworm base with debootstrap (once; cached in $cache)" >&2
        debootstrap --variant=minbase bookworm "$tmp/rootfs" \
            "${QUIVER_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$tmp/debootstrap.log" 2>&1 \
            || { tail -20 "$tmp/debootstrap.log" >&2; exit 1; }
        rm -rf "$tmp/rootfs"/usr/share/{doc,man,info,locale}/* "$tmp/rootfs"/var/lib/apt/lists/* \
            "$tmp/rootfs"/var/cache/apt/*.bin "$tmp/rootfs"/var/cache/apt/archives/*.deb
        mkdir -p "$(dirname "$cache")"
        tar -C "$tmp/rootfs" --numeric-owner -cf "$cache.part" .
        mv "$cache.part" "$cache"
        rm -rf "$tmp"
    fi
    if ! image_exists "$image"; then
        "$engine" import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["/bin/bash"]' "$cache" "$image" >/dev/null
    fi
    echo "$image"
}

if $local_base; then
    base="$(make_local_base)"
fi

# Binaries: cargo on the host, stripped of debug information (symbols stay for
# backtraces).
if [ -z "$prebuilt" ]; then
    cargo_flags=(--locked -p quiver-node -p quiver-client --bins)
    [ "$profile" = release ] && cargo_flags+=(--release)
    cargo build "${cargo_flags[@]}"
    prebuilt="$CARGO_TARGET_DIR/$profile"
fi
context="$CARGO_TARGET_DIR/image-context"
rm -rf "$context"
mkdir -p "$context/node"
for bin in quiver-node quiverctl; do
    [ -x "$prebuilt/$bin" ] || { echo "build-image: no $bin in $prebuilt" >&2; exit 1; }
    objcopy --strip-debug "$prebuilt/$bin" "$context/node/$bin"
done
install -m 0755 deploy/docker/entrypoint.sh "$context/node/entrypoint.sh"

build() { # tag dockerfile context
    local args=(build --build-arg "BASE=$base" -f "$2" -t "$1")
    if [ "$engine" = podman ]; then
        # Docker image format keeps HEALTHCHECK; --timestamp makes layers reproducible.
        args+=(--format docker --timestamp "$source_date_epoch")
    fi
    "$engine" "${args[@]}" "$3" >&2
    local bytes
    bytes="$("$engine" image inspect --format '{{.Size}}' "$1")"
    echo "build-image: $1 ($(numfmt --to=iec --suffix=B "$bytes"), base $base)"
}

build "$tag" deploy/docker/Dockerfile "$context/node"
if [ -n "$tansu_bin" ]; then
    mkdir -p "$context/tansu"
    install -m 0755 "$tansu_bin" "$context/tansu/tansu"
    build "$tansu_tag" deploy/docker/tansu.Dockerfile "$context/tansu"
fi
if [ -n "$prometheus_bin" ]; then
    mkdir -p "$context/prometheus"
    install -m 0755 "$prometheus_bin" "$context/prometheus/prometheus"
    build "$prometheus_tag" deploy/docker/prometheus.Dockerfile "$context/prometheus"
fi
echo "build-image: done in $(($(date +%s) - started)) s"
