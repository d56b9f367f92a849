#!/usr/bin/env bash
# demo.sh — the main job, told as a timeline: bring up the seed topology
# (VPS + NAT box + three home nodes, each its own dockerd, one Swarm over
# the meshnet mesh), start a stateful web service at home whose data lives
# on a syncvol volume, write data, drain its node, kill the next node
# outright, and show the service back each time with every byte.
# `make demo-down` removes everything.
set -euo pipefail
cd "$(dirname "$0")/.."
T=scripts/topo.sh
T0=$(date +%s.%N)
ts() { awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN{printf "%6.1fs", a-b}'; }
step() { printf '\n\033[1m[%s] %s\033[0m\n' "$(ts)" "$*"; }
note() { printf '[%s]   %s\n' "$(ts)" "$*"; }
die() { printf '\033[31mdemo: %s\033[0m\n' "$*" >&2; exit 1; }

step "bringing up the seed topology (a minute or two)"
$T up 2>&1 | sed 's/^/          /'

step "the Swarm, seen from the VPS: every node on its mesh address"
$T docker vps node ls --format '{{.Hostname}}\t{{.Status}}\t{{.Availability}}' | sed 's/^/          /'
for n in vps home1 home2 home3; do
  note "$n advertises $($T docker vps node inspect "$n" --format '{{.Status.Addr}}')"
done

step "building the demo service (static Go, docker import) on the home nodes"
IMAGES=demoapp scripts/images.sh home1 home2 home3 2>&1 | sed 's/^/          /'
# The busybox image serves as a client next to the service.

# task_node prints the node and container of the running task.
task() {
  local out
  out=$($T docker vps service ps demo --filter desired-state=running --format '{{.Node}} {{.CurrentState}}' 2>/dev/null | awk '$2=="Running"{print $1; exit}')
  [ -n "$out" ] || return 1
  local c
  c=$($T docker "$out" ps -q --filter label=com.docker.swarm.service.name=demo 2>/dev/null | head -1)
  [ -n "$c" ] || return 1
  echo "$out $c"
}
wait_task() { # wait_task [not-on-node]
  for _ in $(seq 1 400); do
    if t=$(task) && [ "${t%% *}" != "${1:-}" ]; then echo "$t"; return 0; fi
    sleep 0.25
  done
  return 1
}
# hit NODE CONTAINER PATH: a request to the service from inside its container's network.
hit() { $T docker "$1" run --rm --network "container:$2" busybox wget -qO- "http://127.0.0.1:8080$3"; }

step "docker service create … --mount type=volume,source=demo-data,target=/data,volume-driver=syncvol"
$T docker vps service rm demo >/dev/null 2>&1 || true
$T docker vps service create -q --detach --no-resolve-image --name demo \
  --constraint node.labels.location==home --stop-grace-period 5s --env NODE={{.Node.Hostname}} \
  --mount type=volume,source=demo-data,target=/data,volume-driver=syncvol \
  homeswarm/demoapp >/dev/null
read -r node c < <(wait_task) || die "the service did not start"
note "running on $node"

step "using it: 20 visits and a note, each acknowledged after fsync"
for _ in $(seq 1 20); do hit "$node" "$c" / >/dev/null; done
echo "the house keys are under the mat" | $T docker "$node" run --rm -i --network "container:$c" busybox \
  wget -qO- --post-file=/dev/stdin http://127.0.0.1:8080/notes/keys >/dev/null
note "$(hit "$node" "$c" /count)"

step "docker node update --availability drain $node"
t1=$(date +%s.%N)
$T docker vps node update --availability drain "$node" >/dev/null
read -r node2 c < <(wait_task "$node") || die "the service did not come back"
note "back on $node2 after $(awk -v a="$(date +%s.%N)" -v b="$t1" 'BEGIN{printf "%.1f", a-b}') s"
note "$(hit "$node2" "$c" /count)   (20 visits written on $node)"
note "note: $(hit "$node2" "$c" /notes/keys)"
$T docker vps node update --availability active "$node" >/dev/null

step "more visits on $node2, then its engine is killed outright (SIGKILL, no goodbye)"
for _ in $(seq 1 10); do hit "$node2" "$c" / >/dev/null; done
note "$(hit "$node2" "$c" /count)"
sleep 3
t1=$(date +%s.%N)
$T engine-stop "$node2" --kill
read -r node3 c < <(wait_task "$node2") || die "the service did not come back after the kill"
note "back on $node3 after $(awk -v a="$(date +%s.%N)" -v b="$t1" 'BEGIN{printf "%.1f", a-b}') s (Swarm first has to notice the node is gone)"
note "$(hit "$node3" "$c" /count)   (30 visits written before the kill)"
$T engine-start "$node2"
note "$node2's engine restarted; it catches up on its own"

step "the volume, as $node3's engine sees it"
$T docker "$node3" volume inspect demo-data --format '{{json .Status}}' | tr ',' '\n' | sed 's/^/          /'

step "done: the topology stays up"
echo "          scripts/topo.sh docker vps service ps demo    # talk to any node's engine"
echo "          make demo-down                                 # remove everything"
