#!/bin/sh
# contrib/install.sh BINARY: makes this machine a chom control host, to run `chom daemon`
# under systemd with contrib/chom.service. Run it as root from a checkout of chom:
#
#   cargo build --release --locked && sudo contrib/install.sh target/release/chom
#
# It installs BINARY as /usr/local/bin/chom (replaced atomically, so a running daemon keeps
# its copy until restarted), creates the `chom` system user and group, /etc/chom (root:chom,
# 0750) with an SSH key for the chom user (made once, kept after), the README as
# /usr/local/share/doc/chom/README.md, and the unit as /etc/systemd/system/chom.service,
# then reloads systemd. It neither enables nor starts the service: the fleet checkout and
# the age identity come first. It ends with a checklist of what is still to do.
#
# Idempotent: run it again to upgrade the binary or the unit; nothing the operator made
# (the SSH key, the identity, /srv/fleet) is overwritten.
set -eu

usage() {
    echo "usage: $0 BINARY   (as root; BINARY is a chom build, e.g. target/release/chom)" >&2
    exit 2
}
[ $# -eq 1 ] || usage
case $1 in -h | --help) usage ;; esac
binary=$1
here=$(cd "$(dirname "$0")" && pwd)
unit=$here/chom.service
readme=$here/../README.md

[ "$(id -u)" -eq 0 ] || { echo "install.sh: run it as root" >&2; exit 2; }
if ! [ -f "$binary" ] || ! [ -x "$binary" ]; then echo "install.sh: $binary is not an executable file" >&2; exit 2; fi
[ -f "$unit" ] || { echo "install.sh: $unit is missing (run it from a chom checkout)" >&2; exit 2; }
version=$("$binary" --version 2>/dev/null) || { echo "install.sh: $binary --version failed; is it a chom build for this machine?" >&2; exit 2; }

say() { printf 'install.sh: %s\n' "$*"; }

# The binary: copied beside its target and renamed over it.
install -d -m 0755 /usr/local/bin
install -m 0755 "$binary" /usr/local/bin/.chom.new
mv -f /usr/local/bin/.chom.new /usr/local/bin/chom
say "installed /usr/local/bin/chom ($version)"

# The service's user and group. Its home is the state directory, which systemd makes.
if ! getent group chom >/dev/null; then
    groupadd --system chom
    say "created group chom"
fi
if ! getent passwd chom >/dev/null; then
    useradd --system --gid chom --home-dir /var/lib/chom --no-create-home \
        --shell /usr/sbin/nologin --comment "chom fleet operator" chom
    say "created user chom"
fi

# /etc/chom: the age identity (read by systemd for LoadCredential, root only) and the SSH
# key the daemon logs in with (the chom user's).
install -d -o root -g chom -m 0750 /etc/chom
if [ ! -e /etc/chom/id_ed25519 ]; then
    if command -v ssh-keygen >/dev/null; then
        ssh-keygen -q -t ed25519 -N '' -C "chom@$(hostname)" -f /etc/chom/id_ed25519
        chown chom:chom /etc/chom/id_ed25519 /etc/chom/id_ed25519.pub
        chmod 0600 /etc/chom/id_ed25519
        chmod 0644 /etc/chom/id_ed25519.pub
        say "made the SSH key /etc/chom/id_ed25519"
    else
        say "ssh-keygen not found: no SSH key made (install openssh-client and run this again)"
    fi
fi

# The README, where the unit's Documentation= points.
if [ -f "$readme" ]; then
    install -d -m 0755 /usr/local/share/doc/chom
    install -m 0644 "$readme" /usr/local/share/doc/chom/README.md
fi

# The unit.
install -m 0644 "$unit" /etc/systemd/system/chom.service
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    say "installed /etc/systemd/system/chom.service and reloaded systemd"
    if systemctl is-active --quiet chom; then
        say "chom is running the previous binary: systemctl restart chom"
    fi
else
    say "installed /etc/systemd/system/chom.service (systemd is not running here)"
fi

# What is left, checked rather than assumed.
todo=0
item() { # item OK TEXT: OK is 0 when it is done
    if [ "$1" -eq 0 ]; then
        printf '  done  %s\n' "$2"
    else
        printf '  TODO  %s\n' "$2"
        todo=$((todo + 1))
    fi
}
ok() { if "$@" 2>/dev/null; then echo 0; else echo 1; fi; }
echo
echo "Before \`systemctl enable --now chom\`:"
item "$(ok test -f /srv/fleet/chom.yaml)" \
    "the fleet checkout in /srv/fleet, its chom.yaml holding stateDir: /var/lib/chom and knownHosts: [known_hosts]"
item "$(ok runuser -u chom -- test -w /srv/fleet/inventory.d)" \
    "/srv/fleet/inventory.d writable by chom, for status files and the lock: chown chom:chom /srv/fleet/inventory.d"
item "$(ok test -f /srv/fleet/known_hosts)" \
    "/srv/fleet/known_hosts holding the servers' host keys (chom trust NAME, run in /srv/fleet)"
item "$(ok test -f /etc/chom/age-identity)" \
    "the age identity for secrets.d/ at /etc/chom/age-identity (root, 0600; its public key in secrets.d/.recipients)"
if [ -f /etc/chom/id_ed25519.pub ]; then
    echo "  TODO  each server accepts this key (authorized_keys), and its file says ssh: {identityFile: /etc/chom/id_ed25519}:"
    sed 's/^/          /' /etc/chom/id_ed25519.pub
fi
if [ "$todo" -gt 0 ]; then echo "$todo of the checks above are not done yet."; fi
