#!/bin/sh
# Runs every bench (bench/*.sh other than this one), each writing
# bench/results/<name>.json, then bench/report, which writes
# bench/results/README.md and bench/results/chart.svg from all results.
# A failing bench is reported and the others still run; the exit status is
# non-zero if any failed. `make bench` runs this.
set -u
cd "$(dirname "$0")/.."
mkdir -p bench/results
failed=""
for b in bench/*.sh; do
	[ "$b" = bench/run.sh ] && continue
	[ -f "$b" ] || continue
	echo "== $b" >&2
	if ! sh "$b"; then
		echo "== $b FAILED" >&2
		failed="$failed $b"
	fi
done
echo "== bench/report" >&2
go run ./bench/report -dir bench/results || failed="$failed bench/report"
if [ -n "$failed" ]; then
	echo "bench: failed:$failed" >&2
	exit 1
fi
