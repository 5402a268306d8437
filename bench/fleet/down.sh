#!/usr/bin/env bash
# bench/fleet/down.sh: stops what up.sh started, by PID, and removes the namespace and link.
# Safe to run twice or after a failed up.sh.
set -uo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"

# Ansible's ControlPersist masters, if a run left any.
for sock in "$RUN"/cp-*/*; do
  [ -S "$sock" ] && ssh -F /dev/null -o ControlPath="$sock" -O exit x >/dev/null 2>&1
done
for f in sshd sshd-wrapper delayline delayline-timeout; do
  [ -f "$RUN/$f.pid" ] && stop_pid "$(cat "$RUN/$f.pid")" "$f"
  rm -f "$RUN/$f.pid"
done
if ip netns list | grep -qw "^$FLEET_NS"; then
  for _ in 1 2 3; do
    pids=$(ip netns pids "$FLEET_NS" 2>/dev/null)
    [ -n "$pids" ] || break
    for p in $pids; do stop_pid "$p" "process in $FLEET_NS"; done
  done
  ip netns del "$FLEET_NS"
fi
ip link show "$LINK_ROOT" >/dev/null 2>&1 && ip link del "$LINK_ROOT"
[ -d "$CGROUP/hosts" ] && rmdir "$CGROUP/hosts" 2>/dev/null
rm -rf "$RUN"/cp-* "$RUN/fleet.env"
log "fleet down"
