#!/bin/sh
# chom component: alertmanager: routes Prometheus alerts to e-mail (observability stack).
#
# Installs Debian's prometheus-alertmanager; sets its flags in
# /etc/default/prometheus-alertmanager (listen address, clustering off; restart when
# changed) and renders /etc/prometheus/alertmanager.yml (reload when changed) after
# `amtool check-config` accepts it (else the previous files are restored). The SMTP
# password goes to /etc/prometheus/alertmanager-smtp-password (0640 root:prometheus),
# referenced with smtp_auth_password_file (Alertmanager >= 0.25, Debian 12 ships 0.25).
#
# Version: CHOM_VERSION pins the Debian package version; empty = the distribution's.
# Config keys (all optional; without smtp.host and alert_email alerts go nowhere, with a
# warning):
#   smtp.host, smtp.port (default 587), smtp.username, smtp.require_tls (default true)
#   smtp.from                      default alertmanager@<server>
#   alert_email                    recipient address
#   alertmanager.listen_address    default 127.0.0.1:9093
# Secrets: SMTP_PASSWORD (optional).
# Never: deletes /var/lib/prometheus/alertmanager (silences, notification log); runs on
#   systems without apt.
set -eu

COMPONENT=alertmanager
DEFAULT_VERSION= # empty: the distribution's prometheus-alertmanager

# The shared helpers (log, warn, die, ensure_file, ensure_packages, ensure_service, …)
# come from scripts/lib/helpers.sh, which chom sends ahead of this script.

start
require_apt
VERSION=${CHOM_VERSION:-$DEFAULT_VERSION}
SERVICE=prometheus-alertmanager
DEFAULTS=/etc/default/prometheus-alertmanager
CONFIG=/etc/prometheus/alertmanager.yml
PASSWORD_FILE=/etc/prometheus/alertmanager-smtp-password
HEADER='# Managed by chom (component alertmanager). Local changes will be overwritten.'

if [ "$MODE" = remove ]; then
    stop_service "$SERVICE"
    delete_file "$PASSWORD_FILE"
    remove_packages prometheus-alertmanager
    warn "kept /var/lib/prometheus/alertmanager and /etc/prometheus: chom never deletes data directories"
    finish
fi

SERVER=${CHOM_SERVER:-$(hostname)}
LISTEN=${CHOM_CFG_ALERTMANAGER_LISTEN_ADDRESS:-127.0.0.1:9093}
SMTP_HOST=${CHOM_CFG_SMTP_HOST:-}
SMTP_PORT=${CHOM_CFG_SMTP_PORT:-587}
SMTP_USERNAME=${CHOM_CFG_SMTP_USERNAME:-}
SMTP_FROM=${CHOM_CFG_SMTP_FROM:-alertmanager@$SERVER}
SMTP_REQUIRE_TLS=${CHOM_CFG_SMTP_REQUIRE_TLS:-true}
ALERT_EMAIL=${CHOM_CFG_ALERT_EMAIL:-}
MAIL_RE='[^[:space:]"\\@]+@[A-Za-z0-9.-]+'
check_value alertmanager.listen_address "$LISTEN" '[A-Za-z0-9.-]*:[0-9]+'
check_value smtp.port "$SMTP_PORT" '[0-9]+'
check_value smtp.require_tls "$SMTP_REQUIRE_TLS" 'true|false'
check_value smtp.from "$SMTP_FROM" "$MAIL_RE"
if [ -n "$SMTP_HOST" ]; then check_value smtp.host "$SMTP_HOST" '[A-Za-z0-9.-]+'; fi
if [ -n "$ALERT_EMAIL" ]; then check_value alert_email "$ALERT_EMAIL" "$MAIL_RE"; fi
if [ -n "$SMTP_USERNAME" ]; then check_value smtp.username "$SMTP_USERNAME" '[^[:space:]"\\]+'; fi
PASSWORD=${SMTP_PASSWORD:-}
check_secret SMTP_PASSWORD "$PASSWORD"

if [ -n "$VERSION" ]; then
    ensure_packages "prometheus-alertmanager=$VERSION"
else
    ensure_packages prometheus-alertmanager
fi
stop_if_drift

resource port "${LISTEN##*:}"
resource user prometheus
resource directory /var/lib/prometheus/alertmanager

# flags: a change needs a restart
FILE_CHANGED=0
cat >"$WORKDIR/defaults" <<EOF
$HEADER
# Flags for /usr/bin/prometheus-alertmanager (Debian's unit passes \$ARGS).
# An empty --cluster.listen-address turns the HA gossip port 9094 off (single node).
ARGS="--web.listen-address=$LISTEN --cluster.listen-address="
EOF
ensure_file "$WORKDIR/defaults" "$DEFAULTS" 0644 root:root
RESTART=$FILE_CHANGED

# configuration: a change needs a reload
FILE_CHANGED=0
if [ -n "$PASSWORD" ]; then
    printf '%s' "$PASSWORD" >"$WORKDIR/smtp-password"
    ensure_file "$WORKDIR/smtp-password" "$PASSWORD_FILE" 0640 root:prometheus secret
else
    delete_file "$PASSWORD_FILE"
fi
{
    echo "$HEADER"
    if [ -n "$SMTP_HOST" ]; then
        echo 'global:'
        echo "  smtp_smarthost: $(yaml_quote "$SMTP_HOST:$SMTP_PORT")"
        echo "  smtp_from: $(yaml_quote "$SMTP_FROM")"
        if [ -n "$SMTP_USERNAME" ]; then echo "  smtp_auth_username: $(yaml_quote "$SMTP_USERNAME")"; fi
        if [ -n "$PASSWORD" ]; then echo "  smtp_auth_password_file: $(yaml_quote "$PASSWORD_FILE")"; fi
        echo "  smtp_require_tls: $SMTP_REQUIRE_TLS"
        echo
    fi
    cat <<'EOF'
route:
  receiver: default
  group_by: [alertname, instance]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h

receivers:
  - name: default
EOF
    if [ -n "$SMTP_HOST" ] && [ -n "$ALERT_EMAIL" ]; then
        echo '    email_configs:'
        echo "      - to: $(yaml_quote "$ALERT_EMAIL")"
        echo '        send_resolved: true'
    fi
} >"$WORKDIR/alertmanager.yml"
ensure_file "$WORKDIR/alertmanager.yml" "$CONFIG" 0644 root:root
if [ -z "$SMTP_HOST" ] || [ -z "$ALERT_EMAIL" ]; then
    warn "smtp.host or alert_email is not configured: alerts are not delivered anywhere"
fi

if [ "$FILE_CHANGED$RESTART" != 00 ] && ! is_check; then
    if ! with_umask022 amtool check-config "$CONFIG" >"$WORKDIR/amtool" 2>&1; then
        cat "$WORKDIR/amtool" >&2
        abort "amtool rejected the new configuration; the previous files were restored"
    fi
fi
if [ "$RESTART" -eq 1 ]; then
    FILE_CHANGED=1
    ensure_service "$SERVICE" restart
else
    ensure_service "$SERVICE" reload
fi
finish
