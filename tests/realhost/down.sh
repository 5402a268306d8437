#!/usr/bin/env bash
# tests/realhost/down.sh K: stops test server K (by the PIDs up.sh recorded), keeps the
# .debs it downloaded for the next server, and removes its proxy, network namespace and
# copy of the image. Safe to run twice, and on a server that never came up.
set -uo pipefail
K=${1:-}
[[ $K =~ ^[0-9]+$ ]] || { echo "usage: $0 K" >&2; exit 2; }
STATE=${CHOM_REALHOST_STATE:-/var/tmp/chom-realhost}
RUN=$STATE/$K
if [[ -f $RUN/nspawn.pid ]]; then
  wrapper=$(cat "$RUN/nspawn.pid")
  # wrapper (subshell exec'd into timeout) -> systemd-nspawn: TERM makes nspawn shut the
  # container's systemd down cleanly; KILL after 20 s.
  nspawn=$(pgrep -P "$wrapper" -x systemd-nspawn 2>/dev/null || true)
  if [[ -n $nspawn ]]; then kill -TERM "$nspawn" 2>/dev/null; fi
  for _ in $(seq 1 20); do kill -0 "$wrapper" 2>/dev/null || break; sleep 1; done
  if kill -0 "$wrapper" 2>/dev/null; then
    [[ -n $nspawn ]] && kill -KILL "$nspawn" 2>/dev/null
    kill -KILL "$wrapper" 2>/dev/null
    sleep 1
  fi
fi
if [[ -f $RUN/tinyproxy.pid ]]; then kill "$(cat "$RUN/tinyproxy.pid")" 2>/dev/null; fi
if [[ -d $RUN/rootfs/var/cache/apt/archives ]]; then
  mkdir -p "$STATE/apt-cache"
  find "$RUN/rootfs/var/cache/apt/archives" -maxdepth 1 -name '*.deb' -newer "$STATE/base/.chom-complete" \
    -exec cp -n {} "$STATE/apt-cache/" \; 2>/dev/null
fi
ip netns del "chomrh-$K" 2>/dev/null
ip link del "chomrh$K" 2>/dev/null
rm -rf "$RUN"
echo "realhost[$K]: down" >&2
