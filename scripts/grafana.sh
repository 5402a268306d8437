#!/bin/sh
# chom component: grafana: dashboards for the observability stack (Prometheus, Loki and
# Alertmanager are provisioned as data sources).
#
# Grafana is not in Debian: this script downloads the upstream OSS tarball, checks its
# SHA-256 with `sha256sum -c` BEFORE anything is installed (against the <tarball>.sha256 file
# published beside it, or the pinned config sha256), records the digest in chom's status
# (`::chom:: artifact`), and unpacks
# it as /opt/grafana/<version> (/opt/grafana/current points at the active one). It manages
# the system user grafana, /etc/grafana/grafana.ini (0640 root:grafana), the data source
# file /etc/grafana/provisioning/datasources/chom.yaml, /var/lib/grafana, /var/log/grafana
# and the unit /etc/systemd/system/grafana-server.service. Restarts Grafana only when the
# release, the unit or a file changed (a failed restart restores the previous files).
#
# Passwords stay in files, never in grafana.ini, a command line or a log: grafana.ini reads
# them with $__file{...} from /etc/grafana/admin-password and /etc/grafana/smtp-password
# (0640 root:grafana). The admin password seeds a new database; for an existing database
# it is set with `grafana cli admin reset-admin-password --password-from-stdin` whenever
# the secret differs from the file (a change made in the web UI is not detected).
#
# Version: CHOM_VERSION, default DEFAULT_VERSION below (Grafana >= 10: bin/grafana).
# Config keys (all optional):
#   grafana_domain            public name (nginx proxies it); sets domain and root_url
#   grafana.root_url          default http(s)://<grafana_domain>/ (https if tls_certificate)
#   grafana.http_addr         default 127.0.0.1;  grafana.http_port  default 3000
#   grafana.prometheus_url    default http://127.0.0.1:9090 ("none" = no data source)
#   grafana.loki_url          default http://127.0.0.1:3100 ("none" = no data source)
#   grafana.alertmanager_url  default http://127.0.0.1:9093 ("none" = no data source)
#   smtp.host, smtp.port (default 587), smtp.username, smtp.from (default grafana@<server>)
#   sha256                    SHA-256 of the tarball: pins it, and <tarball>.sha256 is not
#                             fetched (default: verify against the published .sha256)
#   mirror                    base URL laid out like https://dl.grafana.com/oss/release
#                             (<mirror>/grafana-<version>.linux-<arch>.tar.gz and its .sha256),
#                             for fleets without internet access; http:// is allowed here only
# Secrets: GRAFANA_ADMIN_PASSWORD (strongly advised), SMTP_PASSWORD (optional).
# Never: deletes /var/lib/grafana (dashboards, users) or the user grafana; installs an
#   archive whose checksum is unknown or wrong; deletes old releases under /opt/grafana.
# Runs on Debian/Ubuntu (installs curl, tar, ca-certificates with apt when missing) or on
#   any systemd Linux that already has curl or wget, tar, gzip, sha256sum and useradd.
set -eu

COMPONENT=grafana
DEFAULT_VERSION=11.5.2

# The shared helpers (log, warn, die, ensure_file, ensure_packages, ensure_service, …)
# come from scripts/lib/helpers.sh, which chom sends ahead of this script.
# The upstream-archive helpers (upstream_arch, resolve_sha256, …) come from
# scripts/lib/upstream.sh.

start
VERSION=${CHOM_VERSION:-$DEFAULT_VERSION}
BASE=/opt/grafana
HOME_DIR=$BASE/current
SERVICE=grafana-server
UNIT=/etc/systemd/system/$SERVICE.service
ETC=/etc/grafana
INI=$ETC/grafana.ini
ADMIN_PASSWORD_FILE=$ETC/admin-password
SMTP_PASSWORD_FILE=$ETC/smtp-password
DATASOURCES=$ETC/provisioning/datasources/chom.yaml
DATA=/var/lib/grafana
LOGS=/var/log/grafana
HEADER='; Managed by chom (component grafana). Local changes will be overwritten.'

if [ "$MODE" = remove ]; then
    stop_service "$SERVICE"
    delete_file "$UNIT"
    daemon_reload
    delete_file "$BASE/current"
    delete_file "$ADMIN_PASSWORD_FILE"
    delete_file "$SMTP_PASSWORD_FILE"
    delete_file "$DATASOURCES"
    delete_file "$INI"
    warn "kept $DATA (dashboards, users), $LOGS, the user grafana and the releases under $BASE (delete them by hand if wanted): chom never deletes data directories"
    finish
fi

check_value version "$VERSION" '[0-9]+\.[0-9]+\.[0-9]+'
ARCH=$(upstream_arch)
release_source https://dl.grafana.com/oss/release
URL=$SOURCE/grafana-$VERSION.linux-$ARCH.tar.gz

SERVER=${CHOM_SERVER:-$(hostname)}
URL_RE='https?://[A-Za-z0-9.:-]+(/[A-Za-z0-9._/-]*)?'
DOMAIN=${CHOM_CFG_GRAFANA_DOMAIN:-}
SCHEME=http
if [ -n "${CHOM_CFG_TLS_CERTIFICATE:-}" ]; then SCHEME=https; fi
ROOT_URL=${CHOM_CFG_GRAFANA_ROOT_URL:-}
if [ -z "$ROOT_URL" ] && [ -n "$DOMAIN" ]; then ROOT_URL="$SCHEME://$DOMAIN/"; fi
HTTP_ADDR=${CHOM_CFG_GRAFANA_HTTP_ADDR:-127.0.0.1}
HTTP_PORT=${CHOM_CFG_GRAFANA_HTTP_PORT:-3000}
PROMETHEUS_URL=${CHOM_CFG_GRAFANA_PROMETHEUS_URL:-http://127.0.0.1:9090}
LOKI_URL=${CHOM_CFG_GRAFANA_LOKI_URL:-http://127.0.0.1:3100}
ALERTMANAGER_URL=${CHOM_CFG_GRAFANA_ALERTMANAGER_URL:-http://127.0.0.1:9093}
SMTP_HOST=${CHOM_CFG_SMTP_HOST:-}
SMTP_PORT=${CHOM_CFG_SMTP_PORT:-587}
SMTP_USERNAME=${CHOM_CFG_SMTP_USERNAME:-}
SMTP_FROM=${CHOM_CFG_SMTP_FROM:-grafana@$SERVER}
if [ -n "$DOMAIN" ]; then check_value grafana_domain "$DOMAIN" '[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?'; fi
if [ -n "$ROOT_URL" ]; then check_value grafana.root_url "$ROOT_URL" "$URL_RE"; fi
check_value grafana.http_addr "$HTTP_ADDR" '[0-9A-Fa-f.:]+'
check_value grafana.http_port "$HTTP_PORT" '[0-9]+'
for _u in "$PROMETHEUS_URL" "$LOKI_URL" "$ALERTMANAGER_URL"; do
    [ "$_u" = none ] || check_value "grafana data source url" "$_u" "$URL_RE"
done
if [ -n "$SMTP_HOST" ]; then
    check_value smtp.host "$SMTP_HOST" '[A-Za-z0-9.-]+'
    check_value smtp.port "$SMTP_PORT" '[0-9]+'
    check_value smtp.from "$SMTP_FROM" '[^[:space:]"\\@]+@[A-Za-z0-9.-]+'
    if [ -n "$SMTP_USERNAME" ]; then check_value smtp.username "$SMTP_USERNAME" '[^[:space:]"\\;#]+'; fi
fi
ADMIN_PASSWORD=${GRAFANA_ADMIN_PASSWORD:-}
SMTP_PASSWORD=${SMTP_PASSWORD:-}
check_secret GRAFANA_ADMIN_PASSWORD "$ADMIN_PASSWORD"
check_secret SMTP_PASSWORD "$SMTP_PASSWORD"
have_systemd || warn "systemd is not running: grafana is installed but not started here"

resource port "$HTTP_PORT"
ensure_system_user grafana "$DATA"
ensure_dir "$BASE" 0755 root:root
ensure_dir "$DATA" 0750 grafana:grafana
ensure_dir "$LOGS" 0750 grafana:grafana
ensure_dir "$ETC" 0750 root:grafana
ensure_dir "$ETC/provisioning" 0750 root:grafana
for _sub in datasources dashboards plugins alerting; do
    ensure_dir "$ETC/provisioning/$_sub" 0750 root:grafana
done
stop_if_drift

# ---- the release (unpacked now, switched to below) ----
RESTART=0
resource directory "$BASE/$VERSION"
if ! release_installed "$BASE"; then
    RESTART=1
    if is_check; then
        drift "install grafana $VERSION from $URL"
    else
        need_tools tar gzip sha256sum
        command -v curl >/dev/null 2>&1 || command -v wget >/dev/null 2>&1 || need_tools curl
        resolve_sha256 "$URL" "$URL.sha256"
        fetch_verified "$URL" "$SHA256"
        new_stage "$BASE"
        (umask 022 && tar -xzf "$FETCHED" --no-same-owner -C "$STAGE")
        # one top-level directory: grafana-v<version> (grafana-<version> in older releases)
        _top=
        for _d in "$STAGE"/*; do
            [ -d "$_d" ] || continue
            [ -z "$_top" ] || die "unexpected layout of $(basename "$URL"): several top-level directories"
            _top=$_d
        done
        if [ -z "$_top" ] || [ ! -x "$_top/bin/grafana" ]; then
            die "bin/grafana is not in $(basename "$URL") (Grafana >= 10 is supported)"
        fi
        commit_release "$BASE" "$_top"
    fi
fi

# render_ini REFS: grafana.ini; REFS=no leaves out the password files (for grafana cli,
# which may run before they exist).
render_ini() {
    echo "$HEADER"
    echo '[paths]'
    echo "data = $DATA"
    echo "logs = $LOGS"
    echo "plugins = $DATA/plugins"
    echo "provisioning = $ETC/provisioning"
    echo
    echo '[server]'
    echo "http_addr = $HTTP_ADDR"
    echo "http_port = $HTTP_PORT"
    if [ -n "$DOMAIN" ]; then echo "domain = $DOMAIN"; fi
    if [ -n "$ROOT_URL" ]; then echo "root_url = $ROOT_URL"; fi
    echo
    echo '[security]'
    echo 'admin_user = admin'
    if [ "$1" = yes ] && [ -n "$ADMIN_PASSWORD" ]; then
        echo "admin_password = \$__file{$ADMIN_PASSWORD_FILE}"
    fi
    echo 'disable_gravatar = true'
    case $ROOT_URL in https:*) echo 'cookie_secure = true' ;; esac
    echo
    echo '[users]'
    echo 'allow_sign_up = false'
    echo
    echo '[analytics]'
    echo 'reporting_enabled = false'
    echo 'check_for_updates = false'
    echo 'check_for_plugin_updates = false'
    if [ -n "$SMTP_HOST" ]; then
        echo
        echo '[smtp]'
        echo 'enabled = true'
        echo "host = $SMTP_HOST:$SMTP_PORT"
        if [ -n "$SMTP_USERNAME" ]; then echo "user = $SMTP_USERNAME"; fi
        if [ "$1" = yes ] && [ -n "$SMTP_PASSWORD" ]; then
            echo "password = \$__file{$SMTP_PASSWORD_FILE}"
        fi
        echo "from_address = $SMTP_FROM"
    fi
}

# ---- admin password ----
# New database: the file seeds it at first start (grafana.ini reads it). Existing database:
# grafana cli of the active release sets the password first (reading it from stdin, with a
# copy of the configuration that names no password file); only then is the file updated,
# so a failure is retried by the next run. Neither needs a restart.
if [ -n "$ADMIN_PASSWORD" ]; then
    printf '%s' "$ADMIN_PASSWORD" >"$WORKDIR/admin-password"
    if [ -f "$DATA/grafana.db" ] && ! cmp -s "$WORKDIR/admin-password" "$ADMIN_PASSWORD_FILE"; then
        if is_check; then
            drift "set the Grafana admin password"
        else
            command -v runuser >/dev/null 2>&1 || die "runuser is missing: cannot run grafana cli as the user grafana"
            _cli=$BASE/current
            [ -x "$_cli/bin/grafana" ] || _cli=$BASE/$VERSION
            _cli_ini=$(mktemp "$ETC/.chom-cli.XXXXXX")
            render_ini no >"$_cli_ini"
            chown root:grafana "$_cli_ini"
            chmod 0640 "$_cli_ini"
            log "setting the admin password with grafana cli"
            if ! runuser -u grafana -- "$_cli/bin/grafana" cli --homepath "$_cli" --config "$_cli_ini" \
                admin reset-admin-password --password-from-stdin \
                <"$WORKDIR/admin-password" >"$WORKDIR/cli.log" 2>&1; then
                rm -f "$_cli_ini"
                cat "$WORKDIR/cli.log" >&2
                die "grafana cli could not set the admin password"
            fi
            rm -f "$_cli_ini"
            changed
        fi
    fi
    ensure_file "$WORKDIR/admin-password" "$ADMIN_PASSWORD_FILE" 0640 root:grafana secret
else
    warn "secret GRAFANA_ADMIN_PASSWORD is not set: a new Grafana starts with admin/admin (changed at first login)"
    delete_file "$ADMIN_PASSWORD_FILE"
fi

FILE_CHANGED=0
if [ -n "$SMTP_HOST" ] && [ -n "$SMTP_PASSWORD" ]; then
    printf '%s' "$SMTP_PASSWORD" >"$WORKDIR/smtp-password"
    ensure_file "$WORKDIR/smtp-password" "$SMTP_PASSWORD_FILE" 0640 root:grafana secret
else
    delete_file "$SMTP_PASSWORD_FILE"
fi

# ---- switch release, unit, configuration ----
ensure_symlink "$BASE/$VERSION" "$BASE/current"
cat >"$WORKDIR/unit" <<EOF
# Managed by chom (component grafana). Local changes will be overwritten.
[Unit]
Description=Grafana (installed by chom)
Documentation=https://grafana.com/docs/grafana/latest/
After=network-online.target
Wants=network-online.target

[Service]
User=grafana
Group=grafana
WorkingDirectory=$HOME_DIR
ExecStart=$HOME_DIR/bin/grafana server --homepath=$HOME_DIR --config=$INI
Restart=on-failure
RestartSec=5s
LimitNOFILE=10000
NoNewPrivileges=true
PrivateTmp=true
ProtectHome=true
ProtectSystem=full

[Install]
WantedBy=multi-user.target
EOF
ensure_file "$WORKDIR/unit" "$UNIT" 0644 root:root
render_ini yes >"$WORKDIR/grafana.ini"
ensure_file "$WORKDIR/grafana.ini" "$INI" 0640 root:grafana

# datasource NAME UID TYPE URL [default]
datasource() {
    [ "$4" != none ] || return 0
    printf '  - name: %s\n    uid: %s\n    type: %s\n    access: proxy\n    url: %s\n' "$1" "$2" "$3" "$4"
    if [ "${5:-}" = default ]; then echo '    isDefault: true'; fi
    if [ "$3" = alertmanager ]; then printf '    jsonData:\n      implementation: prometheus\n'; fi
}
{
    echo '# Managed by chom (component grafana). Local changes will be overwritten.'
    echo 'apiVersion: 1'
    echo 'datasources:'
    datasource Prometheus chom-prometheus prometheus "$PROMETHEUS_URL" default
    datasource Loki chom-loki loki "$LOKI_URL"
    datasource Alertmanager chom-alertmanager alertmanager "$ALERTMANAGER_URL"
} >"$WORKDIR/datasources.yaml"
if [ "$PROMETHEUS_URL$LOKI_URL$ALERTMANAGER_URL" = nonenonenone ]; then
    delete_file "$DATASOURCES"
else
    ensure_file "$WORKDIR/datasources.yaml" "$DATASOURCES" 0640 root:grafana
fi

daemon_reload
if [ "$RESTART" -eq 1 ]; then FILE_CHANGED=1; fi
ensure_service "$SERVICE" restart
finish
