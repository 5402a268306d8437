#!/usr/bin/env bash
# bench/fleet/up.sh N [--rtt MS] [--ttl-min T]
#
# Brings up N SSH test hosts: the network namespace $FLEET_NS, N addresses 10.251.x.y in
# it, and one OpenSSH sshd inside it serving all of them (listening on the namespace's own
# wildcard address, which exists only inside the namespace). The link to the root
# namespace is a veth pair for --rtt 0, or for --rtt MS two TUN devices joined by
# delayline.py, which holds each packet MS/2 ms each way (this kernel has no sch_netem).
# Keys, known_hosts and an Ansible/pyinfra/chom-ready host list are generated in
# $FLEET_STATE/run. sshd and the delay line stop by themselves after T minutes (default
# 240); bench/fleet/down.sh stops them sooner, by PID, and removes the namespace.
# Needs root (ip netns, sshd).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"

usage() { echo "usage: $0 N [--rtt MS] [--ttl-min T]" >&2; exit 2; }
[ $# -ge 1 ] || usage
N=$1; shift
RTT=0; TTL_MIN=240
while [ $# -gt 0 ]; do
  case "$1" in
    --rtt) RTT=${2:?}; shift 2 ;;
    --ttl-min) TTL_MIN=${2:?}; shift 2 ;;
    *) usage ;;
  esac
done
{ [[ "$N" =~ ^[0-9]+$ ]] && [ "$N" -ge 1 ] && [ "$N" -le 50000 ]; } || die "N must be 1..50000"
[[ "$RTT" =~ ^[0-9]+$ ]] || die "--rtt takes whole milliseconds"
{ [[ "$TTL_MIN" =~ ^[0-9]+$ ]] && [ "$TTL_MIN" -ge 1 ]; } || die "--ttl-min takes whole minutes"
[ "$(id -u)" = 0 ] || die "needs root (ip netns, sshd)"
[ -x /usr/sbin/sshd ] || die "no /usr/sbin/sshd (apt-get install openssh-server)"
[ -e "$RUN/fleet.env" ] && die "a fleet is already up; run bench/fleet/down.sh first"
ip netns list | grep -qw "^$FLEET_NS" && die "namespace $FLEET_NS exists; run bench/fleet/down.sh first"

mkdir -p "$RUN"; chmod 700 "$RUN"
mkdir -p /run/sshd
[ -f "$RUN/host_key" ] || ssh-keygen -q -t ed25519 -N '' -C chom-fleet-host -f "$RUN/host_key"
[ -f "$RUN/client_key" ] || ssh-keygen -q -t ed25519 -N '' -C chom-fleet-client -f "$RUN/client_key"
install -m 600 "$RUN/client_key.pub" "$RUN/authorized_keys"

hostkey=$(cut -d' ' -f1,2 "$RUN/host_key.pub")
: > "$RUN/hosts.txt"; : > "$RUN/known_hosts"
for ((i = 1; i <= N; i++)); do
  a=$(host_addr "$i")
  printf 'h%05d %s\n' "$i" "$a" >> "$RUN/hosts.txt"
  printf '%s %s\n' "$a" "$hostkey" >> "$RUN/known_hosts"
done

trap 'log "up failed; tearing down"; "$FLEET_DIR/down.sh" >/dev/null 2>&1 || true' ERR
ip netns add "$FLEET_NS"
ip -n "$FLEET_NS" link set lo up
if [ "$RTT" -gt 0 ]; then
  rm -f "$RUN/delayline.pid"
  one_way=$(awk -v r="$RTT" 'BEGIN { printf "%g", r / 2 }')
  # Real-time priority keeps the delay honest while the tools keep both cores busy.
  setsid chrt -f 10 timeout "$((TTL_MIN * 60))" python3 "$FLEET_DIR/delayline.py" \
    --a "$LINK_ROOT" --b "$LINK_NS" --delay-ms "$one_way" --ttl-s "$((TTL_MIN * 60))" \
    --ready "$RUN/delayline.pid" </dev/null >>"$RUN/delayline.log" 2>&1 &
  echo $! > "$RUN/delayline-timeout.pid"
  for _ in $(seq 100); do [ -s "$RUN/delayline.pid" ] && break; sleep 0.1; done
  [ -s "$RUN/delayline.pid" ] || die "the delay line did not start ($RUN/delayline.log)"
  ip link set "$LINK_NS" netns "$FLEET_NS"
  ip link set "$LINK_ROOT" txqueuelen 10000 up
  ip addr add "$FLEET_CLIENT/32" dev "$LINK_ROOT"
  ip route add "$FLEET_NET.0.0/16" dev "$LINK_ROOT"
  ip -n "$FLEET_NS" link set "$LINK_NS" txqueuelen 10000 up
  ip -n "$FLEET_NS" route add "$FLEET_CLIENT/32" dev "$LINK_NS"
  prefix=32
else
  ip link add "$LINK_ROOT" type veth peer name "$LINK_NS" netns "$FLEET_NS"
  ip addr add "$FLEET_CLIENT/16" dev "$LINK_ROOT"
  ip link set "$LINK_ROOT" up
  ip -n "$FLEET_NS" link set "$LINK_NS" up
  prefix=16
fi
awk -v d="$LINK_NS" -v p="$prefix" '{ print "address add " $2 "/" p " dev " d }' "$RUN/hosts.txt" \
  | ip -n "$FLEET_NS" -batch -

cat > "$RUN/sshd_config" <<CFG
Port 22
ListenAddress 0.0.0.0
HostKey $RUN/host_key
PidFile $RUN/sshd.pid
AuthorizedKeysFile $RUN/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
# One sshd stands for N hosts, so it must take N handshakes at once.
MaxStartups 10000
MaxSessions 64
PrintMotd no
# pyinfra uploads its scripts over SFTP.
Subsystem sftp internal-sftp
LogLevel ERROR
CFG
/usr/sbin/sshd -t -f "$RUN/sshd_config"

# The hosts' CPU is measured through their own cpuacct group (cgroup v1) when there is one.
if [ -d /sys/fs/cgroup/cpuacct ]; then mkdir -p "$CGROUP/hosts"; fi
# sshd runs in a private mount namespace where Debian's stock dotfiles cover root's own,
# so a control host's shell set-up (pyenv, conda...) does not slow every remote command.
cat > "$RUN/sshd-start.sh" <<'SH'
#!/bin/sh
set -e
run=$1; ttl=$2
for f in bashrc profile; do
  if [ -f "/root/.$f" ] && [ -f "/usr/share/base-files/dot.$f" ]; then
    mount --bind "/usr/share/base-files/dot.$f" "/root/.$f"
  fi
done
exec timeout "$ttl" /usr/sbin/sshd -D -f "$run/sshd_config" -E "$run/sshd.log"
SH
chmod 755 "$RUN/sshd-start.sh"
rm -f "$RUN/sshd.pid"
# The group is joined before `ip netns exec`, which mounts a sysfs of its own.
cg=/dev/null; [ -d "$CGROUP/hosts" ] && cg="$CGROUP/hosts/cgroup.procs"
# shellcheck disable=SC2016  # expanded by the inner bash
setsid bash -c 'echo $$ > "$1"; shift; exec "$@"' _ "$cg" \
  ip netns exec "$FLEET_NS" unshare -m --propagation private \
  "$RUN/sshd-start.sh" "$RUN" "$((TTL_MIN * 60))" </dev/null >>"$RUN/sshd.log" 2>&1 &
echo $! > "$RUN/sshd-wrapper.pid"
for _ in $(seq 100); do [ -s "$RUN/sshd.pid" ] && break; sleep 0.1; done
[ -s "$RUN/sshd.pid" ] || die "sshd did not start ($RUN/sshd.log)"

cat > "$RUN/fleet.env" <<ENV
FLEET_N=$N
FLEET_RTT=$RTT
ENV
trap - ERR
# One round trip proves the link and the host key before any tool runs.
ssh -F /dev/null -i "$RUN/client_key" -o IdentitiesOnly=yes -o UserKnownHostsFile="$RUN/known_hosts" \
  -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=10 \
  "root@$(host_addr "$N")" true || die "ssh to host $N failed ($RUN/sshd.log)"
log "fleet up: $N hosts $(host_addr 1)..$(host_addr "$N"), added RTT $RTT ms, sshd pid $(cat "$RUN/sshd.pid")"
