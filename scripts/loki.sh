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
# Version: CHOM_VERSION, default the pinned PINNED_VERSION below. Another version needs
#   config sha256 (the SHA-256 of loki-linux-<arch>.zip from that release's SHA256SUMS).
# Config keys (all optional):
#   loki.retention_days    wins over retention_days; default 15
#   retention_days         shared with prometheus (the observability Role sets it)
#   loki.listen_address    HTTP address, default 127.0.0.1 (set 0.0.0.0 to accept pushes
#                          from other servers; protect port 3100 with a firewall)
#   loki.http_port         default 3100 (gRPC stays on 127.0.0.1:9096)
#   sha256                 SHA-256 of the release zip for this server's architecture
# Secrets: none.
# Never: deletes /var/lib/loki (the logs) or the user loki; installs an archive whose
#   checksum is unknown or wrong; changes schema_config for existing data.
# Runs on Debian/Ubuntu (installs curl, unzip, ca-certificates with apt when missing) or on
#   any systemd Linux that already has curl or wget, unzip, sha256sum and useradd.
set -eu

COMPONENT=loki
PINNED_VERSION=3.4.2
# SHA-256 of the pinned release's zip, one per architecture. Source: the SHA256SUMS file of
# https://github.com/grafana/loki/releases/tag/v3.4.2 (entries loki-linux-amd64.zip and
# loki-linux-arm64.zip). NOT filled in: this script was written without network access,
# and a checksum must never be guessed. Until it is filled in (or config sha256 is set),
# the script refuses to install.
LOKI_SHA256_AMD64=CHECKSUM_UNVERIFIED
LOKI_SHA256_ARM64=CHECKSUM_UNVERIFIED

# ---- chom helpers: the same block in every component script (chom sends one file) ----
# Functions share globals (POSIX sh has no `local`): helper variables start with `_`.
# One brace group so that a single directive covers the helpers a script does not call:
# shellcheck disable=SC2317
{
umask 077
MODE=${CHOM_MODE:-}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
DRIFT=0        # check mode: something would change
CHANGED=0      # `::chom:: changed` printed already
FILE_CHANGED=0 # a managed file changed (or would) since the caller last reset it
WORKDIR=
STAGE= # optional second temp dir (mktemp -d) beside an install target, removed on exit
NL='
'

log() { printf '%s: %s\n' "$COMPONENT" "$*" >&2; }
warn() { printf '::chom:: warning %s: %s\n' "$COMPONENT" "$*"; }
die() {
    printf '%s: error: %s\n' "$COMPONENT" "$*" >&2
    exit 1
}
resource() { printf '::chom:: resource %s %s\n' "$1" "$2"; }
changed() {
    if [ "$CHANGED" -eq 0 ]; then echo '::chom:: changed'; fi
    CHANGED=1
}
is_check() { [ "$MODE" = check ]; }
drift() {
    log "would $*"
    DRIFT=1
}
# finish: exit 100 in check mode when something would change, else 0. Backups of replaced
# secret files are kept only until the run succeeds.
finish() {
    if is_check && [ "$DRIFT" -eq 1 ]; then exit 100; fi
    if [ -s "$WORKDIR/secret-backups" ]; then
        while IFS= read -r _old; do rm -f "$_old"; done <"$WORKDIR/secret-backups"
    fi
    exit 0
}
# stop_if_drift: in check mode, stop after a step that the later steps depend on.
stop_if_drift() {
    if is_check && [ "$DRIFT" -eq 1 ]; then
        log "later steps depend on the missing pieces: not checked"
        finish
    fi
}
cleanup() {
    case $WORKDIR in
        */chom-"$COMPONENT".*) rm -rf "$WORKDIR" ;;
    esac
    case $STAGE in
        */.chom-stage.*) rm -rf "$STAGE" ;;
    esac
}
start() {
    case $MODE in
        apply | check | remove) ;;
        *) die "CHOM_MODE must be apply, check or remove (got '$MODE')" ;;
    esac
    [ "$(id -u)" -eq 0 ] || die "must run as root (chom uses sudo -n for other users)"
    WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/chom-$COMPONENT.XXXXXX")
    : >"$WORKDIR/journal"
    trap cleanup EXIT
    trap 'exit 129' HUP
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# check_value LABEL VALUE ERE: die unless VALUE is one line matching the extended regex.
check_value() {
    case $2 in
        '' | *"$NL"*) die "config $1 must be one non-empty line" ;;
    esac
    printf '%s\n' "$2" | grep -Eqx -- "$3" || die "config $1 has an unsupported value '$2' (expected $3)"
}
# check_secret NAME VALUE: secrets must be one line (never printed).
check_secret() {
    case $2 in
        *"$NL"*) die "secret $1 must not contain a line break" ;;
    esac
}
# cfg_words VALUE: a JSON array of strings or a comma/space separated list, as words.
cfg_words() { printf '%s' "$1" | tr -d '[]"' | tr ',' ' '; }
# yaml_quote VALUE: a double-quoted YAML scalar.
yaml_quote() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }

# with_umask022 CMD...: run a tool that may create files others must read (logs, packages).
with_umask022() { (umask 022 && "$@"); }

# ---- packages (apt/dpkg) ----
require_apt() {
    if command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then
        return 0
    fi
    warn "unsupported system: this script supports Debian and Ubuntu (apt-get and dpkg) only"
    die "apt-get/dpkg-query not found: supported systems are Debian and Ubuntu"
}
# pkg_ii PKG: installed according to dpkg.
pkg_ii() {
    case $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null || true) in
        ii*) return 0 ;;
    esac
    return 1
}
# pkg_provided NAME: an installed package Provides NAME (apt installs a provider for a virtual name).
pkg_provided() {
    dpkg-query -W -f='${db:Status-Abbrev}|${Provides}\n' 2>/dev/null | awk -F'|' -v p="$1" '
        $1 ~ /^ii/ { n = split($2, a, /, */); for (i = 1; i <= n; i++) { sub(/ .*/, "", a[i]); if (a[i] == p) found = 1 } }
        END { exit !found }'
}
# pkg_ok PKG [VERSION]: installed (at exactly VERSION when given).
pkg_ok() {
    if pkg_ii "$1"; then
        if [ -z "${2:-}" ] || [ "$(dpkg-query -W -f='${Version}' "$1")" = "$2" ]; then return 0; fi
        return 1
    fi
    if [ -z "${2:-}" ] && pkg_provided "$1"; then return 0; fi
    return 1
}
apt_get() {
    (
        umask 022
        DEBIAN_FRONTEND=noninteractive
        export DEBIAN_FRONTEND
        exec apt-get -q -y -o DPkg::Lock::Timeout=300 \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
    ) >&2
}
# ensure_packages PKG[=VERSION]...: install what is missing (refreshing the lists once if needed).
ensure_packages() {
    _missing=
    for _spec in "$@"; do
        _name=${_spec%%=*}
        _ver=
        case $_spec in *=*) _ver=${_spec#*=} ;; esac
        check_value "package name" "$_name" '[a-z0-9][a-z0-9.+-]*'
        resource package "$_name"
        if ! pkg_ok "$_name" "$_ver"; then _missing="$_missing $_spec"; fi
    done
    [ -n "$_missing" ] || return 0
    if is_check; then
        drift "install packages:$_missing"
        return 0
    fi
    log "installing packages:$_missing"
    set -f
    # shellcheck disable=SC2086 # one word per package; globbing is off
    if ! apt_get install --no-install-recommends --allow-downgrades $_missing; then
        log "install failed: refreshing the package lists and retrying once"
        apt_get update
        # shellcheck disable=SC2086
        apt_get install --no-install-recommends --allow-downgrades $_missing
    fi
    set +f
    changed
}
# remove_packages PKG...: remove (not purge) those installed; config files and data stay.
remove_packages() {
    _present=
    for _p in "$@"; do
        if pkg_ii "$_p"; then _present="$_present $_p"; fi
    done
    [ -n "$_present" ] || return 0
    log "removing packages (not purging: config files and data stay):$_present"
    set -f
    # shellcheck disable=SC2086
    apt_get remove $_present
    set +f
    changed
}

# ---- files and directories ----
# ensure_meta PATH MODE OWNER:GROUP ("-" leaves mode and owner as they are).
ensure_meta() {
    [ "$2" != - ] || return 0
    _cur=$(stat -L -c '%a %U:%G' "$1")
    _want="${2#0} $3"
    [ "$_cur" != "$_want" ] || return 0
    FILE_CHANGED=1
    if is_check; then
        drift "set mode/owner of $1 to $_want (now $_cur)"
        return 0
    fi
    chown "$3" "$1"
    chmod "$2" "$1"
    log "set mode/owner of $1 to $_want"
    changed
}
# ensure_dir PATH MODE OWNER:GROUP ("-" = create as 0755 root:root if missing, else leave alone).
ensure_dir() {
    resource directory "$1"
    if [ -d "$1" ]; then
        ensure_meta "$@"
        return 0
    fi
    [ ! -e "$1" ] || die "$1 exists and is not a directory"
    if is_check; then
        drift "create directory $1"
        return 0
    fi
    (umask 022 && mkdir -p "$1")
    if [ "$2" != - ]; then
        chown "$3" "$1"
        chmod "$2" "$1"
    fi
    log "created directory $1"
    changed
}
# journal DEST BACKUP: remember how to undo a change ("-" = DEST did not exist).
journal() { printf '%s\t%s\n' "$1" "$2" >>"$WORKDIR/journal"; }
# ensure_file SRC DEST MODE OWNER:GROUP [secret]: install the rendered SRC as DEST when
# content or metadata differ; the previous DEST is kept as DEST.chom-bak.<timestamp> (for a
# secret file only until the run succeeds). MODE "-" keeps the current mode and owner of
# DEST (0644 root:root for a new file).
ensure_file() {
    resource file "$2"
    _mode=$3
    _owner=$4
    if [ "$_mode" = - ]; then
        if [ -f "$2" ]; then
            _mode=$(stat -c '%a' "$2")
            _owner=$(stat -c '%U:%G' "$2")
        else
            _mode=0644
            _owner=root:root
        fi
    fi
    if [ -f "$2" ] && [ ! -L "$2" ] && cmp -s "$1" "$2"; then
        ensure_meta "$2" "$_mode" "$_owner"
        return 0
    fi
    FILE_CHANGED=1
    if is_check; then
        drift "update $2"
        return 0
    fi
    _dir=$(dirname "$2")
    [ -d "$_dir" ] || die "directory $_dir is missing"
    _new="$_dir/.$(basename "$2").chom-new.$$"
    cp "$1" "$_new"
    chown "$_owner" "$_new"
    chmod "$_mode" "$_new"
    if [ -e "$2" ] || [ -L "$2" ]; then
        cp -pP "$2" "$2.chom-bak.$STAMP"
        journal "$2" "$2.chom-bak.$STAMP"
        if [ "${5:-}" = secret ]; then
            printf '%s\n' "$2.chom-bak.$STAMP" >>"$WORKDIR/secret-backups"
        else
            log "kept the previous $2 as $2.chom-bak.$STAMP"
        fi
    else
        journal "$2" -
    fi
    mv -f "$_new" "$2"
    log "updated $2"
    changed
}
# ensure_absent PATH: take a file this script manages out of service (kept as PATH.chom-bak.<timestamp>).
ensure_absent() {
    [ -e "$1" ] || [ -L "$1" ] || return 0
    [ ! -d "$1" ] || [ -L "$1" ] || die "$1 is a directory: not removing it"
    FILE_CHANGED=1
    if is_check; then
        drift "remove $1"
        return 0
    fi
    mv -f "$1" "$1.chom-bak.$STAMP"
    journal "$1" "$1.chom-bak.$STAMP"
    log "removed $1 (kept as $1.chom-bak.$STAMP)"
    changed
}
# delete_file PATH: delete a file this script wrote, keeping no copy (secrets; remove mode).
delete_file() {
    [ -e "$1" ] || [ -L "$1" ] || return 0
    FILE_CHANGED=1
    if is_check; then
        drift "delete $1"
        return 0
    fi
    rm -f "$1"
    log "deleted $1"
    changed
}
# rollback: undo the file changes of this run, newest first.
rollback() {
    [ -s "$WORKDIR/journal" ] || return 0
    log "restoring the files changed in this run"
    _tab=$(printf '\t')
    sed '1!G;h;$!d' "$WORKDIR/journal" >"$WORKDIR/journal.rev"
    while IFS=$_tab read -r _dst _bak; do
        if [ "$_bak" = - ]; then rm -f "$_dst"; else mv -f "$_bak" "$_dst"; fi
    done <"$WORKDIR/journal.rev"
    : >"$WORKDIR/journal"
    if have_systemd; then systemctl daemon-reload || true; fi
}
# abort MESSAGE: restore this run's files, then fail.
abort() {
    rollback
    die "$*"
}

# ---- services (systemd) ----
have_systemd() { command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; }
daemon_reload() {
    if ! is_check && have_systemd; then systemctl daemon-reload; fi
}
# service_failed NAME: restore this run's files, restart NAME with them, fail.
service_failed() {
    rollback
    systemctl restart "$1" >/dev/null 2>&1 || true
    die "service $1 failed with the new configuration; the previous files were restored (see: journalctl -u $1)"
}
# ensure_service NAME ON_CHANGE: enabled and running. When FILE_CHANGED=1, a running service
# gets ON_CHANGE (reload | restart | none). A failure restores the previous files.
ensure_service() {
    resource service "$1"
    if ! have_systemd; then
        warn "systemd is not running: service $1 is not managed here"
        return 0
    fi
    if ! systemctl is-enabled --quiet "$1" 2>/dev/null; then
        if is_check; then
            drift "enable service $1"
        else
            systemctl enable --quiet "$1" || abort "could not enable service $1"
            log "enabled $1"
            changed
        fi
    fi
    if systemctl is-active --quiet "$1"; then
        if is_check || [ "$FILE_CHANGED" -eq 0 ] || [ "$2" = none ]; then return 0; fi
        if [ "$2" = reload ]; then _verb=reload-or-restart; else _verb=restart; fi
        log "$_verb $1 (configuration changed)"
        systemctl "$_verb" "$1" || service_failed "$1"
    else
        if is_check; then
            drift "start service $1"
            return 0
        fi
        log "starting $1"
        systemctl start "$1" || service_failed "$1"
    fi
    sleep 2
    systemctl is-active --quiet "$1" || service_failed "$1"
    changed
}
# stop_service NAME: stopped and disabled (remove mode).
stop_service() {
    if ! have_systemd; then
        warn "systemd is not running: service $1 was not stopped"
        return 0
    fi
    if systemctl is-active --quiet "$1"; then
        systemctl stop "$1"
        log "stopped $1"
        changed
    fi
    if [ "$(systemctl is-enabled "$1" 2>/dev/null || true)" = enabled ]; then
        systemctl disable --quiet "$1"
        log "disabled $1"
        changed
    fi
}
}
# ---- end of chom helpers ----
# ---- chom helpers for upstream release archives (loki, grafana) ----
# One brace group so that a single directive covers the helpers a script does not call:
# shellcheck disable=SC2317
{
# upstream_arch: the release name of this CPU (amd64, arm64).
upstream_arch() {
    case $(uname -m) in
        x86_64 | amd64) echo amd64 ;;
        aarch64 | arm64) echo arm64 ;;
        *) die "unsupported CPU architecture $(uname -m): the pinned releases exist for amd64 and arm64 here" ;;
    esac
}
# resolve_sha256 PINNED_SUM URL: sets SHA256 to the checksum the download must have.
# The pinned version uses the checksum pinned in this script (or config sha256, which must
# agree with it); any other version requires config sha256.
resolve_sha256() {
    _cfg=${CHOM_CFG_SHA256:-}
    if [ "$VERSION" != "$PINNED_VERSION" ]; then
        [ -n "$_cfg" ] || die "version $VERSION is not the pinned $PINNED_VERSION: set config sha256 to the SHA-256 of $2 (published with the release)"
        SHA256=$_cfg
    elif [ -n "$_cfg" ]; then
        if [ "$1" != CHECKSUM_UNVERIFIED ] && [ "$_cfg" != "$1" ]; then
            die "config sha256 differs from the checksum pinned in this script for $VERSION: refusing"
        fi
        SHA256=$_cfg
    else
        [ "$1" != CHECKSUM_UNVERIFIED ] || die "no verified checksum for $2: copy its SHA-256 from the release page into this script (the CHECKSUM_UNVERIFIED value) or set config sha256; refusing to install unverified software"
        SHA256=$1
    fi
    check_value sha256 "$SHA256" '[0-9a-f]{64}'
}
# need_tools TOOL...: commands the install needs; on apt systems the packages are installed.
need_tools() {
    _lack=
    for _t in "$@"; do
        command -v "$_t" >/dev/null 2>&1 || _lack="$_lack $_t"
    done
    [ -n "$_lack" ] || return 0
    if command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then
        _pkgs=ca-certificates
        for _t in $_lack; do
            case $_t in
                sha256sum) _pkgs="$_pkgs coreutils" ;;
                *) _pkgs="$_pkgs $_t" ;;
            esac
        done
        # shellcheck disable=SC2086 # package names are fixed words
        ensure_packages $_pkgs
        return 0
    fi
    warn "unsupported system: missing$_lack (supported: Debian/Ubuntu, or any systemd Linux that has these tools)"
    die "missing tools:$_lack"
}
# fetch_verified URL SHA256: download into WORKDIR, verify with sha256sum -c, set FETCHED.
fetch_verified() {
    FETCHED="$WORKDIR/$(basename "$1")"
    log "downloading $1"
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL --proto '=https' --proto-redir '=https' --retry 3 --connect-timeout 30 \
            -o "$FETCHED" "$1" || die "download failed: $1"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$FETCHED" "$1" || die "download failed: $1"
    else
        die "neither curl nor wget is installed"
    fi
    printf '%s  %s\n' "$2" "$(basename "$FETCHED")" >"$WORKDIR/SHA256SUMS"
    (cd "$WORKDIR" && sha256sum -c SHA256SUMS) >&2 ||
        die "SHA-256 mismatch for $1: refusing to install it"
}
# ensure_system_user NAME HOME: a locked system user and group of the same name.
ensure_system_user() {
    resource user "$1"
    resource group "$1"
    if id -u "$1" >/dev/null 2>&1; then return 0; fi
    if is_check; then
        drift "create system user $1"
        return 0
    fi
    _nologin=/bin/false
    for _s in /usr/sbin/nologin /sbin/nologin; do
        if [ -x "$_s" ]; then
            _nologin=$_s
            break
        fi
    done
    if command -v useradd >/dev/null 2>&1; then
        grep -q "^$1:" /etc/group || groupadd --system "$1"
        useradd --system --gid "$1" --home-dir "$2" --no-create-home --shell "$_nologin" "$1"
    elif command -v adduser >/dev/null 2>&1 && command -v addgroup >/dev/null 2>&1; then
        grep -q "^$1:" /etc/group || addgroup -S "$1"
        adduser -S -D -H -h "$2" -s "$_nologin" -G "$1" "$1"
    else
        die "cannot create user $1: neither useradd nor adduser is available"
    fi
    log "created system user $1"
    changed
}
# release_installed BASE: BASE/<VERSION> holds the release that was verified against SHA256.
release_installed() {
    [ -f "$1/$VERSION/.chom-sha256" ] && [ "$(cat "$1/$VERSION/.chom-sha256")" = "$SHA256" ]
}
# new_stage BASE: STAGE = a private temp dir inside BASE (same filesystem, so the final
# move is a rename; removed on exit).
new_stage() { STAGE=$(mktemp -d "$1/.chom-stage.XXXXXX"); }
# commit_release BASE DIR: DIR (inside STAGE) becomes BASE/<VERSION>, marked with SHA256. An
# existing BASE/<VERSION> without that mark is set aside as BASE/<VERSION>.chom-bak.<timestamp>.
commit_release() {
    printf '%s\n' "$SHA256" >"$2/.chom-sha256"
    chmod 0644 "$2/.chom-sha256"
    chown -R root:root "$2"
    chmod 0755 "$2"
    if [ -e "$1/$VERSION" ] || [ -L "$1/$VERSION" ]; then
        mv "$1/$VERSION" "$1/$VERSION.chom-bak.$STAMP"
        log "set the unverified $1/$VERSION aside as $1/$VERSION.chom-bak.$STAMP"
    fi
    mv "$2" "$1/$VERSION"
    log "installed $1/$VERSION"
    changed
}
# ensure_symlink TARGET LINK
ensure_symlink() {
    resource file "$2"
    if [ -L "$2" ] && [ "$(readlink "$2")" = "$1" ]; then return 0; fi
    [ ! -e "$2" ] || [ -L "$2" ] || die "$2 exists and is not a symlink: not replacing it"
    FILE_CHANGED=1
    if is_check; then
        drift "point $2 at $1"
        return 0
    fi
    if [ -L "$2" ]; then
        cp -P "$2" "$2.chom-bak.$STAMP"
        journal "$2" "$2.chom-bak.$STAMP"
    else
        journal "$2" -
    fi
    ln -sfn "$1" "$2"
    log "pointed $2 at $1"
    changed
}
}
# ---- end of upstream helpers ----

start
VERSION=${CHOM_VERSION:-$PINNED_VERSION}
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
case $ARCH in
    amd64) PINNED_SHA256=$LOKI_SHA256_AMD64 ;;
    arm64) PINNED_SHA256=$LOKI_SHA256_ARM64 ;;
esac
URL=https://github.com/grafana/loki/releases/download/v$VERSION/loki-linux-$ARCH.zip
resolve_sha256 "$PINNED_SHA256" "$URL"

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
