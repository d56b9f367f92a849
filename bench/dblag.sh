#!/bin/sh
# Runs the database replication-lag bench (bench/dblag) on loopback: the
# same sqlite3 workload (WAL, synchronous=FULL, ~200 small commits/s)
# replicated by syncvol snapshot volumes (volumedriver/snapvol, three
# in-process nodes, each on its own btrfs loop mount), plain Syncthing
# (fsWatcherDelayS=1) and lsyncd (delay 0); lag, acked commits lost per
# crash and recovery time. Writes bench/results/dblag.json. Takes ~5 min;
# extra arguments go to the program (e.g. -rounds 1, -load 10s; see
# `go run ./bench/dblag -h`).
#
# Needs root (loop devices, btrfs). It installs the Debian packages it uses
# when they are missing: sqlite3, syncthing, lsyncd, rsync, btrfs-progs
# (`make test` does not need them, so .ci/run does not install them).
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/dblag.sh: needs root (loop devices, btrfs)" >&2; exit 1; }
missing=""
for p in sqlite3 syncthing lsyncd rsync btrfs-progs coreutils; do
	dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "bench/dblag.sh: installing$missing" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq $missing >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq $missing >/dev/null; }
fi
bin=$(mktemp -d "${TMPDIR:-/tmp}/bs-dblagbin.XXXXXX")
trap 'rm -rf "$bin"' EXIT INT TERM
CGO_ENABLED=0 go build -o "$bin/dblag" ./bench/dblag
"$bin/dblag" -out bench/results/dblag.json "$@"
