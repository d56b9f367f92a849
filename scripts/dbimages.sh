#!/usr/bin/env bash
# dbimages.sh — real database images, assembled from Debian bookworm packages
# (no registry, no Dockerfile: `apt-get download`, `dpkg -x`, `docker import`).
#
#   scripts/dbimages.sh                      into the engine DOCKER_HOST points at
#   scripts/dbimages.sh NODE…                into topology nodes (via scripts/topo.sh docker NODE)
#   DBIMAGES="sqlite postgres" scripts/dbimages.sh   only some of them
#   scripts/dbimages.sh --verify             into the local engine, then check each image
#                                            survives SIGKILL: rows committed on a
#                                            local volume, container killed, a new
#                                            container recovers them and passes
#                                            the database's own check
#
# Images (each the dependency closure of its packages unpacked with dpkg -x,
# plus Debian's busybox-static as /bin/busybox with its applet links):
#   homeswarm/sqlite    sqlite3 (the CLI and libsqlite3); ENTRYPOINT ["/bin/sh"]
#   homeswarm/postgres  postgresql-15 (initdb, postgres, pg_ctl, psql, pg_amcheck);
#                       /entrypoint.sh initdb's $PGDATA (default /data/pg) when empty and
#                       runs postgres in the foreground with fsync=on,
#                       synchronous_commit=on, listen_addresses='*' and trust
#                       authentication (a test image); SIGTERM → fast shutdown.
#                       Any arguments are extra postgres options (-c name=value).
#   homeswarm/mariadb   mariadb-server-core + mariadb-client 10.11 (mariadbd,
#                       mariadb-install-db, mariadb, mariadb-check); /entrypoint.sh
#                       initialises $DATADIR (default /data/mysql) when empty and
#                       execs mariadbd in the foreground with
#                       innodb_flush_log_at_trx_commit=1, sync_binlog=1 (binary log on),
#                       networking on 0.0.0.0:3306, root@'%' without a password (test only).
#                       Any arguments are extra mariadbd options.
#
# Maintainer scripts never run, so the packages only those scripts need
# (perl, debconf, adduser, postgresql-common's wrappers, …) are left out of
# the closure; so is libllvm14 (PostgreSQL's optional JIT, turned off).
# Files are owned by root in the image; the entrypoints chown the data
# directory to the database's user at every start (a volume's files may
# arrive owned by anyone).
#
# Downloads and tarballs are cached in $DBIMAGES_CACHE
# (/var/cache/homeswarm/images), a tarball keyed by the package versions and
# this script, so a rerun only imports. The topology (scripts/topo.sh)
# honours TOPO_PREFIX / TOPO_ROOT / TOPO_RUN; pass them through to target
# another instance.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${DBIMAGES_CACHE:-/var/cache/homeswarm/images}
WANT=${DBIMAGES:-sqlite postgres mariadb}

say() { printf '[dbimages %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

ROOTS_sqlite="sqlite3 busybox-static"
ROOTS_postgres="postgresql-15 postgresql-client-15 busybox-static"
ROOTS_mariadb="mariadb-server-core mariadb-client mariadb-client-core busybox-static"

# Never unpacked: needed only by maintainer scripts or wrappers we do not
# run, or optional (libllvm14: JIT; locales: we use the C locale).
DENY=" perl perl-base perl-modules-5.36 libperl5.36 debconf cdebconf adduser passwd login
 postgresql-common postgresql-client-common ucf logrotate cron ssl-cert lsb-base
 sensible-utils init-system-helpers locales locales-all libllvm14 debianutils
 libconfig-inifiles-perl libdbi-perl libdbd-mariadb-perl galera-4 rsync lsof socat
 procps iproute2 psmisc pwgen dpkg coreutils bash sed grep tar gzip mawk base-files
 base-passwd util-linux libc-bin mariadb-server mysql-common netbase "
DENY=${DENY//$'\n'/ }

APT_OPTS=(--no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances)

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
  # shellcheck disable=SC2086
  if ! apt-cache show --no-all-versions $ROOTS_sqlite $ROOTS_postgres $ROOTS_mariadb >/dev/null 2>&1; then
    say "apt-get update (the package lists do not know every package)"
    apt-get update -qq
  fi
}

# closure ROOT… prints the dependency closure (Depends and Pre-Depends,
# without virtual and denied packages), one name a line, sorted.
closure() {
  local seen=" " todo=("$@") next
  while [ ${#todo[@]} -gt 0 ]; do
    local p
    for p in "${todo[@]}"; do seen="$seen$p "; done
    next=$(apt-cache depends "${APT_OPTS[@]}" "${todo[@]}" 2>/dev/null | awk -v deny="$DENY" '
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

# fetch PKG=VER…: the .deb files into $CACHE/debs (only the missing ones).
deb_of() {
  local pv=$1 p=${1%%=*} v=${1#*=}
  local f
  for f in "$CACHE/debs/${p}_${v/:/%3a}_"*.deb; do [ -f "$f" ] && { echo "$f"; return; }; done
  return 1
}
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
  cat > "$t/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
postgres:x:101:101:PostgreSQL:/var/lib/postgresql:/bin/sh
mysql:x:102:102:MariaDB:/nonexistent:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
  cat > "$t/etc/group" <<'EOF'
root:x:0:
postgres:x:101:
mysql:x:102:
nogroup:x:65534:
EOF
  echo 'root:*:19000:0:99999:7:::' > "$t/etc/shadow"
  chmod 640 "$t/etc/shadow"
  printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' > "$t/etc/nsswitch.conf"
  echo 'include /etc/ld.so.conf.d/*.conf' > "$t/etc/ld.so.conf"
  printf '/usr/local/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n' \
    > "$t/etc/ld.so.conf.d/x86_64-linux-gnu.conf"
  ldconfig -r "$t"
  mkdir -p "$t/root" "$t/var/lib/postgresql"
}

extra_sqlite() { :; }
changes_sqlite() { CHANGES=('ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' 'ENTRYPOINT ["/bin/sh"]'); }

extra_postgres() {
  local t=$1
  rm -f "$t"/usr/lib/postgresql/15/lib/llvmjit*
  rm -rf "$t"/usr/lib/postgresql/15/lib/bitcode
  cat > "$t/entrypoint.sh" <<'EOF'
#!/bin/sh
# PostgreSQL 15 in the foreground on $PGDATA (initdb'd when empty).
# Durable settings on the command line, so they hold on every start.
set -e
PGDATA=${PGDATA:-/data/pg}
export PGDATA
mkdir -p "$PGDATA" /run/postgresql
# a volume's files may arrive owned by anyone: the server's user owns them
chown -R postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "entrypoint: initdb $PGDATA"
  # an interrupted initdb leaves a partial directory: start over
  find "$PGDATA" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
  su -s /bin/sh postgres -c "initdb -D '$PGDATA' --username=postgres --auth=trust --encoding=UTF8 --locale=C --data-checksums" >/dev/null
  echo 'host all all 0.0.0.0/0 trust' >> "$PGDATA/pg_hba.conf"
fi
su -s /bin/sh postgres -c "exec postgres -D '$PGDATA' -c fsync=on -c synchronous_commit=on \
  -c full_page_writes=on -c listen_addresses='*' -c unix_socket_directories=/run/postgresql \
  -c jit=off -c shared_buffers=32MB -c max_wal_size=256MB -c log_min_messages=warning $*" &
pid=$!
# SIGTERM (docker stop) → fast shutdown: a smart one waits for every client
trap 'kill -INT $pid 2>/dev/null' TERM INT
while kill -0 $pid 2>/dev/null; do wait $pid || true; done
wait $pid
EOF
  chmod 755 "$t/entrypoint.sh"
}
changes_postgres() {
  CHANGES=('ENV PATH=/usr/lib/postgresql/15/bin:/usr/sbin:/usr/bin:/sbin:/bin' 'ENV PGDATA=/data/pg'
    'ENV PGHOST=/run/postgresql' 'ENV PGUSER=postgres' 'ENTRYPOINT ["/entrypoint.sh"]' 'EXPOSE 5432')
}

extra_mariadb() {
  local t=$1 f
  # the client tools are 5 MB each (statically linked): keep those the
  # image is for, and the links to them
  for f in "$t"/usr/bin/*; do
    case $(basename "$(readlink -f "$f")") in
      mariadb | mariadb-check | mariadb-admin | mariadb-dump | mariadb-binlog | mariadb-install-db | \
        my_print_defaults | resolveip | innochecksum) ;;
      *) rm -f "$f" ;;
    esac
  done
  find "$t/usr/bin" -xtype l -delete
  mkdir -p "$t/etc/mysql/conf.d" "$t/etc/mysql/mariadb.conf.d" "$t/run/mysqld"
  cat > "$t/etc/mysql/my.cnf" <<'EOF'
[client-server]
socket = /run/mysqld/mysqld.sock
EOF
  cat > "$t/entrypoint.sh" <<'EOF'
#!/bin/sh
# MariaDB 10.11 in the foreground on $DATADIR (initialised when empty).
set -e
DATADIR=${DATADIR:-/data/mysql}
mkdir -p "$DATADIR" /run/mysqld
chown -R mysql:mysql "$DATADIR" /run/mysqld
if [ ! -d "$DATADIR/mysql" ]; then
  echo "entrypoint: mariadb-install-db $DATADIR"
  find "$DATADIR" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
  mariadb-install-db --user=mysql --datadir="$DATADIR" --auth-root-authentication-method=normal \
    --skip-test-db --skip-name-resolve --innodb-log-file-size=16M >/dev/null
fi
# root from anywhere without a password (test image), at every start
cat > /run/mysqld/init.sql <<'SQL'
CREATE USER IF NOT EXISTS 'root'@'%';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;
SQL
chown mysql /run/mysqld/init.sql
exec mariadbd --user=mysql --datadir="$DATADIR" --skip-networking=0 --bind-address=0.0.0.0 \
  --skip-name-resolve --innodb-flush-log-at-trx-commit=1 --sync-binlog=1 --log-bin=binlog \
  --server-id=1 --innodb-log-file-size=16M --innodb-buffer-pool-size=64M --innodb-doublewrite=1 \
  --init-file=/run/mysqld/init.sql --log-error= --log-warnings=1 "$@"
EOF
  chmod 755 "$t/entrypoint.sh"
}
changes_mariadb() { CHANGES=('ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' 'ENTRYPOINT ["/entrypoint.sh"]' 'EXPOSE 3306'); }

# build NAME: $CACHE/NAME-KEY.tar, then TAR_NAME=path; CHANGES_NAME set.
build() {
  local name=$1 roots var pkgs key tarball
  var="ROOTS_$name"
  roots=${!var}
  # the closure is computed again only when the package lists or this script change
  local lists ckey
  lists=$(stat -c %Y /var/lib/apt/lists /var/lib/apt/lists/* 2>/dev/null | sha256sum | cut -c1-16)
  ckey=$( { echo "$roots $lists"; sha256sum < "$0"; } | sha256sum | cut -c1-16)
  if [ -s "$CACHE/closure-$name-$ckey" ]; then
    pkgs=$(cat "$CACHE/closure-$name-$ckey")
  else
    pkgs=$(versions $(closure $roots))
    rm -f "$CACHE/closure-$name-"*
    echo "$pkgs" > "$CACHE/closure-$name-$ckey"
  fi
  key=$( { echo "$pkgs"; sha256sum < "$0"; } | sha256sum | cut -c1-16)
  tarball="$CACHE/$name-$key.tar"
  "changes_$name"
  if [ -f "$tarball" ]; then
    say "homeswarm/$name: cached $(basename "$tarball") ($(echo "$pkgs" | wc -l) packages)"
  else
    # shellcheck disable=SC2086
    say "building $name ($(echo "$pkgs" | wc -l) packages: $roots and their dependencies)"
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
    "$HERE/topo.sh" docker "$target" import "${args[@]}" "${!tv}" "homeswarm/$name:latest" >/dev/null
  fi
}

# ---------------------------------------------------------------- verify

# until SECONDS CMD…: run CMD every 0.5 s until it succeeds (quietly).
until_ok() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
}

# verify_NAME VOLUME: commit rows, SIGKILL, recover in a new container; prints what it found.
verify_sqlite() {
  local v=$1 c=dbimages-verify-sqlite out
  docker run -d --name $c -v "$v:/data" homeswarm/sqlite -c 'i=0
    { echo "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE t(n INTEGER PRIMARY KEY, pad BLOB);"
      while [ $i -lt 500 ]; do i=$((i+1)); echo "BEGIN; INSERT INTO t VALUES($i, randomblob(1000)); COMMIT;"; done
      echo "SELECT '"'"'acked'"'"', max(n) FROM t;"; sleep 3600; } | sqlite3 /data/db.sqlite' >/dev/null
  until_ok 60 sh -c "docker logs $c 2>&1 | grep -q acked" || { docker logs $c; return 1; }
  docker kill -s KILL $c >/dev/null
  docker rm $c >/dev/null
  out=$(docker run --rm -v "$v:/data" homeswarm/sqlite -c 'sqlite3 /data/db.sqlite "PRAGMA integrity_check; SELECT count(*) FROM t;"' | tr '\n' ' ')
  [ "$out" = "ok 500 " ] || { say "sqlite after SIGKILL: $out (want: ok 500)"; return 1; }
  echo "integrity_check ok, 500 of 500 committed rows"
}

verify_server() { # NAME VOLUME READY-CMD COMMIT-CMD COUNT-CMD CHECK-CMD
  local name=$1 v=$2 ready=$3 commit=$4 count=$5 check=$6 c=dbimages-verify-$1 out
  docker run -d --name $c -v "$v:/data" "homeswarm/$name" >/dev/null
  until_ok 90 docker exec $c sh -c "$ready" || { docker logs $c 2>&1 | tail; return 1; }
  docker exec $c sh -c "$commit" >/dev/null || return 1
  docker kill -s KILL $c >/dev/null
  docker rm $c >/dev/null
  docker run -d --name $c -v "$v:/data" "homeswarm/$name" >/dev/null
  until_ok 90 docker exec $c sh -c "$ready" || { say "$name did not recover:"; docker logs $c 2>&1 | tail; return 1; }
  out=$(docker exec $c sh -c "$count")
  [ "$out" = 1000 ] || { say "$name after SIGKILL: $out rows (want 1000)"; return 1; }
  docker exec $c sh -c "$check" >/dev/null || { say "$name check failed: $(docker exec $c sh -c "$check" 2>&1 | tail -3)"; return 1; }
  docker rm -f $c >/dev/null
  echo "recovered, check passed, 1000 of 1000 committed rows"
}

verify_postgres() {
  verify_server postgres "$1" 'psql -Atc "select 1"' \
    'psql -v ON_ERROR_STOP=1 -c "create table t(n int primary key, pad text)" && i=0; while [ $i -lt 10 ]; do i=$((i+1)); psql -v ON_ERROR_STOP=1 -qc "insert into t select g, repeat(md5(g::text), 30) from generate_series(($i-1)*100+1, $i*100) g"; done' \
    'psql -Atc "select count(*) from t"' 'pg_amcheck --install-missing --heapallindexed -d postgres'
}

verify_mariadb() {
  verify_server mariadb "$1" 'mariadb -e "select 1"' \
    'mariadb -e "create database v; create table v.t(n int primary key, pad text) engine=innodb" && i=0; while [ $i -lt 10 ]; do i=$((i+1)); mariadb v -e "insert into t select seq, repeat(md5(seq), 30) from seq_$((($i-1)*100+1))_to_$(($i*100))"; done' \
    'mariadb -N -e "select count(*) from v.t"' 'mariadb-check --all-databases | grep -v " OK\$" | grep . && exit 1 || exit 0'
}

verify() {
  local img v rc=0
  for img in $WANT; do
    v=dbimages-verify-$img-$$
    docker rm -f "dbimages-verify-$img" >/dev/null 2>&1 || true
    docker volume create "$v" >/dev/null
    say "verify homeswarm/$img: commit on volume $v, SIGKILL, recover"
    if out=$("verify_$img" "$v"); then say "  $img: $out"; else say "  $img: FAILED"; rc=1; fi
    docker rm -f "dbimages-verify-$img" >/dev/null 2>&1 || true
    docker volume rm "$v" >/dev/null
  done
  return $rc
}

VERIFY=0
if [ "${1:-}" = --verify ]; then VERIFY=1; shift; [ $# = 0 ] || die "--verify takes no nodes"; fi

mkdir -p "$CACHE"
need_tools
for img in $WANT; do
  case $img in
    sqlite | postgres | mariadb) build "$img" ;;
    *) die "unknown image $img (sqlite, postgres, mariadb)" ;;
  esac
done
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(-)
for target in "${targets[@]}"; do
  for img in $WANT; do
    say "importing homeswarm/$img → ${target/#-/${DOCKER_HOST:-local engine}}"
    load "$img" "$target"
  done
done
[ $VERIFY = 0 ] || verify
