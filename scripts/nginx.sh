#!/bin/sh
# chom component: nginx: the web server and reverse proxy of both stacks.
#
# Installs Debian's nginx, renders one file per site into /etc/nginx/conf.d/chom-*.conf,
# tests the whole configuration with `nginx -t` (a rejected one is rolled back) and
# reloads nginx only when a file changed. Files chom-*.conf that are no longer wanted
# are taken out of service (kept as *.chom-bak.<timestamp>).
#
# Config keys (all optional):
#   domain               site served from web_root (hosting stack)
#   web_root             default /var/www/<domain>/public (created if missing, never emptied)
#   php_version          pass *.php to php<version>-fpm, e.g. "8.2" ...
#   php_fpm_socket       ... or to this socket (default /run/php/php<php_version>-fpm.sock)
#   grafana_domain       reverse proxy to Grafana (observability stack)
#   grafana_upstream     host:port of Grafana, default 127.0.0.1:3000
#   tls_certificate, tls_certificate_key
#                        paths of an existing certificate and key: serve HTTPS on 443 and
#                        redirect port 80 to it (certificates are not obtained here)
# Version: CHOM_VERSION pins the Debian package version (e.g. 1.22.1-9); empty = the
#   version in the distribution's archive.
# Secrets: none.
# Never: deletes web roots, logs or certificates; edits nginx.conf or sites-enabled/;
#   runs on systems without apt.
set -eu

COMPONENT=nginx
DEFAULT_VERSION= # empty: the distribution's nginx (security updates come through apt)

# The shared helpers (log, warn, die, ensure_file, ensure_packages, ensure_service, …)
# come from scripts/lib/helpers.sh, which chom sends ahead of this script.

start
require_apt
VERSION=${CHOM_VERSION:-$DEFAULT_VERSION}
CONF_DIR=/etc/nginx/conf.d
HEADER='# Managed by chom (component nginx). Local changes will be overwritten.'

if [ "$MODE" = remove ]; then
    stop_service nginx
    for _f in "$CONF_DIR"/chom-*.conf; do
        if [ -e "$_f" ]; then ensure_absent "$_f"; fi
    done
    remove_packages nginx nginx-core
    warn "kept /etc/nginx, /var/log/nginx and the web roots: chom never deletes data directories"
    finish
fi

PATH_RE='/[A-Za-z0-9._/-]+'
NAME_RE='[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?'
DOMAIN=${CHOM_CFG_DOMAIN:-}
GRAFANA_DOMAIN=${CHOM_CFG_GRAFANA_DOMAIN:-}
GRAFANA_UPSTREAM=${CHOM_CFG_GRAFANA_UPSTREAM:-127.0.0.1:3000}
TLS_CERT=${CHOM_CFG_TLS_CERTIFICATE:-}
TLS_KEY=${CHOM_CFG_TLS_CERTIFICATE_KEY:-}
PHP_VERSION=${CHOM_CFG_PHP_VERSION:-}
PHP_SOCKET=${CHOM_CFG_PHP_FPM_SOCKET:-}
if [ -z "$PHP_SOCKET" ] && [ -n "$PHP_VERSION" ]; then
    check_value php_version "$PHP_VERSION" '[0-9]+\.[0-9]+'
    PHP_SOCKET=/run/php/php$PHP_VERSION-fpm.sock
fi
if [ -n "$DOMAIN" ]; then
    check_value domain "$DOMAIN" "$NAME_RE"
    WEB_ROOT=${CHOM_CFG_WEB_ROOT:-/var/www/$DOMAIN/public}
    check_value web_root "$WEB_ROOT" "$PATH_RE"
    case $WEB_ROOT in *..*) die "config web_root must not contain '..'" ;; esac
fi
if [ -n "$PHP_SOCKET" ]; then check_value php_fpm_socket "$PHP_SOCKET" "$PATH_RE"; fi
if [ -n "$GRAFANA_DOMAIN" ]; then
    check_value grafana_domain "$GRAFANA_DOMAIN" "$NAME_RE"
    check_value grafana_upstream "$GRAFANA_UPSTREAM" '[A-Za-z0-9.-]+:[0-9]+'
fi
if [ -n "$TLS_CERT$TLS_KEY" ]; then
    check_value tls_certificate "$TLS_CERT" "$PATH_RE"
    check_value tls_certificate_key "$TLS_KEY" "$PATH_RE"
    for _f in "$TLS_CERT" "$TLS_KEY"; do
        [ -f "$_f" ] || warn "$_f does not exist yet: nginx -t will reject the configuration"
    done
fi
IPV6=no
if [ -e /proc/net/if_inet6 ]; then IPV6=yes; fi

# listen_lines PORT [ssl]
listen_lines() {
    printf '    listen %s%s;\n' "$1" "${2:+ $2}"
    if [ "$IPV6" = yes ]; then printf '    listen [::]:%s%s;\n' "$1" "${2:+ $2}"; fi
}
# server_start NAME: opens the server block for NAME; with TLS, after a port-80 redirect block.
server_start() {
    if [ -n "$TLS_CERT" ]; then
        echo 'server {'
        listen_lines 80
        printf '    server_name %s;\n    server_tokens off;\n' "$1"
        cat <<'EOF'
    location / {
        return 301 https://$host$request_uri;
    }
}

EOF
        echo 'server {'
        listen_lines 443 ssl
        printf '    ssl_certificate %s;\n    ssl_certificate_key %s;\n' "$TLS_CERT" "$TLS_KEY"
    else
        echo 'server {'
        listen_lines 80
    fi
    printf '    server_name %s;\n    server_tokens off;\n' "$1"
}
render_site() {
    echo "$HEADER"
    server_start "$DOMAIN"
    printf '    root %s;\n' "$WEB_ROOT"
    if [ -n "$PHP_SOCKET" ]; then
        cat <<'EOF'
    index index.php index.html;

    location / {
        try_files $uri $uri/ /index.php?$args;
    }
    location ~ \.php$ {
        include snippets/fastcgi-php.conf;
        fastcgi_pass unix:@SOCKET@;
    }
EOF
    else
        cat <<'EOF'
    index index.html;

    location / {
        try_files $uri $uri/ =404;
    }
EOF
    fi
    cat <<'EOF'
    location ~ /\.(?!well-known) {
        deny all;
    }
}
EOF
}
render_grafana() {
    echo "$HEADER"
    cat <<'EOF'
map $http_upgrade $chom_connection_upgrade {
    default upgrade;
    '' close;
}

EOF
    server_start "$GRAFANA_DOMAIN"
    cat <<'EOF'

    location / {
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_pass http://@UPSTREAM@;
    }
    location /api/live/ {
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $chom_connection_upgrade;
        proxy_set_header Host $host;
        proxy_pass http://@UPSTREAM@;
    }
}
EOF
}

if [ -n "$VERSION" ]; then ensure_packages "nginx=$VERSION"; else ensure_packages nginx; fi
stop_if_drift

resource port 80
if [ -n "$TLS_CERT" ]; then resource port 443; fi
FILE_CHANGED=0
WANTED=
if [ -n "$DOMAIN" ]; then
    ensure_dir "$WEB_ROOT" - -
    render_site | sed "s|@SOCKET@|$PHP_SOCKET|g" >"$WORKDIR/site.conf"
    ensure_file "$WORKDIR/site.conf" "$CONF_DIR/chom-site.conf" 0644 root:root
    WANTED="$WANTED $CONF_DIR/chom-site.conf"
fi
if [ -n "$GRAFANA_DOMAIN" ]; then
    render_grafana | sed "s|@UPSTREAM@|$GRAFANA_UPSTREAM|g" >"$WORKDIR/grafana.conf"
    ensure_file "$WORKDIR/grafana.conf" "$CONF_DIR/chom-grafana.conf" 0644 root:root
    WANTED="$WANTED $CONF_DIR/chom-grafana.conf"
fi
for _f in "$CONF_DIR"/chom-*.conf; do
    [ -e "$_f" ] || continue
    case " $WANTED " in
        *" $_f "*) ;;
        *) ensure_absent "$_f" ;;
    esac
done
if [ -z "$DOMAIN$GRAFANA_DOMAIN" ]; then
    warn "neither domain nor grafana_domain is configured: nginx serves only the distribution's default site"
fi

if [ "$FILE_CHANGED" -eq 1 ] && ! is_check; then
    if ! with_umask022 nginx -t -q 2>"$WORKDIR/nginx-t"; then
        cat "$WORKDIR/nginx-t" >&2
        abort "nginx -t rejected the new configuration; the previous files were restored"
    fi
fi
ensure_service nginx reload
finish
