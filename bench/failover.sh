#!/bin/sh
# failover.sh — how long a service at home takes to come back on another home
# node with its syncvol volume's data, against Swarm's own reschedule time
# (a plain service moved by the same event), for a drain and for an engine
# killed outright, on a topology instance of its own; writes
# bench/results/failover.json and prints a table. Root only (network
# namespaces, dockerd). ~10 minutes (3 rounds of each event, for a token
# written once and for SQLite committing continuously) plus the topology's
# start. Arguments go to the program (bench/failover): -rounds 3,
# -modes drain,kill, -workloads token,sqlite, -out FILE.
#
# The instance: TOPO_PREFIX (default hf), TOPO_ROOT, TOPO_RUN as for
# scripts/topo.sh. BENCH_REUSE=1 uses an instance that is already up (and
# leaves it up); otherwise it is brought up (plugins, Swarm over the mesh)
# and torn down at the end.
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/failover: needs root (network namespaces, dockerd)" >&2; exit 1; }
. bench/topology.sh
bench_topology hf
# The database workload's image (Debian's sqlite3, built once and cached).
DBIMAGES=sqlite scripts/dbimages.sh home1 home2 home3
CGO_ENABLED=0 go run ./bench/failover "$@"
