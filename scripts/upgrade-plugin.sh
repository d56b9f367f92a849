#!/usr/bin/env bash
# upgrade-plugin.sh NAME [REMOTE] — upgrade the managed plugin NAME in place,
# on the engine DOCKER_HOST points at, while containers use its volumes or
# networks (README, "Upgrading the plugins"): no drain needed.
#
#   docker plugin install --disable --alias NAME-upgrade-PID REMOTE
#                                          (fetches the layers while NAME still runs: the
#                                           upgrade's pull then finds them, "Already exists")
#   docker plugin disable -f NAME          (refused while in use without -f)
#   docker plugin upgrade --grant-all-permissions --skip-remote-check NAME REMOTE
#   docker plugin set NAME state.source=…  (the upgrade keeps the settings but starts the
#                                           plugin with the new manifest's mount sources:
#                                           Docker 20.10; without this the enable fails)
#   docker plugin enable NAME
#   docker plugin rm NAME-upgrade-PID
#
# REMOTE defaults to the reference NAME was installed from (a new push under
# the same tag). The plugin is down from the disable to the enable (meshnet:
# 0.8 s measured with the layers fetched first, 1.1 s without, registry on the
# LAN); run the steps together, as here: meshnet down for longer than
# Swarm's heartbeat timeout takes the node out of the Swarm, and Swarm
# restarts its tasks.
set -euo pipefail
name=${1:?usage: upgrade-plugin.sh NAME [REMOTE]}
remote=${2:-$(docker plugin inspect "$name" --format '{{.PluginReference}}')}
[ -n "$remote" ] || { echo "upgrade-plugin: $name was not installed from a registry (make install); give REMOTE or use make install" >&2; exit 1; }
# Fetch first, so the outage holds no download.
fetch="$name-upgrade-$$"
docker plugin install --disable --grant-all-permissions --alias "$fetch" "$remote" >/dev/null
trap 'docker plugin rm -f "$fetch" >/dev/null 2>&1 || true' EXIT
mapfile -t mounts < <(docker plugin inspect "$name" --format '{{range .Settings.Mounts}}{{.Name}}.source={{.Source}}{{println}}{{end}}' | grep -v '^$' || true)
down=$(date +%s%N)
docker plugin disable -f "$name" >/dev/null
if ! docker plugin upgrade --grant-all-permissions --skip-remote-check "$name" "$remote" >/dev/null; then
  echo "upgrade-plugin: docker plugin upgrade $name $remote failed; enabling the old one again" >&2
  docker plugin enable "$name" >/dev/null || true
  exit 1
fi
[ ${#mounts[@]} = 0 ] || docker plugin set "$name" "${mounts[@]}"
docker plugin enable "$name" >/dev/null
echo "$name upgraded to $remote on ${DOCKER_HOST:-the local engine}; down $(( ($(date +%s%N) - down) / 1000000 )) ms"
