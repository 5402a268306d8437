# chom's shared helpers for component scripts. chom sends every scripts/lib/*.sh (in name
# order) ahead of each component script, inside the same stdin, so the helpers live here
# once. Only definitions and variable settings: nothing here acts on the server.
# shellcheck shell=sh
# ---- chom helpers ----
# Functions share globals (POSIX sh has no `local`): helper variables start with `_`.
# One brace group so that a single directive covers the helpers a script does not call:
# shellcheck disable=SC2317
{
umask 077
MODE=${CHOM_MODE:-}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
DRIFT=0        # check mode: something would change
CHANGED=0      # `::chom:: changed` printed already
FILE_CHANGED=0 # a managed file changed (or would) since the caller last reset it
WORKDIR=
STAGE= # optional second temp dir (mktemp -d) beside an install target, removed on exit
NL='
'

log() { printf '%s: %s\n' "$COMPONENT" "$*" >&2; }
warn() { printf '::chom:: warning %s: %s\n' "$COMPONENT" "$*"; }
die() {
    printf '%s: error: %s\n' "$COMPONENT" "$*" >&2
    exit 1
}
resource() { printf '::chom:: resource %s %s\n' "$1" "$2"; }
changed() {
    if [ "$CHANGED" -eq 0 ]; then echo '::chom:: changed'; fi
    CHANGED=1
}
is_check() { [ "$MODE" = check ]; }
drift() {
    log "would $*"
    DRIFT=1
}
# finish: exit 100 in check mode when something would change, else 0. Backups of replaced
# secret files are kept only until the run succeeds.
finish() {
    if is_check && [ "$DRIFT" -eq 1 ]; then exit 100; fi
    if [ -s "$WORKDIR/secret-backups" ]; then
        while IFS= read -r _old; do rm -f "$_old"; done <"$WORKDIR/secret-backups"
    fi
    exit 0
}
# stop_if_drift: in check mode, stop after a step that the later steps depend on.
stop_if_drift() {
    if is_check && [ "$DRIFT" -eq 1 ]; then
        log "later steps depend on the missing pieces: not checked"
        finish
    fi
}
cleanup() {
    case $WORKDIR in
        */chom-"$COMPONENT".*) rm -rf "$WORKDIR" ;;
    esac
    case $STAGE in
        */.chom-stage.*) rm -rf "$STAGE" ;;
    esac
}
start() {
    case $MODE in
        apply | check | remove) ;;
        *) die "CHOM_MODE must be apply, check or remove (got '$MODE')" ;;
    esac
    [ "$(id -u)" -eq 0 ] || die "must run as root (chom uses sudo -n for other users)"
    WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/chom-$COMPONENT.XXXXXX")
    : >"$WORKDIR/journal"
    trap cleanup EXIT
    trap 'exit 129' HUP
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# check_value LABEL VALUE ERE: die unless VALUE is one line matching the extended regex.
check_value() {
    case $2 in
        '' | *"$NL"*) die "config $1 must be one non-empty line" ;;
    esac
    printf '%s\n' "$2" | grep -Eqx -- "$3" || die "config $1 has an unsupported value '$2' (expected $3)"
}
# check_secret NAME VALUE: secrets must be one line (never printed).
check_secret() {
    case $2 in
        *"$NL"*) die "secret $1 must not contain a line break" ;;
    esac
}
# cfg_words VALUE: a JSON array of strings or a comma/space separated list, as words.
cfg_words() { printf '%s' "$1" | tr -d '[]"' | tr ',' ' '; }
# yaml_quote VALUE: a double-quoted YAML scalar.
yaml_quote() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }

# with_umask022 CMD...: run a tool that may create files others must read (logs, packages).
with_umask022() { (umask 022 && "$@"); }

# ---- packages (apt/dpkg) ----
require_apt() {
    if command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then
        return 0
    fi
    warn "unsupported system: this script supports Debian and Ubuntu (apt-get and dpkg) only"
    die "apt-get/dpkg-query not found: supported systems are Debian and Ubuntu"
}
# pkg_ii PKG: installed according to dpkg.
pkg_ii() {
    case $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null || true) in
        ii*) return 0 ;;
    esac
    return 1
}
# pkg_provided NAME: an installed package Provides NAME (apt installs a provider for a virtual name).
pkg_provided() {
    dpkg-query -W -f='${db:Status-Abbrev}|${Provides}\n' 2>/dev/null | awk -F'|' -v p="$1" '
        $1 ~ /^ii/ { n = split($2, a, /, */); for (i = 1; i <= n; i++) { sub(/ .*/, "", a[i]); if (a[i] == p) found = 1 } }
        END { exit !found }'
}
# pkg_ok PKG [VERSION]: installed (at exactly VERSION when given).
pkg_ok() {
    if pkg_ii "$1"; then
        if [ -z "${2:-}" ] || [ "$(dpkg-query -W -f='${Version}' "$1")" = "$2" ]; then return 0; fi
        return 1
    fi
    if [ -z "${2:-}" ] && pkg_provided "$1"; then return 0; fi
    return 1
}
apt_get() {
    (
        umask 022
        DEBIAN_FRONTEND=noninteractive
        export DEBIAN_FRONTEND
        exec apt-get -q -y -o DPkg::Lock::Timeout=300 \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
    ) >&2
}
# ensure_packages PKG[=VERSION]...: install what is missing (refreshing the lists once if needed).
ensure_packages() {
    _missing=
    for _spec in "$@"; do
        _name=${_spec%%=*}
        _ver=
        case $_spec in *=*) _ver=${_spec#*=} ;; esac
        check_value "package name" "$_name" '[a-z0-9][a-z0-9.+-]*'
        resource package "$_name"
        if ! pkg_ok "$_name" "$_ver"; then _missing="$_missing $_spec"; fi
    done
    [ -n "$_missing" ] || return 0
    if is_check; then
        drift "install packages:$_missing"
        return 0
    fi
    log "installing packages:$_missing"
    set -f
    # shellcheck disable=SC2086 # one word per package; globbing is off
    if ! apt_get install --no-install-recommends --allow-downgrades $_missing; then
        log "install failed: refreshing the package lists and retrying once"
        apt_get update
        # shellcheck disable=SC2086
        apt_get install --no-install-recommends --allow-downgrades $_missing
    fi
    set +f
    changed
}
# remove_packages PKG...: remove (not purge) those installed; config files and data stay.
remove_packages() {
    _present=
    for _p in "$@"; do
        if pkg_ii "$_p"; then _present="$_present $_p"; fi
    done
    [ -n "$_present" ] || return 0
    log "removing packages (not purging: config files and data stay):$_present"
    set -f
    # shellcheck disable=SC2086
    apt_get remove $_present
    set +f
    changed
}

# ---- files and directories ----
# ensure_meta PATH MODE OWNER:GROUP ("-" leaves mode and owner as they are).
ensure_meta() {
    [ "$2" != - ] || return 0
    _cur=$(stat -L -c '%a %U:%G' "$1")
    _want="${2#0} $3"
    [ "$_cur" != "$_want" ] || return 0
    FILE_CHANGED=1
    if is_check; then
        drift "set mode/owner of $1 to $_want (now $_cur)"
        return 0
    fi
    chown "$3" "$1"
    chmod "$2" "$1"
    log "set mode/owner of $1 to $_want"
    changed
}
# ensure_dir PATH MODE OWNER:GROUP ("-" = create as 0755 root:root if missing, else leave alone).
ensure_dir() {
    resource directory "$1"
    if [ -d "$1" ]; then
        ensure_meta "$@"
        return 0
    fi
    [ ! -e "$1" ] || die "$1 exists and is not a directory"
    if is_check; then
        drift "create directory $1"
        return 0
    fi
    (umask 022 && mkdir -p "$1")
    if [ "$2" != - ]; then
        chown "$3" "$1"
        chmod "$2" "$1"
    fi
    log "created directory $1"
    changed
}
# journal DEST BACKUP: remember how to undo a change ("-" = DEST did not exist).
journal() { printf '%s\t%s\n' "$1" "$2" >>"$WORKDIR/journal"; }
# ensure_file SRC DEST MODE OWNER:GROUP [secret]: install the rendered SRC as DEST when
# content or metadata differ; the previous DEST is kept as DEST.chom-bak.<timestamp> (for a
# secret file only until the run succeeds). MODE "-" keeps the current mode and owner of
# DEST (0644 root:root for a new file).
ensure_file() {
    resource file "$2"
    _mode=$3
    _owner=$4
    if [ "$_mode" = - ]; then
        if [ -f "$2" ]; then
            _mode=$(stat -c '%a' "$2")
            _owner=$(stat -c '%U:%G' "$2")
        else
            _mode=0644
            _owner=root:root
        fi
    fi
    if [ -f "$2" ] && [ ! -L "$2" ] && cmp -s "$1" "$2"; then
        ensure_meta "$2" "$_mode" "$_owner"
        return 0
    fi
    FILE_CHANGED=1
    if is_check; then
        drift "update $2"
        show_diff "$1" "$2" "${5:-}"
        return 0
    fi
    _dir=$(dirname "$2")
    [ -d "$_dir" ] || die "directory $_dir is missing"
    _new="$_dir/.$(basename "$2").chom-new.$$"
    cp "$1" "$_new"
    chown "$_owner" "$_new"
    chmod "$_mode" "$_new"
    if [ -e "$2" ] || [ -L "$2" ]; then
        cp -pP "$2" "$2.chom-bak.$STAMP"
        journal "$2" "$2.chom-bak.$STAMP"
        if [ "${5:-}" = secret ]; then
            printf '%s\n' "$2.chom-bak.$STAMP" >>"$WORKDIR/secret-backups"
        else
            log "kept the previous $2 as $2.chom-bak.$STAMP"
        fi
    else
        journal "$2" -
    fi
    mv -f "$_new" "$2"
    log "updated $2"
    changed
}
# show_diff SRC DEST [secret]: in check mode, tell chom what ensure_file would change in
# DEST (`chom plan --diff`): `::chom:: diff-begin DEST`, a unified diff of DEST against the
# rendered SRC (at most 200 lines), `::chom:: diff-end`. A secret file is only named
# (`::chom:: diff-secret DEST`): its contents never reach the output. Without diff(1),
# nothing is shown.
show_diff() {
    if [ "${3:-}" = secret ]; then
        printf '::chom:: diff-secret %s\n' "$2"
        return 0
    fi
    command -v diff >/dev/null 2>&1 || return 0
    _old=$2
    if [ ! -f "$2" ] || [ -L "$2" ]; then _old=/dev/null; fi
    printf '::chom:: diff-begin %s\n--- %s\n+++ %s (as chom would write it)\n' "$2" "$2" "$2"
    # The first two lines are diff's own headers, with temp-file names and times.
    diff -u "$_old" "$1" | sed '1,2d' | head -n 200 || true
    printf '::chom:: diff-end\n'
}
# ensure_absent PATH: take a file this script manages out of service (kept as PATH.chom-bak.<timestamp>).
ensure_absent() {
    [ -e "$1" ] || [ -L "$1" ] || return 0
    [ ! -d "$1" ] || [ -L "$1" ] || die "$1 is a directory: not removing it"
    FILE_CHANGED=1
    if is_check; then
        drift "remove $1"
        return 0
    fi
    mv -f "$1" "$1.chom-bak.$STAMP"
    journal "$1" "$1.chom-bak.$STAMP"
    log "removed $1 (kept as $1.chom-bak.$STAMP)"
    changed
}
# delete_file PATH: delete a file this script wrote, keeping no copy (secrets; remove mode).
delete_file() {
    [ -e "$1" ] || [ -L "$1" ] || return 0
    FILE_CHANGED=1
    if is_check; then
        drift "delete $1"
        return 0
    fi
    rm -f "$1"
    log "deleted $1"
    changed
}
# rollback: undo the file changes of this run, newest first.
rollback() {
    [ -s "$WORKDIR/journal" ] || return 0
    log "restoring the files changed in this run"
    _tab=$(printf '\t')
    sed '1!G;h;$!d' "$WORKDIR/journal" >"$WORKDIR/journal.rev"
    while IFS=$_tab read -r _dst _bak; do
        if [ "$_bak" = - ]; then rm -f "$_dst"; else mv -f "$_bak" "$_dst"; fi
    done <"$WORKDIR/journal.rev"
    : >"$WORKDIR/journal"
    if have_systemd; then systemctl daemon-reload || true; fi
}
# abort MESSAGE: restore this run's files, then fail.
abort() {
    rollback
    die "$*"
}

# ---- services (systemd) ----
have_systemd() { command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; }
daemon_reload() {
    if ! is_check && have_systemd; then systemctl daemon-reload; fi
}
# service_failed NAME: restore this run's files, restart NAME with them, fail.
service_failed() {
    rollback
    systemctl restart "$1" >/dev/null 2>&1 || true
    die "service $1 failed with the new configuration; the previous files were restored (see: journalctl -u $1)"
}
# ensure_service NAME ON_CHANGE: enabled and running. When FILE_CHANGED=1, a running service
# gets ON_CHANGE (reload | restart | none). A failure restores the previous files.
ensure_service() {
    resource service "$1"
    if ! have_systemd; then
        warn "systemd is not running: service $1 is not managed here"
        return 0
    fi
    if ! systemctl is-enabled --quiet "$1" 2>/dev/null; then
        if is_check; then
            drift "enable service $1"
        else
            systemctl enable --quiet "$1" || abort "could not enable service $1"
            log "enabled $1"
            changed
        fi
    fi
    if systemctl is-active --quiet "$1"; then
        if is_check || [ "$FILE_CHANGED" -eq 0 ] || [ "$2" = none ]; then return 0; fi
        if [ "$2" = reload ]; then _verb=reload-or-restart; else _verb=restart; fi
        log "$_verb $1 (configuration changed)"
        systemctl "$_verb" "$1" || service_failed "$1"
    else
        if is_check; then
            drift "start service $1"
            return 0
        fi
        log "starting $1"
        systemctl start "$1" || service_failed "$1"
    fi
    sleep 2
    systemctl is-active --quiet "$1" || service_failed "$1"
    changed
}
# stop_service NAME: stopped and disabled (remove mode).
stop_service() {
    if ! have_systemd; then
        warn "systemd is not running: service $1 was not stopped"
        return 0
    fi
    if systemctl is-active --quiet "$1"; then
        systemctl stop "$1"
        log "stopped $1"
        changed
    fi
    if [ "$(systemctl is-enabled "$1" 2>/dev/null || true)" = enabled ]; then
        systemctl disable --quiet "$1"
        log "disabled $1"
        changed
    fi
}
}
# ---- end of chom helpers ----
