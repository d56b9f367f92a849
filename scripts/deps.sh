#!/usr/bin/env bash
# deps.sh — install what `make demo` and `make test` need on a fresh Debian
# machine (as root), saying what it does: Debian's packages, a Docker
# engine running on this host, and Traefik (built once from the Go module
# proxy into /var/cache/homeswarm). Quick when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[deps %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

need=(docker.io busybox-static iproute2 iptables conntrack syncthing iperf3 wireguard-tools
  tcpdump rsync psmisc file make git gcc curl btrfs-progs qemu-user-static docker-registry pebble openssl)
missing=()
for p in "${need[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    say "missing Debian packages: ${missing[*]}; run as root (or: apt-get install ${missing[*]})"
    exit 1
  fi
  say "installing ${#missing[@]} Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
  say "packages installed"
fi
command -v go >/dev/null || { say "installing Go (golang-go)"; apt-get install -y -qq golang-go >/dev/null; }

# An engine on this host for `make install`; the topology starts its own.
if ! docker info >/dev/null 2>&1; then
  say "starting dockerd (log: /var/log/dockerd-homeswarm.log)"
  (dockerd >/var/log/dockerd-homeswarm.log 2>&1 &)
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { say "dockerd did not start; see /var/log/dockerd-homeswarm.log"; exit 1; }
fi

go mod download
scripts/traefik/build.sh >/dev/null
