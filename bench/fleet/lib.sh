# shellcheck shell=bash disable=SC2034
# Settings and helpers shared by the fleet harness scripts (sourced, not run).
#
# The hosts live in the network namespace $FLEET_NS on 10.251.0.0/16; the control side of
# the link is $FLEET_CLIENT in the root namespace. Nothing else is ever dialled.
FLEET_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$FLEET_DIR/../.." && pwd)
FLEET_NS=${FLEET_NS:-chomfleet}
FLEET_STATE=${FLEET_STATE:-$HOME/.cache/chom-fleet}
RUN="$FLEET_STATE/run"            # keys, hosts.txt, known_hosts, pids: one fleet at a time
VENV="$FLEET_STATE/venv"          # ansible-core, pyinfra, matplotlib (setup.sh)
RESULTS="${FLEET_RESULTS:-$REPO/bench/fleet/results}"
LINK_ROOT=cfl-r                   # root-namespace end of the link
LINK_NS=cfl-n                     # namespace end of the link
FLEET_NET=10.251
FLEET_CLIENT=$FLEET_NET.255.254
CGROUP=/sys/fs/cgroup/cpuacct/chomfleet

log() { printf '[fleet %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# host_addr I: the address of host I (1-based); 254 hosts per /24, never .0 or .255.
host_addr() { printf '%s.%d.%d' "$FLEET_NET" $(( ($1 - 1) / 254 )) $(( ($1 - 1) % 254 + 1 )); }

# stop_pid PID WHAT: TERM, up to 5 s to exit, then KILL.
stop_pid() {
  local pid=$1 what=$2
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null && log "killed $what ($pid)"
}

# require_fleet: the fleet is up and traffic to it leaves through our link, never elsewhere.
require_fleet() {
  [ -s "$RUN/fleet.env" ] || die "no fleet is up (bench/fleet/up.sh N first)"
  # shellcheck disable=SC1091
  source "$RUN/fleet.env"
  ip route get "$(host_addr 1)" 2>/dev/null | grep -q "dev $LINK_ROOT" \
    || die "the route to $(host_addr 1) does not use $LINK_ROOT; refusing to send traffic"
}
