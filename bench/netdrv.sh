#!/bin/sh
# netdrv.sh — container-to-container TCP throughput and round-trip time
# across the home NAT through a meshnet network, against Docker's overlay
# over the mesh (and overlay --opt encrypted where the kernel allows it), in
# one run on a topology instance of its own; writes
# bench/results/netdrv.json and prints a table. Root only. ~2 minutes plus
# the topology's start. Arguments go to the program (bench/netdrv):
# -rounds 3, -seconds 6, -out FILE.
#
# The instance: TOPO_PREFIX (default hn), TOPO_ROOT, TOPO_RUN as for
# scripts/topo.sh. BENCH_REUSE=1 uses an instance that is already up (and
# leaves it up); otherwise it is brought up and torn down at the end.
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/netdrv: needs root (network namespaces, dockerd)" >&2; exit 1; }
command -v iperf3 >/dev/null || { echo "bench/netdrv: needs iperf3 (apt install iperf3)" >&2; exit 1; }
. bench/topology.sh
bench_topology hn
CGO_ENABLED=0 go run ./bench/netdrv "$@"
