#!/usr/bin/env bash
# demo.sh — the main job, told as a timeline with real software: bring up
# the seed topology (VPS + NAT box + three home nodes, each its own dockerd,
# one Swarm over the meshnet mesh), start Traefik and edge on the VPS, deploy
# the seed's blog (examples/wordpress-stack.yml: Debian's WordPress on nginx
# + php-fpm and MariaDB, at home on syncvol volumes and a meshnet network),
# install WordPress and publish a post through its own HTTP interface,
# reached through Traefik by host name over HTTPS, with a certificate from
# the topology's ACME server (Debian's pebble, Let's Encrypt's test server,
# standing in for Let's Encrypt); drain its node, kill the next node
# outright, let a fourth home node join with one key, move the blog there,
# and show the post back each time.
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
HOST=blog.example.org # the blog's public name, routed by Traefik
STACK=blog
WP=${STACK}_wordpress DB=${STACK}_db
ADMIN=admin ADMIN_PASSWORD=demo-admin-$$
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

# wp PATH [curl args…]: a request to the blog through Traefik on the VPS, by
# host name over HTTPS, as a visitor from the Internet makes it (following
# WordPress's redirects to its permalinks; the name resolves to the VPS
# only for curl, which trusts only the ACME server's root: every answer
# proved the certificate).
wp() {
  local path=$1
  shift
  $T exec vps curl -sS -f -L -m "${WP_TIMEOUT:-30}" --cacert "$ACME_ROOT" --resolve "$HOST:443:$VPS" "$@" "https://$HOST$path"
}
# shellcheck source=scripts/lib/wordpress.sh
. scripts/lib/wordpress.sh

# running_on SERVICE: the node its task runs on (nothing while none runs).
running_on() {
  $T docker vps service ps "$1" --filter desired-state=running --format '{{.Node}} {{.CurrentState}}' |
    awk '$2 == "Running" { print $1; exit }'
}
# moved_off SERVICE NODE…: its task runs, on none of NODE….
moved_off() {
  local svc=$1 on
  shift
  on=$(running_on "$svc")
  [ -n "$on" ] || return 1
  case " $* " in *" $on "*) return 1 ;; esac
}
# blog_back POST-ID TITLE NODE…: WordPress and MariaDB run elsewhere than
# NODE… and the post is served through Traefik.
blog_back() {
  local id=$1 title=$2
  shift 2
  moved_off "$WP" "$@" && moved_off "$DB" "$@" && wp_has_post "$id" "$title"
}
where() { note "WordPress runs on $(running_on "$WP"), MariaDB on $(running_on "$DB")"; }

command -v curl >/dev/null || die "curl not found: apt-get install curl"

# The plugins as a user installs them (README, "Installing from a
# registry"): `make push` to Debian's docker-registry on the VPS, then
# `docker plugin install --grant-all-permissions REPO/NAME KEY=value…` on
# every node, home4 too (TOPO_PLUGINS=local: make install of the bundles).
export TOPO_PLUGINS=${TOPO_PLUGINS:-registry}
step "bringing up the seed topology (a minute or two; plugins: docker plugin install from the VPS's registry)"
$T up 2>&1 | indent

step "the Swarm, seen from the VPS: every node on its mesh address"
$T docker vps node ls --format '{{.Hostname}}\t{{.Status}}\t{{.Availability}}' | indent
for n in vps home1 home2 home3; do
  note "$n advertises $($T docker vps node inspect "$n" --format '{{.Status.Addr}}')"
done

step "the ACME server on the topology's \"internet\": Debian's pebble (RFC 8555), standing in for Let's Encrypt"
ACME_DIR=$($T acme-up)
$T acme-host "$HOST" "$VPS" >/dev/null
ACME_ROOT=$ROOT/acme/issuing-root.pem
$T acme-root >"$ACME_ROOT"
note "ACME directory $ACME_DIR; its DNS resolves $HOST to the VPS ($VPS), and it validates HTTP-01 there"

step "images (docker import, no registry): edge and Traefik on the VPS; WordPress and MariaDB at home, from Debian's packages (cached after the first run)"
scripts/images.sh vps 2>&1 | indent
APPIMAGES=wordpress scripts/appimages.sh home1 home2 home3 2>&1 | indent
DBIMAGES=mariadb scripts/dbimages.sh home1 home2 home3 2>&1 | indent

step "docker network create -d $DEMO_NET_DRIVER $NET   (Traefik and the service share it)"
# shellcheck disable=SC2086 # DEMO_NET_OPTS is a list of options
$T docker vps network create -d "$DEMO_NET_DRIVER" $DEMO_NET_OPTS --attachable "$NET" >/dev/null

step "Traefik (file provider, no docker.sock, an ACME resolver 'le' at the ACME server) and edge (the only holder of docker.sock) on the VPS"
mkdir -p "$ROUTES"
# dnsrr: this kernel has no IPVS, so Swarm VIPs do not answer; with dnsrr the
# service's name resolves to its task. A 1 s resolver timeout keeps Traefik
# from waiting 5 s on a name whose task is not up yet.
$T docker vps service create -q --detach --no-resolve-image --name traefik \
  --constraint node.role==manager --network "$NET" --dns-option timeout:1 --dns-option attempts:1 \
  --publish mode=host,published=80,target=80 --publish mode=host,published=443,target=443 \
  --mount "type=bind,source=$ROUTES,target=/routes,readonly" \
  --mount "type=volume,source=acme,target=/acme,volume-driver=syncvol,volume-opt=replication=files" \
  --mount "type=bind,source=$ROOT/acme/ca.pem,target=/etc/acme-api-ca.pem,readonly" \
  --env LEGO_CA_CERTIFICATES=/etc/acme-api-ca.pem \
  homeswarm/traefik --entryPoints.web.address=:80 --entryPoints.websecure.address=:443 \
  --certificatesResolvers.le.acme.caServer="$ACME_DIR" --certificatesResolvers.le.acme.email=admin@example.org \
  --certificatesResolvers.le.acme.storage=/acme/acme.json --certificatesResolvers.le.acme.httpChallenge.entryPoint=web \
  --providers.file.directory=/routes \
  --providers.file.watch=true --providers.providersThrottleDuration=0s --log.level=WARN >/dev/null
$T docker vps service create -q --detach --no-resolve-image --name edge \
  --constraint node.role==manager --network host \
  --mount "type=bind,source=$($T host vps | sed 's|^unix://||'),target=/var/run/docker.sock" \
  --mount "type=bind,source=$ROUTES,target=/routes" \
  --env EDGE_NETWORK="$NET" --env EDGE_LISTEN=127.0.0.1:8089 homeswarm/edge >/dev/null
traefik_404() { [ "$($T exec vps curl -s -m 2 -o /dev/null -w '%{http_code}' -H 'Host: nothing.example.org' "http://$VPS/")" = 404 ]; }
until_ok "Traefik answering on $VPS:80" 90 traefik_404 || die "Traefik did not start"
until_ok "edge writing Traefik's routes" 60 test -f "$ROUTES/edge.yml" || die "edge did not start"
note "Traefik answers on $VPS:80 and :443; edge feeds it $ROUTES/edge.yml; its certificates live in acme.json on a syncvol volume (one Traefik: traefik/traefik#3594)"

step "docker stack deploy -c examples/wordpress-stack.yml $STACK   (WordPress + MariaDB at home, syncvol volumes, a meshnet network)"
t1=$(date +%s.%N)
WEB_NETWORK=$NET BLOG_HOST=$HOST BLOG_URL=https://$HOST CERT_RESOLVER=le DB_PASSWORD=demo-db-$$ \
  $T docker vps stack deploy -c examples/wordpress-stack.yml "$STACK" 2>&1 | grep -v 'detach=false' | indent
installer() { wp /wp-admin/install.php | grep -q weblog_title; }
until_ok "WordPress's installer answering at https://$HOST/ through Traefik (the certificate ordered meanwhile)" 180 installer ||
  die "WordPress is not reachable through Traefik"
note "https://$HOST/wp-admin/install.php answers through Traefik $(since "$t1") s after the deploy"
note "its certificate: $($T exec vps openssl s_client -connect "$VPS:443" -servername "$HOST" -CAfile "$ACME_ROOT" </dev/null 2>/dev/null |
  grep -E '^(issuer=|Verify return code)' | tr '\n' ' ')"
note "plain HTTP: $($T exec vps curl -s -o /dev/null -m 10 -w '%{http_code} → %{redirect_url}' --resolve "$HOST:80:$VPS" "http://$HOST/")"
where

step "installing WordPress through its own installer (wp-admin/install.php, through Traefik)"
t1=$(date +%s.%N)
WP_TIMEOUT=180 wp_install "The seed's blog" "$ADMIN" "$ADMIN_PASSWORD" || die "the installer failed"
note "installed in $(since "$t1") s (it creates its tables, each commit on the syncvol volume)"

step "publishing a post through WordPress's XML-RPC interface (wp.newPost), reading it back through Traefik"
TITLE="We moved house"
ID=$(wp_publish "$ADMIN" "$ADMIN_PASSWORD" "$TITLE" "The blog now lives at home, on syncvol.") || die "publishing failed"
wp_has_post "$ID" "$TITLE" || die "post $ID is not served"
note "post $ID \"$TITLE\" is at $(wp "/?p=$ID" -o /dev/null -w '%{url_effective}')"

node=$(running_on "$DB") nodewp=$(running_on "$WP")
drained="$node"
[ "$nodewp" = "$node" ] || drained="$node $nodewp"
step "docker node update --availability drain $drained   (where WordPress and MariaDB run)"
t1=$(date +%s.%N)
for n in $drained; do $T docker vps node update --availability drain "$n" >/dev/null; done
# shellcheck disable=SC2086 # a list of nodes
until_ok "WordPress and MariaDB back, the post served through Traefik" 240 blog_back "$ID" "$TITLE" $drained ||
  die "the blog did not come back after the drain"
note "post $ID served again $(since "$t1") s after the drain, same URL"
where
for n in $drained; do $T docker vps node update --availability active "$n" >/dev/null; done

node2=$(running_on "$DB")
step "MariaDB's node $node2: its engine is killed outright (SIGKILL, no goodbye)"
note "what a crash can lose: the database's commits of the last ~2 s before it (syncvol's bound;"
note "TestDatabaseFailover measures it); the post was written long before"
t1=$(date +%s.%N)
$T engine-stop "$node2" --kill
until_ok "WordPress and MariaDB back (Swarm first has to notice the node is gone)" 240 blog_back "$ID" "$TITLE" "$node2" ||
  die "the blog did not come back after the kill"
note "post $ID served again $(since "$t1") s after the kill"
where
ID2=$(wp_publish "$ADMIN" "$ADMIN_PASSWORD" "After the crash" "MariaDB recovered from its redo log.") ||
  die "publishing after the crash failed"
note "post $ID2 published after the crash: the database is writable"
$T engine-start "$node2"
note "$node2's engine restarted; it catches up on its own"

step "a fourth node at a friend's house joins with one key: scripts/topo.sh add-node home4"
# add-node installs the plugins with what a user gives them: the cluster's
# keys and one peer (the VPS), nothing else (`docker plugin set syncvol
# CLUSTER_KEY=… PEERS=10.254.0.1`, `docker plugin set meshnet MESH_KEY=…
# MESH_ADDR=10.254.0.14/24 MESH_PEERS=203.0.113.10:3210`).
$T add-node home4 2>&1 | indent
for p in meshnet syncvol; do
  info=$($T docker home4 plugin inspect "$p" --format '{{or .PluginReference "make install"}}|{{join .Settings.Env " "}}')
  note "$p on home4 (${info%%|*}): $(echo "${info#*|}" |
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
# No registry here: the images are imported on home4 as on the others.
APPIMAGES=wordpress scripts/appimages.sh home4 2>&1 | indent
DBIMAGES=mariadb scripts/dbimages.sh home4 2>&1 | indent
note "home4 is a Swarm worker at $($T docker vps node inspect home4 --format '{{.Status.Addr}}') (location=home)"
home4_has() { $T docker home4 volume ls -q | grep -qx "${STACK}_db"; }
until_ok "home4 learning of the volume ${STACK}_db" 60 home4_has || die "home4 does not know the volume"
note "home4 lists ${STACK}_db: $($T docker home4 volume inspect "${STACK}_db" --format '{{with index .Status "state"}}{{.}}{{else}}{{index .Status "role"}}{{end}}')"

step "docker service update --constraint-add node.hostname==home4 $DB $WP"
t1=$(date +%s.%N)
for svc in "$DB" "$WP"; do
  $T docker vps service update -q --detach --constraint-add node.hostname==home4 "$svc" >/dev/null
done
on_home4() { [ "$(running_on "$DB")" = home4 ] && [ "$(running_on "$WP")" = home4 ] && wp_has_post "$ID" "$TITLE" && wp_has_post "$ID2" "After the crash"; }
until_ok "the blog served from home4 through Traefik" 240 on_home4 || die "the blog did not move to home4"
note "both posts served from home4 after $(since "$t1") s, every one written on other nodes"
where

step "the database's volume, as home4's engine sees it"
$T docker home4 volume inspect "${STACK}_db" --format '{{json .Status}}' | tr ',' '\n' | indent

step "done: the topology stays up"
echo "          scripts/topo.sh exec vps curl -L --cacert $ACME_ROOT --resolve $HOST:443:$VPS https://$HOST/?p=$ID   # the post"
echo "          scripts/topo.sh docker vps stack ps $STACK                       # talk to any node's engine"
echo "          make demo-down                                                    # remove everything"
