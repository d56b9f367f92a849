#!/usr/bin/env bash
# install-plugin.sh NAME BUNDLE_DIR [KEY=VALUE | mount.source=PATH ...]
# install-plugin.sh --remove NAME
#
# Creates and enables the managed plugin NAME from BUNDLE_DIR (config.json +
# rootfs/) on the engine DOCKER_HOST points at. An older install is replaced
# cleanly: its settings (env values and mount sources) are carried over,
# then the arguments are applied on top, so an upgrade keeps the node's
# state directory and keys. Volumes live in the state directory on the host,
# so they survive the replacement.
set -euo pipefail

if [ "${1:-}" = "--remove" ]; then
  name=$2
  if docker plugin inspect "$name" >/dev/null 2>&1; then
    docker plugin disable -f "$name" >/dev/null 2>&1 || true
    docker plugin rm -f "$name" >/dev/null
  fi
  exit 0
fi

name=${1:?usage: install-plugin.sh NAME BUNDLE_DIR [SETTING=VALUE ...]}
bundle=${2:?usage: install-plugin.sh NAME BUNDLE_DIR [SETTING=VALUE ...]}
shift 2
[ -f "$bundle/config.json" ] && [ -d "$bundle/rootfs" ] || { echo "install-plugin: $bundle is not a plugin bundle (config.json + rootfs/); run make plugins" >&2; exit 1; }

settings=()
if docker plugin inspect "$name" >/dev/null 2>&1; then
  # Carry the settings over: env values and settable mount sources.
  mapfile -t settings < <(docker plugin inspect "$name" --format \
    '{{range .Settings.Env}}{{println .}}{{end}}{{range .Settings.Mounts}}{{.Name}}.source={{.Source}}{{println}}{{end}}' | grep -v '^$' || true)
  docker plugin disable -f "$name" >/dev/null 2>&1 || true
  docker plugin rm -f "$name" >/dev/null
fi
settings+=("$@")

docker plugin create "$name" "$bundle" >/dev/null
if [ ${#settings[@]} -gt 0 ]; then
  # A host directory bound into the plugin must exist before enable.
  for s in "${settings[@]}"; do
    case "$s" in
      *.source=/*) [ -n "${DOCKER_HOST:-}" ] && [ "${DOCKER_HOST#unix://}" = "$DOCKER_HOST" ] || mkdir -p "${s#*=}" ;;
    esac
  done
  docker plugin set "$name" "${settings[@]}"
fi
# The default state directory, for a plain local install.
src=$(docker plugin inspect "$name" --format '{{range .Settings.Mounts}}{{if eq .Name "state"}}{{.Source}}{{end}}{{end}}')
if [ -n "$src" ] && { [ -z "${DOCKER_HOST:-}" ] || [ "${DOCKER_HOST#unix://}" != "$DOCKER_HOST" ]; }; then mkdir -p "$src"; fi
if ! docker plugin enable "$name" >/dev/null; then
  echo "install-plugin: $name did not start; its log is in the engine's log (journalctl -u docker or dockerd's output)" >&2
  exit 1
fi
echo "$name installed and enabled on ${DOCKER_HOST:-the local engine}"
