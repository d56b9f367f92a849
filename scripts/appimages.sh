#!/usr/bin/env bash
# appimages.sh — images of the seed's real applications, assembled from
# Debian bookworm packages the way scripts/dbimages.sh assembles the
# databases (no registry, no Dockerfile: `apt-get download`, `dpkg -x`,
# `docker import`; the machinery is scripts/lib/debimage.sh).
#
#   scripts/appimages.sh                     into the engine DOCKER_HOST points at
#   scripts/appimages.sh NODE…               into topology nodes (via scripts/topo.sh docker NODE)
#   APPIMAGES=mumble scripts/appimages.sh    only some of them
#   scripts/appimages.sh --verify            into the local engine, then prove each works
#                                            (below); --verify of wordpress imports
#                                            homeswarm/mariadb too (scripts/dbimages.sh)
#
# Images (each the dependency closure of its packages unpacked with dpkg -x,
# plus Debian's busybox-static as /bin/busybox with its applet links):
#
#   homeswarm/wordpress  Debian's wordpress 6.1 (+ wordpress-theme-twentytwentythree)
#       served by nginx 1.22 and php8.2-fpm (php8.2-mysql, -xml, -mbstring,
#       -opcache) in ONE image: /entrypoint.sh runs php-fpm and nginx side by
#       side (either dying stops the container; SIGTERM stops both) and
#       nginx listens on :80.
#       Why one image, not an nginx and a php-fpm service sharing a volume:
#       both need the same files at once (nginx serves wp-content's uploads
#       and the static files, php-fpm runs the PHP beside them), and a
#       syncvol volume is written on one node at a time while Swarm has no
#       way to place two services on the same node together (no pods, no
#       affinity); one task holding the one volume moves as a unit on a
#       drain or a crash. The sharing the seed describes happens inside the
#       task: both processes read the Debian files in the image and the
#       site's wp-content on the volume.
#       Configuration from the environment, read by Debian's own mechanism:
#       /usr/share/wordpress/wp-config.php (Debian's) loads
#       /etc/wordpress/config-default.php, which the image ships and which
#       reads (php-fpm passes the container's environment through)
#         WORDPRESS_DB_HOST (default db), WORDPRESS_DB_NAME (wordpress),
#         WORDPRESS_DB_USER (wordpress), WORDPRESS_DB_PASSWORD (empty),
#         WORDPRESS_TABLE_PREFIX (wp_), WORDPRESS_URL (the site's URL, e.g.
#         http://blog.example.org; unset: whatever Host the request names;
#         set, its host name resolves to 127.0.0.1 in the container, so
#         WordPress's requests to itself — cron, the installer's permalink
#         check — reach its own nginx; at https://…, where Traefik
#         terminates TLS, a must-use plugin sends them to its nginx over
#         plain HTTP with X-Forwarded-Proto), WORDPRESS_HTTP_EXTERNAL (set: allow
#         outgoing HTTP beyond the site itself; default blocked, updates
#         come with the image), WORDPRESS_DISABLE_CRON (set: no WP-cron).
#       The volume: /var/lib/wordpress/wp-content (Debian's WP_CONTENT_DIR):
#       uploads, and any plugin, theme or language the site adds. The
#       packaged theme and PHP stay in the image (a must-use plugin in
#       /usr/share/wordpress/homeswarm-mu registers the image's theme
#       directory), so the volume holds only the site's own files, no
#       symlinks into the image. The salts live in the database (WordPress
#       generates them there when wp-config defines none), so cookies stay
#       valid when the task moves. Left out: php-gd (its libgd pulls X11
#       and font libraries; without it WordPress stores uploaded images
#       without resized copies), apache2, the MySQL client.
#       The database itself comes from homeswarm/mariadb with MARIADB_DATABASE,
#       MARIADB_USER and MARIADB_PASSWORD set (scripts/dbimages.sh).
#
#   homeswarm/mumble  Debian's mumble-server (murmurd 1.3.4), a non-HTTP service:
#       TCP and UDP 64738 (TLS control channel, UDP voice and ping).
#       /entrypoint.sh runs murmurd in the foreground as mumble-server with
#       its SQLite database (users, channels, the server's own certificate,
#       generated on first start) at $MUMBLE_DB (default
#       /data/mumble-server.sqlite: mount a volume at /data).
#       MUMBLE_WELCOME, MUMBLE_USERS (default 100) and MUMBLE_PASSWORD
#       (server password, default none) go into its ini. No D-Bus, no Ice,
#       no Bonjour.
#
#   homeswarm/prosody  Debian's prosody 0.12 (XMPP; c2s 5222, s2s 5269) for
#       $XMPP_DOMAIN (default localhost), run as its user in the
#       foreground; accounts, rosters and its certificate (self-signed for
#       the domain on first start: replace /data/certs/DOMAIN.crt and .key
#       with your own) under /data: mount a volume there.
#       XMPP_REGISTRATION=1 lets clients register accounts.
#
# --verify proves each image really works on the local engine:
#   wordpress: MariaDB and WordPress on a private network; WordPress's own
#     installer (wp-admin/install.php, step 2) runs over HTTP, a post is
#     published through XML-RPC (wp.newPost with the admin's password), read
#     back at /?p=ID; the WordPress container is replaced by a new one on the
#     same volume and the post is still served.
#   mumble: a UDP ping (the 12-byte packet Mumble answers with its version
#     and user counts) and a TLS handshake on 64738; a new container on the
#     same volume presents the same certificate (its database survived).
#   prosody: an XMPP client stream on 5222 gets stream features offering
#     STARTTLS, a TLS handshake after it (openssl s_client -starttls xmpp),
#     the same certificate from a new container on the same volume.
set -euo pipefail

TAG=appimages
KNOWN="wordpress mumble prosody"
WANT=${APPIMAGES:-$KNOWN}
# shellcheck source=scripts/lib/debimage.sh
. "$(dirname "$0")/lib/debimage.sh"

ROOTS_wordpress="wordpress wordpress-theme-twentytwentythree nginx php8.2-fpm php8.2-mysql php8.2-xml
 php8.2-mbstring php8.2-opcache busybox-static"
ROOTS_wordpress=${ROOTS_wordpress//$'\n'/ }
ROOTS_mumble="mumble-server busybox-static"
# prosody's Lua libraries are virtual packages in its Depends (lua5.4-sec, …):
# their real names are roots; openssl makes the self-signed certificate
ROOTS_prosody="prosody lua-sec lua-socket lua-expat lua-filesystem lua-bitop lua-unbound openssl busybox-static"

# never unpacked (besides lib/debimage.sh's list): the web servers and PHP
# SAPIs the image does not run, the MySQL client, php-gd (see above)
DENY="apache2 apache2-bin libapache2-mod-php libapache2-mod-php8.2 php8.2-cgi default-mysql-client
 mariadb-client php-gd php8.2-gd"
DENY=${DENY//$'\n'/ }

extra_wordpress() {
  local t=$1 f prio name
  # the extensions' ini files, enabled the way phpenmod would
  mkdir -p "$t/etc/php/8.2/fpm/conf.d" "$t/run/php" "$t/var/lib/nginx" "$t/var/log/nginx"
  for f in "$t"/usr/share/php8.2-*/*/*.ini; do
    prio=$(sed -n 's/^; *priority=\([0-9]*\).*/\1/p' "$f")
    name=$(basename "$f")
    cp "$f" "$t/etc/php/8.2/fpm/conf.d/${prio:-20}-$name"
  done
  cp "$t/usr/lib/php/8.2/php.ini-production" "$t/etc/php/8.2/fpm/php.ini"
  sed -i 's/^upload_max_filesize = .*/upload_max_filesize = 64M/; s/^post_max_size = .*/post_max_size = 64M/' \
    "$t/etc/php/8.2/fpm/php.ini"
  rm -rf "$t/etc/php/8.2/fpm/pool.d" "$t/etc/apache2" "$t/etc/apparmor.d" "$t/etc/nginx/sites-enabled" \
    "$t/etc/nginx/sites-available" "$t/etc/nginx/modules-enabled"
  cat > "$t/etc/php/8.2/fpm/php-fpm.conf" <<'FPM'
[global]
error_log = /proc/self/fd/2
daemonize = no

[www]
user = www-data
group = www-data
listen = /run/php/fpm.sock
listen.owner = www-data
listen.group = www-data
pm = dynamic
pm.max_children = 8
pm.start_servers = 2
pm.min_spare_servers = 1
pm.max_spare_servers = 3
; the container's environment (WORDPRESS_*) reaches config-default.php
clear_env = no
catch_workers_output = yes
decorate_workers_output = no
FPM
  cat > "$t/etc/nginx/nginx.conf" <<'NGINX'
user www-data;
worker_processes 2;
pid /run/nginx.pid;
error_log stderr warn;
events { worker_connections 512; }
http {
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  access_log off;
  sendfile on;
  client_max_body_size 64m;
  # Traefik terminates TLS: its X-Forwarded-Proto tells PHP (is_ssl()) a
  # request came over HTTPS, so a site at https://… does not redirect forever
  map $http_x_forwarded_proto $forwarded_https { https on; default ""; }
  server {
    listen 80 default_server;
    root /usr/share/wordpress;
    index index.php;
    location = /wp-config.php { deny all; }
    location ~ /\. { deny all; }
    # wp-content: the site's own (the volume), then the packaged theme; never PHP from there
    location /wp-content/ {
      location ~ \.php$ { deny all; }
      root /;
      try_files /var/lib/wordpress$uri /usr/share/wordpress$uri =404;
    }
    location / { try_files $uri $uri/ /index.php?$args; }
    location ~ \.php$ {
      try_files $uri =404;
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
      fastcgi_param HTTPS $forwarded_https if_not_empty;
      fastcgi_pass unix:/run/php/fpm.sock;
    }
  }
}
NGINX
  mkdir -p "$t/etc/wordpress" "$t/usr/share/wordpress/homeswarm-mu"
  cat > "$t/etc/wordpress/config-default.php" <<'CONFIG'
<?php
/* homeswarm/wordpress: loaded by Debian's /usr/share/wordpress/wp-config.php
 * for every host; everything from the container's environment. */
function homeswarm_env($name, $default) {
    $v = getenv($name);
    return ($v === false || $v === '') ? $default : $v;
}
define('DB_HOST', homeswarm_env('WORDPRESS_DB_HOST', 'db'));
define('DB_NAME', homeswarm_env('WORDPRESS_DB_NAME', 'wordpress'));
define('DB_USER', homeswarm_env('WORDPRESS_DB_USER', 'wordpress'));
define('DB_PASSWORD', homeswarm_env('WORDPRESS_DB_PASSWORD', ''));
$table_prefix = homeswarm_env('WORDPRESS_TABLE_PREFIX', 'wp_');
if (getenv('WORDPRESS_URL')) {
    define('WP_HOME', rtrim(getenv('WORDPRESS_URL'), '/'));
    define('WP_SITEURL', rtrim(getenv('WORDPRESS_URL'), '/'));
}
define('WP_CONTENT_DIR', '/var/lib/wordpress/wp-content');
/* the image's must-use plugin (the packaged theme directory) */
define('WPMU_PLUGIN_DIR', '/usr/share/wordpress/homeswarm-mu');
/* updates come with the image; no outgoing HTTP but to the site itself
 * (WordPress's loopback requests: cron, the permalink check) unless
 * WORDPRESS_HTTP_EXTERNAL is set */
define('AUTOMATIC_UPDATER_DISABLED', true);
define('WP_HTTP_BLOCK_EXTERNAL', homeswarm_env('WORDPRESS_HTTP_EXTERNAL', '') === '');
define('DISABLE_WP_CRON', homeswarm_env('WORDPRESS_DISABLE_CRON', '') !== '');
CONFIG
  cat > "$t/usr/share/wordpress/homeswarm-mu/packaged-themes.php" <<'MU'
<?php
/* Plugin Name: homeswarm packaged themes
 * The themes Debian's packages install live in the image
 * (/usr/share/wordpress/wp-content/themes), the site's own wp-content on
 * a volume: WordPress looks in both. */
register_theme_directory(ABSPATH . 'wp-content/themes');
MU
  cat > "$t/usr/share/wordpress/homeswarm-mu/loopback.php" <<'MU'
<?php
/* Plugin Name: homeswarm loopback
 * Traefik terminates TLS in front of the site, so nothing in the container
 * listens on 443: WordPress's requests to its own https:// address (cron,
 * the installer's permalink check, Site Health) go to this container's
 * nginx over plain HTTP instead, with the site's Host and Traefik's
 * X-Forwarded-Proto, as a visitor's request arrives. Without it the
 * installer's check fails and the site keeps ?p=N links. */
add_filter('pre_http_request', function ($pre, $args, $url) {
    if ($pre !== false) {
        return $pre;
    }
    $u = wp_parse_url($url);
    $home = wp_parse_url(home_url());
    if (empty($u['host']) || empty($home['host']) || strtolower($u['scheme'] ?? '') !== 'https'
        || strcasecmp($u['host'], $home['host']) !== 0 || (isset($u['port']) && (int) $u['port'] !== 443)) {
        return $pre;
    }
    if (!is_array($args['headers'])) {
        $args['headers'] = WP_Http::processHeaders((string) $args['headers'])['headers'];
    }
    $args['headers']['Host'] = $u['host'];
    $args['headers']['X-Forwarded-Proto'] = 'https';
    /* the site itself, checked above: localhost is never "unsafe" here */
    $args['reject_unsafe_urls'] = false;
    $local = 'http://localhost' . ($u['path'] ?? '/') . (isset($u['query']) ? '?' . $u['query'] : '');
    return wp_remote_request($local, $args);
}, 10, 3);
MU
  cat > "$t/entrypoint.sh" <<'ENTRY'
#!/bin/sh
# WordPress: php-fpm and nginx side by side; either dying stops the
# container, SIGTERM stops both.
set -e
C=/var/lib/wordpress/wp-content
mkdir -p "$C/uploads" "$C/plugins" "$C/themes" "$C/languages" /run/php
[ -f "$C/index.php" ] || echo '<?php // Silence is golden.' > "$C/index.php"
# a volume's files may arrive owned by anyone: WordPress's user owns them
chown -R www-data:www-data "$C"
# WordPress's requests to itself (cron, the installer's permalink check)
# reach this nginx, not whatever the site's name resolves to from here
host=${WORDPRESS_URL#*://}
host=${host%%[:/]*}
if [ -n "$host" ] && ! grep -q "^127.0.0.1 $host\$" /etc/hosts 2>/dev/null; then
  echo "127.0.0.1 $host" >> /etc/hosts || echo "entrypoint: cannot add $host to /etc/hosts" >&2
fi
php-fpm8.2 -F -y /etc/php/8.2/fpm/php-fpm.conf &
fpm=$!
nginx -g 'daemon off;' &
ngx=$!
stop=0
trap 'stop=1; kill -TERM $fpm $ngx 2>/dev/null || true' TERM INT
while [ $stop = 0 ] && kill -0 $fpm 2>/dev/null && kill -0 $ngx 2>/dev/null; do
  sleep 1 &
  wait $! || true
done
[ $stop = 1 ] || echo "entrypoint: php-fpm or nginx exited; stopping" >&2
kill -TERM $fpm $ngx 2>/dev/null || true
wait
[ $stop = 1 ]
ENTRY
  chmod 755 "$t/entrypoint.sh"
}
changes_wordpress() {
  CHANGES=('ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' 'ENTRYPOINT ["/entrypoint.sh"]' 'EXPOSE 80'
    'VOLUME /var/lib/wordpress/wp-content')
}

extra_mumble() {
  local t=$1
  rm -rf "$t/etc/init.d" "$t/etc/default" "$t/etc/logrotate.d" "$t/etc/dbus-1" "$t/usr/bin/murmur-user-wrapper"
  mkdir -p "$t/var/lib/mumble-server"
  cat > "$t/entrypoint.sh" <<'ENTRY'
#!/bin/sh
# murmurd in the foreground on $MUMBLE_DB (a SQLite file; created, with the
# server's certificate, on first start).
set -e
DB=${MUMBLE_DB:-/data/mumble-server.sqlite}
mkdir -p "$(dirname "$DB")"
chown mumble-server:mumble-server "$(dirname "$DB")"
[ ! -e "$DB" ] || chown mumble-server:mumble-server "$DB"*
cat > /etc/mumble-server.ini <<INI
database=$DB
port=64738
users=${MUMBLE_USERS:-100}
serverpassword=${MUMBLE_PASSWORD:-}
welcometext="${MUMBLE_WELCOME:-Welcome to this Mumble server.}"
uname=mumble-server
logfile=
pidfile=
ice=
bonjour=false
allowping=true
INI
exec murmurd -fg -ini /etc/mumble-server.ini
ENTRY
  chmod 755 "$t/entrypoint.sh"
}
changes_mumble() {
  CHANGES=('ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' 'ENTRYPOINT ["/entrypoint.sh"]' 'EXPOSE 64738/tcp'
    'EXPOSE 64738/udp')
}

extra_prosody() {
  local t=$1
  rm -rf "$t/etc/init.d" "$t/etc/logrotate.d" "$t/etc/prosody/conf.avail" "$t/usr/bin/ejabberd2prosody"
  mkdir -p "$t/run/prosody" "$t/etc/prosody/conf.d"
  # prosody's scripts start with #!/usr/bin/env lua5.4
  [ -e "$t/usr/bin/env" ] || ln -s /bin/busybox "$t/usr/bin/env"
  cat > "$t/etc/prosody/prosody.cfg.lua" <<'CFG'
-- homeswarm/prosody: one virtual host, $XMPP_DOMAIN; every byte of state
-- (accounts, rosters, the certificate) under /data.
admins = { }
modules_enabled = {
  "roster"; "saslauth"; "tls"; "dialback"; "disco"; "carbons"; "pep"; "private"; "blocklist";
  "vcard4"; "vcard_legacy"; "version"; "uptime"; "time"; "ping"; "register"; "smacks"; "csi_simple";
}
allow_registration = ENV_XMPP_REGISTRATION == "1"
data_path = "/data"
pidfile = "/run/prosody/prosody.pid"
log = { { levels = { min = "info" }, to = "console" } }
authentication = "internal_hashed"
storage = "internal"
certificates = "/data/certs"
c2s_require_encryption = true
s2s_secure_auth = false
VirtualHost (ENV_XMPP_DOMAIN or "localhost")
CFG
  cat > "$t/entrypoint.sh" <<'ENTRY'
#!/bin/sh
# Prosody in the foreground as its user, for $XMPP_DOMAIN (default
# localhost), its state in /data; a self-signed certificate for the domain
# is made on first start (replace /data/certs/DOMAIN.{crt,key} with your own).
set -e
XMPP_DOMAIN=${XMPP_DOMAIN:-localhost}
export XMPP_DOMAIN
mkdir -p /data/certs /run/prosody
if [ ! -s "/data/certs/$XMPP_DOMAIN.crt" ]; then
  echo "entrypoint: self-signed certificate for $XMPP_DOMAIN"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$XMPP_DOMAIN" \
    -addext "subjectAltName=DNS:$XMPP_DOMAIN" \
    -keyout "/data/certs/$XMPP_DOMAIN.key" -out "/data/certs/$XMPP_DOMAIN.crt" 2>/dev/null
fi
chown -R prosody:prosody /data /run/prosody
exec su -p -s /bin/sh prosody -c 'exec /usr/bin/prosody -F'
ENTRY
  chmod 755 "$t/entrypoint.sh"
}
changes_prosody() {
  CHANGES=('ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' 'ENTRYPOINT ["/entrypoint.sh"]' 'EXPOSE 5222' 'EXPOSE 5269')
}

# ---------------------------------------------------------------- verify

ip_of() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"; }

# shellcheck source=scripts/lib/wordpress.sh
. "$DEBIMAGE_HERE/lib/wordpress.sh"

# wp PATH [CURL-ARGS…]: one request to WordPress at $WP_IP as
# http://$WP_HOST/PATH (its redirects followed: the permalinks; the name
# resolves to the container's address only for curl).
wp() {
  local path=$1
  shift
  curl -sSL --max-time 60 --resolve "$WP_HOST:80:$WP_IP" "$@" "http://$WP_HOST$path"
}

verify_wordpress() {
  local v=$1 n=$TAG-verify-wordpress db=$TAG-verify-wordpress-db c=$TAG-verify-wordpress-web
  local id took title="Verified post $$"
  WP_HOST=blog.example.org
  DBIMAGES=mariadb "$DEBIMAGE_HERE/dbimages.sh" >/dev/null 2>&1 || { say "homeswarm/mariadb: scripts/dbimages.sh failed"; return 1; }
  docker network create "$n" >/dev/null
  docker run -d --name $db --network "$n" --network-alias db -v "$v:/data" \
    -e MARIADB_DATABASE=wordpress -e MARIADB_USER=wordpress -e MARIADB_PASSWORD=secret homeswarm/mariadb >/dev/null
  docker volume create "$v-content" >/dev/null
  docker run -d --name $c --network "$n" -v "$v-content:/var/lib/wordpress/wp-content" \
    -e WORDPRESS_DB_PASSWORD=secret -e WORDPRESS_URL=http://$WP_HOST homeswarm/wordpress >/dev/null
  WP_IP=$(ip_of $c)
  until_ok 90 sh -c "curl -sf --max-time 5 --resolve $WP_HOST:80:$WP_IP http://$WP_HOST/wp-admin/install.php | grep -q weblog_title" ||
    { say "the installer never answered:"; docker logs $c 2>&1 | tail; docker logs $db 2>&1 | tail -3; return 1; }
  took=$SECONDS
  wp_install Verified admin verify-pass-1 || return 1
  took=$((SECONDS - took))
  id=$(wp_publish admin verify-pass-1 "$title" "Body of $title") || return 1
  wp_has_post "$id" "$title" || { say "post $id not served: $(wp "/?p=$id" | head -c 300)"; return 1; }
  # a new container on the same volumes (the database's and wp-content)
  docker rm -f $c >/dev/null
  docker run -d --name $c --network "$n" -v "$v-content:/var/lib/wordpress/wp-content" \
    -e WORDPRESS_DB_PASSWORD=secret -e WORDPRESS_URL=http://$WP_HOST homeswarm/wordpress >/dev/null
  WP_IP=$(ip_of $c)
  until_ok 60 wp_has_post "$id" "$title" || { say "post $id gone after a new container"; docker logs $c 2>&1 | tail; return 1; }
  docker rm -f $c $db >/dev/null
  docker volume rm "$v-content" >/dev/null
  echo "installed through install.php in $took s, post $id published through XML-RPC, served at /?p=$id (and its permalink), still served by a new container"
}

# mumble_ping IP: the UDP ping (4 zero bytes, 8 bytes of ident); prints the
# answer as "version users max_users bandwidth".
mumble_ping() {
  local r
  r=$(exec 3<>"/dev/udp/$1/64738" && printf '\0\0\0\0hsverify' >&3 && timeout 2 head -c 24 <&3 | od -An -tx1 | tr -d ' \n')
  [ ${#r} = 48 ] || return 1
  [ "${r:8:16}" = "$(printf hsverify | od -An -tx1 | tr -d ' \n')" ] || return 1
  printf '%d.%d.%d %d %d %d\n' "0x${r:2:2}" "0x${r:4:2}" "0x${r:6:2}" "0x${r:24:8}" "0x${r:32:8}" "0x${r:40:8}"
}

mumble_cert() {
  openssl s_client -connect "$1:64738" </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256 2>/dev/null
}

verify_mumble() {
  local v=$1 c=$TAG-verify-mumble ip ping cert cert2
  command -v openssl >/dev/null || { say "openssl (the TLS client) is needed for --verify"; return 1; }
  docker run -d --name $c -v "$v:/data" homeswarm/mumble >/dev/null
  ip=$(ip_of $c)
  until_ok 30 mumble_ping "$ip" || { say "no answer to the UDP ping:"; docker logs $c 2>&1 | tail; return 1; }
  ping=$(mumble_ping "$ip")
  cert=$(mumble_cert "$ip")
  [ -n "$cert" ] || { say "no TLS handshake on $ip:64738"; return 1; }
  docker rm -f $c >/dev/null
  docker run -d --name $c -v "$v:/data" homeswarm/mumble >/dev/null
  ip=$(ip_of $c)
  until_ok 30 mumble_ping "$ip" || { say "a new container did not answer:"; docker logs $c 2>&1 | tail; return 1; }
  cert2=$(mumble_cert "$ip")
  [ "$cert" = "$cert2" ] || { say "the certificate changed with a new container: $cert → $cert2"; return 1; }
  docker rm -f $c >/dev/null
  echo "UDP ping answered (version users max bandwidth: $ping), TLS handshake, same certificate from a new container (${cert#*=})"
}

# xmpp_features IP DOMAIN: opens a client stream on 5222 and prints the
# server's stream features.
xmpp_features() {
  local out
  out=$(exec 3<>"/dev/tcp/$1/5222" &&
    printf "<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>" "$2" >&3 &&
    timeout 2 cat <&3 || true)
  case $out in *"</stream:features>"*) echo "$out" | sed 's/.*<stream:features/<stream:features/' ;; *) return 1 ;; esac
}

xmpp_cert() {
  openssl s_client -starttls xmpp -xmpphost "$2" -connect "$1:5222" </dev/null 2>/dev/null |
    openssl x509 -noout -fingerprint -sha256 2>/dev/null
}

verify_prosody() {
  local v=$1 c=$TAG-verify-prosody ip f cert cert2 domain=chat.example.org
  command -v openssl >/dev/null || { say "openssl (the TLS client) is needed for --verify"; return 1; }
  docker run -d --name $c -e XMPP_DOMAIN=$domain -v "$v:/data" homeswarm/prosody >/dev/null
  ip=$(ip_of $c)
  until_ok 30 xmpp_features "$ip" $domain || { say "no XMPP stream on 5222:"; docker logs $c 2>&1 | tail; return 1; }
  f=$(xmpp_features "$ip" $domain)
  case $f in *urn:ietf:params:xml:ns:xmpp-tls*) ;; *) say "no STARTTLS offered: $f"; return 1 ;; esac
  cert=$(xmpp_cert "$ip" $domain)
  [ -n "$cert" ] || { say "no TLS after STARTTLS on $ip:5222"; return 1; }
  docker rm -f $c >/dev/null
  docker run -d --name $c -e XMPP_DOMAIN=$domain -v "$v:/data" homeswarm/prosody >/dev/null
  ip=$(ip_of $c)
  until_ok 30 xmpp_features "$ip" $domain || { say "a new container did not answer:"; docker logs $c 2>&1 | tail; return 1; }
  cert2=$(xmpp_cert "$ip" $domain)
  [ "$cert" = "$cert2" ] || { say "the certificate changed with a new container: $cert → $cert2"; return 1; }
  docker rm -f $c >/dev/null
  echo "XMPP stream on 5222 offers STARTTLS, TLS after it, same certificate from a new container (${cert#*=})"
}

debimage_main "$@"
