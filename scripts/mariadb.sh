#!/bin/sh
# chom component: mariadb: the database server of the hosting stack.
#
# Installs Debian's mariadb-server, writes /etc/mysql/mariadb.conf.d/99-chom.cnf (restart
# only when it changed; a failed restart is rolled back) and, when the secret
# MARIADB_ROOT_PASSWORD is given, sets root@localhost to "unix_socket OR that password":
# local root keeps its socket login, clients may use the password.
#
# The password never reaches a command line, a log or the server in clear: the script
# computes the mysql_native_password hash in the shell (printf is a builtin, sha1sum
# reads stdin), compares it with SHOW CREATE USER, and sends only the hash. SQL goes on
# stdin; a password, when one is needed to log in, goes in a 0600 option file in a
# private temp directory that is removed on exit.
#
# Version: CHOM_VERSION pins the Debian package version of mariadb-server; empty = the
#   distribution's.
# Config keys (all optional):
#   mariadb.bind_address              default 127.0.0.1
#   mariadb.max_connections           default: MariaDB's
#   mariadb.innodb_buffer_pool_size   e.g. 512M; default: MariaDB's
# Secrets: MARIADB_ROOT_PASSWORD (optional).
# Never: deletes /var/lib/mysql or any database; creates or drops databases or users;
#   runs on systems without apt.
set -eu

COMPONENT=mariadb
DEFAULT_VERSION= # empty: the distribution's mariadb-server

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

start
require_apt
VERSION=${CHOM_VERSION:-$DEFAULT_VERSION}
SERVICE=mariadb
CNF=/etc/mysql/mariadb.conf.d/99-chom.cnf

if [ "$MODE" = remove ]; then
    stop_service "$SERVICE"
    ensure_absent "$CNF"
    # mariadb-server and the versioned/core server packages it pulled in
    # shellcheck disable=SC2046 # one word per package name
    remove_packages $(dpkg-query -W -f='${Package}\n' 'mariadb-server*' 2>/dev/null || true)
    warn "kept /var/lib/mysql (all databases) and /etc/mysql: chom never deletes data directories"
    finish
fi

BIND=${CHOM_CFG_MARIADB_BIND_ADDRESS:-127.0.0.1}
MAX_CONNECTIONS=${CHOM_CFG_MARIADB_MAX_CONNECTIONS:-}
BUFFER_POOL=${CHOM_CFG_MARIADB_INNODB_BUFFER_POOL_SIZE:-}
check_value mariadb.bind_address "$BIND" '[0-9A-Fa-f.:]+|[A-Za-z0-9.-]+'
if [ -n "$MAX_CONNECTIONS" ]; then check_value mariadb.max_connections "$MAX_CONNECTIONS" '[1-9][0-9]*'; fi
if [ -n "$BUFFER_POOL" ]; then check_value mariadb.innodb_buffer_pool_size "$BUFFER_POOL" '[0-9]+[KMGkmg]?'; fi
PASSWORD=${MARIADB_ROOT_PASSWORD:-}
check_secret MARIADB_ROOT_PASSWORD "$PASSWORD"

if [ -n "$VERSION" ]; then ensure_packages "mariadb-server=$VERSION"; else ensure_packages mariadb-server; fi
stop_if_drift

resource port 3306
resource user mysql
resource directory /var/lib/mysql
FILE_CHANGED=0
{
    echo '# Managed by chom (component mariadb). Local changes will be overwritten.'
    echo '[mysqld]'
    echo "bind-address = $BIND"
    if [ -n "$MAX_CONNECTIONS" ]; then echo "max_connections = $MAX_CONNECTIONS"; fi
    if [ -n "$BUFFER_POOL" ]; then echo "innodb_buffer_pool_size = $BUFFER_POOL"; fi
} >"$WORKDIR/cnf"
ensure_file "$WORKDIR/cnf" "$CNF" 0644 root:root
ensure_service "$SERVICE" restart

# ---- root password ----
if [ -z "$PASSWORD" ]; then
    warn "secret MARIADB_ROOT_PASSWORD is not set: root@localhost keeps the distribution's unix_socket-only login"
    finish
fi
if ! have_systemd || ! systemctl is-active --quiet "$SERVICE"; then
    # check mode with the server stopped: already reported; without systemd: cannot tell
    finish
fi

# native_hash: mysql_native_password's '*'+HEX(SHA1(SHA1(password))), computed locally.
native_hash() {
    _h=$(printf '%s' "$PASSWORD" | sha1sum | cut -c1-40)
    _esc=
    for _b in $(printf '%s\n' "$_h" | sed 's/../& /g'); do
        _esc="$_esc$(printf '\\%03o' "0x$_b")"
    done
    # shellcheck disable=SC2059 # the format is the octal escapes of the first digest
    printf '*%s\n' "$(printf "$_esc" | sha1sum | cut -c1-40 | tr 'a-f' 'A-F')"
}
CLIENT=$(command -v mariadb || command -v mysql || true)
[ -n "$CLIENT" ] || die "no mariadb/mysql client found"
# sql: statements on stdin, tab-separated rows on stdout.
sql() { "$CLIENT" --defaults-extra-file="$WORKDIR/client.cnf" --protocol=socket -N -B; }

printf '[client]\nuser=root\n' >"$WORKDIR/client.cnf"
if ! echo 'SELECT 1;' | sql >/dev/null 2>&1; then
    # unix_socket login refused (changed by hand?): try the password, from a 0600 file
    _quoted=$(printf '%s' "$PASSWORD" | sed 's/\\/\\\\/g; s/"/\\"/g')
    printf '[client]\nuser=root\npassword="%s"\n' "$_quoted" >"$WORKDIR/client.cnf"
    echo 'SELECT 1;' | sql >/dev/null ||
        die "cannot log in to MariaDB as root (neither unix_socket nor the MARIADB_ROOT_PASSWORD secret worked)"
fi
HASH=$(native_hash)
CURRENT=$(echo "SHOW CREATE USER 'root'@'localhost';" | sql)
case $CURRENT in
    *"USING '$HASH'"*) HAS_PASSWORD=yes ;;
    *) HAS_PASSWORD=no ;;
esac
case $CURRENT in
    *unix_socket*) HAS_SOCKET=yes ;;
    *) HAS_SOCKET=no ;;
esac
if [ "$HAS_PASSWORD$HAS_SOCKET" != yesyes ]; then
    if is_check; then
        drift "set the root@localhost password (unix_socket OR mysql_native_password)"
    else
        printf "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING '%s' OR unix_socket;\n" "$HASH" | sql
        log "set the root@localhost password"
        changed
    fi
fi
finish
