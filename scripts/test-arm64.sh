#!/usr/bin/env bash
# test-arm64.sh — the unit tests of the arm64 (Raspberry Pi) binaries, run
# on this machine under qemu-user (Debian's qemu-user-static), so a bug that
# shows only on arm64 (alignment, word size, atomics, byte order in the
# wire code) fails CI. Each package's tests are cross-compiled and run with
# qemu-aarch64-static from the package's directory, as `go test` would.
#
# qemu-user translates the system calls a program makes but not every
# ioctl and netlink family: btrfs ioctls answer ENOSYS and the netlink and
# TUN set-up of the kernel tests "protocol not supported". Those tests
# (named below) test the kernel, not the arm64 code; they run natively in
# `make test-unit`, and on a Pi with `make test-unit`.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[arm64 %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
QEMU=${QEMU:-qemu-aarch64-static}
command -v "$QEMU" >/dev/null || { say "$QEMU not found: apt-get install qemu-user-static (scripts/deps.sh does)"; exit 1; }

# package → what qemu-user cannot run there (a -test.skip pattern), or
# "run:<pattern>" where only the listed tests can run at all
declare -A limit=(
  [netdriver]='^TestKernel'
  [netdriver/mesh]='^TestKernel'
  [netdriver/tun]='^TestNativeTUN$'
  [volumedriver/snapvol]='run:^(TestApplyRefusesEscapes|TestGenNames|FuzzApplyStream)$'
)

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mod=$(go list -m)
pkgs=$(go list -tags noassets -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' ./... | grep . | grep -v "^$mod/bench/")
n=$(echo "$pkgs" | wc -l)
say "cross-compiling the tests of $n packages for arm64"
fail=0 i=0
for p in $pkgs; do
  i=$((i + 1))
  rel=${p#"$mod"/}
  bin="$out/$(echo "$rel" | tr / _).test"
  GOARCH=arm64 CGO_ENABLED=0 go test -c -tags noassets -o "$bin" "$p"
  args=(-test.timeout 10m)
  case "${limit[$rel]:-}" in
    run:*) args+=(-test.run "${limit[$rel]#run:}") ;;
    ?*) args+=(-test.skip "${limit[$rel]}") ;;
  esac
  start=$(date +%s)
  if (cd "$rel" && "$QEMU" "$bin" "${args[@]}" >"$bin.log" 2>&1); then
    say "ok   [$i/$n] $rel ($(( $(date +%s) - start ))s)"
  else
    say "FAIL [$i/$n] $rel"; grep -E -- '^(--- FAIL|FAIL|panic)|_test.go:[0-9]+' "$bin.log" | head -20 >&2
    fail=1
  fi
done
exit $fail
