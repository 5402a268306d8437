#!/bin/sh
# chom component: php-fpm: PHP FastCGI for the hosting stack (nginx passes *.php to it).
#
# Installs Debian's php<version>-fpm and the listed extensions, writes php.ini settings to
# /etc/php/<version>/fpm/conf.d/99-chom.ini and pool settings to
# /etc/php/<version>/fpm/pool.d/zz-chom.conf (php-fpm merges them into the Debian pool
# [www], which listens on /run/php/php<version>-fpm.sock), tests them with `php-fpm -t`
# (a rejected one is rolled back) and reloads php-fpm only when a file changed.
#
# Version: CHOM_VERSION or config php_version is the PHP branch, e.g. "8.2" (both set:
#   they must agree); empty = the distribution's default branch (php-fpm's dependency).
#   Only branches in the configured apt sources can be installed.
# Config keys (all optional):
#   php_version               see above
#   php_extensions            list, default "cli curl gd intl mbstring mysql opcache xml zip"
#                             (packages php<version>-<name>)
#   php_memory_limit          default 256M
#   php_upload_max_filesize   default 64M (post_max_size follows unless php_post_max_size)
#   php_post_max_size         default = php_upload_max_filesize
#   php_max_execution_time    default 60 (seconds)
#   php_fpm_max_children      default 10 (pm = ondemand)
# Secrets: none.
# Never: deletes /var/lib/php or application files; edits php.ini or www.conf; adds apt
#   sources; runs on systems without apt.
set -eu

COMPONENT=php-fpm
DEFAULT_VERSION= # empty: the distribution's default PHP branch
DEFAULT_EXTENSIONS="cli curl gd intl mbstring mysql opcache xml zip"

# The shared helpers (log, warn, die, ensure_file, ensure_packages, ensure_service, …)
# come from scripts/lib/helpers.sh, which chom sends ahead of this script.

start
require_apt

# php_default_version: the branch the distribution's php-fpm package depends on.
php_default_version() {
    apt-cache depends php-fpm 2>/dev/null |
        sed -n 's/^ *Depends: php\([0-9][0-9]*\.[0-9][0-9]*\)-fpm$/\1/p' | head -n 1
}
# php_installed_version: the branch of the one installed php-fpm, if exactly one is.
php_installed_version() {
    _found=
    for _d in /etc/php/*/fpm; do
        [ -d "$_d" ] || continue
        _v=${_d#/etc/php/}
        _v=${_v%/fpm}
        if pkg_ii "php$_v-fpm"; then
            [ -z "$_found" ] || return 0
            _found=$_v
        fi
    done
    printf '%s\n' "$_found"
}

PHP=${CHOM_CFG_PHP_VERSION:-}
if [ -n "${CHOM_VERSION:-}" ]; then
    if [ -n "$PHP" ] && [ "$PHP" != "$CHOM_VERSION" ]; then
        die "CHOM_VERSION ($CHOM_VERSION) and config php_version ($PHP) disagree"
    fi
    PHP=$CHOM_VERSION
fi
PHP=${PHP:-$DEFAULT_VERSION}
if [ -z "$PHP" ]; then PHP=$(php_default_version); fi
if [ -z "$PHP" ] && [ "$MODE" = apply ]; then
    apt_get update
    PHP=$(php_default_version)
fi
if [ -z "$PHP" ]; then PHP=$(php_installed_version); fi
if [ -z "$PHP" ]; then
    if [ "$MODE" = apply ]; then die "cannot find php-fpm in the apt sources: set config php_version"; fi
    if [ "$MODE" = remove ]; then
        log "no php-fpm to remove"
        finish
    fi
    resource package php-fpm
    drift "install php-fpm (branch not known before the package lists are read)"
    finish
fi
check_value "php_version/CHOM_VERSION" "$PHP" '[0-9]+\.[0-9]+'

SERVICE=php$PHP-fpm
ETC=/etc/php/$PHP/fpm
INI=$ETC/conf.d/99-chom.ini
POOL=$ETC/pool.d/zz-chom.conf
HEADER="; Managed by chom (component php-fpm). Local changes will be overwritten."

if [ "$MODE" = remove ]; then
    stop_service "$SERVICE"
    ensure_absent "$INI"
    ensure_absent "$POOL"
    remove_packages "$SERVICE"
    warn "kept the PHP extension packages, $ETC and /var/lib/php: chom never deletes data directories"
    finish
fi

SIZE_RE='[0-9]+[KMGkmg]?'
MEMORY_LIMIT=${CHOM_CFG_PHP_MEMORY_LIMIT:-256M}
UPLOAD_MAX=${CHOM_CFG_PHP_UPLOAD_MAX_FILESIZE:-64M}
POST_MAX=${CHOM_CFG_PHP_POST_MAX_SIZE:-$UPLOAD_MAX}
MAX_EXECUTION=${CHOM_CFG_PHP_MAX_EXECUTION_TIME:-60}
MAX_CHILDREN=${CHOM_CFG_PHP_FPM_MAX_CHILDREN:-10}
check_value php_memory_limit "$MEMORY_LIMIT" "-1|$SIZE_RE"
check_value php_upload_max_filesize "$UPLOAD_MAX" "$SIZE_RE"
check_value php_post_max_size "$POST_MAX" "$SIZE_RE"
check_value php_max_execution_time "$MAX_EXECUTION" '[0-9]+'
check_value php_fpm_max_children "$MAX_CHILDREN" '[1-9][0-9]*'

PACKAGES=$SERVICE
set -f
for _ext in $(cfg_words "${CHOM_CFG_PHP_EXTENSIONS:-$DEFAULT_EXTENSIONS}"); do
    check_value php_extensions "$_ext" '[a-z0-9][a-z0-9_-]*'
    PACKAGES="$PACKAGES php$PHP-$_ext"
done
set +f
# shellcheck disable=SC2086 # one word per package
ensure_packages $PACKAGES
stop_if_drift

resource file "/run/php/php$PHP-fpm.sock"
resource user www-data
FILE_CHANGED=0
cat >"$WORKDIR/ini" <<EOF
$HEADER
memory_limit = $MEMORY_LIMIT
upload_max_filesize = $UPLOAD_MAX
post_max_size = $POST_MAX
max_execution_time = $MAX_EXECUTION
expose_php = Off
EOF
ensure_file "$WORKDIR/ini" "$INI" 0644 root:root
cat >"$WORKDIR/pool" <<EOF
$HEADER
; Settings for the Debian pool [www] of www.conf: php-fpm merges sections of the same
; name, and this file is read after www.conf.
[www]
pm = ondemand
pm.max_children = $MAX_CHILDREN
pm.process_idle_timeout = 10s
pm.max_requests = 500
EOF
ensure_file "$WORKDIR/pool" "$POOL" 0644 root:root

if [ "$FILE_CHANGED" -eq 1 ] && ! is_check; then
    if ! with_umask022 "php-fpm$PHP" -t --fpm-config "$ETC/php-fpm.conf" >"$WORKDIR/fpm-t" 2>&1; then
        cat "$WORKDIR/fpm-t" >&2
        abort "php-fpm$PHP -t rejected the new configuration; the previous files were restored"
    fi
fi
ensure_service "$SERVICE" reload
finish
