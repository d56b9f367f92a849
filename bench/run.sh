#!/bin/sh
# Runs every bench (bench/*.sh other than this one), each writing
# bench/results/<name>.json, then bench/report, which writes
# bench/results/README.md and bench/results/chart.svg from all results (and
# the table into the top-level README's Benchmarks section).
# A failing bench is reported and the others still run; the exit status is
# non-zero if any failed. `make bench` runs this.
#
#   bench/run.sh                 every bench
#   bench/run.sh memory failover only these (by name), then the report
#
# dblag needs root (btrfs loop mounts) and installs its Debian packages.
# memory, failover and netdrv need the seed topology with its plugins: they
# share one instance (TOPO_PREFIX hf), brought up once and torn down after
# them; memory runs first, while the topology is fresh and idle. Each bench
# still runs alone (bench/failover.sh brings up its own instance).
set -u
cd "$(dirname "$0")/.."
mkdir -p bench/results
SWARM_BENCHES="memory failover netdrv"
want=" ${*:-all} "
wanted() { case $want in *" all "* | *" $1 "*) return 0 ;; esac; return 1; }
failed=""
runone() {
	echo "== $1" >&2
	if ! sh "$1"; then
		echo "== $1 FAILED" >&2
		failed="$failed $1"
	fi
}
for b in bench/*.sh; do
	[ "$b" = bench/run.sh ] && continue
	[ -f "$b" ] || continue
	name=$(basename "$b" .sh)
	case " $SWARM_BENCHES " in *" $name "*) continue ;; esac
	wanted "$name" && runone "$b"
done
swarm=""
for name in $SWARM_BENCHES; do
	[ -f "bench/$name.sh" ] && wanted "$name" && swarm="$swarm $name"
done
if [ -n "$swarm" ]; then
	export TOPO_PREFIX=${TOPO_PREFIX:-hf}
	export TOPO_ROOT=${TOPO_ROOT:-/var/lib/homeswarm-topo-$TOPO_PREFIX}
	export TOPO_RUN=${TOPO_RUN:-/run/$TOPO_PREFIX}
	echo "== topology $TOPO_PREFIX for:$swarm" >&2
	up=0
	if [ "${BENCH_REUSE:-0}" = 1 ]; then
		up=1
	elif make -s plugins >/dev/null && scripts/topo.sh up; then
		up=1
		trap 'scripts/topo.sh down >/dev/null 2>&1 || true' EXIT INT TERM
	else
		echo "== topology FAILED" >&2
		failed="$failed$swarm"
	fi
	if [ $up = 1 ]; then
		reuse=${BENCH_REUSE:-0}
		export BENCH_REUSE=1
		for name in $swarm; do runone "bench/$name.sh"; done
		BENCH_REUSE=$reuse
		if [ "$reuse" != 1 ]; then
			scripts/topo.sh down || failed="$failed topology-down"
			trap - EXIT INT TERM
		fi
	fi
fi
echo "== bench/report" >&2
go run ./bench/report -dir bench/results -readme README.md || failed="$failed bench/report"
if [ -n "$failed" ]; then
	echo "bench: failed:$failed" >&2
	exit 1
fi
