#!/usr/bin/env bash
# mesh.sh — meshnet's TCP throughput, RTT and CPU per Gbit/s, side by side in
# one run with wireguard-go (the userspace Go anchor) and the bare veth path,
# home → vps through a masquerading NAT; writes bench/results/mesh.json and
# prints a table. Root only (network namespaces, TUN). Takes ~3.5 minutes.
# Arguments go to the program (bench/mesh): -runs 5, -t 8, -profile DIR, …
# BASELINE=<commit> also builds bench/mesh at that commit (a git worktree,
# removed after) and runs its mesh nodes as a fourth path, "meshnet before":
# a before/after of a data-path change in one run.
#
# Its own topology of plain network namespaces (no dockerd), prefix bm-:
#
#   bm-vps  wan0 198.51.100.10/24 ── br0 in bm-wan ── wan0 198.51.100.20/24  bm-nat
#                                                         (masquerade out wan0,
#                                                          UDP 3210 → home:3210)
#                                                      br-lan 192.168.60.1/24
#                                                         │
#   bm-home eth0 192.168.60.11/24, default via 192.168.60.1
#
# Leftovers of an earlier run are cleared first; everything (namespaces,
# processes in them, wireguard-go sockets) is removed on exit, however it
# ends. Packets never leave these namespaces.
#
# Needs: iperf3, busybox (ping), iptables, wg (wireguard-tools) and
# wireguard-go, installed once outside the repo with
#   GOBIN=/var/cache/homeswarm go install golang.zx2c4.com/wireguard@latest
# (this script does that when it is missing; WIREGUARD_GO overrides the path).
# bench/run.sh runs benches with sh: come back to bash.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/mesh: needs root (network namespaces, TUN)" >&2; exit 1; }

P=bm
MESH_PORT=3210
WAN=198.51.100
LAN=192.168.60
WIREGUARD_GO=${WIREGUARD_GO:-/var/cache/homeswarm/wireguard}

say() { printf '[bench/mesh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
nsx() { local n=$1; shift; ip netns exec "$P-$n" "$@"; }

down() {
  local n pids
  for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$P-" || true); do
    pids=$(ip netns pids "$n" 2>/dev/null | tr '\n' ' ')
    [ -n "${pids// /}" ] && kill -KILL $pids 2>/dev/null || true
  done
  for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$P-" || true); do
    ip netns delete "$n" 2>/dev/null || true
  done
  rm -f /var/run/wireguard/"$P"wg*.sock
  if ip netns list 2>/dev/null | grep -q "^$P-"; then
    say "namespaces left: $(ip netns list | grep "^$P-" | awk '{print $1}' | tr '\n' ' ')"
    return 1
  fi
}

mkns() { ip netns add "$P-$1"; nsx "$1" ip link set lo up; }

# link A IFA B IFB: a veth pair between namespaces A and B.
link() {
  ip link add "$P-tmp0" type veth peer name "$P-tmp1"
  ip link set "$P-tmp0" netns "$P-$1"
  ip link set "$P-tmp1" netns "$P-$3"
  nsx "$1" ip link set "$P-tmp0" name "$2"
  nsx "$3" ip link set "$P-tmp1" name "$4"
}

up() {
  mkns wan
  nsx wan ip link add br0 type bridge
  nsx wan ip link set br0 up
  mkns vps
  link vps wan0 wan vps
  mkns nat
  link nat wan0 wan nat
  for n in vps nat; do nsx wan ip link set "$n" master br0 up; done
  nsx vps ip addr add "$WAN.10/24" dev wan0
  nsx vps ip link set wan0 up
  nsx nat ip addr add "$WAN.20/24" dev wan0
  nsx nat ip link set wan0 up
  # The home LAN: a bridge in the NAT box, as in the seed (scripts/topo.sh).
  nsx nat ip link add br-lan type bridge
  nsx nat ip addr add "$LAN.1/24" dev br-lan
  nsx nat ip link set br-lan up
  mkns home
  link home eth0 nat home
  nsx nat ip link set home master br-lan up
  nsx home ip addr add "$LAN.11/24" dev eth0
  nsx home ip link set eth0 up
  nsx home ip route add default via "$LAN.1"
  nsx nat sysctl -qw net.ipv4.ip_forward=1
  nsx nat iptables -t nat -A POSTROUTING -o wan0 -j MASQUERADE
  nsx nat iptables -t nat -A PREROUTING -i wan0 -p udp --dport "$MESH_PORT" -j DNAT --to-destination "$LAN.11:$MESH_PORT"
}

for c in iperf3 busybox iptables wg; do
  command -v "$c" >/dev/null 2>&1 || { echo "bench/mesh: needs $c" >&2; exit 1; }
done
if [ ! -x "$WIREGUARD_GO" ]; then
  say "installing wireguard-go into $(dirname "$WIREGUARD_GO")"
  GOBIN=$(dirname "$WIREGUARD_GO") go install golang.zx2c4.com/wireguard@latest
  [ "$(basename "$WIREGUARD_GO")" = wireguard ] || mv "$(dirname "$WIREGUARD_GO")/wireguard" "$WIREGUARD_GO"
fi

bin=$(mktemp -d "${TMPDIR:-/tmp}/bm-meshbin.XXXXXX")
child=
cleanup() {
  local rc=$?
  if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  down || rc=1
  [ -d "$bin/src" ] && git worktree remove --force "$bin/src" 2>/dev/null
  rm -rf "$bin"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
CGO_ENABLED=0 go build -o "$bin/mesh" ./bench/mesh
base=()
if [ -n "${BASELINE:-}" ]; then
  rev=$(git rev-parse --short "$BASELINE")
  say "building bench/mesh at $rev for the \"meshnet before\" path"
  git worktree add -q --detach "$bin/src" "$rev"
  (cd "$bin/src" && CGO_ENABLED=0 go build -o "$bin/mesh-base" ./bench/mesh)
  base=(-baseline "$bin/mesh-base" -baseline-label "$rev")
fi

down
up
say "topology up: home $LAN.11 → nat $WAN.20 → vps $WAN.10"
# In the background, so that a signal to this script is handled at once.
"$bin/mesh" -prefix "$P" -wireguard-go "$WIREGUARD_GO" -wan-vps "$WAN.10" -mesh-port "$MESH_PORT" \
  "${base[@]}" "$@" &
child=$!
wait "$child"
