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
#                       MARIADB_DATABASE (and MARIADB_USER, MARIADB_PASSWORD): that
#                       database (and a user with every right on it) is created
#                       at start when missing (the password is set at every start).
#                       Any arguments are extra mariadbd options.
#
# Maintainer scripts never run, so the packages only those scripts need
# (perl, debconf, adduser, postgresql-common's wrappers, …) are left out of
# the closure; so is libllvm14 (PostgreSQL's optional JIT, turned off).
# Files are owned by root in the image; the entrypoints chown the data
# directory to the database's user at every start (a volume's files may
# arrive owned by anyone).
#
# The machinery (closure, download, unpack, cache, import, --verify's loop)
# is scripts/lib/debimage.sh, shared with scripts/appimages.sh. Downloads
# and tarballs are cached in $DBIMAGES_CACHE (/var/cache/homeswarm/images),
# a tarball keyed by the package versions and the code that shapes it, so a
# rerun only imports. The topology (scripts/topo.sh) honours TOPO_PREFIX /
# TOPO_ROOT / TOPO_RUN; pass them through to target another instance.
set -euo pipefail

TAG=dbimages
KNOWN="sqlite postgres mariadb"
WANT=${DBIMAGES:-$KNOWN}
# shellcheck source=scripts/lib/debimage.sh
. "$(dirname "$0")/lib/debimage.sh"

ROOTS_sqlite="sqlite3 busybox-static"
ROOTS_postgres="postgresql-15 postgresql-client-15 busybox-static"
ROOTS_mariadb="mariadb-server-core mariadb-client mariadb-client-core busybox-static"

# never unpacked (besides lib/debimage.sh's list): PostgreSQL's wrappers and
# JIT, MariaDB's Perl tools and Galera
DENY="postgresql-common postgresql-client-common libllvm14 libconfig-inifiles-perl libdbi-perl
 libdbd-mariadb-perl galera-4 pwgen mariadb-server mysql-common"
DENY=${DENY//$'\n'/ }

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
# an application's database and user (MARIADB_DATABASE, MARIADB_USER,
# MARIADB_PASSWORD), created when missing, at every start
for v in "${MARIADB_DATABASE:-}" "${MARIADB_USER:-}" "${MARIADB_PASSWORD:-}"; do
  case $v in *[\'\\\`]*) echo "entrypoint: MARIADB_* must not contain quotes or backslashes" >&2; exit 2 ;; esac
done
if [ -n "${MARIADB_DATABASE:-}" ]; then
  echo "CREATE DATABASE IF NOT EXISTS \`$MARIADB_DATABASE\`;" >> /run/mysqld/init.sql
  if [ -n "${MARIADB_USER:-}" ]; then
    echo "CREATE USER IF NOT EXISTS '$MARIADB_USER'@'%' IDENTIFIED BY '${MARIADB_PASSWORD:-}';
ALTER USER '$MARIADB_USER'@'%' IDENTIFIED BY '${MARIADB_PASSWORD:-}';
GRANT ALL PRIVILEGES ON \`$MARIADB_DATABASE\`.* TO '$MARIADB_USER'@'%';" >> /run/mysqld/init.sql
  fi
fi
chown mysql /run/mysqld/init.sql
exec mariadbd --user=mysql --datadir="$DATADIR" --skip-networking=0 --bind-address=0.0.0.0 \
  --skip-name-resolve --innodb-flush-log-at-trx-commit=1 --sync-binlog=1 --log-bin=binlog \
  --server-id=1 --innodb-log-file-size=16M --innodb-buffer-pool-size=64M --innodb-doublewrite=1 \
  --init-file=/run/mysqld/init.sql --log-error= --log-warnings=1 "$@"
EOF
  chmod 755 "$t/entrypoint.sh"
}
changes_mariadb() { CHANGES=('ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' 'ENTRYPOINT ["/entrypoint.sh"]' 'EXPOSE 3306'); }

# ---------------------------------------------------------------- verify

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

debimage_main "$@"
