#!/bin/sh
# memory.sh — idle memory (VmRSS) of syncvol, meshnet and edge on the seed
# topology, against plain Syncthing (same number of folders and peers) and
# wireguard-go (same number of peers) in the same run; writes
# bench/results/memory.json and prints a table. Root only (network
# namespaces, dockerd). ~1.5 minutes plus the topology's start. Arguments go
# to the program (bench/memory): -volumes 3, -settle 45s, -samples 5, -out FILE.
#
# The instance: TOPO_PREFIX (default hf), TOPO_ROOT, TOPO_RUN as for
# scripts/topo.sh. BENCH_REUSE=1 uses an instance that is already up (and
# leaves it up); otherwise it is brought up (plugins, Swarm over the mesh)
# and torn down at the end.
#
# wireguard-go is installed once outside the repo, as bench/mesh.sh does:
#   GOBIN=/var/cache/homeswarm go install golang.zx2c4.com/wireguard@latest
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/memory: needs root (network namespaces, dockerd)" >&2; exit 1; }
WIREGUARD_GO=${WIREGUARD_GO:-/var/cache/homeswarm/wireguard}
if [ ! -x "$WIREGUARD_GO" ]; then
  echo "bench/memory: installing wireguard-go into $(dirname "$WIREGUARD_GO")" >&2
  GOBIN=$(dirname "$WIREGUARD_GO") go install golang.zx2c4.com/wireguard@latest
  [ "$(basename "$WIREGUARD_GO")" = wireguard ] || mv "$(dirname "$WIREGUARD_GO")/wireguard" "$WIREGUARD_GO"
fi
. bench/topology.sh
bench_topology hf
CGO_ENABLED=0 go run ./bench/memory -wireguard-go "$WIREGUARD_GO" "$@"
