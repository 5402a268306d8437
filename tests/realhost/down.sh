#!/usr/bin/env bash
# tests/realhost/down.sh K [J]: stops test server K (or server J of namespace K, see up.sh)
# by the PIDs up.sh recorded, keeps the .debs it downloaded for the next server, and
# removes its copy of the image. The namespace's proxy, link and network namespace go with
# the last server of K, whichever that is, so stopping one never strands another. Safe to
# run twice, and on a server that never came up.
set -uo pipefail
K=${1:-}
J=${2:-2}
[[ $K =~ ^[0-9]+$ && $J =~ ^[0-9]+$ ]] || { echo "usage: $0 K [J]" >&2; exit 2; }
STATE=${CHOM_REALHOST_STATE:-/var/tmp/chom-realhost}
if ((J == 2)); then ID=$K; else ID=$K-$J; fi
RUN=$STATE/$ID
NET=$STATE/net-$K
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
# A proxy from before namespaces were shared (it lived in the server's own folder).
if [[ -f $RUN/tinyproxy.pid ]]; then kill "$(cat "$RUN/tinyproxy.pid")" 2>/dev/null; fi
if [[ -d $RUN/rootfs/var/cache/apt/archives ]]; then
  mkdir -p "$STATE/apt-cache"
  find "$RUN/rootfs/var/cache/apt/archives" -maxdepth 1 -name '*.deb' -newer "$STATE/base/.chom-complete" \
    -exec cp -n {} "$STATE/apt-cache/" \; 2>/dev/null
fi
mkdir -p "$STATE"
exec 8>"$STATE/net-$K.lock"
flock -w 60 8 || echo "realhost[$ID]: namespace lock held for 60 s; removing anyway" >&2
rm -rf "$RUN"
# The namespace stays while another server of K is running (up.sh records its PID under
# this lock, after making sure the namespace exists).
others=
for pid_file in "$STATE/$K/nspawn.pid" "$STATE/$K"-*/nspawn.pid; do
  if [[ -f $pid_file ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then others=$pid_file; fi
done
if [[ -z $others ]]; then
  if [[ -f $NET/tinyproxy.pid ]]; then kill "$(cat "$NET/tinyproxy.pid")" 2>/dev/null; fi
  ip netns del "chomrh-$K" 2>/dev/null
  ip link del "chomrh$K" 2>/dev/null
  rm -rf "$NET"
fi
echo "realhost[$ID]: down" >&2
