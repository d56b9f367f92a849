#!/usr/bin/env bash
# btrfs-pool.sh DIR [SIZE] — put DIR (syncvol's state directory, e.g.
# /var/lib/syncvol) on a btrfs of its own: a sparse image file DIR.img of
# SIZE (default 20G; it takes only what is written) on a loop device. On a
# btrfs file system syncvol's volumes are crash-consistent snapshot
# volumes (README, syncvol). Idempotent: a DIR already on btrfs is left as
# it is. For a reboot, add to /etc/fstab:  DIR.img DIR btrfs loop 0 0
set -euo pipefail
dir=${1:?usage: btrfs-pool.sh DIR [SIZE]}
size=${2:-20G}
mkdir -p "$dir"
if [ "$(stat -f -c %T "$dir")" = btrfs ]; then exit 0; fi
mountpoint -q "$dir" && { echo "btrfs-pool: $dir is a mount point of another file system" >&2; exit 1; }
command -v mkfs.btrfs >/dev/null || { echo "btrfs-pool: mkfs.btrfs not found: apt-get install btrfs-progs" >&2; exit 1; }
[ -z "$(ls -A "$dir")" ] || { echo "btrfs-pool: $dir is not empty; move its content away first" >&2; exit 1; }
truncate -s "$size" "$dir.img"
mkfs.btrfs -q -f "$dir.img" >/dev/null
mount -o loop "$dir.img" "$dir"
