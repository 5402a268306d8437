#!/usr/bin/env bash
# Times `chom validate` over a generated 10,000-server inventory, and check-jsonschema
# (from PyPI) over the same files with chom's generated schema, in one run.
#
# Usage: bench/validate.sh [N] [RUNS]      (defaults: 10000 files, 3 runs; medians reported)
# Needs: a release build (cargo build --release), python3, and check-jsonschema
#        (pip install check-jsonschema) for the comparison; without it only chom is timed.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
RUNS=${2:-3}
CHOM=${CHOM:-target/release/chom}
[ -x "$CHOM" ] || { echo "build first: cargo build --release" >&2; exit 2; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
python3 bench/gen_inventory.py "$N" "$WORK"
echo "generated $N servers in $WORK ($(du -sh "$WORK/inventory.d" | cut -f1))" >&2

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# Wall seconds and peak RSS (KiB) of one command, via GNU time's format.
measure() {
    /usr/bin/time -f '%e %M' -o "$WORK/time" "$@" >"$WORK/out" 2>&1 || true
    cat "$WORK/time"
}

chom_wall=(); chom_rss=()
for _ in $(seq "$RUNS"); do
    read -r wall rss < <(measure "$CHOM" validate --inventory "$WORK/inventory.d")
    chom_wall+=("$wall"); chom_rss+=("$rss")
done
tail -1 "$WORK/out" >&2
cw=$(printf '%s\n' "${chom_wall[@]}" | median)
cr=$(printf '%s\n' "${chom_rss[@]}" | median)
echo "| chom validate | $N | $cw s | $((cr / 1024)) MiB | file:line:col for every finding |"

if command -v check-jsonschema >/dev/null; then
    mapfile -t files < <(find "$WORK/inventory.d" -name 'srv-*.yaml' | sort)
    cj_wall=(); cj_rss=()
    for _ in $(seq "$RUNS"); do
        read -r wall rss < <(measure check-jsonschema --schemafile schemas/server.schema.json "${files[@]}")
        cj_wall+=("$wall"); cj_rss+=("$rss")
    done
    tail -1 "$WORK/out" >&2
    jw=$(printf '%s\n' "${cj_wall[@]}" | median)
    jr=$(printf '%s\n' "${cj_rss[@]}" | median)
    echo "| check-jsonschema | $N | $jw s | $((jr / 1024)) MiB | schema only, no line numbers |"
    awk -v a="$jw" -v b="$cw" 'BEGIN { if (b > 0) printf "speed-up: %.0fx\n", a / b }'
fi
