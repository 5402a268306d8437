#!/bin/sh
# chom component: prometheus: the metrics database of the observability stack.
#
# Installs Debian's prometheus; sets retention and listen address through ARGS in
# /etc/default/prometheus (restart when it changed); renders /etc/prometheus/prometheus.yml
# (scrape jobs: prometheus itself, node exporters, alertmanager) and the alert rules
# /etc/prometheus/rules/chom.yml (reload when they changed). `promtool check config`
# must accept the result, or the previous files are restored.
#
# Version: CHOM_VERSION pins the Debian package version of prometheus; empty = the
#   distribution's.
# Config keys (all optional):
#   prometheus.retention_days    wins over retention_days; default 15
#   retention_days               shared with loki (the observability Role sets it)
#   prometheus.listen_address    default 127.0.0.1:9090 (Grafana reads it locally)
#   prometheus.scrape_interval   default 30s
#   prometheus.node_targets      list of host:port, default ["127.0.0.1:9100"]
#   prometheus.alertmanager      host:port, default 127.0.0.1:9093; "none" = no alerting
# Secrets: none.
# Never: deletes /var/lib/prometheus (the TSDB); runs on systems without apt.
set -eu

COMPONENT=prometheus
DEFAULT_VERSION= # empty: the distribution's prometheus

# The shared helpers (log, warn, die, ensure_file, ensure_packages, ensure_service, …)
# come from scripts/lib/helpers.sh, which chom sends ahead of this script.

start
require_apt
VERSION=${CHOM_VERSION:-$DEFAULT_VERSION}
SERVICE=prometheus
DEFAULTS=/etc/default/prometheus
CONFIG=/etc/prometheus/prometheus.yml
RULES_DIR=/etc/prometheus/rules
RULES=$RULES_DIR/chom.yml
HEADER='# Managed by chom (component prometheus). Local changes will be overwritten.'

if [ "$MODE" = remove ]; then
    stop_service "$SERVICE"
    ensure_absent "$RULES"
    remove_packages prometheus
    warn "kept /var/lib/prometheus (the metrics) and /etc/prometheus, /etc/default/prometheus (rendered by chom): chom never deletes data directories"
    finish
fi

TARGET_RE='[A-Za-z0-9._-]+:[0-9]+'
RETENTION=${CHOM_CFG_PROMETHEUS_RETENTION_DAYS:-${CHOM_CFG_RETENTION_DAYS:-15}}
LISTEN=${CHOM_CFG_PROMETHEUS_LISTEN_ADDRESS:-127.0.0.1:9090}
INTERVAL=${CHOM_CFG_PROMETHEUS_SCRAPE_INTERVAL:-30s}
NODE_TARGETS=${CHOM_CFG_PROMETHEUS_NODE_TARGETS:-127.0.0.1:9100}
ALERTMANAGER=${CHOM_CFG_PROMETHEUS_ALERTMANAGER:-127.0.0.1:9093}
SERVER=${CHOM_SERVER:-$(hostname)}
check_value retention_days "$RETENTION" '[1-9][0-9]*'
check_value prometheus.listen_address "$LISTEN" '[A-Za-z0-9.-]*:[0-9]+'
check_value prometheus.scrape_interval "$INTERVAL" '[1-9][0-9]*(s|m)'
if [ "$ALERTMANAGER" != none ]; then check_value prometheus.alertmanager "$ALERTMANAGER" "$TARGET_RE"; fi
# a list of quoted YAML targets: "a:9100", "b:9100"
NODES=
set -f
for _t in $(cfg_words "$NODE_TARGETS"); do
    check_value prometheus.node_targets "$_t" "$TARGET_RE"
    NODES="${NODES:+$NODES, }\"$_t\""
done
set +f
[ -n "$NODES" ] || die "config prometheus.node_targets is empty"
# prometheus scrapes itself where it listens (127.0.0.1 when it listens on all addresses)
SELF_HOST=${LISTEN%:*}
case $SELF_HOST in '' | 0.0.0.0) SELF_HOST=127.0.0.1 ;; esac
SELF="$SELF_HOST:${LISTEN##*:}"

if [ -n "$VERSION" ]; then ensure_packages "prometheus=$VERSION"; else ensure_packages prometheus; fi
stop_if_drift

resource port "${LISTEN##*:}"
resource user prometheus
resource directory /var/lib/prometheus

# /etc/default/prometheus: flags; a change needs a restart
FILE_CHANGED=0
cat >"$WORKDIR/defaults" <<EOF
$HEADER
# Flags for /usr/bin/prometheus (Debian's unit passes \$ARGS).
ARGS="--storage.tsdb.retention.time=${RETENTION}d --web.listen-address=$LISTEN"
EOF
ensure_file "$WORKDIR/defaults" "$DEFAULTS" 0644 root:root
RESTART=$FILE_CHANGED

# prometheus.yml and rules: a change needs a reload
FILE_CHANGED=0
{
    echo "$HEADER"
    cat <<EOF
global:
  scrape_interval: $INTERVAL
  evaluation_interval: $INTERVAL
  external_labels:
    chom_server: $(yaml_quote "$SERVER")

rule_files:
  - $RULES_DIR/*.yml
EOF
    if [ "$ALERTMANAGER" != none ]; then
        cat <<EOF

alerting:
  alertmanagers:
    - static_configs:
        - targets: ["$ALERTMANAGER"]
EOF
    fi
    cat <<EOF

scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["$SELF"]
  - job_name: node
    static_configs:
      - targets: [$NODES]
EOF
    if [ "$ALERTMANAGER" != none ]; then
        cat <<EOF
  - job_name: alertmanager
    static_configs:
      - targets: ["$ALERTMANAGER"]
EOF
    fi
} >"$WORKDIR/prometheus.yml"
ensure_file "$WORKDIR/prometheus.yml" "$CONFIG" 0644 root:root

ensure_dir "$RULES_DIR" 0755 root:root
{
    echo "$HEADER"
    cat <<'EOF'
groups:
  - name: chom
    rules:
      - alert: TargetDown
        expr: up == 0
        for: 5m
        labels:
          severity: critical
        annotations:
          summary: "{{ $labels.job }} on {{ $labels.instance }} is down"
      - alert: DiskAlmostFull
        expr: node_filesystem_avail_bytes{fstype!~"tmpfs|overlay|squashfs"} / node_filesystem_size_bytes < 0.10
        for: 15m
        labels:
          severity: warning
        annotations:
          summary: "{{ $labels.mountpoint }} on {{ $labels.instance }} has less than 10% free"
      - alert: MemoryAlmostFull
        expr: node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes < 0.10
        for: 15m
        labels:
          severity: warning
        annotations:
          summary: "{{ $labels.instance }} has less than 10% memory available"
EOF
} >"$WORKDIR/rules.yml"
ensure_file "$WORKDIR/rules.yml" "$RULES" 0644 root:root

if [ "$FILE_CHANGED$RESTART" != 00 ] && ! is_check; then
    if ! with_umask022 promtool check config "$CONFIG" >"$WORKDIR/promtool" 2>&1; then
        cat "$WORKDIR/promtool" >&2
        abort "promtool rejected the new configuration; the previous files were restored"
    fi
fi
if [ "$RESTART" -eq 1 ]; then
    FILE_CHANGED=1
    ensure_service "$SERVICE" restart
else
    ensure_service "$SERVICE" reload
fi
finish
