#!/bin/sh
# build.sh builds the pinned Traefik (see go.mod) from the Go module proxy into a
# cache outside the repository and prints the binary's path. A binary already
# in the cache is reused. A cold build takes 10-15 minutes on 2 cores.
#
#   TRAEFIK_CACHE  cache directory (default /var/cache/homeswarm)
#   GOFLAGS        passed through (e.g. -p=1 to be gentler on a busy machine)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
version=$(awk '$1 == "require" && $2 == "github.com/traefik/traefik/v3" { print $3 }' "$here/go.mod")
cache=${TRAEFIK_CACHE:-/var/cache/homeswarm}
bin=$cache/traefik-$version
if [ -x "$bin" ] && "$bin" version >/dev/null 2>&1; then
	echo "$bin"
	exit 0
fi
mkdir -p "$cache"
tmp=$bin.tmp.$$
trap 'rm -f "$tmp"' EXIT INT TERM
start=$(date +%s)
echo "building Traefik $version from the Go module proxy into $cache (once; 10-15 min on 2 cores)" >&2
# A long step shows it is alive.
(while sleep 60; do echo "  still building Traefik ($(( $(date +%s) - start ))s)" >&2; done) &
ticker=$!
trap 'rm -f "$tmp"; kill $ticker 2>/dev/null' EXIT INT TERM
(cd "$here" && CGO_ENABLED=0 go build -trimpath \
	-ldflags "-X github.com/traefik/traefik/v3/pkg/version.Version=$version" \
	-o "$tmp" github.com/traefik/traefik/v3/cmd/traefik)
mv -f "$tmp" "$bin"
echo "traefik $version built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
