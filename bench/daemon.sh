#!/usr/bin/env bash
# Benchmarks `chom daemon` against a fleet of N servers served by one throwaway sshd on
# loopback (127.0.0.1 only, a free port; never a wildcard address, never another machine).
#
# Usage: bench/daemon.sh [N] [DROPS]          (default N=1000 servers, DROPS=100 new files)
#
# It measures
#   1. the first pass: wall time from the daemon's start until every <name>.status.yaml
#      says Ready=True (taken as the newest status-file mtime, checked against every file);
#   2. reaction latency: after the first pass, DROPS new Server files are written one at a
#      time (temp file in a staging folder on the same file system, then rename into
#      inventory.d/), GAP_MIN_MS..GAP_MAX_MS apart; latency = `reconcile started` log
#      timestamp - time taken just before the rename;
#   3. idle cost: once everything is Ready and SETTLE_S has passed, IDLE_S seconds of
#      /proc/PID/stat utime+stime, VmRSS (sampled each second) and voluntary+nonvoluntary
#      context switches summed over /proc/PID/task/*/status; plus reconciles started and
#      status files written during that window (both should be 0);
#   4. with IDLE_CLOSE=1, it then waits until the pooled SSH connections have idle-closed
#      (after SSH_IDLE_S unused), samples RSS again, and measures CPU and
#      context switches for IDLE_S/2 more seconds with no connection open.
# The tree is WORK/tree/{inventory.d,scripts}: N Servers, all 127.0.0.1:PORT under distinct
# names (so distinct pooled connections), one no-op component, interval 1h (no interval
# re-checks during the run).
# A markdown table is printed on stdout; progress goes to stderr. With RESULTS_TSV=file a
# tab-separated row is appended there too (for medians over several runs).
#
# Settings (environment):
#   CHOM=path           binary (default target/release/chom, from the repo root)
#   WORKERS=64 RATE=1000 BURST=1000 MAX_HANDSHAKES=50   daemon flags
#   SSH_IDLE_S=90 SSH_MAX_IDLE=64  daemon flags --ssh-idle-timeout, --ssh-max-idle
#   GAP_MIN_MS=100 GAP_MAX_MS=200   spacing of the dropped files
#   SETTLE_S=15 IDLE_S=60 IDLE_CLOSE=0 PASS_TIMEOUT_S=900
#   STOCK_DOTFILES=1    sshd runs in a private mount namespace where Debian's stock
#                       /root/.bashrc and .profile are bind-mounted over root's own (this
#                       machine's .bashrc runs `pyenv init` on every ssh command); 0 = off
#   DAEMON_ARGS="..."   more daemon flags, split on blanks (e.g. "--debounce 50ms")
#   KEEP=1              keep the work folder (logs, tree) instead of deleting it
#   LOG_FILTER=chom=info   the daemon's CHOM_LOG; with chom::daemon=debug the latency is
#                       also split at the daemon's "inventory changed" line (watcher+debounce
#                       before it, re-validation + queue after it)
#   PYTHON=/usr/bin/python3
#
# Needs root (sshd, root login over loopback), OpenSSH's sshd, python3 with PyYAML.
# Everything started here is stopped by PID on exit: the daemon, sshd and its children.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

N=${1:-1000}
DROPS=${2:-100}
CHOM=${CHOM:-target/release/chom}
WORKERS=${WORKERS:-64}
RATE=${RATE:-1000}
BURST=${BURST:-1000}
MAX_HANDSHAKES=${MAX_HANDSHAKES:-50}
GAP_MIN_MS=${GAP_MIN_MS:-100}
GAP_MAX_MS=${GAP_MAX_MS:-200}
SETTLE_S=${SETTLE_S:-15}
IDLE_S=${IDLE_S:-60}
IDLE_CLOSE=${IDLE_CLOSE:-0}
PASS_TIMEOUT_S=${PASS_TIMEOUT_S:-900}
STOCK_DOTFILES=${STOCK_DOTFILES:-1}
KEEP=${KEEP:-0}
PY=${PYTHON:-/usr/bin/python3}
LOG_FILTER=${LOG_FILTER:-chom=info}
read -r -a EXTRA_ARGS <<< "${DAEMON_ARGS:-}"
SSH_IDLE_S=${SSH_IDLE_S:-90}
SSH_MAX_IDLE=${SSH_MAX_IDLE:-64}

die() { echo "error: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
isnum() { [[ "$1" =~ ^[0-9]+$ ]]; }

for v in N DROPS WORKERS RATE BURST MAX_HANDSHAKES SSH_IDLE_S SSH_MAX_IDLE GAP_MIN_MS GAP_MAX_MS SETTLE_S IDLE_S PASS_TIMEOUT_S; do
  isnum "${!v}" || die "$v must be a whole number (got '${!v}')"
done
if [ "$N" -lt 1 ] || [ "$N" -gt 20000 ]; then die "N must be 1..20000"; fi
[ "$GAP_MAX_MS" -ge "$GAP_MIN_MS" ] || die "GAP_MAX_MS < GAP_MIN_MS"
[ "$(id -u)" = 0 ] || die "needs root (sshd with root login on loopback)"
[ -x /usr/sbin/sshd ] || die "needs OpenSSH's sshd (apt-get install openssh-server)"
[ -x "$CHOM" ] || die "no chom binary at $CHOM (cargo build --release, or set CHOM)"
"$PY" -c 'import yaml' 2>/dev/null || die "$PY needs PyYAML"
CHOM=$(realpath "$CHOM")
# The shared harness's hosts would compete for the 2 cores: take them down first.
if ip netns list 2>/dev/null | grep -qw '^chomb'; then
  die "the bench harness's hosts (netns chomb) are up; run its hosts-down.sh first"
fi

WORK=$(mktemp -d /tmp/chom-daemon-bench.XXXXXX)
# The tree gets a folder of its own: chom also watches the parent of inventory.d (to follow
# symlink-swapped checkouts), so this script's own files must not sit beside it.
DIR=$WORK/tree
INV=$DIR/inventory.d
STAGE=$WORK/staging     # same file system as inventory.d, so rename(2) is atomic
CHOM_PID=""
SSHD_PID=""
MADE_RUN_SSHD=0

# stop_pid PID WHAT SECONDS: TERM, wait up to SECONDS, then KILL.
stop_pid() {
  local pid=$1 what=$2 wait_s=${3:-5} i
  isnum "$pid" || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < wait_s * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  log "$what ($pid) did not stop in ${wait_s}s; KILL"
  kill -KILL "$pid" 2>/dev/null || true
}

# every descendant of PID (children first listed before their own children)
descendants() {
  ps -e -o pid=,ppid= | awk -v root="$1" '
    { parent[$1] = $2; pids[NR] = $1 }
    END {
      for (i = 1; i <= NR; i++) {
        p = pids[i]; q = parent[p]
        while (q != "" && q != 0 && q != 1) { if (q == root) { print p; break } q = parent[q] }
      }
    }'
}

stop_sshd() {
  [ -n "$SSHD_PID" ] || return 0
  local kids p
  kids=$(descendants "$SSHD_PID")
  stop_pid "$SSHD_PID" sshd 5
  for p in $kids; do stop_pid "$p" "sshd child" 3; done
  SSHD_PID=""
}

cleanup() {
  local rc=$?
  [ -n "$CHOM_PID" ] && stop_pid "$CHOM_PID" "chom daemon" 45
  stop_sshd
  if [ "$MADE_RUN_SSHD" = 1 ]; then rmdir /run/sshd 2>/dev/null || true; fi
  if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then log "work folder kept: $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers (python) --------
cat > "$WORK/helper.py" <<'PY'
"""Log and status-file analysis for bench/daemon.sh."""
import calendar, glob, json, os, sys, time
import yaml

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def ts(s):
    """RFC 3339 (UTC 'Z' or +00:00, any number of fraction digits) -> epoch float."""
    s = s.replace("Z", "").split("+")[0]
    main, _, frac = s.partition(".")
    return calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S")) + (float("0." + frac) if frac else 0.0)


def lines(path, start=0):
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    end = start + data.rfind(b"\n") + 1 if b"\n" in data else start
    out = []
    for raw in data[: end - start].splitlines():
        try:
            out.append(json.loads(raw))
        except ValueError:
            out.append({"message": raw.decode("utf-8", "replace"), "level": "RAW"})
    return out, end


def msg(e):
    return e.get("message") or e.get("fields", {}).get("message", "")


def server(e):
    return (e.get("span") or {}).get("server") or e.get("server") or (e.get("fields") or {}).get("server")


def wait(log, names_file, timeout):
    """Until every listed server's last `reconcile finished` says Succeeded."""
    want = set(open(names_file).read().split())
    done, pos, deadline = {}, 0, time.time() + float(timeout)
    while True:
        if os.path.exists(log):
            new, pos = lines(log, pos)
            for e in new:
                if msg(e) == "reconcile finished" and server(e) in want:
                    done[server(e)] = e.get("result") or e.get("fields", {}).get("result")
        ok = sum(1 for n in want if done.get(n) == "Succeeded")
        if ok == len(want):
            print(ok)
            return
        if time.time() > deadline:
            print(f"timeout: {ok}/{len(want)} Succeeded", file=sys.stderr)
            print(ok)
            sys.exit(1)
        time.sleep(0.25)


def ready(inv, names_file):
    """ready-count newest-mtime not-ready-names(first 5) of the listed servers' status files."""
    names = open(names_file).read().split()
    n_ready, newest, bad = 0, 0.0, []
    for n in names:
        p = os.path.join(inv, n + ".status.yaml")
        try:
            doc = yaml.load(open(p), Loader=Loader)
            newest = max(newest, os.stat(p).st_mtime)
        except (OSError, yaml.YAMLError):
            bad.append(n)
            continue
        conds = (doc.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Ready" and str(c.get("status")) == "True" for c in conds):
            n_ready += 1
        else:
            bad.append(n)
    print(n_ready, f"{newest:.6f}", ",".join(bad[:5]) or "-")


def newer(inv, t):
    """status files with mtime > t"""
    print(sum(1 for p in glob.glob(os.path.join(inv, "**", "*.status.yaml"), recursive=True)
              if os.stat(p).st_mtime > float(t)))


def pct(xs, q):
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, -(-len(xs) * q // 100) - 1))  # nearest rank
    return xs[int(k)]


def latency(log, drops):
    """p50 p99 max mean n missing, in ms: first `reconcile started` after each rename."""
    starts, changed = {}, []
    for e in lines(log)[0]:
        if msg(e) == "reconcile started":
            starts.setdefault(server(e), []).append(ts(e["timestamp"]))
        elif msg(e) == "inventory changed":
            changed.append(ts(e["timestamp"]))
    split = []
    lat, missing = [], 0
    with open(drops) as f:
        for line in f:
            name, t = line.split()
            later = [s for s in starts.get(name, []) if s >= float(t) - 0.001]
            if later:
                lat.append((min(later) - float(t)) * 1000)
                seen = [c for c in changed if float(t) <= c <= min(later)]
                if seen:
                    split.append(((seen[0] - float(t)) * 1000, (min(later) - seen[0]) * 1000))
            else:
                missing += 1
    if not lat:
        print("nan nan nan nan 0", missing)
        return
    with open(drops + ".ms", "w") as f:
        f.write("\n".join(f"{x:.1f}" for x in lat) + "\n")
    if split:
        a, b = [x for x, _ in split], [y for _, y in split]
        print(f"rename -> 'inventory changed' p50 {pct(a, 50):.1f} p99 {pct(a, 99):.1f} max {max(a):.1f} ms; "
              f"'inventory changed' -> 'reconcile started' p50 {pct(b, 50):.1f} p99 {pct(b, 99):.1f} "
              f"max {max(b):.1f} ms (n={len(split)})", file=sys.stderr)
    print(f"{pct(lat, 50):.1f} {pct(lat, 99):.1f} {max(lat):.1f} {sum(lat) / len(lat):.1f} {len(lat)} {missing}")


def window(log, t0, t1):
    """reconciles started in [t0, t1]"""
    print(sum(1 for e in lines(log)[0]
              if msg(e) == "reconcile started" and float(t0) <= ts(e["timestamp"]) <= float(t1)))


def summary(log, t0):
    """first-pass facts from the log: daemon-started offset, starts, finished by result,
    warnings/errors by message, last finished offset"""
    started_at, starts, fin, last, levels, msgs = None, 0, {}, 0.0, {}, {}
    for e in lines(log)[0]:
        m, lvl = msg(e), e.get("level", "?")
        if m == "daemon started" and started_at is None:
            started_at = ts(e["timestamp"]) - float(t0)
        elif m == "reconcile started":
            starts += 1
        elif m == "reconcile finished":
            r = e.get("result") or e.get("fields", {}).get("result")
            fin[r] = fin.get(r, 0) + 1
            last = max(last, ts(e["timestamp"]) - float(t0))
        if lvl in ("WARN", "ERROR", "RAW"):
            key = f"{lvl} {m}"[:120]
            msgs[key] = msgs.get(key, 0) + 1
        levels[lvl] = levels.get(lvl, 0) + 1
    print(json.dumps({"daemon_started_s": started_at, "starts": starts, "finished": fin,
                      "last_finished_s": last, "levels": levels, "warn_error": msgs}))


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
PY
H() { "$PY" "$WORK/helper.py" "$@"; }

# ---------------------------------------------------------------- /proc sampling ----------
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }   # utime+stime
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
threads() { awk '/^Threads:/ { print $2 }' "/proc/$1/status"; }
per_thread_ctxsw() {  # "tid comm switches" per thread
  local t
  for t in /proc/"$1"/task/*; do
    printf '%s %s %s\n' "${t##*/}" "$(tr ' ' _ < "$t/comm")" \
      "$(awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ { s += $2 } END { print s + 0 }' "$t/status")"
  done 2>/dev/null
}
tree_ticks() {  # utime+stime+cutime+cstime of PID and every descendant
  local p t=0
  for p in "$1" $(descendants "$1"); do
    t=$((t + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
machine_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }   # ticks, all CPUs
save_smaps() { cat "/proc/$CHOM_PID/smaps" > "$WORK/smaps-$1.txt" 2>/dev/null || true; }   # for later reading
conns() { ss -Htn state established "( dport = :$PORT )" 2>/dev/null | wc -l; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
load1() { cut -d' ' -f1 /proc/loadavg; }

# ---------------------------------------------------------------- fleet: sshd -------------
log "work folder $WORK; N=$N DROPS=$DROPS; load $(load1)"
mkdir -p "$INV" "$STAGE" "$DIR/scripts"
if [ ! -d /run/sshd ]; then mkdir -p /run/sshd; chmod 755 /run/sshd; MADE_RUN_SSHD=1; fi
ssh-keygen -q -t ed25519 -N '' -C chom-daemon-bench-host -f "$WORK/host_ed25519"
ssh-keygen -q -t ed25519 -N '' -C chom-daemon-bench-client -f "$WORK/client_ed25519"
install -m 600 "$WORK/client_ed25519.pub" "$WORK/authorized_keys"
PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$WORK/sshd_config" <<EOF
# bench/daemon.sh: loopback only
Port $PORT
ListenAddress 127.0.0.1
HostKey $WORK/host_ed25519
PidFile $WORK/sshd.pid
AuthorizedKeysFile $WORK/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowUsers *@127.0.0.0/8
MaxStartups 200:30:400
MaxSessions 20
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding no
LogLevel INFO
EOF
/usr/sbin/sshd -t -f "$WORK/sshd_config"
install -m 644 /usr/share/base-files/dot.bashrc "$WORK/root.bashrc" 2>/dev/null || : > "$WORK/root.bashrc"
install -m 644 /usr/share/base-files/dot.profile "$WORK/root.profile" 2>/dev/null || : > "$WORK/root.profile"
if [ "$STOCK_DOTFILES" = 1 ]; then
  # unshare execs sh, which execs sshd: $! is sshd's own PID.
  # shellcheck disable=SC2016  # expanded by the inner sh
  unshare -m --propagation private sh -c '
    for f in bashrc profile; do
      if [ -f "/root/.$f" ]; then mount --bind "$1/root.$f" "/root/.$f"; fi
    done
    exec /usr/sbin/sshd -D -e -f "$1/sshd_config"' sh "$WORK" </dev/null 2> "$WORK/sshd.log" &
else
  /usr/sbin/sshd -D -e -f "$WORK/sshd_config" </dev/null 2> "$WORK/sshd.log" &
fi
SSHD_PID=$!
for _ in $(seq 50); do [ -s "$WORK/sshd.pid" ] && break; sleep 0.1; done
[ -s "$WORK/sshd.pid" ] || die "sshd did not start: $(tail -n 3 "$WORK/sshd.log")"
[ "$(cat "$WORK/sshd.pid")" = "$SSHD_PID" ] || die "sshd PID file $(cat "$WORK/sshd.pid") != $SSHD_PID"
printf '[127.0.0.1]:%s %s\n' "$PORT" "$(cut -d' ' -f1,2 "$WORK/host_ed25519.pub")" > "$WORK/known_hosts"
ssh -F /dev/null -i "$WORK/client_ed25519" -o IdentitiesOnly=yes -o BatchMode=yes \
  -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$WORK/known_hosts" -o GlobalKnownHostsFile=/dev/null \
  -o ConnectTimeout=10 -p "$PORT" root@127.0.0.1 true </dev/null \
  || die "ssh smoke test to 127.0.0.1:$PORT failed: $(tail -n 3 "$WORK/sshd.log")"
log "sshd $SSHD_PID on 127.0.0.1:$PORT"

# ---------------------------------------------------------------- tree --------------------
printf '#!/bin/sh\n# bench: does nothing, writes nothing\necho ok\n' > "$DIR/scripts/bench-noop.sh"
server_yaml() {
  cat <<EOF
apiVersion: chom.dev/v1
kind: Server
metadata:
  name: $1
spec:
  address: 127.0.0.1
  ssh:
    user: root
    port: $PORT
    identityFile: $WORK/client_ed25519
  components:
    - name: bench-noop
  interval: 1h
EOF
}
: > "$WORK/names-pass"
for ((i = 1; i <= N; i++)); do
  name=$(printf 'srv-%05d' "$i")
  server_yaml "$name" > "$INV/$name.yaml"
  echo "$name" >> "$WORK/names-pass"
done
: > "$WORK/names-all"
cat "$WORK/names-pass" > "$WORK/names-all"
for ((i = 1; i <= DROPS; i++)); do printf 'new-%05d\n' "$i" >> "$WORK/names-all"; done
sync
log "tree: $N servers (all 127.0.0.1:$PORT, distinct names), component bench-noop, interval 1h"

# ---------------------------------------------------------------- 1. first pass -----------
LOG=$WORK/daemon.log
load_pass=$(load1)
sshd_t0=$(tree_ticks "$SSHD_PID")
busy_t0=$(machine_busy)
t0=$EPOCHREALTIME
env -u SSH_AUTH_SOCK HOME="$DIR" CHOM_LOG="$LOG_FILTER" \
  "$CHOM" --log-format json daemon --inventory "$INV" --known-hosts "$WORK/known_hosts" \
  --workers "$WORKERS" --rate "$RATE" --burst "$BURST" --max-handshakes "$MAX_HANDSHAKES" \
  --ssh-idle-timeout "${SSH_IDLE_S}s" --ssh-max-idle "$SSH_MAX_IDLE" "${EXTRA_ARGS[@]}" \
  </dev/null 2> "$LOG" &
CHOM_PID=$!
log "daemon $CHOM_PID started; waiting for $N servers to be Ready (timeout ${PASS_TIMEOUT_S}s)"
H wait "$LOG" "$WORK/names-pass" "$PASS_TIMEOUT_S" > /dev/null || die "first pass did not finish; see $LOG"
t_seen=$EPOCHREALTIME
busy_t1=$(machine_busy)
sshd_pass_ms=$((($(tree_ticks "$SSHD_PID") - sshd_t0) * 1000 / CLK_TCK))
busy_cores=$(awk -v b="$((busy_t1 - busy_t0))" -v hz="$CLK_TCK" -v a="$t0" -v c="$t_seen" 'BEGIN { printf "%.2f", b / hz / (c - a) }')
kill -0 "$CHOM_PID" 2>/dev/null || die "daemon exited; see $LOG"
cpu_pass=$(cpu_ticks "$CHOM_PID")
hwm_pass=$(hwm_kib "$CHOM_PID")
rss_pass=$(rss_kib "$CHOM_PID")
conns_pass=$(conns)
save_smaps pass
read -r n_ready newest bad < <(H ready "$INV" "$WORK/names-pass")
[ "$n_ready" = "$N" ] || die "only $n_ready/$N status files say Ready=True (e.g. $bad)"
pass_s=$(awk -v a="$t0" -v b="$newest" 'BEGIN { printf "%.2f", b - a }')
pass_json=$(H summary "$LOG" "$t0")
log "first pass: ${pass_s}s to the last Ready status (seen by the poller after $(awk -v a="$t0" -v b="$t_seen" 'BEGIN { printf "%.2f", b - a }')s); daemon CPU $((cpu_pass * 1000 / CLK_TCK)) ms; RSS $(mib "$rss_pass") MiB (peak $(mib "$hwm_pass")); $conns_pass ssh connections open"
log "  log: $pass_json"
log "  sshd side (listener tree, incl. reaped shells): ${sshd_pass_ms} ms CPU; whole machine busy ${busy_cores} of 2 cores during the pass"

# ---------------------------------------------------------------- 2. drops ----------------
sleep 2
log "dropping $DROPS new server files, ${GAP_MIN_MS}-${GAP_MAX_MS} ms apart"
load_drops=$(load1)
: > "$WORK/drops"
for ((i = 1; i <= DROPS; i++)); do
  name=$(printf 'new-%05d' "$i")
  server_yaml "$name" > "$STAGE/$name.yaml"
  t=$EPOCHREALTIME
  mv -T "$STAGE/$name.yaml" "$INV/$name.yaml"
  echo "$name $t" >> "$WORK/drops"
  # the next rename comes gap ms after this one (the time spent here is taken off the sleep)
  gap=$((GAP_MIN_MS + RANDOM % (GAP_MAX_MS - GAP_MIN_MS + 1)))
  sleep "$(awk -v g="$gap" -v t="$t" -v now="$EPOCHREALTIME" 'BEGIN { w = t + g / 1000 - now; printf "%.3f", (w > 0 ? w : 0) }')"
done
H wait "$LOG" "$WORK/names-all" 120 > /dev/null || die "dropped servers did not all reconcile; see $LOG"
read -r n_ready _ bad < <(H ready "$INV" "$WORK/names-all")
[ "$n_ready" = $((N + DROPS)) ] || die "only $n_ready/$((N + DROPS)) Ready (e.g. $bad)"
read -r p50 p99 pmax pmean n_lat n_missing < <(H latency "$LOG" "$WORK/drops")
log "drop -> reconcile started: p50 ${p50} ms, p99 ${p99} ms, max ${pmax} ms, mean ${pmean} ms (n=$n_lat, missing $n_missing)"

# ---------------------------------------------------------------- 3. idle -----------------
log "settling ${SETTLE_S}s, then ${IDLE_S}s idle window"
sleep "$SETTLE_S"
load_idle=$(load1)
conns_idle=$(conns)
threads0=$(threads "$CHOM_PID")
ti0=$EPOCHREALTIME
c0=$(cpu_ticks "$CHOM_PID")
per_thread_ctxsw "$CHOM_PID" > "$WORK/threads0"
rss_max=0; rss_sum=0; samples=0
for ((i = 0; i < IDLE_S; i++)); do
  sleep 1
  r=$(rss_kib "$CHOM_PID")
  rss_sum=$((rss_sum + r)); samples=$((samples + 1))
  [ "$r" -gt "$rss_max" ] && rss_max=$r
done
per_thread_ctxsw "$CHOM_PID" > "$WORK/threads1"
c1=$(cpu_ticks "$CHOM_PID")
save_smaps idle
ti1=$EPOCHREALTIME
threads1=$(threads "$CHOM_PID")
idle_len=$(awk -v a="$ti0" -v b="$ti1" 'BEGIN { printf "%.1f", b - a }')
idle_cpu_ms=$(((c1 - c0) * 1000 / CLK_TCK))
# per thread: end - start (a thread born in the window counts whole); switches of threads
# that exited during the window are lost, so their number is reported beside the sum
read -r idle_sw threads_gone < <(awk 'NR == FNR { a[$1] = $3; next } { s += $3 - (($1 in a) ? a[$1] : 0); seen[$1] = 1 }
  END { for (t in a) if (!(t in seen)) g++; print s + 0, g + 0 }' "$WORK/threads0" "$WORK/threads1")
idle_starts=$(H window "$LOG" "$ti0" "$ti1")
idle_writes=$(H newer "$INV" "$ti0")
idle_rss_mean=$((rss_sum / samples))
log "idle ${idle_len}s: CPU ${idle_cpu_ms} ms, ctx switches $idle_sw (threads $threads0 -> $threads1, $threads_gone exited), RSS mean $(mib "$idle_rss_mean") max $(mib "$rss_max") MiB, $conns_idle connections open; reconciles started $idle_starts, status files written $idle_writes"
awk 'NR == FNR { a[$1] = $3; next } { d = $3 - (($1 in a) ? a[$1] : 0); if (d > 0) print "    thread " $1 " " $2 ": " d " switches" }' \
  "$WORK/threads0" "$WORK/threads1" | sort -t: -k2 -n -r | head -n 8 >&2

# ---------------------------------------------------------------- 4. idle close -----------
rss_closed="-"; conns_closed="-"; closed_cpu_ms="-"; closed_sw="-"; closed_win_cpu_ms="-"; closed_win_s="-"
if [ "$IDLE_CLOSE" = 1 ]; then
  # the last connection use was the last reconcile; wait until its idle timeout + 30 s
  last_fin=$(H summary "$LOG" 0 | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["last_finished_s"])')
  until_s=$(awk -v l="$last_fin" -v now="$EPOCHREALTIME" -v t="$SSH_IDLE_S" 'BEGIN { w = l + t + 30 - now; printf "%d", (w > 0 ? w : 0) }')
  log "waiting ${until_s}s for the pooled connections to idle-close"
  cc0=$(cpu_ticks "$CHOM_PID")
  sleep "$until_s"
  cc1=$(cpu_ticks "$CHOM_PID")
  closed_cpu_ms=$(((cc1 - cc0) * 1000 / CLK_TCK))
  conns_closed=$(conns)
  rss_closed=$(rss_kib "$CHOM_PID")
  save_smaps closed
  log "after idle close: $conns_closed connections open, RSS $(mib "$rss_closed") MiB, CPU while waiting ${closed_cpu_ms} ms over ${until_s}s"
  # the same idle measurement again, with no connection left to keep alive
  closed_win_s=$((IDLE_S / 2))
  per_thread_ctxsw "$CHOM_PID" > "$WORK/threads2"
  cw0=$(cpu_ticks "$CHOM_PID")
  sleep "$closed_win_s"
  per_thread_ctxsw "$CHOM_PID" > "$WORK/threads3"
  closed_win_cpu_ms=$((($(cpu_ticks "$CHOM_PID") - cw0) * 1000 / CLK_TCK))
  closed_sw=$(awk 'NR == FNR { a[$1] = $3; next } { s += $3 - (($1 in a) ? a[$1] : 0) } END { print s + 0 }' "$WORK/threads2" "$WORK/threads3")
  log "idle with no connections, ${closed_win_s}s: CPU ${closed_win_cpu_ms} ms, ctx switches $closed_sw"
fi

# ---------------------------------------------------------------- stop --------------------
warns_total=$(H summary "$LOG" "$t0")
ts0=$EPOCHREALTIME
stop_pid "$CHOM_PID" "chom daemon" 45
wait "$CHOM_PID" 2>/dev/null && chom_rc=0 || chom_rc=$?
stop_s=$(awk -v a="$ts0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
CHOM_PID=""
sshd_drops=$(grep -c -i -E 'MaxStartups|drop(ping)? connection' "$WORK/sshd.log" || true)
sshd_errors=$(grep -c -i -E 'error|fatal' "$WORK/sshd.log" || true)
stop_sshd
log "daemon stopped in ${stop_s}s (rc $chom_rc); sshd log: $sshd_drops MaxStartups drops, $sshd_errors error/fatal lines"

# ---------------------------------------------------------------- report ------------------
yes_no() { if awk "BEGIN { exit !($1) }"; then echo yes; else echo "**no**"; fi; }
pass_cpu_ms=$((cpu_pass * 1000 / CLK_TCK))
closed_cell="not measured (run with IDLE_CLOSE=1)"; closed_met="–"
closed_idle_row=""
if [ "$rss_closed" != - ]; then
  closed_cell="$(mib "$rss_closed") MiB (daemon CPU ${closed_cpu_ms} ms while waiting)"
  closed_met=$(yes_no "$rss_closed < 65536")
  closed_idle_row="| idle again once the connections closed: CPU / context switches over $closed_win_s s | $closed_win_cpu_ms ms / $closed_sw | timers only | – |"
fi
cat <<EOF

### chom daemon, N=$N servers on one loopback sshd (workers $WORKERS, rate $RATE, burst $BURST, max-handshakes $MAX_HANDSHAKES, ssh-idle-timeout ${SSH_IDLE_S}s, ssh-max-idle $SSH_MAX_IDLE${DAEMON_ARGS:+, $DAEMON_ARGS})

| what | result | target | met |
|---|---|---|---|
| first pass: daemon start → all $N \`Ready=True\` | **$pass_s s** (daemon CPU $pass_cpu_ms ms = $(awk -v c="$pass_cpu_ms" -v n="$N" 'BEGIN { printf "%.2f", c / n }') ms/server; sshd side $sshd_pass_ms ms; machine busy $busy_cores cores) | – | – |
| RSS right after the pass ($conns_pass SSH connections open) / peak (VmHWM) | $(mib "$rss_pass") MiB / $(mib "$hwm_pass") MiB | < 64 MiB | $(yes_no "$rss_pass < 65536") |
| file dropped → \`reconcile started\`, p50 / p99 / max (n=$n_lat, ${GAP_MIN_MS}–${GAP_MAX_MS} ms apart) | $p50 / **$p99** / $pmax ms (mean $pmean) | p99 < 300 ms | $(yes_no "$p99 < 300") |
| idle CPU over ${idle_len} s | $idle_cpu_ms ms ($(awk -v c="$idle_cpu_ms" -v l="$idle_len" 'BEGIN { printf "%.2f", c / l / 10 }') % of a core) | ≈ 0 | – |
| idle context switches, summed over threads ($threads0 → $threads1 threads, $threads_gone exited) | $idle_sw ($(awk -v c="$idle_sw" -v l="$idle_len" 'BEGIN { printf "%.1f", c / l }')/s) with $conns_idle connections open | timers only | see notes |
| reconciles started / status files written while idle | $idle_starts / $idle_writes | 0 / 0 | $(yes_no "$idle_starts == 0 && $idle_writes == 0") |
| idle RSS mean / max ($conns_idle connections open) | $(mib "$idle_rss_mean") / $(mib "$rss_max") MiB | < 64 MiB | $(yes_no "$rss_max < 65536") |
| RSS after the connections idle-closed ($conns_closed open) | $closed_cell | < 64 MiB | $closed_met |
$closed_idle_row

Load average (1 min) at pass / drops / idle: $load_pass / $load_drops / $load_idle. Daemon stop (SIGTERM) took $stop_s s, exit code $chom_rc. sshd: $sshd_drops MaxStartups drops, $sshd_errors error lines.
Log summary: $warns_total
EOF
if [ -n "${RESULTS_TSV:-}" ]; then
  [ -s "$RESULTS_TSV" ] || printf 'when\tN\tdrops\tpass_s\tpass_cpu_ms\trss_pass_kib\thwm_kib\tp50_ms\tp99_ms\tmax_ms\tidle_s\tidle_cpu_ms\tidle_ctxsw\tidle_starts\tidle_writes\tidle_rss_max_kib\trss_closed_kib\tconns_idle\tload_pass\tload_idle\n' > "$RESULTS_TSV"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$N" "$DROPS" "$pass_s" "$pass_cpu_ms" "$rss_pass" "$hwm_pass" \
    "$p50" "$p99" "$pmax" "$idle_len" "$idle_cpu_ms" "$idle_sw" "$idle_starts" "$idle_writes" "$rss_max" \
    "$rss_closed" "$conns_idle" "$load_pass" "$load_idle" >> "$RESULTS_TSV"
fi
