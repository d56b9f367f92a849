#!/bin/sh
# Runs the syncvol replication bench (bench/sync) on loopback: syncvol vs a
# plain Syncthing pair (defaults and fsWatcherDelayS=1) and an rsync daemon.
# Writes bench/results/sync.json. Takes ~4-5 minutes; extra arguments go to
# the program (e.g. -skip-defaults, -n 80; see `go run ./bench/sync -h`).
# `bench/sync.sh -large-only -cpuprofile /tmp/sv.prof` runs only the
# large-file rounds of syncvol and rsync (no JSON written) and profiles the
# engines while they move the file.
set -eu
cd "$(dirname "$0")/.."
bin=$(mktemp -d "${TMPDIR:-/tmp}/bs-syncbin.XXXXXX")
trap 'rm -rf "$bin"' EXIT INT TERM
command -v syncthing >/dev/null 2>&1 || [ -x /usr/bin/syncthing ] || { echo "bench/sync.sh: needs syncthing (apt-get install syncthing)" >&2; exit 1; }
command -v rsync >/dev/null 2>&1 || { echo "bench/sync.sh: needs rsync" >&2; exit 1; }
CGO_ENABLED=0 go build -tags noassets -o "$bin/sync" ./bench/sync
"$bin/sync" -out bench/results/sync.json "$@"
