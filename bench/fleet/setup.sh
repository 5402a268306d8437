#!/usr/bin/env bash
# bench/fleet/setup.sh: installs what the fleet benchmark needs. Run once, as root.
# OpenSSH (client and server), GNU time-free: measure.py does the measuring. The peers
# (ansible-core, pyinfra) and matplotlib go into a virtualenv under $FLEET_STATE, and chom
# is built in release mode.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "$0")/lib.sh"
missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null || missing+=(openssh-client)
python3 -c 'import venv' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null
fi
mkdir -p "$FLEET_STATE"
[ -x "$VENV/bin/python3" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q -r "$FLEET_DIR/requirements.txt"
(cd "$REPO" && cargo build --release -q)
log "ready: $("$VENV/bin/ansible" --version | head -n1), pyinfra $("$VENV/bin/pyinfra" --version 2>&1 | tail -n1)"
