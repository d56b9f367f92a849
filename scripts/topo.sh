#!/usr/bin/env bash
# topo.sh — the seed topology on one machine: a VPS, a home NAT box and
# three home nodes, each node a network namespace with its own dockerd.
#
#   "internet" 203.0.113.0/24 (bridge in ns hs-wan)
#     ├── vps     203.0.113.10        Swarm manager
#     └── homegw  203.0.113.20 (wan0) NAT: masquerade out, UDP $MESH_PORT → home1
#           └── home LAN 192.168.50.0/24 (bridge in ns hs-homegw, 192.168.50.1)
#                 ├── home1 192.168.50.11   Swarm worker, location=home
#                 ├── home2 192.168.50.12   Swarm worker, location=home
#                 └── home3 192.168.50.13   Swarm worker, location=home
#
# Usage:
#   topo.sh up [--no-swarm] [--no-plugins]   build everything (clears leftovers first)
#   topo.sh down                             tear down; leaves no namespace, mount or process
#   topo.sh status                           what runs
#   topo.sh docker NODE ARGS…                docker CLI against NODE's engine
#   topo.sh host NODE                        print DOCKER_HOST for NODE
#   topo.sh exec NODE CMD…                   run CMD in NODE's network namespace
#   topo.sh netem [delay 20ms] [loss 1%]…    shape the WAN links (vps and homegw); `netem off` clears
#   topo.sh cut NODE | heal NODE             take NODE's uplink down / up
#   topo.sh wan-address ADDR                 give the NAT box a new public address (dyndns case)
#   topo.sh add-host nas                     a plain host on the home LAN (192.168.50.30), no engine
#   topo.sh install-plugins [NODE…]         reinstall the built plugins (make plugins first)
#   topo.sh registry-up                      the plugin registry on the VPS (Debian's docker-registry)
#   topo.sh push-plugins [TAG]               registry-up, then `make push` from the VPS's engine:
#                                            REGISTRY/homeswarm/{syncvol,meshnet}:TAG (latest; VERSION=… stamps the build)
#   topo.sh acme-up                          the ACME server on the "internet" (Debian's pebble,
#                                            203.0.113.30, namespace acme): prints its directory URL
#   topo.sh acme-host HOST [ADDR]            its DNS answers HOST with ADDR (the VPS's public address)
#   topo.sh acme-root                        print its issuing root (PEM), what a client must trust
#   topo.sh engine-stop NODE [--kill]        stop (or SIGKILL) NODE's dockerd
#   topo.sh engine-start NODE                start it again
#   topo.sh add-node NAME                    one more home node on the LAN (home4 → 192.168.50.14); no Swarm join
#
# Environment: TOPO_CLUSTER_KEY (syncvol's key; default a random one per
# topology, kept in $TOPO_ROOT/cluster.key), TOPO_PREFIX (hs), TOPO_ROOT (/var/lib/homeswarm-topo, or …-topo-PREFIX),
# TOPO_RUN (/run/hs), MESH_PORT (3210), TOPO_STORAGE_DRIVER (overlay2 where the state root allows it, else vfs),
# TOPO_SYNCVOL_FS (btrfs: each node's syncvol state on a btrfs image; plain),
# PLUGIN_SETTINGS_syncvol / PLUGIN_SETTINGS_meshnet (extra settings per node,
# %NODE% replaced by the node name),
# TOPO_PLUGINS (local: `make install` of the built bundles; registry: pushed
# to the topology's registry once, then every node runs `docker plugin install
# --grant-all-permissions --alias NAME REPO/NAME:TAG KEY=value…` as README
# tells a user; for up, install-plugins and add-node), TOPO_PLUGIN_TAG (latest).
#
# The registry (REGISTRY, 203.0.113.10:5000: the VPS's topology address, plain
# HTTP, listening on nothing else) is trusted by every engine through its own
# daemon.json (insecure-registries).
#
# The ACME server (acme-up) stands in for Let's Encrypt: Debian's pebble
# (RFC 8555) in its own namespace on the "internet" bridge, ACME at
# https://203.0.113.30:14000/dir, its management interface (the issuing
# root: /roots/0) at :15000, both with a TLS certificate from a CA made
# here ($TOPO_ROOT/acme/ca.pem: what an ACME client such as Traefik must
# trust, LEGO_CA_CERTIFICATES). It validates HTTP-01 for real: it resolves
# names with Debian's pebble-challtestsrv on 203.0.113.30:53, which knows
# only the names acme-host gave it, and fetches the token from the name's
# address on port 80. Nothing listens beyond 203.0.113.30.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
P=${TOPO_PREFIX:-hs}
# another prefix gets its own state root, so two topologies never share
# (or wipe) each other's files
if [ "$P" = hs ]; then ROOT=${TOPO_ROOT:-/var/lib/homeswarm-topo}; else ROOT=${TOPO_ROOT:-/var/lib/homeswarm-topo-$P}; fi
RUN=${TOPO_RUN:-/run/$P}
MESH_PORT=${MESH_PORT:-3210}
# engines' storage driver: TOPO_STORAGE_DRIVER, or overlay2 where the state
# root takes an overlay mount (ext4, XFS, btrfs: a container is made in
# milliseconds), else vfs (every container a full copy of its image)
DRIVER=${TOPO_STORAGE_DRIVER:-}
WAN_NET=203.0.113
LAN_NET=192.168.50
MESH_NET=10.254.0
HOME_NODES=(home1 home2 home3)
REGISTRY="$WAN_NET.10:${TOPO_REGISTRY_PORT:-5000}"
PLUGIN_REPO="$REGISTRY/homeswarm"
PLUGIN_TAG=${TOPO_PLUGIN_TAG:-latest}
ENGINE_NODES=(vps "${HOME_NODES[@]}")
ACME_ADDR="$WAN_NET.30"

say() { printf '[topo %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

ns() { echo "$P-$1"; }
nsx() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }
sock() { echo "$RUN/$1/docker.sock"; }
dk() { local n=$1; shift; docker -H "unix://$(sock "$n")" "$@"; }

ip_of() {
  case $1 in
    vps) echo "$WAN_NET.10" ;;
    homegw) echo "$WAN_NET.20" ;;
    home*) echo "$LAN_NET.$((10 + ${1#home}))" ;;
    nas) echo "$LAN_NET.30" ;;
    acme) echo "$ACME_ADDR" ;;
    *) die "unknown node $1" ;;
  esac
}

# ---------------------------------------------------------------- cleanup

# descendants PID… prints the PIDs and all their descendants.
descendants() {
  local all=" $* " changed=1
  while [ $changed = 1 ]; do
    changed=0
    for st in /proc/[0-9]*/stat; do
      local pid ppid
      { read -r pid _ _ ppid _ < "$st"; } 2>/dev/null || continue
      case "$all" in *" $ppid "*) case "$all" in *" $pid "*) ;; *) all="$all$pid "; changed=1 ;; esac ;; esac
    done
  done
  echo $all
}

# Everything our namespaces run: processes inside them, their children
# (containers live in namespaces of their own), and anything whose command
# line names our directories (a dockerd whose namespace is already gone).
our_pids() {
  local seeds=""
  for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$P-" || true); do
    seeds="$seeds $(ip netns pids "$n" 2>/dev/null | tr '\n' ' ')"
  done
  seeds="$seeds $(pgrep -f -- "--exec-root $RUN/" 2>/dev/null | tr '\n' ' ') $(pgrep -f -- "$ROOT/" 2>/dev/null | tr '\n' ' ')"
  seeds=$(echo $seeds | tr ' ' '\n' | sort -u | tr '\n' ' ')
  [ -n "${seeds// /}" ] || return 0
  spare_callers $(descendants $seeds)
}

# spare_callers PID… prints the PIDs but ourselves and our callers: a test
# process may have a thread inside one of our namespaces.
spare_callers() {
  local keep=" $$ " p=$$ pid
  while [ "$p" -gt 1 ] 2>/dev/null; do
    p=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null) || break
    keep="$keep$p "
  done
  for pid in "$@"; do
    case "$keep" in *" $pid "*) ;; *) echo "$pid" ;; esac
  done
}

unmount_under() {
  local dir
  for dir in "$@"; do
    # Deepest first; lazy so a busy mount never stalls teardown.
    awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
      umount -l "$m" 2>/dev/null || true
    done
  done
}

down() {
  # Graceful first: engines stop their containers and plugins.
  for n in "${ENGINE_NODES[@]}" $(ls "$RUN" 2>/dev/null | grep '^home[4-9]' || true); do
    local pidf="$RUN/$n/docker.pid"
    if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
      kill -TERM "$(cat "$pidf")" 2>/dev/null || true
    fi
  done
  local deadline=$((SECONDS + 20))
  while [ $SECONDS -lt $deadline ] && ls "$RUN"/*/docker.pid >/dev/null 2>&1; do
    local alive=0
    for f in "$RUN"/*/docker.pid; do kill -0 "$(cat "$f" 2>/dev/null)" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.5
  done
  # Then whatever is left, by force.
  local pids
  pids=$(our_pids)
  if [ -n "${pids// /}" ]; then
    kill -KILL $pids 2>/dev/null || true
    sleep 0.5
  fi
  unmount_under "$ROOT" "$RUN"
  for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$P-" || true); do
    ip netns delete "$n" 2>/dev/null || true
  done
  # Plugin and container mounts that propagated under the netns directory.
  unmount_under "/run/netns/$P-"
  rm -rf "$RUN"
  if [ "${TOPO_KEEP_STATE:-0}" != 1 ]; then
    rm -rf "$ROOT"
  fi
  # Containers' cgroups left by the killed engines.
  for cg in /sys/fs/cgroup/*/"$P"-docker; do [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true; done
  local left
  left=$(ip netns list 2>/dev/null | grep -c "^$P-" || true)
  [ "$left" = 0 ] || die "namespaces left: $(ip netns list | grep "^$P-" | tr '\n' ' ')"
  say "down: nothing left"
}

# ---------------------------------------------------------------- network

mkns() { ip netns add "$(ns "$1")"; nsx "$1" ip link set lo up; }

# veth NODE IFNAME BRIDGE_NS BRIDGE ADDR/LEN — a link from NODE to a bridge.
veth() {
  local node=$1 ifn=$2 bns=$3 br=$4 addr=$5
  local peer="${node}-${ifn}"
  ip link add "$P-tmp0" type veth peer name "$P-tmp1"
  ip link set "$P-tmp0" netns "$(ns "$node")"
  ip link set "$P-tmp1" netns "$(ns "$bns")"
  nsx "$node" ip link set "$P-tmp0" name "$ifn"
  nsx "$bns" ip link set "$P-tmp1" name "$peer"
  nsx "$bns" ip link set "$peer" master "$br" up
  nsx "$node" ip addr add "$addr" dev "$ifn"
  nsx "$node" ip link set "$ifn" up
}

network_up() {
  mkns wan
  nsx wan ip link add br0 type bridge
  nsx wan ip link set br0 up
  mkns vps
  veth vps wan0 wan br0 "$(ip_of vps)/24"
  mkns homegw
  veth homegw wan0 wan br0 "$(ip_of homegw)/24"
  nsx homegw ip link add br-lan type bridge
  nsx homegw ip addr add "$LAN_NET.1/24" dev br-lan
  nsx homegw ip link set br-lan up
  nsx homegw sysctl -qw net.ipv4.ip_forward=1
  nsx homegw iptables -t nat -A POSTROUTING -o wan0 -j MASQUERADE
  # The forward applies to the box's current public address only, as on a
  # real router (packets still sent to an old address must not match).
  nsx homegw iptables -t nat -A PREROUTING -i wan0 -p udp --dport "$MESH_PORT" -m addrtype --dst-type LOCAL \
    -j DNAT --to-destination "$(ip_of home1):$MESH_PORT"
  for n in "${HOME_NODES[@]}"; do home_link_up "$n"; done
}

home_link_up() {
  local n=$1
  mkns "$n"
  mkdir -p "$RUN/$n"
  ip netns exec "$(ns homegw)" true
  # The LAN bridge lives in the NAT box's namespace (ns "homegw").
  local peer="$n-eth0"
  ip link add "$P-tmp0" type veth peer name "$P-tmp1"
  ip link set "$P-tmp0" netns "$(ns "$n")"
  ip link set "$P-tmp1" netns "$(ns homegw)"
  nsx "$n" ip link set "$P-tmp0" name eth0
  nsx homegw ip link set "$P-tmp1" name "$peer"
  nsx homegw ip link set "$peer" master br-lan up
  nsx "$n" ip addr add "$(ip_of "$n")/24" dev eth0
  nsx "$n" ip link set eth0 up
  nsx "$n" ip route add default via "$LAN_NET.1"
}

# ---------------------------------------------------------------- ACME

# acme_certs DIR: a CA of the topology's own and, signed by it, the ACME
# server's TLS certificate for its address (what Pebble's source tree
# ships as test/certs; Debian's package ships none).
acme_certs() {
  local d=$1
  [ -f "$d/cert.pem" ] && return 0
  command -v openssl >/dev/null || die "openssl not found: apt-get install openssl"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=homeswarm topology ACME API CA" -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$ACME_ADDR" \
    -keyout "$d/key.pem" -out "$d/cert.csr" 2>/dev/null
  printf 'subjectAltName=IP:%s\nextendedKeyUsage=serverAuth\n' "$ACME_ADDR" > "$d/ext.cnf"
  openssl x509 -req -in "$d/cert.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 3650 \
    -extfile "$d/ext.cnf" -out "$d/cert.pem" 2>/dev/null
  rm -f "$d/cert.csr" "$d/ext.cnf" "$d/ca.srl"
}

# acme_up: Pebble and its DNS (pebble-challtestsrv) in namespace acme on
# the "internet"; idempotent. Logs: $ROOT/acme/{pebble,dns}.log (Pebble
# logs a line per issued certificate).
acme_up() {
  local d="$ROOT/acme" a="$ACME_ADDR"
  if [ -f "$d/pebble.pid" ] && kill -0 "$(cat "$d/pebble.pid")" 2>/dev/null; then
    echo "https://$a:14000/dir"
    return 0
  fi
  command -v pebble >/dev/null || die "pebble not found: apt-get install pebble"
  [ -e "/run/netns/$(ns wan)" ] || die "acme-up: no topology (topo.sh up first)"
  [ -e "/run/netns/$(ns acme)" ] || { mkns acme; veth acme wan0 wan br0 "$a/24"; }
  mkdir -p "$d"
  acme_certs "$d"
  # a DNS server left by a Pebble that died holds the port
  if [ -f "$d/dns.pid" ]; then kill "$(cat "$d/dns.pid")" 2>/dev/null || true; fi
  # httpPort/tlsPort: where Pebble validates (HTTP-01 on port 80, as Let's
  # Encrypt does).
  printf '{"pebble": {"listenAddress": "%s:14000", "managementListenAddress": "%s:15000",
  "certificate": "%s/cert.pem", "privateKey": "%s/key.pem", "httpPort": 80, "tlsPort": 443,
  "ocspResponderURL": "", "externalAccountBindingRequired": false}}\n' "$a" "$a" "$d" "$d" > "$d/pebble.json"
  # The DNS answers only the names acme-host adds (no default address);
  # its other challenge servers are off.
  nsenter --net="/run/netns/$(ns acme)" pebble-challtestsrv -dns01 "$a:53" -management "$a:8055" -http01 "" -https01 "" -tlsalpn01 "" \
    -defaultIPv4 "" -defaultIPv6 "" >"$d/dns.log" 2>&1 &
  echo $! > "$d/dns.pid"
  # No artificial validation sleeps, no nonce rejected on purpose (both
  # only slow a test down); validation itself is never skipped.
  PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 nsenter --net="/run/netns/$(ns acme)" pebble -config "$d/pebble.json" -dnsserver "$a:53" \
    >"$d/pebble.log" 2>&1 &
  echo $! > "$d/pebble.pid"
  local deadline=$((SECONDS + 20))
  until nsx acme curl -sf -o /dev/null --cacert "$d/ca.pem" "https://$a:14000/dir" &&
    [ "$(nsx acme curl -s -o /dev/null -w '%{http_code}' "http://$a:8055/")" != 000 ]; do
    [ $SECONDS -lt $deadline ] || { tail -5 "$d/pebble.log" "$d/dns.log" >&2; die "pebble did not answer at $a"; }
    sleep 0.1
  done
  echo "https://$a:14000/dir"
}

# acme_root prints the root the ACME server issues under (Pebble makes a
# new one each time it starts).
acme_root() {
  nsx acme curl -sf --cacert "$ROOT/acme/ca.pem" "https://$ACME_ADDR:15000/roots/0" \
    || die "acme-root: the ACME server does not answer (acme-up first)"
}

# acme_host HOST ADDR: the ACME server's DNS answers HOST with ADDR.
acme_host() {
  local h=${1:-} a=${2:-$(ip_of vps)}
  [[ $h =~ ^[A-Za-z0-9.-]+$ ]] || die "acme-host HOST [ADDR]: bad host name '$h'"
  [[ $a =~ ^[0-9.]+$ ]] || die "acme-host: bad address $a"
  nsx acme curl -sf -o /dev/null -X POST -d "{\"host\": \"$h.\", \"addresses\": [\"$a\"]}" "http://$ACME_ADDR:8055/add-a" \
    || die "acme-host: the ACME server's DNS did not take $h (acme-up first)"
}

# ---------------------------------------------------------------- engines

# storage_driver: the driver for a new node's engine (see DRIVER).
storage_driver() {
  [ -z "$DRIVER" ] || { echo "$DRIVER"; return; }
  local t
  t=$(mktemp -d "$ROOT/.overlay-probe.XXXXXX")
  mkdir "$t/l" "$t/u" "$t/w" "$t/m"
  if mount -t overlay overlay -o "lowerdir=$t/l,upperdir=$t/u,workdir=$t/w" "$t/m" 2>/dev/null; then
    umount "$t/m"
    echo overlay2
  else
    echo vfs
  fi
  rm -rf "$t"
}

engine_start() {
  local n=$1 d="$ROOT/$1" r="$RUN/$1"
  mkdir -p "$d/docker" "$r"
  # chosen once per node: its images live in that driver's directories
  [ -s "$d/storage-driver" ] || storage_driver > "$d/storage-driver"
  # The topology's plugin registry is plain HTTP on the VPS's address.
  [ -f "$d/daemon.json" ] || printf '{"insecure-registries": ["%s"]}\n' "$REGISTRY" > "$d/daemon.json"
  # Own UTS namespace for the hostname (the Swarm node name); nsenter, not
  # `ip netns exec`, which remounts /sys and breaks dockerd's cgroups.
  # Appended to: a restarted engine's log keeps what it said before a kill.
  echo "--- topo.sh: engine of $n starting at $(date -u +%FT%TZ)" >>"$d/dockerd.log"
  nsenter --net="/run/netns/$(ns "$n")" unshare --uts env DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 \
    sh -c "hostname $n && exec dockerd --config-file '$d/daemon.json' --data-root '$d/docker' --exec-root '$r/x' \
      -H 'unix://$r/docker.sock' --pidfile '$r/docker.pid' --storage-driver '$(cat "$d/storage-driver")' \
      --cgroup-parent '/$P-docker/$n' --log-level warn" >>"$d/dockerd.log" 2>&1 &
  local deadline=$((SECONDS + 60))
  until dk "$n" info >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { tail -20 "$d/dockerd.log" >&2; die "dockerd of $n did not start"; }
    sleep 0.2
  done
}

engine_stop() {
  local n=$1 sig=${2:-TERM} pidf="$RUN/$1/docker.pid"
  [ -f "$pidf" ] || return 0
  local pid
  pid=$(cat "$pidf")
  if [ "$sig" = KILL ]; then
    # A crash: the engine and everything it runs die at once — containerd,
    # the shims (re-parented away from dockerd, but in the node's network
    # namespace), plugins and containers (the shims' children).
    kill -KILL $(spare_callers $(descendants $(ip netns pids "$(ns "$n")") "$pid")) 2>/dev/null || true
  else
    kill -TERM "$pid" 2>/dev/null || true
  fi
  local deadline=$((SECONDS + 40))
  while kill -0 "$pid" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { kill -KILL "$pid" 2>/dev/null || true; }
    sleep 0.2
  done
  rm -f "$pidf"
  # After a crash, as the reboot after one would, its containers' root
  # filesystems go (overlay2's mounts; vfs has none; lazily: a dying
  # process may still hold one).
  [ "$sig" != KILL ] || unmount_under "$ROOT/$n/docker/overlay2"
}

busybox_image() {
  local tarball="$ROOT/busybox.tar"
  if [ ! -f "$tarball" ]; then
    local bb
    bb=$(command -v busybox) || die "busybox not found: apt-get install busybox-static"
    file -L "$bb" 2>/dev/null | grep -q 'dynamically' && die "$bb is dynamic; install busybox-static"
    local t
    t=$(mktemp -d)
    mkdir -p "$t/bin" "$t/etc" "$t/tmp"
    cp "$bb" "$t/bin/busybox"
    for a in $("$bb" --list); do [ "$a" = busybox ] || ln -s busybox "$t/bin/$a"; done
    echo 'root:x:0:0:root:/:/bin/sh' > "$t/etc/passwd"
    tar -C "$t" -cf "$tarball" .
    rm -rf "$t"
  fi
  dk "$1" import -c 'ENV PATH=/bin' "$tarball" busybox:latest >/dev/null
}

# cluster_key prints the topology's syncvol key (TOPO_CLUSTER_KEY wins).
cluster_key() {
  if [ -n "${TOPO_CLUSTER_KEY:-}" ]; then echo "$TOPO_CLUSTER_KEY"; return; fi
  [ -f "$ROOT/cluster.key" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$ROOT/cluster.key"
  cat "$ROOT/cluster.key"
}

# mesh_key prints the topology's meshnet key (TOPO_MESH_KEY wins).
mesh_key() {
  if [ -n "${TOPO_MESH_KEY:-}" ]; then echo "$TOPO_MESH_KEY"; return; fi
  [ -f "$ROOT/mesh.key" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$ROOT/mesh.key"
  cat "$ROOT/mesh.key"
}

# mesh_ip NODE prints NODE's address on the mesh.
mesh_ip() {
  case $1 in
    vps) echo "$MESH_NET.1" ;;
    home*) echo "$MESH_NET.$((10 + ${1#home}))" ;;
    *) die "no mesh address for $1" ;;
  esac
}

# use_mesh: the Swarm runs over meshnet when its plugin is built and
# installed (TOPO_MESH=0 keeps it on the plain addresses).
use_mesh() { [ "${TOPO_MESH:-1}" = 1 ] && [ -f "$REPO/build/meshnet/config.json" ]; }

# syncvol_fs NODE: the node's syncvol state directory on its own btrfs
# (a sparse image on a loop device), as README tells a user to set it up:
# volumes are then crash-consistent snapshot volumes.
# TOPO_SYNCVOL_FS=plain keeps a plain directory (file-by-file volumes only).
syncvol_fs() {
  local d="$ROOT/$1/syncvol"
  mkdir -p "$d"
  [ "${TOPO_SYNCVOL_FS:-btrfs}" = btrfs ] || return 0
  "$HERE/btrfs-pool.sh" "$d" "${TOPO_SYNCVOL_SIZE:-8G}" || die "no btrfs for $d"
}

install_plugins() {
  local n=$1 p extra
  # meshnet first: syncvol's peers are reached through it.
  for p in $(cd "$REPO/build" && ls -d meshnet syncvol 2>/dev/null); do
    local settings=()
    if [ "$p" = syncvol ]; then
      # One cluster key per topology; home nodes know only the VPS.
      # Over the mesh when there is one, so the WAN carries nothing but
      # the mesh's UDP; home nodes also advertise their LAN address, the
      # direct path between them.
      if use_mesh; then
        local adv
        adv=$(mesh_ip "$n")
        [ "$n" = vps ] || adv="$(ip_of "$n"),$adv"
        settings+=("state.source=$ROOT/$n/syncvol" "CLUSTER_KEY=$(cluster_key)" "ADVERTISE=$adv")
        [ "$n" = vps ] || settings+=("PEERS=$(mesh_ip vps)")
      else
        settings+=("state.source=$ROOT/$n/syncvol" "CLUSTER_KEY=$(cluster_key)" "ADVERTISE=$(ip_of "$n")")
        [ "$n" = vps ] || settings+=("PEERS=$(ip_of vps)")
      fi
    fi
    if [ "$p" = meshnet ]; then
      # The mesh: home nodes know the VPS's public address; the VPS learns
      # them as they come (home1 is also reachable through the NAT box's
      # forwarded port).
      settings+=("state.source=$ROOT/$n/meshnet" "MESH_KEY=$(mesh_key)" "MESH_ADDR=$(mesh_ip "$n")/24" "MESH_PORT=$MESH_PORT")
      [ "$n" = vps ] || settings+=("MESH_PEERS=$(ip_of vps):$MESH_PORT")
    fi
    extra="PLUGIN_SETTINGS_$p"
    [ -n "${!extra:-}" ] && settings+=(${!extra//%NODE%/$n})
    mkdir -p "$ROOT/$n/meshnet"
    syncvol_fs "$n"
    if [ "${TOPO_PLUGINS:-local}" = registry ]; then
      install_from_registry "$n" "$p" "${settings[@]}"
      continue
    fi
    DOCKER_HOST="unix://$(sock "$n")" make -s -C "$REPO" install "SETTINGS_$p=${settings[*]}" PLUGINS="$p" >/dev/null \
      || die "plugin $p did not install on $n"
  done
}

# registry_up: Debian's docker-registry (distribution 2.8) in the VPS's
# namespace, listening on $REGISTRY only, its blobs under $ROOT/registry.
registry_up() {
  local d="$ROOT/registry"
  if [ -f "$d/pid" ] && kill -0 "$(cat "$d/pid")" 2>/dev/null; then return 0; fi
  command -v docker-registry >/dev/null || die "docker-registry not found: apt-get install docker-registry"
  mkdir -p "$d/data"
  printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n' \
    "$d/data" "$REGISTRY" > "$d/config.yml"
  nsenter --net="/run/netns/$(ns vps)" docker-registry serve "$d/config.yml" >"$d/registry.log" 2>&1 &
  echo $! > "$d/pid"
  local deadline=$((SECONDS + 20))
  until nsx vps curl -sf -o /dev/null "http://$REGISTRY/v2/"; do
    [ $SECONDS -lt $deadline ] || { tail -5 "$d/registry.log" >&2; die "registry did not answer at $REGISTRY"; }
    sleep 0.2
  done
}

# push_plugins TAG: `make push` from the VPS's engine (the host's engine
# cannot reach the topology); the pushed copies are removed there, so the
# VPS holds only what it installs.
push_plugins() {
  local tag=$1 p
  registry_up
  DOCKER_HOST="unix://$(sock vps)" make -s -C "$REPO" push REPO="$PLUGIN_REPO" TAG="$tag" >/dev/null \
    || die "make push REPO=$PLUGIN_REPO TAG=$tag failed"
  for p in $(cd "$REPO/build" && ls -d meshnet syncvol 2>/dev/null); do
    dk vps plugin rm -f "$PLUGIN_REPO/$p:$tag" >/dev/null
  done
  touch "$ROOT/registry/pushed-$tag"
}

# install_from_registry NODE NAME SETTING…: as README tells a user, the
# old install (if any) removed first.
install_from_registry() {
  local n=$1 p=$2
  shift 2
  [ -f "$ROOT/registry/pushed-$PLUGIN_TAG" ] || push_plugins "$PLUGIN_TAG"
  if dk "$n" plugin inspect "$p" >/dev/null 2>&1; then
    dk "$n" plugin disable -f "$p" >/dev/null 2>&1 || true
    dk "$n" plugin rm -f "$p" >/dev/null
  fi
  dk "$n" plugin install --grant-all-permissions --alias "$p" "$PLUGIN_REPO/$p:$PLUGIN_TAG" "$@" >/dev/null \
    || die "docker plugin install $PLUGIN_REPO/$p:$PLUGIN_TAG did not work on $n"
}

# swarm_addr NODE: the address NODE's engine advertises to the Swarm.
swarm_addr() { if use_mesh; then mesh_ip "$1"; else ip_of "$1"; fi; }

# swarm_addrs NODE: advertise, listen and data-path flags; over the mesh the
# engine listens on its mesh address only, so no Swarm port answers on the
# public one.
swarm_addrs() {
  local a
  a=$(swarm_addr "$1")
  if use_mesh; then
    echo "--advertise-addr $a --listen-addr $a:2377 --data-path-addr $a"
  else
    echo "--advertise-addr $a"
  fi
}

swarm_up() {
  dk vps swarm init $(swarm_addrs vps) >/dev/null
  local token
  token=$(dk vps swarm join-token -q worker)
  for n in "${HOME_NODES[@]}"; do swarm_join "$n" "$token"; done
}

# mesh_wait NODE: until NODE reaches the VPS through the mesh.
mesh_wait() {
  local deadline=$((SECONDS + 30))
  until nsx "$1" busybox ping -c1 -W1 "$(mesh_ip vps)" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "$1 does not reach the VPS through the mesh"
  done
}

swarm_join() {
  local n=$1 token=$2
  use_mesh && mesh_wait "$n"
  dk "$n" swarm join --token "$token" $(swarm_addrs "$n") "$(swarm_addr vps):2377" >/dev/null
  local deadline=$((SECONDS + 60))
  until [ "$(dk vps node inspect "$n" --format '{{.Status.State}}' 2>/dev/null)" = ready ]; do
    [ $SECONDS -lt $deadline ] || die "$n did not become ready in the Swarm"
    sleep 0.3
  done
  dk vps node update --label-add location=home "$n" >/dev/null
}

up() {
  local swarm=1 plugins=1
  for a in "$@"; do
    case $a in --no-swarm) swarm=0 ;; --no-plugins) plugins=0 ;; *) die "unknown option $a" ;; esac
  done
  [ "$(id -u)" = 0 ] || die "needs root (network namespaces, dockerd)"
  [ -e /run/containerd/containerd.sock ] && die "a system containerd runs at /run/containerd: every dockerd would share it (and its network namespace); stop it first"
  say "clearing leftovers of earlier runs"
  down >/dev/null 2>&1 || down
  mkdir -p "$ROOT" "$RUN"
  say "network: wan, vps, homegw (NAT, udp/$MESH_PORT → home1), ${HOME_NODES[*]}"
  network_up
  local pids=()
  for n in "${ENGINE_NODES[@]}"; do
    say "engine $n"
    engine_start "$n" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || die "an engine did not start"; done
  for n in "${ENGINE_NODES[@]}"; do
    dk "$n" info >/dev/null 2>&1 || die "engine $n is not running"
    busybox_image "$n"
  done
  if [ $plugins = 1 ]; then
    [ -f "$REPO/build/syncvol/config.json" ] || make -s -C "$REPO" plugins >/dev/null
    for n in "${ENGINE_NODES[@]}"; do
      say "plugins on $n${TOPO_PLUGINS:+ ($TOPO_PLUGINS)}"
      install_plugins "$n"
    done
  fi
  if [ $swarm = 1 ]; then
    say "swarm: vps manager, ${HOME_NODES[*]} workers (location=home), over $(use_mesh && echo "the mesh ($MESH_NET.0/24)" || echo "plain addresses")"
    swarm_up
  fi
  say "up: $(status_line)"
}

status_line() {
  local out=""
  for n in "${ENGINE_NODES[@]}"; do
    if dk "$n" info >/dev/null 2>&1; then out="$out $n:up"; else out="$out $n:down"; fi
  done
  echo "$out"
}

netem() {
  local dev
  for spec in "vps wan0" "homegw wan0"; do
    set -- $spec "${NETEM_ARGS[@]}"
    local node=$1 dev=$2
    shift 2
    nsx "$node" tc qdisc del dev "$dev" root 2>/dev/null || true
    if [ "${1:-}" != off ]; then nsx "$node" tc qdisc add dev "$dev" root netem "$@"; fi
  done
}

uplink() {
  case $1 in vps | homegw) echo wan0 ;; home*) echo eth0 ;; *) die "unknown node $1" ;; esac
}

cmd=${1:-}
shift || true
case $cmd in
  up) up "$@" ;;
  down) down ;;
  status) status_line ;;
  docker) n=$1; shift; dk "$n" "$@" ;;
  host) echo "unix://$(sock "$1")" ;;
  exec) n=$1; shift; nsx "$n" "$@" ;;
  netem) NETEM_ARGS=("$@"); netem ;;
  cut) nsx "$1" ip link set "$(uplink "$1")" down ;;
  heal)
    nsx "$1" ip link set "$(uplink "$1")" up
    # a home node's default route is the NAT box; the NAT box itself has
    # none (one via its own LAN address would send Internet-bound packets
    # to the LAN while the WAN is down, and conntrack would keep them
    # un-NATed once it is back)
    case $1 in homegw) ;; home*) nsx "$1" ip route replace default via "$LAN_NET.1" ;; esac
    ;;
  wan-address)
    # Drop the old address first: deleting a primary address also deletes
    # the secondaries of its subnet.
    for old in $(nsx homegw ip -4 -o addr show dev wan0 | awk '{print $4}'); do
      nsx homegw ip addr del "$old" dev wan0
    done
    nsx homegw ip addr add "$1/24" dev wan0
    # A router whose public address changes starts from fresh NAT state
    # (a PPPoE reconnect does that); without the flush, the port forward's
    # entry would keep rewriting home1's packets to the old address.
    command -v conntrack >/dev/null || die "conntrack not found: apt-get install conntrack"
    nsx homegw conntrack -F >/dev/null 2>&1 || true
    # Once more after the packets in flight during the change are through:
    # an entry created in that instant can forward a home node's packets
    # with their LAN source (seen: the VPS then answered 192.168.50.11, and
    # home1's flow, refreshed by its own traffic, never recovered).
    sleep 1
    nsx homegw conntrack -F >/dev/null 2>&1 || true
    ;;
  add-host)
    # A plain host on the home LAN, no engine (e.g. nas, for a real Syncthing).
    home_link_up "$1"
    ;;
  install-plugins)
    for n in "${@:-${ENGINE_NODES[@]}}"; do install_plugins "$n"; done
    ;;
  registry-up) registry_up; echo "$PLUGIN_REPO" ;;
  acme-up) acme_up ;;
  acme-host) acme_host "$@" ;;
  acme-root) acme_root ;;
  push-plugins) push_plugins "${1:-$PLUGIN_TAG}"; echo "$PLUGIN_REPO" ;;
  engine-stop) if [ "${2:-}" = --kill ]; then engine_stop "$1" KILL; else engine_stop "$1"; fi ;;
  engine-start) engine_start "$1" ;;
  add-node)
    n=$1
    [[ $n =~ ^home[4-9]$ ]] || die "add-node takes home4..home9"
    home_link_up "$n"
    engine_start "$n"
    busybox_image "$n"
    [ "${NO_PLUGINS:-0}" = 1 ] || install_plugins "$n"
    ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
