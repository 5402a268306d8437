#!/bin/sh
# chom component: motd — a login banner naming the server and its role, so whoever
# logs in knows the machine is managed by chom and should not be changed by hand.
#
# Idempotent: the file is rewritten only when its content differs.
# CHOM_MODE=check exits 100 when the banner would change, 0 when it is in sync.
set -eu

server=${CHOM_SERVER:-$(hostname)}
role=$(printf '%s' "${CHOM_CFG_ROLE:-}" | tr -d '\n')
# CHOM_CFG_MOTD_PATH moves the banner elsewhere (chom demo uses its own folder).
target=${CHOM_CFG_MOTD_PATH:-/etc/motd}

if [ -n "$role" ]; then
    wanted="This server ($server, role $role) is managed by chom. Local changes may be overwritten."
else
    wanted="This server ($server) is managed by chom. Local changes may be overwritten."
fi

current=$(cat "$target" 2>/dev/null || true)
echo "::chom:: resource file $target"
if [ "$current" = "$wanted" ]; then
    exit 0
fi
if [ "${CHOM_MODE:-apply}" = check ]; then
    exit 100
fi
tmp=$(mktemp "$target.chom.XXXXXX")
printf '%s\n' "$wanted" > "$tmp"
chmod 0644 "$tmp"
mv -f "$tmp" "$target"
echo "::chom:: changed"
