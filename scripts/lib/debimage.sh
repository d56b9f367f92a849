# shellcheck shell=bash
# lib/debimage.sh — the machinery shared by scripts/dbimages.sh and
# scripts/appimages.sh: images assembled from Debian bookworm packages with
# no registry and no Dockerfile (`apt-get download`, `dpkg -x`,
# `docker import`). Sourced, never run.
#
# A script that sources it sets, before calling debimage_main "$@":
#   TAG            the log prefix ("dbimages")
#   KNOWN          the image names it can build ("sqlite postgres mariadb")
#   WANT           the names to build (default: KNOWN)
#   DENY           extra packages never unpacked (added to DEBIMAGE_DENY)
# and, for every image NAME:
#   ROOTS_NAME     the root packages (their Depends/Pre-Depends closure is unpacked)
#   extra_NAME T   adds what the image needs to the rootfs T (entrypoint, config)
#   changes_NAME   sets CHANGES, the `docker import -c` lines
#   verify_NAME V  (for --verify) proves the image works, with a fresh local volume V;
#                  prints one line saying what it found; non-zero when it does not work
#
# Maintainer scripts never run, so the packages only those scripts need
# (perl, debconf, adduser, ucf, …) are left out of the closure. Files are
# owned by root in the image.
#
# Downloads and tarballs are cached in $DBIMAGES_CACHE
# (/var/cache/homeswarm/images); a tarball is keyed by the package versions
# and the shell code that shapes the image (base, extra_NAME, changes_NAME),
# so a rerun only imports and editing a verify step rebuilds nothing.
# Targets: none (the engine DOCKER_HOST points at) or topology nodes, via
# scripts/topo.sh docker NODE (which honours TOPO_PREFIX / TOPO_ROOT / TOPO_RUN).

DEBIMAGE_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${DBIMAGES_CACHE:-/var/cache/homeswarm/images}

say() { printf '[%s %s] %s\n' "$TAG" "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Never unpacked: needed only by maintainer scripts or wrappers we do not
# run, or optional (libllvm14: JIT; locales: the images use the C locale).
DEBIMAGE_DENY=" perl perl-base perl-modules-5.36 libperl5.36 debconf cdebconf adduser passwd login
 ucf logrotate cron ssl-cert lsb-base sensible-utils init-system-helpers locales locales-all
 debianutils dpkg coreutils bash sed grep tar gzip mawk base-files base-passwd util-linux
 libc-bin netbase procps iproute2 psmisc lsof socat rsync systemd systemd-tmpfiles "

APT_OPTS=(--no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances)

debimage_roots() {
  local img var all=""
  for img in $WANT; do
    var="ROOTS_$img"
    all="$all ${!var}"
  done
  echo "$all"
}

need_tools() {
  local missing=()
  command -v apt-get >/dev/null || die "apt-get is needed (a Debian host)"
  command -v dpkg-deb >/dev/null || missing+=(dpkg)
  command -v docker >/dev/null || missing+=(docker.io)
  command -v ldconfig >/dev/null || missing+=(libc-bin)
  command -v sha256sum >/dev/null || missing+=(coreutils)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # the package lists must know every root package
  # shellcheck disable=SC2046
  if ! apt-cache show --no-all-versions $(debimage_roots) >/dev/null 2>&1; then
    say "apt-get update (the package lists do not know every package)"
    apt-get update -qq
  fi
}

# closure ROOT… prints the dependency closure (Depends and Pre-Depends,
# without virtual and denied packages), one name a line, sorted. A group of
# alternatives with a denied member is left out whole (the image provides
# that role itself, or does without).
closure() {
  local seen=" " todo=("$@") next
  while [ ${#todo[@]} -gt 0 ]; do
    local p
    for p in "${todo[@]}"; do seen="$seen$p "; done
    next=$(apt-cache depends "${APT_OPTS[@]}" "${todo[@]}" 2>/dev/null | awk -v deny="$DEBIMAGE_DENY $DENY" '
      BEGIN { n = split(deny, d, " "); for (i = 1; i <= n; i++) denied[d[i]] = 1 }
      # a group of alternatives: "|Depends: a" lines, then "Depends: b"
      /^  \|?(Pre)?Depends: / {
        name = $2; alt = ($1 ~ /^\|/)
        sub(/:any$/, "", name)
        group[++g] = name
        if (alt) next
        pick = ""; skip = 0
        for (i = 1; i <= g; i++) {
          if (group[i] in denied) skip = 1
          else if (pick == "" && group[i] !~ /^</) pick = group[i]
        }
        if (!skip && pick != "") print pick
        g = 0
      }')
    todo=()
    for p in $(echo "$next" | sort -u); do
      case $seen in *" $p "*) ;; *) todo+=("$p") ;; esac
    done
  done
  echo "$seen" | tr ' ' '\n' | sed '/^$/d' | sort -u
}

# versions PKG… prints "pkg=version" for the candidate of each.
versions() {
  apt-cache show --no-all-versions "$@" | awk '/^Package:/ { p = $2 } /^Version:/ { print p "=" $2 }' | sort -u
}

# deb_of PKG=VER prints the cached .deb of that version (none: non-zero).
deb_of() {
  local p=${1%%=*} v=${1#*=} f
  for f in "$CACHE/debs/${p}_${v/:/%3a}_"*.deb; do [ -f "$f" ] && { echo "$f"; return; }; done
  return 1
}

# fetch PKG=VER…: the .deb files into $CACHE/debs (only the missing ones).
fetch() {
  local missing=() pv
  for pv in "$@"; do deb_of "$pv" >/dev/null || missing+=("$pv"); done
  [ ${#missing[@]} -gt 0 ] || return 0
  say "  downloading ${#missing[@]} of $# packages"
  mkdir -p "$CACHE/debs"
  chown _apt "$CACHE/debs" 2>/dev/null || true # apt's download sandbox
  (cd "$CACHE/debs" && apt-get download -q "${missing[@]}" 2>&1 | grep -v '^Get:\|unsandboxed' >&2 || true)
  for pv in "${missing[@]}"; do deb_of "$pv" >/dev/null || die "download of $pv failed"; done
}

# base ROOTFS: what every image gets after the packages: busybox applets,
# users, ld.so cache, no docs.
base() {
  local t=$1 a
  rm -rf "$t/usr/share/doc" "$t/usr/share/man" "$t/usr/share/info" "$t/usr/share/locale" \
    "$t/usr/share/lintian" "$t/usr/share/bug" "$t/usr/share/menu" "$t/usr/lib/x86_64-linux-gnu/gconv"
  mkdir -p "$t/bin" "$t/etc/ld.so.conf.d" "$t/tmp" "$t/run" "$t/var/tmp" "$t/data"
  chmod 1777 "$t/tmp" "$t/var/tmp"
  [ -x "$t/bin/busybox" ] || die "no /bin/busybox in the rootfs"
  for a in $("$t/bin/busybox" --list); do
    [ -e "$t/bin/$a" ] || [ -e "$t/usr/bin/$a" ] || [ -e "$t/sbin/$a" ] || [ -e "$t/usr/sbin/$a" ] ||
      ln -s busybox "$t/bin/$a"
  done
  cat > "$t/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
www-data:x:33:33:www-data:/var/www:/bin/false
postgres:x:101:101:PostgreSQL:/var/lib/postgresql:/bin/sh
mysql:x:102:102:MariaDB:/nonexistent:/bin/false
mumble-server:x:103:103:Mumble:/var/lib/mumble-server:/bin/false
prosody:x:104:104:Prosody:/data:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
  cat > "$t/etc/group" <<'GROUP'
root:x:0:
www-data:x:33:
postgres:x:101:
mysql:x:102:
mumble-server:x:103:
prosody:x:104:
nogroup:x:65534:
GROUP
  echo 'root:*:19000:0:99999:7:::' > "$t/etc/shadow"
  chmod 640 "$t/etc/shadow"
  printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' > "$t/etc/nsswitch.conf"
  echo 'include /etc/ld.so.conf.d/*.conf' > "$t/etc/ld.so.conf"
  printf '/usr/local/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n' \
    > "$t/etc/ld.so.conf.d/x86_64-linux-gnu.conf"
  ldconfig -r "$t"
  mkdir -p "$t/root" "$t/var/lib/postgresql"
}

# build NAME: $CACHE/NAME-KEY.tar, then TAR_NAME=path; CHANGES_NAME set.
build() {
  local name=$1 roots var pkgs key tarball shape
  var="ROOTS_$name"
  roots=${!var}
  # the closure is computed again only when the package lists, the roots or
  # the deny list change
  local lists ckey
  lists=$(stat -c %Y /var/lib/apt/lists /var/lib/apt/lists/* 2>/dev/null | sha256sum | cut -c1-16)
  ckey=$(echo "$roots $lists $DEBIMAGE_DENY $DENY" | sha256sum | cut -c1-16)
  if [ -s "$CACHE/closure-$name-$ckey" ]; then
    pkgs=$(cat "$CACHE/closure-$name-$ckey")
  else
    # shellcheck disable=SC2046
    pkgs=$(versions $(closure $roots))
    rm -f "$CACHE/closure-$name-"*
    echo "$pkgs" > "$CACHE/closure-$name-$ckey"
  fi
  shape=$(declare -f base "extra_$name" "changes_$name")
  key=$(printf '%s\n%s\n' "$pkgs" "$shape" | sha256sum | cut -c1-16)
  tarball="$CACHE/$name-$key.tar"
  "changes_$name"
  if [ -f "$tarball" ]; then
    say "homeswarm/$name: cached $(basename "$tarball") ($(echo "$pkgs" | wc -l) packages)"
  else
    local start=$SECONDS
    say "building $name ($(echo "$pkgs" | wc -l) packages: $roots and their dependencies)"
    # shellcheck disable=SC2086
    fetch $pkgs
    local t pv
    t=$(mktemp -d "$CACHE/root-$name.XXXXXX")
    say "  unpacking into a rootfs"
    for pv in $pkgs; do dpkg-deb -x "$(deb_of "$pv")" "$t"; done
    base "$t"
    "extra_$name" "$t"
    say "  packing $(du -sm "$t" | cut -f1) MB"
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$t" -cf "$tarball.tmp" .
    mv -f "$tarball.tmp" "$tarball"
    rm -rf "$t"
    # older tarballs of this image
    find "$CACHE" -maxdepth 1 -name "$name-*.tar" ! -name "$(basename "$tarball")" -delete
    say "  homeswarm/$name built in $((SECONDS - start)) s"
  fi
  eval "TAR_$name=\$tarball"
  eval "CHANGES_$name=(\"\${CHANGES[@]}\")"
}

load() {
  local name=$1 target=$2 tv="TAR_$1" var="CHANGES_$1[@]" args=() c
  for c in "${!var}"; do args+=(-c "$c"); done
  if [ "$target" = - ]; then
    docker import "${args[@]}" "${!tv}" "homeswarm/$name:latest" >/dev/null
  else
    "$DEBIMAGE_HERE/topo.sh" docker "$target" import "${args[@]}" "${!tv}" "homeswarm/$name:latest" >/dev/null
  fi
}

# until_ok SECONDS CMD…: run CMD every 0.5 s until it succeeds (quietly).
until_ok() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
}

# verify: verify_NAME for every wanted image, each with a fresh local volume
# V; the containers and network it makes are named $TAG-verify-NAME*, any
# other volume V-…; all are removed after it, failed or not.
verify() {
  local img v rc=0 out
  for img in $WANT; do
    v=$TAG-verify-$img-$$
    verify_cleanup "$img"
    docker volume create "$v" >/dev/null
    say "verify homeswarm/$img (volume $v)"
    if out=$("verify_$img" "$v"); then say "  $img: $out"; else say "  $img: FAILED"; rc=1; fi
    verify_cleanup "$img"
    # the volume, and any a verify step made beside it ($v-…), even when it failed
    docker volume rm $(docker volume ls -q --filter "name=^$v") >/dev/null
  done
  return $rc
}

verify_cleanup() {
  local c
  for c in $(docker ps -aq --filter "name=^$TAG-verify-$1"); do docker rm -f "$c" >/dev/null 2>&1 || true; done
  docker network rm "$TAG-verify-$1" >/dev/null 2>&1 || true
}

# debimage_main [--verify] [NODE…]
debimage_main() {
  local verify=0 img target targets
  WANT=${WANT:-$KNOWN}
  if [ "${1:-}" = --verify ]; then
    verify=1
    shift
    [ $# = 0 ] || die "--verify takes no nodes"
  fi
  for img in $WANT; do
    case " $KNOWN " in *" $img "*) ;; *) die "unknown image $img (${KNOWN// /, })" ;; esac
  done
  mkdir -p "$CACHE"
  need_tools
  for img in $WANT; do build "$img"; done
  targets=("$@")
  [ ${#targets[@]} -gt 0 ] || targets=(-)
  for target in "${targets[@]}"; do
    for img in $WANT; do
      say "importing homeswarm/$img → ${target/#-/${DOCKER_HOST:-local engine}}"
      load "$img" "$target"
    done
  done
  [ $verify = 0 ] || verify
}
