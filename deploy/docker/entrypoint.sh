#!/bin/sh
# Starts quiver-node. Without QUIVER_NODE_ID, the id comes from a StatefulSet-style host
# name ending in an ordinal (quiver-0 -> 1, quiver-1 -> 2, ...): node ids start at 1.
set -eu
if [ -z "${QUIVER_NODE_ID:-}" ]; then
    ordinal="${HOSTNAME##*-}"
    case "$ordinal" in
        ''|*[!0-9]*) echo "quiver-entrypoint: set QUIVER_NODE_ID (host name $HOSTNAME has no ordinal)" >&2; exit 2 ;;
    esac
    QUIVER_NODE_ID=$((ordinal + 1))
    export QUIVER_NODE_ID
fi
exec quiver-node "$@"
