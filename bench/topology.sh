# topology.sh — sourced by the bench scripts that measure on a seed topology
# instance of their own (bench/run.sh shares one between them instead).
#
# bench_topology PREFIX [--no-plugins] exports TOPO_PREFIX (default PREFIX),
# TOPO_ROOT and TOPO_RUN as scripts/topo.sh reads them. Unless BENCH_REUSE=1
# (an instance already up, left up), it brings the instance up — the
# plugins built and the Swarm over the mesh, or with --no-plugins on the
# plain addresses — and tears it down when the script exits.
bench_topology() {
  export TOPO_PREFIX="${TOPO_PREFIX:-$1}"
  export TOPO_ROOT="${TOPO_ROOT:-/var/lib/homeswarm-topo-$TOPO_PREFIX}"
  export TOPO_RUN="${TOPO_RUN:-/run/$TOPO_PREFIX}"
  [ "${BENCH_REUSE:-0}" != 1 ] || return 0
  trap 'scripts/topo.sh down >/dev/null 2>&1 || true' EXIT
  if [ "${2:-}" = --no-plugins ]; then
    TOPO_MESH=0 scripts/topo.sh up --no-plugins
  else
    make -s plugins >/dev/null
    scripts/topo.sh up
  fi
}
