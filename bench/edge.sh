#!/bin/sh
# edge.sh — edge's route latency vs Traefik's own swarm provider (15 s and 1 s
# polls), side by side in one run, on a topology instance of its own; writes
# bench/results/edge.json and prints a table. Root only (network namespaces,
# dockerd). Arguments go to the program (bench/edge): -n 8, -out FILE.
#
# The instance: TOPO_PREFIX (default hb), TOPO_ROOT, TOPO_RUN as for
# scripts/topo.sh. BENCH_REUSE=1 uses an instance that is already up (and
# leaves it up); otherwise it is brought up without plugins (edge needs none)
# and torn down at the end.
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/edge: needs root (network namespaces, dockerd)" >&2; exit 1; }
export TOPO_PREFIX=${TOPO_PREFIX:-hb}
export TOPO_ROOT=${TOPO_ROOT:-/var/lib/homeswarm-topo-$TOPO_PREFIX}
export TOPO_RUN=${TOPO_RUN:-/run/$TOPO_PREFIX}
if [ "${BENCH_REUSE:-0}" != 1 ]; then
  trap 'scripts/topo.sh down >/dev/null 2>&1 || true' EXIT
  # No plugins, so the Swarm runs on the plain addresses, not the mesh.
  TOPO_MESH=0 scripts/topo.sh up --no-plugins
fi
CGO_ENABLED=0 go run ./bench/edge "$@"
