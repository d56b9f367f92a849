#!/usr/bin/env bash
# demo.sh — the main job, told as a timeline: bring up the seed topology
# (VPS + NAT box + three home nodes, each its own dockerd, one Swarm over
# the meshnet mesh), start Traefik and edge on the VPS, start a stateful web
# service at home whose data lives on a syncvol volume and reach it through
# Traefik by host name, write data, drain its node, kill the next node
# outright, let a fourth home node join with one key, move the service there,
# and show it back each time with every byte.
# `make demo-down` removes everything.
#
# Honours TOPO_PREFIX / TOPO_ROOT / TOPO_RUN (scripts/topo.sh) to run beside
# another topology.
set -euo pipefail
cd "$(dirname "$0")/.."
T=scripts/topo.sh
T0=$(date +%s.%N)

# ---- The service's network. ONE place chooses its driver: meshnet's own
# network driver (a managed plugin's driver is named with its tag), which
# gives containers on every node one network encrypted by the mesh. Docker's
# overlay works too (its VXLAN between the Swarm's mesh addresses runs inside
# the mesh): DEMO_NET_DRIVER=overlay DEMO_NET_OPTS='--opt com.docker.network.driver.mtu=1342'.
DEMO_NET_DRIVER=${DEMO_NET_DRIVER:-meshnet:latest}
DEMO_NET_OPTS=${DEMO_NET_OPTS-}
NET=web
HOST=demo.example.org # the service's public name, routed by Traefik
VPS=203.0.113.10      # the VPS's public address (scripts/topo.sh)
# topo.sh's root: another prefix than hs has its own
if [ "${TOPO_PREFIX:-hs}" = hs ]; then ROOT=${TOPO_ROOT:-/var/lib/homeswarm-topo}; else ROOT=${TOPO_ROOT:-/var/lib/homeswarm-topo-$TOPO_PREFIX}; fi
ROUTES=$ROOT/vps/edge-routes

ts() { awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN{printf "%6.1fs", a-b}'; }
since() { awk -v a="$(date +%s.%N)" -v b="$1" 'BEGIN{printf "%.1f", a-b}'; }
step() { printf '\n\033[1m[%s] %s\033[0m\n' "$(ts)" "$*"; }
note() { printf '[%s]   %s\n' "$(ts)" "$*"; }
indent() { sed 's/^/          /'; }
die() { printf '\n\033[31mdemo: %s\033[0m\n' "$*" >&2; exit 1; }

# progress WHAT T_START: one line that says what we wait for and for how long
# (rewritten in place on a terminal, a dot a second otherwise).
if [ -t 1 ]; then
  progress() { printf '\r          … %s (%ss)   ' "$1" "$(since "$2")"; }
  progress_end() { printf '\r\033[K'; }
else
  progress() { local s; s=$(since "$2"); [ "${s%.*}" != "${_last:-}" ] && { printf '.'; _last=${s%.*}; }; return 0; }
  progress_end() { [ -z "${_last:-}" ] || printf '\n'; _last=; }
fi

# until_ok WHAT TIMEOUT CMD…: runs CMD until it succeeds, showing progress.
until_ok() {
  local what=$1 timeout=$2 t=$(date +%s.%N)
  shift 2
  until "$@" >/dev/null 2>&1; do
    progress "$what" "$t"
    awk -v a="$(since "$t")" -v b="$timeout" 'BEGIN{exit !(a > b)}' && { progress_end; return 1; }
    sleep 0.2
  done
  progress_end
}

# web PATH [curl args…]: a request to the service through Traefik on the
# VPS, by host name, as a visitor from the Internet makes it.
web() {
  local path=$1
  shift
  $T exec vps curl -sS -f -m 3 -H "Host: $HOST" "$@" "http://$VPS$path"
}
# served_by NODE: the service answers through Traefik from NODE.
served_by() { web /count | grep -q "host=$1\$"; }
# served_not_by NODE: the service answers through Traefik, from elsewhere.
# (one request: two could straddle the move, the first answered by NODE,
# the second failing, and a failure is not an answer from elsewhere)
served_not_by() {
  local out
  out=$(web /count) || return 1
  [[ $out == *host=* && $out != *"host=$1" ]]
}
node_of() { web /count | sed -n 's/.*host=//p'; }
visits() { web /count | sed -n 's/visits=\([0-9]*\).*/\1/p'; }

command -v curl >/dev/null || die "curl not found: apt-get install curl"

step "bringing up the seed topology (a minute or two)"
$T up 2>&1 | indent

step "the Swarm, seen from the VPS: every node on its mesh address"
$T docker vps node ls --format '{{.Hostname}}\t{{.Status}}\t{{.Availability}}' | indent
for n in vps home1 home2 home3; do
  note "$n advertises $($T docker vps node inspect "$n" --format '{{.Status.Addr}}')"
done

step "images (static Go, docker import): edge and Traefik on the VPS, the demo service at home"
scripts/images.sh vps 2>&1 | indent
IMAGES=demoapp scripts/images.sh home1 home2 home3 2>&1 | indent

step "docker network create -d $DEMO_NET_DRIVER $NET   (Traefik and the service share it)"
# shellcheck disable=SC2086 # DEMO_NET_OPTS is a list of options
$T docker vps network create -d "$DEMO_NET_DRIVER" $DEMO_NET_OPTS --attachable "$NET" >/dev/null

step "Traefik (file provider, no docker.sock) and edge (the only holder of docker.sock) on the VPS"
mkdir -p "$ROUTES"
# dnsrr: this kernel has no IPVS, so Swarm VIPs do not answer; with dnsrr the
# service's name resolves to its task. A 1 s resolver timeout keeps Traefik
# from waiting 5 s on a name whose task is not up yet.
$T docker vps service create -q --detach --no-resolve-image --name traefik \
  --constraint node.role==manager --network "$NET" --dns-option timeout:1 --dns-option attempts:1 \
  --publish mode=host,published=80,target=80 \
  --mount "type=bind,source=$ROUTES,target=/routes,readonly" \
  homeswarm/traefik --entryPoints.web.address=:80 --providers.file.directory=/routes \
  --providers.file.watch=true --providers.providersThrottleDuration=0s --log.level=WARN >/dev/null
$T docker vps service create -q --detach --no-resolve-image --name edge \
  --constraint node.role==manager --network host \
  --mount "type=bind,source=$($T host vps | sed 's|^unix://||'),target=/var/run/docker.sock" \
  --mount "type=bind,source=$ROUTES,target=/routes" \
  --env EDGE_NETWORK="$NET" --env EDGE_LISTEN=127.0.0.1:8089 homeswarm/edge >/dev/null
traefik_404() { [ "$($T exec vps curl -s -m 2 -o /dev/null -w '%{http_code}' -H 'Host: nothing.example.org' "http://$VPS/")" = 404 ]; }
until_ok "Traefik answering on $VPS:80" 90 traefik_404 || die "Traefik did not start"
until_ok "edge writing Traefik's routes" 60 test -f "$ROUTES/edge.yml" || die "edge did not start"
note "Traefik answers on $VPS:80; edge feeds it $ROUTES/edge.yml"

step "docker service create … --label edge.host=$HOST --mount …,volume-driver=syncvol homeswarm/demoapp"
$T docker vps service rm demo >/dev/null 2>&1 || true
$T docker vps service create -q --detach --no-resolve-image --name demo \
  --constraint node.labels.location==home --network "$NET" --endpoint-mode dnsrr \
  --stop-grace-period 5s --restart-delay 1s --env NODE={{.Node.Hostname}} \
  --mount type=volume,source=demo-data,target=/data,volume-driver=syncvol \
  --label edge.host="$HOST" --label edge.port=8080 \
  homeswarm/demoapp >/dev/null
t1=$(date +%s.%N)
until_ok "first 200 from http://$HOST through Traefik" 120 web /count || die "the service is not reachable through Traefik"
node=$(node_of)
note "curl -H 'Host: $HOST' http://$VPS/ answers $(since "$t1") s after \`service create\` returned (this includes the task's start)"
note "running on $node"

step "using it through Traefik: 20 visits and a note, each acknowledged after fsync"
for _ in $(seq 1 20); do web / >/dev/null; done
web /notes/keys --data-binary "the house keys are under the mat" >/dev/null
note "$(web /count)"

step "docker node update --availability drain $node"
t1=$(date +%s.%N)
$T docker vps node update --availability drain "$node" >/dev/null
until_ok "the service back through Traefik from another node" 120 served_not_by "$node" || die "the service did not come back"
node2=$(node_of)
note "back on $node2 after $(since "$t1") s, same URL"
note "$(web /count)   (20 visits written on $node)"
note "note: $(web /notes/keys)"
[ "$(visits)" = 20 ] || die "visits lost on the drain: $(web /count)"
$T docker vps node update --availability active "$node" >/dev/null

step "more visits on $node2, then its engine is killed outright (SIGKILL, no goodbye)"
for _ in $(seq 1 10); do web / >/dev/null; done
note "$(web /count)"
sleep 3
t1=$(date +%s.%N)
$T engine-stop "$node2" --kill
until_ok "the service back through Traefik (Swarm first has to notice the node is gone)" 180 served_not_by "$node2" ||
  die "the service did not come back after the kill"
node3=$(node_of)
note "back on $node3 after $(since "$t1") s"
note "$(web /count)   (30 visits written before the kill)"
[ "$(visits)" = 30 ] || die "visits lost on the kill: $(web /count)"
$T engine-start "$node2"
note "$node2's engine restarted; it catches up on its own"

step "a fourth node at a friend's house joins with one key: scripts/topo.sh add-node home4"
# add-node installs the plugins with what a user gives them: the cluster's
# keys and one peer (the VPS), nothing else (`docker plugin set syncvol
# CLUSTER_KEY=… PEERS=10.254.0.1`, `docker plugin set meshnet MESH_KEY=…
# MESH_ADDR=10.254.0.14/24 MESH_PEERS=203.0.113.10:3210`).
$T add-node home4 2>&1 | indent
for p in meshnet syncvol; do
  note "$p on home4: $($T docker home4 plugin inspect "$p" --format '{{join .Settings.Env " "}}' |
    tr ' ' '\n' | grep -E '^(CLUSTER_KEY|PEERS|MESH_KEY|MESH_ADDR|MESH_PEERS)=.' |
    sed -E 's/^((CLUSTER|MESH)_KEY=).*/\1…/' | tr '\n' ' ')"
done
mesh_up() { $T exec home4 busybox ping -c1 -W1 10.254.0.1; }
until_ok "home4 reaching the VPS through the mesh" 60 mesh_up || die "home4 is not on the mesh"
$T docker home4 swarm join --token "$($T docker vps swarm join-token -q worker)" \
  --advertise-addr 10.254.0.14 --listen-addr 10.254.0.14:2377 --data-path-addr 10.254.0.14 10.254.0.1:2377 >/dev/null
home4_ready() { [ "$($T docker vps node inspect home4 --format '{{.Status.State}}')" = ready ]; }
until_ok "home4 ready in the Swarm" 60 home4_ready || die "home4 did not join the Swarm"
$T docker vps node update --label-add location=home home4 >/dev/null
# No registry here: the demo's image is imported on home4 as on the others.
IMAGES=demoapp scripts/images.sh home4 2>&1 | indent
note "home4 is a Swarm worker at $($T docker vps node inspect home4 --format '{{.Status.Addr}}') (location=home)"
home4_has() { $T docker home4 volume ls -q | grep -qx demo-data; }
until_ok "home4 learning of the volume demo-data" 60 home4_has || die "home4 does not know the volume"
note "home4 lists demo-data: $($T docker home4 volume inspect demo-data --format '{{with index .Status "state"}}{{.}}{{else}}{{index .Status "role"}}{{end}}')"

step "docker service update --constraint-add node.hostname==home4 demo"
t1=$(date +%s.%N)
$T docker vps service update -q --detach --constraint-add node.hostname==home4 demo >/dev/null
until_ok "the service served from home4 through Traefik" 180 served_by home4 || die "the service did not move to home4"
note "served from home4 after $(since "$t1") s"
note "$(web /count)   (30 visits, all written on other nodes)"
note "note: $(web /notes/keys)"
[ "$(visits)" = 30 ] || die "visits lost on the move to home4: $(web /count)"

step "the volume, as home4's engine sees it"
$T docker home4 volume inspect demo-data --format '{{json .Status}}' | tr ',' '\n' | indent

step "done: the topology stays up"
echo "          scripts/topo.sh exec vps curl -H 'Host: $HOST' http://$VPS/   # a visit, through Traefik"
echo "          scripts/topo.sh docker vps service ps demo                       # talk to any node's engine"
echo "          make demo-down                                                    # remove everything"
