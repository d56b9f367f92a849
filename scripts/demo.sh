#!/usr/bin/env bash
# demo.sh — the main job: bring up the seed topology (VPS + NAT box + three
# home nodes, each its own dockerd, in one Swarm), start a service at home
# whose data lives on a syncvol volume, and show what happened.
# `make demo-down` removes everything.
set -euo pipefail
cd "$(dirname "$0")/.."
T=scripts/topo.sh
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "bringing up the seed topology (about a minute)"
$T up

step "the Swarm, seen from the VPS"
$T docker vps node ls

step "a service at home, its data on a syncvol volume"
$T docker vps service rm demo-web >/dev/null 2>&1 || true
$T docker vps service create -q --detach --no-resolve-image --name demo-web \
  --constraint node.labels.location==home \
  --mount type=volume,source=demo-data,target=/data,volume-driver=syncvol \
  busybox sh -c 'trap "exit 0" TERM; echo "hello from $(hostname) at $(date)" >> /data/log; while :; do sleep 1; done' >/dev/null
for _ in $(seq 1 100); do
  node=$($T docker vps service ps demo-web --filter desired-state=running --format '{{.Node}} {{.CurrentState}}' | awk '$2=="Running"{print $1}')
  [ -n "$node" ] && break
  sleep 0.3
done
[ -n "$node" ] || { echo "the service did not start" >&2; exit 1; }
$T docker vps service ps demo-web
c=$($T docker "$node" ps -q --filter label=com.docker.swarm.service.name=demo-web)
step "inside the container on $node"
$T docker "$node" exec "$c" cat /data/log
step "the volume, as $node's engine sees it"
$T docker "$node" volume inspect demo-data

step "done: the topology stays up"
echo "  scripts/topo.sh docker vps service ls     # talk to any node's engine"
echo "  make demo-down                             # remove everything"
