# chom's shared helpers for components installed from upstream release archives (loki,
# grafana): architecture names, pinned checksums, verified downloads. Sent ahead of every
# component script with the rest of scripts/lib/; only definitions.
# shellcheck shell=sh
# ---- chom helpers for upstream release archives (loki, grafana) ----
# One brace group so that a single directive covers the helpers a script does not call:
# shellcheck disable=SC2317
{
# upstream_arch: the release name of this CPU (amd64, arm64).
upstream_arch() {
    case $(uname -m) in
        x86_64 | amd64) echo amd64 ;;
        aarch64 | arm64) echo arm64 ;;
        *) die "unsupported CPU architecture $(uname -m): the pinned releases exist for amd64 and arm64 here" ;;
    esac
}
# resolve_sha256 PINNED_SUM URL: sets SHA256 to the checksum the download must have.
# The pinned version uses the checksum pinned in this script (or config sha256, which must
# agree with it); any other version requires config sha256.
resolve_sha256() {
    _cfg=${CHOM_CFG_SHA256:-}
    if [ "$VERSION" != "$PINNED_VERSION" ]; then
        [ -n "$_cfg" ] || die "version $VERSION is not the pinned $PINNED_VERSION: set config sha256 to the SHA-256 of $2 (published with the release)"
        SHA256=$_cfg
    elif [ -n "$_cfg" ]; then
        if [ "$1" != CHECKSUM_UNVERIFIED ] && [ "$_cfg" != "$1" ]; then
            die "config sha256 differs from the checksum pinned in this script for $VERSION: refusing"
        fi
        SHA256=$_cfg
    else
        [ "$1" != CHECKSUM_UNVERIFIED ] || die "no verified checksum for $2: copy its SHA-256 from the release page into this script (the CHECKSUM_UNVERIFIED value) or set config sha256; refusing to install unverified software"
        SHA256=$1
    fi
    check_value sha256 "$SHA256" '[0-9a-f]{64}'
}
# need_tools TOOL...: commands the install needs; on apt systems the packages are installed.
need_tools() {
    _lack=
    for _t in "$@"; do
        command -v "$_t" >/dev/null 2>&1 || _lack="$_lack $_t"
    done
    [ -n "$_lack" ] || return 0
    if command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1; then
        _pkgs=ca-certificates
        for _t in $_lack; do
            case $_t in
                sha256sum) _pkgs="$_pkgs coreutils" ;;
                *) _pkgs="$_pkgs $_t" ;;
            esac
        done
        # shellcheck disable=SC2086 # package names are fixed words
        ensure_packages $_pkgs
        return 0
    fi
    warn "unsupported system: missing$_lack (supported: Debian/Ubuntu, or any systemd Linux that has these tools)"
    die "missing tools:$_lack"
}
# fetch_verified URL SHA256: download into WORKDIR, verify with sha256sum -c, set FETCHED.
fetch_verified() {
    FETCHED="$WORKDIR/$(basename "$1")"
    log "downloading $1"
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL --proto '=https' --proto-redir '=https' --retry 3 --connect-timeout 30 \
            -o "$FETCHED" "$1" || die "download failed: $1"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$FETCHED" "$1" || die "download failed: $1"
    else
        die "neither curl nor wget is installed"
    fi
    printf '%s  %s\n' "$2" "$(basename "$FETCHED")" >"$WORKDIR/SHA256SUMS"
    (cd "$WORKDIR" && sha256sum -c SHA256SUMS) >&2 ||
        die "SHA-256 mismatch for $1: refusing to install it"
}
# ensure_system_user NAME HOME: a locked system user and group of the same name.
ensure_system_user() {
    resource user "$1"
    resource group "$1"
    if id -u "$1" >/dev/null 2>&1; then return 0; fi
    if is_check; then
        drift "create system user $1"
        return 0
    fi
    _nologin=/bin/false
    for _s in /usr/sbin/nologin /sbin/nologin; do
        if [ -x "$_s" ]; then
            _nologin=$_s
            break
        fi
    done
    if command -v useradd >/dev/null 2>&1; then
        grep -q "^$1:" /etc/group || groupadd --system "$1"
        useradd --system --gid "$1" --home-dir "$2" --no-create-home --shell "$_nologin" "$1"
    elif command -v adduser >/dev/null 2>&1 && command -v addgroup >/dev/null 2>&1; then
        grep -q "^$1:" /etc/group || addgroup -S "$1"
        adduser -S -D -H -h "$2" -s "$_nologin" -G "$1" "$1"
    else
        die "cannot create user $1: neither useradd nor adduser is available"
    fi
    log "created system user $1"
    changed
}
# release_installed BASE: BASE/<VERSION> holds the release that was verified against SHA256.
release_installed() {
    [ -f "$1/$VERSION/.chom-sha256" ] && [ "$(cat "$1/$VERSION/.chom-sha256")" = "$SHA256" ]
}
# new_stage BASE: STAGE = a private temp dir inside BASE (same filesystem, so the final
# move is a rename; removed on exit).
new_stage() { STAGE=$(mktemp -d "$1/.chom-stage.XXXXXX"); }
# commit_release BASE DIR: DIR (inside STAGE) becomes BASE/<VERSION>, marked with SHA256. An
# existing BASE/<VERSION> without that mark is set aside as BASE/<VERSION>.chom-bak.<timestamp>.
commit_release() {
    printf '%s\n' "$SHA256" >"$2/.chom-sha256"
    chmod 0644 "$2/.chom-sha256"
    chown -R root:root "$2"
    chmod 0755 "$2"
    if [ -e "$1/$VERSION" ] || [ -L "$1/$VERSION" ]; then
        mv "$1/$VERSION" "$1/$VERSION.chom-bak.$STAMP"
        log "set the unverified $1/$VERSION aside as $1/$VERSION.chom-bak.$STAMP"
    fi
    mv "$2" "$1/$VERSION"
    log "installed $1/$VERSION"
    changed
}
# ensure_symlink TARGET LINK
ensure_symlink() {
    resource file "$2"
    if [ -L "$2" ] && [ "$(readlink "$2")" = "$1" ]; then return 0; fi
    [ ! -e "$2" ] || [ -L "$2" ] || die "$2 exists and is not a symlink: not replacing it"
    FILE_CHANGED=1
    if is_check; then
        drift "point $2 at $1"
        return 0
    fi
    if [ -L "$2" ]; then
        cp -P "$2" "$2.chom-bak.$STAMP"
        journal "$2" "$2.chom-bak.$STAMP"
    else
        journal "$2" -
    fi
    ln -sfn "$1" "$2"
    log "pointed $2 at $1"
    changed
}
}
# ---- end of upstream helpers ----
