#!/bin/sh
# The unit of work every tool runs on every host: make sure
# /tmp/chom-fleet/HOST/component.conf holds the wanted content, writing it only when it
# differs. Prints "changed" or "ok".
#
# Ansible and pyinfra run it as `component.sh HOST`. chom sends it on stdin as the
# component `bench` (its contract: CHOM_SERVER, CHOM_MODE; `::chom::changed` when it changed
# something; in check mode exit 100 when it would).
set -eu
host="${CHOM_SERVER:-${1:-}}"
mode="${CHOM_MODE:-apply}"
case "$host" in */*|.*|'') echo "bad host name: '$host'" >&2; exit 2 ;; esac
dir="/tmp/chom-fleet/$host"
file="$dir/component.conf"
want="$(printf '# managed by the chom fleet benchmark\ncomponent=demo\nhost=%s\nlisten=0.0.0.0:8080\n' "$host")"
if [ -f "$file" ] && [ "$(cat "$file")" = "$want" ]; then
  echo ok
  exit 0
fi
[ "$mode" = check ] && exit 100
mkdir -p "$dir"
printf '%s\n' "$want" > "$file.tmp.$$"
mv -f "$file.tmp.$$" "$file"
echo changed
if [ -n "${CHOM_SERVER:-}" ]; then
  echo "::chom::changed"
  echo "::chom::resource file $file"
fi
