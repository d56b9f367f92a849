#!/usr/bin/env bash
# images.sh — build the project's static images with `docker import` (no
# registry, no Dockerfile) and load them into an engine.
#
#   scripts/images.sh                    into the engine DOCKER_HOST points at
#   scripts/images.sh NODE…              into topology nodes (via scripts/topo.sh docker NODE)
#   IMAGES="edge web" scripts/images.sh  only some of them
#
# Images (each a root filesystem of one static binary plus the few files it
# needs; tarballs are cached in build/images/ and rebuilt when their input
# changes):
#   homeswarm/edge     /edge, built with CGO_ENABLED=0 from ./edge/cmd/edge; ENTRYPOINT ["/edge"]
#   homeswarm/traefik  /traefik, the cached Traefik v3 binary (scripts/traefik/build.sh prints
#                      its path; TRAEFIK_BIN overrides it); ENTRYPOINT ["/traefik"]
#   homeswarm/web      a tiny test web server: busybox httpd (Debian's busybox-static) serving
#                      WEB_TEXT (default: the container's hostname) at / on WEB_PORT
#                      (default 8080); stops at once on SIGTERM
#   homeswarm/demoapp  /demoapp, the demo's stateful service (scripts/demoapp), `IMAGES=demoapp`
#   homeswarm/l4echo   /l4echo, the TCP/TLS/UDP test backend (scripts/l4echo), `IMAGES=l4echo`
#
# The topology (scripts/topo.sh) honours TOPO_PREFIX / TOPO_ROOT / TOPO_RUN;
# pass them through to target another instance.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
OUT=${IMAGES_DIR:-$REPO/build/images}
WANT=${IMAGES:-edge traefik web}

say() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# skeleton DIR: the directories and /etc files a static binary may read.
skeleton() {
  mkdir -p "$1/etc" "$1/tmp" "$1/bin"
  chmod 1777 "$1/tmp"
  echo 'root:x:0:0:root:/:/bin/sh' > "$1/etc/passwd"
  echo 'root:x:0:' > "$1/etc/group"
  echo 'hosts: files dns' > "$1/etc/nsswitch.conf"
}

# pack NAME DIR: DIR's content → $OUT/NAME.tar (reproducible order and owners).
pack() {
  tar --sort=name --owner=0 --group=0 --numeric-owner -C "$2" -cf "$OUT/$1.tar.tmp" .
  mv -f "$OUT/$1.tar.tmp" "$OUT/$1.tar"
}

# build_go NAME PKG: a static build of PKG as /NAME, its ENTRYPOINT.
build_go() {
  local t
  t=$(mktemp -d)
  skeleton "$t"
  (cd "$REPO" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$t/$1" "$2")
  pack "$1" "$t"
  rm -rf "$t"
  eval "CHANGES_$1=('ENV PATH=/bin' 'ENTRYPOINT [\"/$1\"]')"
}

build_edge() { build_go edge ./edge/cmd/edge; }
build_demoapp() { build_go demoapp ./scripts/demoapp; }
build_l4echo() { build_go l4echo ./scripts/l4echo; }

build_traefik() {
  local bin=${TRAEFIK_BIN:-}
  if [ -z "$bin" ]; then
    # build.sh reuses its cache; it only builds (10-15 min) when the cache is empty.
    bin=$("$HERE/traefik/build.sh")
  fi
  [ -x "$bin" ] || die "no Traefik binary at $bin"
  file -L "$bin" 2>/dev/null | grep -q dynamically && die "$bin is dynamically linked"
  if [ ! -f "$OUT/traefik.tar" ] || [ "$bin" -nt "$OUT/traefik.tar" ]; then
    local t
    t=$(mktemp -d)
    skeleton "$t"
    cp "$bin" "$t/traefik"
    pack traefik "$t"
    rm -rf "$t"
  fi
  CHANGES_traefik=('ENV PATH=/bin' 'ENTRYPOINT ["/traefik"]')
}

build_web() {
  local bb
  bb=$(command -v busybox) || die "busybox not found: apt-get install busybox-static"
  file -L "$bb" 2>/dev/null | grep -q dynamically && die "$bb is dynamic; install busybox-static"
  if [ ! -f "$OUT/web.tar" ] || [ "$bb" -nt "$OUT/web.tar" ] || [ "$0" -nt "$OUT/web.tar" ]; then
    local t
    t=$(mktemp -d)
    skeleton "$t"
    cp "$bb" "$t/bin/busybox"
    for a in sh httpd hostname cat echo sleep kill mkdir wget; do ln -s busybox "$t/bin/$a"; done
    mkdir -p "$t/www"
    cat > "$t/web.sh" <<'EOF'
#!/bin/sh
# Serve $WEB_TEXT (default: hostname) at / on $WEB_PORT (default 8080).
# On SIGTERM keep serving $WEB_STOP_DELAY seconds (default 0) before
# stopping, as a server that drains does: the task's address leaves
# Traefik while it still answers.
text=${WEB_TEXT:-$(hostname)}
echo "$text" > /www/index.html
trap 'sleep "${WEB_STOP_DELAY:-0}"; kill $pid 2>/dev/null; exit 0' TERM INT
httpd -f -p "${WEB_PORT:-8080}" -h /www &
pid=$!
wait $pid
EOF
    chmod 755 "$t/web.sh"
    pack web "$t"
    rm -rf "$t"
  fi
  CHANGES_web=('ENV PATH=/bin' 'ENTRYPOINT ["/web.sh"]' 'EXPOSE 8080')
}

# load NAME TARGET: import $OUT/NAME.tar as homeswarm/NAME:latest.
load() {
  local name=$1 target=$2 var="CHANGES_$1[@]" args=()
  local c
  for c in "${!var}"; do args+=(-c "$c"); done
  if [ "$target" = - ]; then
    docker import "${args[@]}" "$OUT/$name.tar" "homeswarm/$name:latest" >/dev/null
  else
    "$HERE/topo.sh" docker "$target" import "${args[@]}" "$OUT/$name.tar" "homeswarm/$name:latest" >/dev/null
  fi
}

mkdir -p "$OUT"
for img in $WANT; do
  case $img in
    edge | traefik | web | demoapp | l4echo) "build_$img" ;;
    *) die "unknown image $img (edge, traefik, web, demoapp, l4echo)" ;;
  esac
done
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(-)
for target in "${targets[@]}"; do
  for img in $WANT; do
    load "$img" "$target"
    say "homeswarm/$img → ${target/#-/${DOCKER_HOST:-local engine}}"
  done
done
