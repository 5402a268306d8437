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
# release_source UPSTREAM_BASE: sets SOURCE, the base URL releases come from: config mirror
# (an internal artifact store laid out like UPSTREAM_BASE below it) or UPSTREAM_BASE.
release_source() {
    SOURCE=${CHOM_CFG_MIRROR:-$1}
    SOURCE=${SOURCE%/}
    check_value mirror "$SOURCE" 'https?://[A-Za-z0-9.:@_-]+(/[A-Za-z0-9._~%/+-]*)?'
}
# resolve_sha256 URL SUMS_URL: sets SHA256, the checksum the download must have, and
# SHA256_FROM, where it came from. config sha256 pins it (nothing is fetched); otherwise the
# checksum file the release publishes is fetched from SUMS_URL: a SHA256SUMS list (the line
# for URL's file name) or a file holding just that file's checksum. An unreachable or
# incomplete checksum file fails the component; nothing is installed without a checksum.
resolve_sha256() {
    if [ -n "${CHOM_CFG_SHA256:-}" ]; then
        SHA256=$CHOM_CFG_SHA256
        SHA256_FROM="config sha256"
    else
        _sums="$WORKDIR/published-sha256"
        download "$2" "$_sums" ||
            die "cannot fetch the published checksum $2: nothing installed (check the network or config mirror, or pin config sha256)"
        _file=$(basename "$1")
        SHA256=$(awk -v f="$_file" '
            NF == 1 && length($1) == 64 { one = $1 }
            NF >= 2 { n = $2; sub(/^\*/, "", n); if (n == f) { print $1; found = 1; exit } }
            END { if (!found && one != "" && NR == 1) print one }' "$_sums")
        [ -n "$SHA256" ] || die "$2 lists no checksum for $_file: nothing installed (pin config sha256 if the release publishes it elsewhere)"
        SHA256_FROM="published $2"
    fi
    SHA256=$(printf '%s' "$SHA256" | tr 'A-F' 'a-f')
    check_value sha256 "$SHA256" '[0-9a-f]{64}'
}
# download URL FILE: fetch URL into FILE. HTTPS only, except from a plain-HTTP config mirror.
download() {
    _proto='=https'
    case $1 in http://*) _proto='=http,https' ;; esac
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL --proto "$_proto" --proto-redir "$_proto" --retry 3 --connect-timeout 30 -o "$2" "$1"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$2" "$1"
    else
        die "neither curl nor wget is installed"
    fi
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
    case $1 in
        http://*) warn "$1 comes over plain HTTP: its checksum is only as trustworthy as that network unless config sha256 pins it" ;;
    esac
    download "$1" "$FETCHED" || die "download failed: $1: nothing installed"
    printf '%s  %s\n' "$2" "$(basename "$FETCHED")" >"$WORKDIR/SHA256SUMS"
    (cd "$WORKDIR" && sha256sum -c SHA256SUMS) >&2 ||
        die "SHA-256 mismatch for $1 (expected $2, from $SHA256_FROM): refusing to install it"
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
# release_installed BASE: BASE/<VERSION> holds a release verified when it was installed (and,
# with config sha256, verified against that value). Sets SHA256 and SHA256_FROM from it and
# reports the artifact, so the status keeps the digest without fetching anything.
release_installed() {
    _mark="$1/$VERSION/.chom-sha256"
    [ -f "$_mark" ] || return 1
    _have=$(sed -n 1p "$_mark")
    if [ -n "${CHOM_CFG_SHA256:-}" ] && [ "$_have" != "$(printf '%s' "$CHOM_CFG_SHA256" | tr 'A-F' 'a-f')" ]; then
        return 1
    fi
    SHA256=$_have
    SHA256_FROM=$(sed -n 2p "$_mark")
    artifact "$URL"
}
# artifact URL: report the verified download to chom (kept in the component's status).
artifact() { printf '::chom:: artifact %s %s %s\n' "$SHA256" "$1" "${SHA256_FROM:-unknown}"; }
# new_stage BASE: STAGE = a private temp dir inside BASE (same filesystem, so the final
# move is a rename; removed on exit).
new_stage() { STAGE=$(mktemp -d "$1/.chom-stage.XXXXXX"); }
# commit_release BASE DIR: DIR (inside STAGE) becomes BASE/<VERSION>, marked with SHA256. An
# existing BASE/<VERSION> without that mark is set aside as BASE/<VERSION>.chom-bak.<timestamp>.
commit_release() {
    printf '%s\n%s\n' "$SHA256" "$SHA256_FROM" >"$2/.chom-sha256"
    chmod 0644 "$2/.chom-sha256"
    chown -R root:root "$2"
    chmod 0755 "$2"
    if [ -e "$1/$VERSION" ] || [ -L "$1/$VERSION" ]; then
        mv "$1/$VERSION" "$1/$VERSION.chom-bak.$STAMP"
        log "set the unverified $1/$VERSION aside as $1/$VERSION.chom-bak.$STAMP"
    fi
    mv "$2" "$1/$VERSION"
    log "installed $1/$VERSION"
    artifact "$URL"
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
