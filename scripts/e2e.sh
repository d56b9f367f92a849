#!/usr/bin/env bash
# e2e.sh — run the end-to-end tests on the seed topology (root only).
# The tests bring the topology up and down themselves; the trap makes sure
# it is torn down even when `go test` is killed by its timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  # a failure, not a skip: `make test` passing must mean the e2e tests ran
  echo "e2e: needs root (network namespaces, dockerd): run make test as root" >&2
  exit 1
fi
# E2E_REUSE=1: a topology the caller brought up; leave it as it is
[ "${E2E_REUSE:-}" = 1 ] || trap 'scripts/topo.sh down >/dev/null 2>&1 || true' EXIT
CGO_ENABLED=0 go test -tags e2e,noassets -count=1 -v -timeout "${E2E_TIMEOUT:-30m}" ./scripts/e2e/ "$@"
