#!/bin/sh
# chom component: node-exporter: host metrics (CPU, memory, disks, network) for Prometheus.
#
# Installs Debian's prometheus-node-exporter and sets its flags in
# /etc/default/prometheus-node-exporter; restarts it only when that file changed (a failed
# restart is rolled back).
#
# Version: CHOM_VERSION pins the Debian package version; empty = the distribution's.
# Config keys (all optional):
#   node_exporter.listen_address   default :9100 (all addresses, so that a Prometheus on
#                                  another server can scrape it: restrict port 9100 with a
#                                  firewall, or set 127.0.0.1:9100 when Prometheus is local)
# Secrets: none.
# Never: deletes /var/lib/prometheus/node-exporter (textfile collector); runs on systems
#   without apt.
set -eu

COMPONENT=node-exporter
DEFAULT_VERSION= # empty: the distribution's prometheus-node-exporter

# The shared helpers (log, warn, die, ensure_file, ensure_packages, ensure_service, …)
# come from scripts/lib/helpers.sh, which chom sends ahead of this script.

start
require_apt
VERSION=${CHOM_VERSION:-$DEFAULT_VERSION}
SERVICE=prometheus-node-exporter
DEFAULTS=/etc/default/prometheus-node-exporter

if [ "$MODE" = remove ]; then
    stop_service "$SERVICE"
    remove_packages prometheus-node-exporter
    warn "kept /var/lib/prometheus/node-exporter and $DEFAULTS: chom never deletes data directories"
    finish
fi

LISTEN=${CHOM_CFG_NODE_EXPORTER_LISTEN_ADDRESS:-:9100}
check_value node_exporter.listen_address "$LISTEN" '[A-Za-z0-9.-]*:[0-9]+'

if [ -n "$VERSION" ]; then
    ensure_packages "prometheus-node-exporter=$VERSION"
else
    ensure_packages prometheus-node-exporter
fi
stop_if_drift

resource port "${LISTEN##*:}"
resource user prometheus
FILE_CHANGED=0
cat >"$WORKDIR/defaults" <<EOF
# Managed by chom (component node-exporter). Local changes will be overwritten.
# Flags for /usr/bin/prometheus-node-exporter (Debian's unit passes \$ARGS).
ARGS="--web.listen-address=$LISTEN"
EOF
ensure_file "$WORKDIR/defaults" "$DEFAULTS" 0644 root:root
ensure_service "$SERVICE" restart
finish
