#!/usr/bin/env bash
# mesh-loaded.sh — bench/mesh.sh on a loaded machine, made on demand: two
# processes keep the cores busy during every round of every path, so the
# tunnels share the CPU with them as on a home box doing other work (the
# issue asks for both figures). Writes bench/results/mesh-loaded.json.
# Arguments go to bench/mesh.sh (-runs, -t, -load N for another load).
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
exec "$(dirname "$0")/mesh.sh" -load 2 "$@"
