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
. bench/topology.sh
bench_topology hb --no-plugins # edge needs no plugins: the Swarm on the plain addresses
CGO_ENABLED=0 go run ./bench/edge "$@"
