#!/usr/bin/env bash
# bench/fleet/run.sh: the fleet benchmark. chom, Ansible (default and tuned) and pyinfra do
# the same work on the same test hosts, and every run lands as a row in
# $RESULTS/raw.tsv; bench/fleet/summarize.py turns the rows into tables and a plot.
#
# usage: bench/fleet/run.sh [--ns "10 100 500"] [--rtts "0 50"] [--iters 3] [--first-iter 1]
#                           [--tools chom,chom-tuned,ansible-default,ansible-tuned,pyinfra,
#                                    chom-handoff,chom-handoff-default] [--max-load L]
# (--first-iter numbers the iterations of a later invocation after those already in raw.tsv;
# --max-load L waits, at most 150 s, for load1 < L before each tool.)
#
# For every iteration, RTT and N: bench/fleet/up.sh N --rtt RTT, every tool in turn, then
# bench/fleet/down.sh. The work (README of this folder, BENCHMARKS.md):
#   first run    facts, then component.sh on every host from an empty /tmp/chom-fleet:
#                every host writes its file;
#   steady state the same again right after: nothing to change, no host writes.
#   handed off   chom-handoff(-default): a `chom daemon` owns a fresh tree and does the first
#                run itself; once every status file says Ready True, `chom reconcile` is
#                handed to it over its socket and runs on its pooled connections. Two
#                handoffs are measured (phases handoff, handoff2); a row with phase
#                handoff-daemon / handoff2-daemon beside each holds the daemon's CPU in
#                cpu_s and its RSS in proc_rss_mib (the CLI's own row has the CLI's).
#                chom-handoff runs the daemon with --rate 1000 --burst 1000 --workers 256
#                --ssh-max-idle 1000 --ssh-idle-timeout 10m (the pool stays open);
#                chom-handoff-default with the defaults (10/s, burst 100, 32 workers,
#                64 idle connections kept, 90 s idle timeout).
# Each tool invocation is measured by measure.py and checked: exit code 0, and the number
# of hosts whose file changed is N for a first run and 0 in the steady state.
# Needs root; run setup.sh once before.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"

NS="10 100 500"; RTTS="0 50"; ITERS=3; FIRST=1; MAX_LOAD=
TOOLS="chom,chom-tuned,ansible-default,ansible-tuned,pyinfra"
while [ $# -gt 0 ]; do
  case "$1" in
    --ns) NS=${2:?}; shift 2 ;;
    --rtts) RTTS=${2:?}; shift 2 ;;
    --iters) ITERS=${2:?}; shift 2 ;;
    --first-iter) FIRST=${2:?}; shift 2 ;;
    --tools) TOOLS=${2:?}; shift 2 ;;
    --max-load) MAX_LOAD=${2:?}; shift 2 ;;
    *) echo "usage: $0 [--ns LIST] [--rtts LIST] [--iters K] [--tools LIST] [--max-load L]" >&2; exit 2 ;;
  esac
done
CHOM=${CHOM:-$REPO/target/release/chom}
[ -x "$CHOM" ] || die "no chom at $CHOM (cargo build --release)"
{ [ -x "$VENV/bin/ansible" ] && [ -x "$VENV/bin/pyinfra" ]; } || die "run bench/fleet/setup.sh first"
[ "$(id -u)" = 0 ] || die "needs root"
mkdir -p "$RESULTS"
RAW="$RESULTS/raw.tsv"
[ -s "$RAW" ] || printf 'utc\ttool\tphase\tn\trtt_ms\titer\trc\twall_s\tcpu_s\ttree_rss_mib\tproc_rss_mib\thosts_cpu_s\tchanged\tverdict\tload1\n' > "$RAW"
WORK="$FLEET_STATE/work"
TARGET=/tmp/chom-fleet

# changed_since MARKER: hosts whose component file was written after MARKER.
changed_since() { [ -d "$TARGET" ] || { echo 0; return; }; find "$TARGET" -name component.conf -newer "$1" | wc -l; }

# measure TOOL PHASE EXPECT_CHANGED -- COMMAND...: one measured, checked invocation.
measure() {
  local tool=$1 phase=$2 expect=$3; shift 4
  local tag="$tool-$phase-$N-$RTT-$IT" load1 row changed verdict=ok
  touch "$WORK/marker"; sleep 0.05
  load1=$(cut -d' ' -f1 /proc/loadavg)
  row=$(env -u SSH_AUTH_SOCK "$VENV/bin/python3" "$FLEET_DIR/measure.py" --tag "$tag" \
    --stdout "$WORK/logs/$tag.out" -- "$@" 2> "$WORK/logs/$tag.err")
  changed=$(changed_since "$WORK/marker")
  [ "$(cut -f1 <<< "$row")" = 0 ] || verdict="FAIL:rc"
  if [ "$expect" != any ] && [ "$changed" != "$expect" ]; then verdict="FAIL:changed"; fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$tool" "$phase" "$N" "$RTT" "$IT" \
    "$row" "$changed" "$verdict" "$load1" >> "$RAW"
  log "$tool $phase N=$N RTT=$RTT #$IT: $(cut -f2 <<< "$row") s wall, $(cut -f3 <<< "$row") s CPU, changed $changed ($verdict)"
  [ "$verdict" = ok ] || tail -n 3 "$WORK/logs/$tag.err" >&2
}

chom_tree() {  # a fresh inventory of N Servers with the one component, no status yet
  rm -rf "$WORK/chom"; mkdir -p "$WORK/chom/inventory.d" "$WORK/chom/scripts"
  cp "$FLEET_DIR/component.sh" "$WORK/chom/scripts/bench.sh"
  while read -r name addr; do
    printf 'apiVersion: chom.dev/v1\nkind: Server\nmetadata:\n  name: %s\nspec:\n  address: %s\n  ssh: {user: root, identityFile: %s}\n  components: [{name: bench}]\n  interval: 1h\n' \
      "$name" "$addr" "$RUN/client_key" > "$WORK/chom/inventory.d/$name.yaml"
  done < "$RUN/hosts.txt"
}

run_chom() {  # run_chom TOOL EXTRA-FLAGS...
  local tool=$1; shift
  local args=(--inventory "$WORK/chom/inventory.d" --known-hosts "$RUN/known_hosts" "$@")
  chom_tree; rm -rf "$TARGET"
  measure "$tool" facts any -- "$CHOM" detect "${args[@]}" -o json
  measure "$tool" first "$N" -- "$CHOM" reconcile "${args[@]}"
  measure "$tool" steady 0 -- "$CHOM" reconcile "${args[@]}"
  measure "$tool" steady-check 0 -- "$CHOM" plan "${args[@]}"
}

# wait_load: with --max-load L, wait (at most 150 s) until load1 < L.
wait_load() {
  [ -n "$MAX_LOAD" ] || return 0
  local i
  for ((i = 0; i < 150; i++)); do
    awk -v m="$MAX_LOAD" '{ exit !($1 < m) }' /proc/loadavg && return 0
    sleep 1
  done
  log "load1 still $(cut -d' ' -f1 /proc/loadavg) after 150 s; going on"
}

# daemon_cpu_ns PID: CPU the daemon used so far, in ns (its cpuacct group when it has one,
# else utime + stime from /proc, at the clock tick's resolution).
daemon_cpu_ns() {
  if [ -r "$CGROUP/daemon/cpuacct.usage" ]; then cat "$CGROUP/daemon/cpuacct.usage"; return; fi
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%d\n", ($12 + $13) * 1e9 / hz }' "/proc/$1/stat"
}

# ready_count: status files of $WORK/chom whose Ready condition is True.
ready_count() {
  awk '/^  - type: Ready$/ { r = 1; next } r && /^    status:/ { if ($2 == "\"True\"") n++; r = 0 }
       END { print n + 0 }' "$WORK"/chom/inventory.d/*.status.yaml 2>/dev/null || echo 0
}

run_handoff() {  # run_handoff TOOL DAEMON-FLAGS...: `chom reconcile` handed to a running daemon
  local tool=$1; shift
  local args=(--inventory "$WORK/chom/inventory.d" --known-hosts "$RUN/known_hosts")
  local dlog="$WORK/logs/$tool-daemon-$N-$RTT-$IT.log" dpid i ph before after rss last
  chom_tree; rm -rf "$TARGET"
  "$CHOM" daemon "${args[@]}" --metrics-addr off "$@" </dev/null >"$dlog" 2>&1 &
  dpid=$!
  if [ -d "$CGROUP" ]; then mkdir -p "$CGROUP/daemon"; echo "$dpid" > "$CGROUP/daemon/cgroup.procs"; fi
  for ((i = 0; i < 300; i++)); do
    kill -0 "$dpid" 2>/dev/null || break
    [ "$(ready_count)" -ge "$N" ] && break
    sleep 1
  done
  if ! kill -0 "$dpid" 2>/dev/null || [ "$(ready_count)" -lt "$N" ]; then
    log "$tool: the daemon did not get $N servers Ready ($(ready_count)); see $dlog"
    stop_pid "$dpid" "chom daemon"; return 0
  fi
  log "$tool: daemon $dpid has $N servers Ready after ${i} s"
  for ph in handoff handoff2; do
    wait_load
    before=$(daemon_cpu_ns "$dpid")
    measure "$tool" "$ph" 0 -- "$CHOM" reconcile "${args[@]}"
    after=$(daemon_cpu_ns "$dpid")
    rss=$(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$dpid/status")
    grep -q "handed to the daemon" "$WORK/logs/$tool-$ph-$N-$RTT-$IT.out" || log "$tool $ph: not handed to the daemon"
    last=$(tail -n 1 "$RAW")
    awk -F'\t' -v OFS='\t' -v p="$ph-daemon" -v c="$(( after - before ))" -v r="$rss" \
      '{ $3 = p; $9 = sprintf("%.3f", c / 1e9); $10 = r; $11 = r; print }' <<< "$last" >> "$RAW"
    log "$tool $ph: daemon CPU $(awk -v c="$(( after - before ))" 'BEGIN { printf "%.3f", c / 1e9 }') s, RSS $rss MiB"
  done
  stop_pid "$dpid" "chom daemon"
  [ -d "$CGROUP/daemon" ] && rmdir "$CGROUP/daemon" 2>/dev/null
  return 0
}

ansible_cfg() {  # ansible_cfg VARIANT: writes $WORK/ansible/VARIANT.cfg
  local v=$1 d="$WORK/ansible"
  mkdir -p "$d" "$RUN/cp-$v"
  { echo "[fleet]"; awk '{ print $1 " ansible_host=" $2 }' "$RUN/hosts.txt"; } > "$d/hosts.ini"
  {
    echo "[defaults]"
    echo "inventory = $d/hosts.ini"
    echo "forks = $N"
    echo "host_key_checking = True"
    echo "remote_user = root"
    echo "private_key_file = $RUN/client_key"
    echo "nocolor = True"
    [ "$v" = tuned ] && echo "interpreter_python = /usr/bin/python3"
    echo "[ssh_connection]"
    echo "ssh_common_args = -F /dev/null -o UserKnownHostsFile=$RUN/known_hosts -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
    echo "control_path_dir = $RUN/cp-$v"
    if [ "$v" = tuned ]; then
      echo "pipelining = True"
      echo "ssh_args = -o ControlMaster=auto -o ControlPersist=600s"
    fi
  } > "$d/$v.cfg"
}

close_masters() {  # ends Ansible's ControlPersist masters of VARIANT
  find "$RUN/cp-$1" -type s -print0 2>/dev/null \
    | xargs -0 -r -P 32 -I{} ssh -F /dev/null -o ControlPath={} -O exit x >/dev/null 2>&1 || true
}

run_ansible() {  # run_ansible VARIANT
  local v=$1 tool="ansible-$1"
  ansible_cfg "$v"; rm -rf "$TARGET"
  local a=(env ANSIBLE_CONFIG="$WORK/ansible/$v.cfg" "$VENV/bin/ansible" fleet -o)
  local facts=("${a[@]}" -m setup -a gather_subset=hardware)
  local script=("${a[@]}" -m script -a "$FLEET_DIR/component.sh {{ inventory_hostname }}")
  measure "$tool" facts any -- "${facts[@]}"
  measure "$tool" script "$N" -- "${script[@]}"
  measure "$tool" steady-facts any -- "${facts[@]}"
  measure "$tool" steady-script 0 -- "${script[@]}"
  close_masters "$v"
}

run_pyinfra() {
  local d="$WORK/pyinfra"; mkdir -p "$d"
  "$VENV/bin/python3" - "$RUN" > "$d/inventory.py" <<'PY'
import sys
run = sys.argv[1]
common = dict(ssh_user="root", ssh_key=f"{run}/client_key", ssh_known_hosts_file=f"{run}/known_hosts",
              ssh_strict_host_key_checking="yes", ssh_allow_agent=False, ssh_look_for_keys=False)
print("fleet = [")
for line in open(f"{run}/hosts.txt"):
    name, addr = line.split()
    print(f"    ({name!r}, {dict(common, ssh_hostname=addr)!r}),")
print("]")
PY
  rm -rf "$TARGET"
  local p=("$VENV/bin/pyinfra" -y --parallel "$N" "$d/inventory.py")
  local facts=("${p[@]}" fact server.Arch server.LinuxDistribution hardware.Cpus hardware.Memory server.Mounts)
  measure pyinfra facts any -- "${facts[@]}"
  measure pyinfra script "$N" -- "${p[@]}" "$FLEET_DIR/deploy.py"
  measure pyinfra steady-facts any -- "${facts[@]}"
  measure pyinfra steady-script 0 -- "${p[@]}" "$FLEET_DIR/deploy.py"
}

mkdir -p "$WORK/logs"
IFS=, read -r -a tools <<< "$TOOLS"
trap '"$FLEET_DIR/down.sh" >/dev/null 2>&1 || true' EXIT
for ((IT = FIRST; IT < FIRST + ITERS; IT++)); do
  for RTT in $RTTS; do
    for N in $NS; do
      "$FLEET_DIR/down.sh" >/dev/null 2>&1 || true
      "$FLEET_DIR/up.sh" "$N" --rtt "$RTT"
      require_fleet
      for t in "${tools[@]}"; do
        wait_load
        case "$t" in
          chom) run_chom chom ;;
          chom-tuned) run_chom chom-tuned --max-handshakes 100 --handshake-rate 0 ;;
          ansible-default) run_ansible default ;;
          ansible-tuned) run_ansible tuned ;;
          pyinfra) run_pyinfra ;;
          chom-handoff) run_handoff "$t" --rate 1000 --burst 1000 --workers 256 --ssh-max-idle 1000 --ssh-idle-timeout 10m ;;
          chom-handoff-default) run_handoff "$t" ;;
          *) die "unknown tool $t" ;;
        esac
      done
      "$FLEET_DIR/down.sh"
    done
  done
done
rm -rf "$TARGET"
log "done; rows in $RAW"
