#!/usr/bin/env bash
# tests/realhost/up.sh K [J]: boots test server K, a real Debian 12 (systemd as PID 1,
# OpenSSH, apt) in a systemd-nspawn container inside its own network namespace, at
# 10.253.K.2; with J, a further server in that same namespace at 10.253.K.J, which can
# reach the others there (a control host and the servers it manages).
#
#   K            1..200; one network namespace (chomrh-K) and one /24 per K, so several
#                servers run at once without sharing anything but the base image.
#   J            3..254 (default 2). Servers of one K share the namespace, its link and
#                its proxy, each sshd listening on its own address only. The namespace is
#                made by the first of them to come up and removed by down.sh when the last
#                one goes, whichever order they go in.
#   state        $CHOM_REALHOST_STATE (default /var/tmp/chom-realhost):
#                  base/          the base image, built once with mmdebstrap and cached;
#                  apt-cache/     .debs downloaded by earlier servers, copied into each new
#                                 one (and harvested back by down.sh), so a suite downloads
#                                 each package once;
#                  net-K/         namespace K's proxy (config, PID, log);
#                  K/, K-J/       this server: rootfs (a fresh copy of base), keys, PIDs, env.
#   prints       the path of its env file (ADDR, KEY, KNOWN_HOSTS, NAME, ROOT), for `source`.
#
# Inside, apt reaches Debian's packages through an HTTP proxy on the host side of the link
# (tinyproxy at 10.253.K.1:8888; only the namespace's servers may use it); nothing else
# outside the link is reachable. The container stops by itself after $CHOM_REALHOST_TTL_MIN
# minutes (default 45) even if nobody calls down.sh. Needs root.
set -euo pipefail
K=${1:-}
J=${2:-2}
if ! [[ $K =~ ^[0-9]+$ ]] || ((K < 1 || K > 200)) || ! [[ $J =~ ^[0-9]+$ ]] || ((J < 2 || J > 254)); then
  echo "usage: $0 K [J] (K 1..200, J 3..254)" >&2
  exit 2
fi
((EUID == 0)) || { echo "realhost: needs root (network namespaces, systemd-nspawn)" >&2; exit 2; }
STATE=${CHOM_REALHOST_STATE:-/var/tmp/chom-realhost}
TTL=${CHOM_REALHOST_TTL_MIN:-45}
if ((J == 2)); then ID=$K; else ID=$K-$J; fi
RUN=$STATE/$ID
NET=$STATE/net-$K
NETNS=chomrh-$K
HOST_IF=chomrh$K
GW=10.253.$K.1
ADDR=10.253.$K.$J
MACHINE=chom-rh$ID
say() { echo "realhost[$ID]: $*" >&2; }

if [[ -e $RUN/nspawn.pid ]]; then
  say "already up ($RUN); tests/realhost/down.sh ${ID/-/ } first"
  exit 1
fi

missing=()
for tool in systemd-nspawn:systemd-container mmdebstrap:mmdebstrap tinyproxy:tinyproxy ssh-keygen:openssh-client; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The base image, once; a lock so that servers started together build it once.
mkdir -p "$STATE/apt-cache"
exec 9>"$STATE/base.lock"
flock 9
if [[ ! -f $STATE/base/.chom-complete ]]; then
  say "building the Debian 12 base image (once)"
  rm -rf "$STATE/base"
  mmdebstrap --quiet --variant=important \
    --include=systemd,systemd-sysv,dbus,openssh-server,sudo,ca-certificates,curl,iproute2 \
    bookworm "$STATE/base" >&2
  # No timers that race the tests for the dpkg lock.
  rm -f "$STATE"/base/etc/systemd/system/timers.target.wants/apt-daily*.timer
  touch "$STATE/base/.chom-complete"
fi
flock -u 9
exec 9>&-

rm -rf "$RUN"
mkdir -p "$RUN"
ROOT=$RUN/rootfs
cp -a "$STATE/base" "$ROOT"
cp -a "$STATE/apt-cache/." "$ROOT/var/cache/apt/archives/" 2>/dev/null || true
ssh-keygen -q -t ed25519 -N '' -C "chom-realhost-$ID" -f "$RUN/id_ed25519"
install -d -m 700 "$ROOT/root/.ssh"
install -m 600 "$RUN/id_ed25519.pub" "$ROOT/root/.ssh/authorized_keys"
echo "$MACHINE" > "$ROOT/etc/hostname"
printf 'Acquire::http::Proxy "http://%s:8888";\n' "$GW" > "$ROOT/etc/apt/apt.conf.d/01chom-proxy"
printf 'http_proxy=http://%s:8888\nhttps_proxy=http://%s:8888\nno_proxy=localhost,127.0.0.1,::1\n' "$GW" "$GW" >> "$ROOT/etc/environment"
# Keep downloaded .debs so down.sh can harvest them for the next server.
echo 'APT::Keep-Downloaded-Packages "true";' > "$ROOT/etc/apt/apt.conf.d/01chom-keep"
rm -f "$ROOT"/etc/ssh/ssh_host_*
ssh-keygen -q -t ed25519 -N '' -C "$MACHINE" -f "$ROOT/etc/ssh/ssh_host_ed25519_key"
echo "$ADDR $(cut -d' ' -f1,2 "$ROOT/etc/ssh/ssh_host_ed25519_key.pub")" > "$RUN/known_hosts"
# Servers sharing a namespace share its ports: each sshd binds its own address only.
echo "ListenAddress $ADDR" > "$ROOT/etc/ssh/sshd_config.d/chom-listen.conf"

# The namespace, its link and its proxy, made by the first server of K to come up. Under a
# lock shared with down.sh, which removes them when the last server of K goes.
exec 8>"$STATE/net-$K.lock"
flock -w 60 8 || { say "namespace $NETNS: lock held for 60 s"; exit 1; }
if ! ip netns pids "$NETNS" >/dev/null 2>&1; then
  rm -rf "$NET"
  mkdir -p "$NET"
  ip netns add "$NETNS"
  ip link add "$HOST_IF" type veth peer name "${HOST_IF}n"
  ip link set "${HOST_IF}n" netns "$NETNS"
  ip addr add "$GW/24" dev "$HOST_IF"
  ip link set "$HOST_IF" up
  ip -n "$NETNS" link set lo up
  ip -n "$NETNS" link set "${HOST_IF}n" up
  cat > "$NET/tinyproxy.conf" <<CONF
Port 8888
Listen $GW
Allow 10.253.$K.0/24
Timeout 600
MaxClients 32
ConnectPort 443
PidFile "$NET/tinyproxy.pid"
LogFile "$NET/tinyproxy.log"
LogLevel Warning
CONF
  tinyproxy -c "$NET/tinyproxy.conf" 8>&-
fi
# `replace`: an address left by an earlier server at the same J is taken over, not an error.
ip -n "$NETNS" addr replace "$ADDR/24" dev "${HOST_IF}n"
ip -n "$NETNS" route replace default via "$GW"

# The wrapper's PID is the handle down.sh stops; `timeout` is the TTL. Neither it nor
# tinyproxy may keep the lock's descriptor open.
(SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=0 exec timeout "${TTL}m" systemd-nspawn --quiet --boot \
   --directory="$ROOT" --machine="$MACHINE" --register=no --keep-unit \
   --network-namespace-path="/run/netns/$NETNS" \
   </dev/null >"$RUN/console.log" 2>&1 8>&-) &
echo $! > "$RUN/nspawn.pid"
flock -u 8
exec 8>&-

cat > "$RUN/env" <<ENV
NAME=$MACHINE
ADDR=$ADDR
KEY=$RUN/id_ed25519
KNOWN_HOSTS=$RUN/known_hosts
ROOT=$ROOT
ENV
on() {
  ssh -q -i "$RUN/id_ed25519" -o UserKnownHostsFile="$RUN/known_hosts" -o StrictHostKeyChecking=yes \
    -o ConnectTimeout=2 -o BatchMode=yes "root@$ADDR" "$@"
}
for _ in $(seq 1 90); do
  if ! kill -0 "$(cat "$RUN/nspawn.pid")" 2>/dev/null; then
    say "the container exited: $(tail -5 "$RUN/console.log" | tr '\n' ' ')"
    exit 1
  fi
  if on 'systemctl is-system-running --wait >/dev/null 2>&1; true' 2>/dev/null; then
    say "up: root@$ADDR"
    echo "$RUN/env"
    exit 0
  fi
  sleep 1
done
say "no SSH login within 90 s: $(tail -5 "$RUN/console.log" | tr '\n' ' ')"
exit 1
