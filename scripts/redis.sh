#!/bin/sh
# chom component: redis: the in-memory cache of the hosting stack.
#
# Installs Debian's redis-server, writes its settings to /etc/redis/redis.chom.conf
# (0640 root:redis) and makes the last line of /etc/redis/redis.conf include it (later
# directives win). Restarts redis only when a file changed; a failed restart is rolled
# back.
#
# Version: CHOM_VERSION pins the Debian package version of redis-server; empty = the
#   distribution's.
# Config keys (all optional):
#   redis.bind               addresses to listen on, e.g. "127.0.0.1 ::1"; default: Debian's
#                            (127.0.0.1 -::1)
#   redis.maxmemory          default 256mb
#   redis.maxmemory_policy   default allkeys-lru (a cache: least recently used keys go first)
# Secrets: REDIS_PASSWORD (optional): `requirepass`, written only to the 0640 root:redis
#   file, never to a command line or a log.
# Never: deletes /var/lib/redis (the dump); flushes data; runs on systems without apt.
set -eu

COMPONENT=redis
DEFAULT_VERSION= # empty: the distribution's redis-server

# The shared helpers (log, warn, die, ensure_file, ensure_packages, ensure_service, …)
# come from scripts/lib/helpers.sh, which chom sends ahead of this script.

start
require_apt
VERSION=${CHOM_VERSION:-$DEFAULT_VERSION}
SERVICE=redis-server
MAIN=/etc/redis/redis.conf
CHOM_CONF=/etc/redis/redis.chom.conf
INCLUDE="include $CHOM_CONF"

# main_conf INCLUDE?: redis.conf without our include line, plus it at the end when asked.
main_conf() {
    grep -vxF "$INCLUDE" "$MAIN" || true
    if [ "$1" = yes ]; then printf '%s\n' "$INCLUDE"; fi
}

if [ "$MODE" = remove ]; then
    stop_service "$SERVICE"
    if [ -f "$MAIN" ] && grep -qxF "$INCLUDE" "$MAIN"; then
        main_conf no >"$WORKDIR/redis.conf"
        ensure_file "$WORKDIR/redis.conf" "$MAIN" - -
    fi
    delete_file "$CHOM_CONF"
    remove_packages redis-server
    warn "kept /var/lib/redis (the data) and /etc/redis: chom never deletes data directories"
    finish
fi

BIND=${CHOM_CFG_REDIS_BIND:-}
MAXMEMORY=${CHOM_CFG_REDIS_MAXMEMORY:-256mb}
POLICY=${CHOM_CFG_REDIS_MAXMEMORY_POLICY:-allkeys-lru}
if [ -n "$BIND" ]; then check_value redis.bind "$BIND" '-?[0-9A-Fa-f.:]+( -?[0-9A-Fa-f.:]+)*'; fi
check_value redis.maxmemory "$MAXMEMORY" '[0-9]+([kmgKMG][bB]?)?'
check_value redis.maxmemory_policy "$POLICY" '(volatile|allkeys)-(lru|lfu|random)|volatile-ttl|noeviction'
PASSWORD=${REDIS_PASSWORD:-}
check_secret REDIS_PASSWORD "$PASSWORD"

if [ -n "$VERSION" ]; then ensure_packages "redis-server=$VERSION"; else ensure_packages redis-server; fi
stop_if_drift

resource port 6379
resource user redis
resource directory /var/lib/redis
FILE_CHANGED=0
{
    echo '# Managed by chom (component redis). Local changes will be overwritten.'
    if [ -n "$BIND" ]; then echo "bind $BIND"; fi
    echo "maxmemory $MAXMEMORY"
    echo "maxmemory-policy $POLICY"
    if [ -n "$PASSWORD" ]; then
        printf 'requirepass "%s"\n' "$(printf '%s' "$PASSWORD" | sed 's/\\/\\\\/g; s/"/\\"/g')"
    fi
} >"$WORKDIR/chom.conf"
ensure_file "$WORKDIR/chom.conf" "$CHOM_CONF" 0640 root:redis secret
[ -f "$MAIN" ] || die "$MAIN is missing: reinstall redis-server"
main_conf yes >"$WORKDIR/redis.conf"
ensure_file "$WORKDIR/redis.conf" "$MAIN" - -
if [ -z "$PASSWORD" ]; then
    warn "secret REDIS_PASSWORD is not set: redis accepts local clients without a password"
fi
ensure_service "$SERVICE" restart
finish
