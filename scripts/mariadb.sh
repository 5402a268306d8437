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

# The shared helpers (log, warn, die, ensure_file, ensure_packages, ensure_service, …)
# come from scripts/lib/helpers.sh, which chom sends ahead of this script.

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
