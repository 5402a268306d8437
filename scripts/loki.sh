#!/bin/sh
# chom component: loki: the log database of the observability stack (single binary,
# filesystem storage).
#
# Loki is not in Debian: this script downloads the upstream release zip for the pinned
# version, checks its SHA-256 with `sha256sum -c` BEFORE anything is installed, and
# installs the binary as /opt/loki/<version>/loki (/opt/loki/current points at the active
# one). It manages the system user loki, /etc/loki/config.yml (0640 root:loki), the data
# directory /var/lib/loki and the unit /etc/systemd/system/loki.service; `loki
# -verify-config` must accept the configuration, or the previous files are restored.
# Restarts loki only when the binary, the unit or the configuration changed.
#
# Version: CHOM_VERSION, default DEFAULT_VERSION below.
# Config keys (all optional):
#   loki.retention_days    wins over retention_days; default 15
#   retention_days         shared with prometheus (the observability Role sets it)
#   loki.listen_address    HTTP address, default 127.0.0.1 (set 0.0.0.0 to accept pushes
#                          from other servers; protect port 3100 with a firewall)
#   loki.http_port         default 3100 (gRPC stays on 127.0.0.1:9096)
#   sha256                 SHA-256 of loki-linux-<arch>.zip: pins it, and SHA256SUMS is not
#                          fetched (default: verify against the release's SHA256SUMS)
#   mirror                 base URL laid out like https://github.com/grafana/loki/releases/download
#                          (<mirror>/v<version>/loki-linux-<arch>.zip and …/SHA256SUMS), for
#                          fleets without internet access; http:// is allowed here only
# Secrets: none.
# Never: deletes /var/lib/loki (the logs) or the user loki; installs an archive whose
#   checksum is unknown or wrong; changes schema_config for existing data.
# Runs on Debian/Ubuntu (installs curl, unzip, ca-certificates with apt when missing) or on
#   any systemd Linux that already has curl or wget, unzip, sha256sum and useradd.
set -eu

COMPONENT=loki
DEFAULT_VERSION=3.4.2

# The shared helpers (log, warn, die, ensure_file, ensure_packages, ensure_service, …)
# come from scripts/lib/helpers.sh, which chom sends ahead of this script.
# The upstream-archive helpers (upstream_arch, resolve_sha256, …) come from
# scripts/lib/upstream.sh.

start
VERSION=${CHOM_VERSION:-$DEFAULT_VERSION}
BASE=/opt/loki
UNIT=/etc/systemd/system/loki.service
CONFIG=/etc/loki/config.yml
DATA=/var/lib/loki
HEADER='# Managed by chom (component loki). Local changes will be overwritten.'

if [ "$MODE" = remove ]; then
    stop_service loki
    delete_file "$UNIT"
    daemon_reload
    delete_file "$BASE/current"
    delete_file "$CONFIG"
    for _d in "$BASE"/*; do
        [ -f "$_d/.chom-sha256" ] || continue
        delete_file "$_d/loki"
        delete_file "$_d/.chom-sha256"
        rmdir "$_d" 2>/dev/null || warn "$_d is not empty: left in place"
    done
    warn "kept $DATA (the logs), /etc/loki and the user loki: chom never deletes data directories"
    finish
fi

check_value version "$VERSION" '[0-9]+\.[0-9]+\.[0-9]+'
ARCH=$(upstream_arch)
release_source https://github.com/grafana/loki/releases/download
URL=$SOURCE/v$VERSION/loki-linux-$ARCH.zip

RETENTION=${CHOM_CFG_LOKI_RETENTION_DAYS:-${CHOM_CFG_RETENTION_DAYS:-15}}
LISTEN=${CHOM_CFG_LOKI_LISTEN_ADDRESS:-127.0.0.1}
PORT=${CHOM_CFG_LOKI_HTTP_PORT:-3100}
check_value retention_days "$RETENTION" '[1-9][0-9]*'
check_value loki.listen_address "$LISTEN" '[0-9A-Fa-f.:]+'
check_value loki.http_port "$PORT" '[0-9]+'
have_systemd || warn "systemd is not running: loki is installed but not started here"

resource port "$PORT"
resource port 9096
ensure_system_user loki "$DATA"
ensure_dir "$BASE" 0755 root:root
ensure_dir "$DATA" 0750 loki:loki
ensure_dir /etc/loki 0750 root:loki
stop_if_drift

# ---- the binary ----
RESTART=0
resource file "$BASE/$VERSION/loki"
if ! release_installed "$BASE"; then
    RESTART=1
    if is_check; then
        drift "install loki $VERSION from $URL"
    else
        need_tools unzip sha256sum
        command -v curl >/dev/null 2>&1 || command -v wget >/dev/null 2>&1 || need_tools curl
        resolve_sha256 "$URL" "$SOURCE/v$VERSION/SHA256SUMS"
        fetch_verified "$URL" "$SHA256"
        (umask 022 && mkdir "$WORKDIR/unpacked" && unzip -q "$FETCHED" -d "$WORKDIR/unpacked")
        [ -f "$WORKDIR/unpacked/loki-linux-$ARCH" ] || die "loki-linux-$ARCH is not in $(basename "$URL")"
        new_stage "$BASE"
        (umask 022 && mkdir "$STAGE/$VERSION")
        cp "$WORKDIR/unpacked/loki-linux-$ARCH" "$STAGE/$VERSION/loki"
        chmod 0755 "$STAGE/$VERSION/loki"
        commit_release "$BASE" "$STAGE/$VERSION"
    fi
fi
FILE_CHANGED=0
ensure_symlink "$BASE/$VERSION" "$BASE/current"

# ---- unit and configuration ----
cat >"$WORKDIR/unit" <<EOF
$HEADER
[Unit]
Description=Grafana Loki log database (installed by chom)
Documentation=https://grafana.com/docs/loki/latest/
After=network-online.target
Wants=network-online.target

[Service]
User=loki
Group=loki
ExecStart=$BASE/current/loki -config.file=$CONFIG
Restart=on-failure
RestartSec=5s
LimitNOFILE=65536
NoNewPrivileges=true
PrivateTmp=true
PrivateDevices=true
ProtectHome=true
ProtectSystem=full

[Install]
WantedBy=multi-user.target
EOF
ensure_file "$WORKDIR/unit" "$UNIT" 0644 root:root

{
    echo "$HEADER"
    cat <<EOF
auth_enabled: false

server:
  http_listen_address: $LISTEN
  http_listen_port: $PORT
  grpc_listen_address: 127.0.0.1
  grpc_listen_port: 9096

common:
  instance_addr: 127.0.0.1
  path_prefix: $DATA
  storage:
    filesystem:
      chunks_directory: $DATA/chunks
      rules_directory: $DATA/rules
  replication_factor: 1
  ring:
    kvstore:
      store: inmemory

# Never change an existing entry once data was written with it: add a new one with a
# later "from" date instead.
schema_config:
  configs:
    - from: 2024-01-01
      store: tsdb
      object_store: filesystem
      schema: v13
      index:
        prefix: index_
        period: 24h

limits_config:
  retention_period: $((RETENTION * 24))h

compactor:
  working_directory: $DATA/compactor
  retention_enabled: true
  delete_request_store: filesystem

analytics:
  reporting_enabled: false
EOF
} >"$WORKDIR/config.yml"
ensure_file "$WORKDIR/config.yml" "$CONFIG" 0640 root:loki

if [ "$FILE_CHANGED$RESTART" != 00 ] && ! is_check; then
    if ! with_umask022 "$BASE/current/loki" -config.file="$CONFIG" -verify-config >"$WORKDIR/verify" 2>&1; then
        cat "$WORKDIR/verify" >&2
        abort "loki -verify-config rejected the configuration; the previous files were restored"
    fi
fi
daemon_reload
if [ "$RESTART" -eq 1 ]; then FILE_CHANGED=1; fi
ensure_service loki restart
finish
