#!/usr/bin/env bash
# Times `chom detect` over the SSH test hosts of the shared bench harness (one sshd in the
# network namespace `chomb`, hosts 10.250.x.y reached only through the harness's own link).
#
# Usage: bench/detect.sh [RUNS]           (default 3 runs; medians reported)
#   CHOM=path             binary to time (default target/release/chom, from the repo root)
#   MAX_HANDSHAKES=N      pass --max-handshakes N (default: unset, i.e. chom's default, 10)
#   CONCURRENCY=N         --concurrency (default 1000)
#   BENCH=dir             the harness (default /work/shared/bench)
#
# Bring the hosts up and down with the harness, with its state in ~/.cache/chom-bench. Export
# the three variables below first, in every shell that runs a harness script or this one. Root
# can write into the harness folder even at mode 555, so without them the harness keeps its
# state in the shared folder.
#   export BENCH_RUN=~/.cache/chom-bench/.run BENCH_VENV=~/.cache/chom-bench/.venv \
#          BENCH_RESULTS=~/.cache/chom-bench/results
#   /work/shared/bench/setup.sh                          # once: sshd + venv
#   /work/shared/bench/hosts-up.sh 200                   # 200 hosts, added RTT 0
#   /work/shared/bench/hosts-up.sh 200 --latency-ms 50   # ...or with 50 ms added RTT
#   bench/detect.sh 3
#   /work/shared/bench/hosts-down.sh                     # always, also after a failure
#
# Only the harness's hosts are contacted. The harness's own guard (require_hosts_up) refuses
# to run unless the route to the first host goes via its link. This script also refuses any
# address in .run/hosts.txt outside 10.250.0.0/16, so it never dials loopback or anything
# outside the namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
CHOM=${CHOM:-target/release/chom}
CONCURRENCY=${CONCURRENCY:-1000}
BENCH=${BENCH:-/work/shared/bench}
[ -x "$CHOM" ] || { echo "no chom binary at $CHOM (cargo build --release, or set CHOM)" >&2; exit 2; }
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { echo "RUNS must be a positive number" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 2; }
CHOM=$(realpath "$CHOM")

# RUN (keys, hosts.txt, known_hosts), NS, require_hosts_up: the harness's own settings.
# shellcheck disable=SC1091
source "$BENCH/lib/common.sh"
require_hosts_up
# shellcheck disable=SC2153  # RUN comes from lib/common.sh
HOSTS="$RUN/hosts.txt"
KEY="$RUN/client_ed25519"
KNOWN="$RUN/known_hosts"
for f in "$HOSTS" "$KEY" "$KNOWN"; do [ -s "$f" ] || die "missing $f (hosts-up.sh not run?)"; done
if bad=$(awk '$2 !~ /^10\.250\.[0-9]+\.[0-9]+$/ { print; exit 1 }' "$HOSTS"); then :; else
  die "address outside 10.250.0.0/16 in $HOSTS: $bad"
fi
N=$(wc -l < "$HOSTS")

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/inventory.d"
while read -r name addr; do
  cat > "$WORK/inventory.d/$name.yaml" <<EOF
apiVersion: chom.dev/v1
kind: Server
metadata:
  name: $name
spec:
  address: $addr
  ssh:
    user: root
    port: 22
    identityFile: $KEY
EOF
done < "$HOSTS"
echo "generated $N servers in $WORK/inventory.d (hosts: N=${HOSTS_N:-?}, added RTT ${HOSTS_LATENCY_MS:-?} ms)" >&2

args=(detect --inventory "$WORK/inventory.d" --known-hosts "$KNOWN" --concurrency "$CONCURRENCY" -o json)
[ -n "${MAX_HANDSHAKES:-}" ] && args+=(--max-handshakes "$MAX_HANDSHAKES")

# Prints "ok warn fail entries" for a chom detect JSON array.
count() {
  python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
s = [e.get("status") for e in d]
print(s.count("OK"), s.count("WARN"), s.count("FAIL"), len(d))' "$1"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

walls=(); cpus=(); rsss=(); fails=0
printf '%-4s %8s %8s %8s %9s %13s %5s %5s %5s %4s %s\n' \
  run wall_s user_s sys_s rss_MiB cpu_ms/server OK WARN FAIL rc load1 >&2
for i in $(seq "$RUNS"); do
  load1=$(cut -d' ' -f1 /proc/loadavg)
  rc=0
  # Only the identity file authenticates: no ssh-agent.
  env -u SSH_AUTH_SOCK /usr/bin/time -f '%e %U %S %M' -o "$WORK/time" \
    "$CHOM" "${args[@]}" > "$WORK/out.json" 2> "$WORK/err" || rc=$?
  read -r wall user sys rss < <(tail -n1 "$WORK/time")
  if ! read -r ok warn fail entries < <(count "$WORK/out.json" 2>/dev/null); then
    ok=0 warn=0 fail=0 entries=0
  fi
  cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
  per=$(awk -v c="$cpu" -v n="$N" 'BEGIN { printf "%.2f", c * 1000 / n }')
  printf '%-4s %8s %8s %8s %9s %13s %5s %5s %5s %4s %s\n' \
    "$i" "$wall" "$user" "$sys" "$((rss / 1024))" "$per" "$ok" "$warn" "$fail" "$rc" "$load1" >&2
  if [ "$rc" != 0 ] || [ $((ok + warn)) != "$N" ] || [ "$entries" != "$N" ]; then
    fails=$((fails + 1))
    echo "  run $i: rc=$rc, $entries entries, $((ok + warn))/$N OK or WARN; stderr tail:" >&2
    tail -n 5 "$WORK/err" | sed 's/^/    /' >&2
  fi
  walls+=("$wall"); cpus+=("$cpu"); rsss+=("$rss")
done

mw=$(printf '%s\n' "${walls[@]}" | median)
mc=$(printf '%s\n' "${cpus[@]}" | median)
mr=$(printf '%s\n' "${rsss[@]}" | median)
lo=$(printf '%s\n' "${walls[@]}" | sort -n | head -n1)
hi=$(printf '%s\n' "${walls[@]}" | sort -n | tail -n1)
echo "| chom detect | N=$N | RTT +${HOSTS_LATENCY_MS:-?} ms | max-handshakes ${MAX_HANDSHAKES:-default} | wall $mw s ($lo–$hi) | CPU $mc s | $(awk -v c="$mc" -v n="$N" 'BEGIN { printf "%.2f", c * 1000 / n }') ms/server | RSS $((mr / 1024)) MiB | $RUNS runs, $fails failed |"
[ "$fails" = 0 ]
