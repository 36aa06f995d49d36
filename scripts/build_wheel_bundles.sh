#!/usr/bin/env bash
# Make the published wheel bundles, one resolver's worth of pinned wheels per supported Python version:
#   OUT/packages_compatibles.zip   temp_packages/compatible/*.whl     wheels every version uses (same file)
#   OUT/packages_python{VER}.zip   temp_packages/python{VER}/*.whl    the rest, plus requirements.txt: every
#                                  wheel of that version pinned (name==version), transitive deps included
# and their lines in OUT/SHA256SUMS.
#
# usage: build_wheel_bundles.sh OUT_DIR --requirements FILE [--versions "3.11 3.12 3.13"]
#                                       [--extra-index-url URL]...      download mode (production)
#        build_wheel_bundles.sh OUT_DIR --wheels-dir DIR [--versions ...]  DIR/{VER}/*.whl already present
# Download mode works for every version from one build machine (scripts/wheel_target.py): environment markers
# (python_version, ...) are evaluated for the TARGET version, in FILE and in every dependency, then
#   pip download --only-binary=:all: --python-version VER --implementation cp --platform <each of PLATFORMS>
# and the downloaded set is checked against the wheels' own Requires-Dist for VER. PLATFORMS lists every tag
# pip accepts on a host with glibc GLIBC (2.35, Ubuntu 22.04: the oldest host the bundles serve): manylinux_2_5
# to manylinux_2_35 and the legacy aliases, since pip matches --platform tags exactly. Versions whose wheels do
# not all exist fail here, which is how 3.14 is left out until every wheel is published. PYTHON (python3) runs
# pip; give it a clean pip configuration (PIP_CONFIG_FILE=/dev/null) if a local index carries other builds.
set -euo pipefail
LOG_FILE="${LOG_FILE:-}"
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

usage() { echo "usage: $0 OUT_DIR (--requirements FILE [--extra-index-url URL]... | --wheels-dir DIR) [--versions LIST]" >&2; exit 2; }
[ $# -ge 1 ] || usage
out=$1
shift
versions="3.11 3.12 3.13" requirements="" wheels_dir="" extra=()
GLIBC="${GLIBC:-2.35}"
PYTHON="${PYTHON:-python3}"
HERE=$(cd "$(dirname "$0")" && pwd)
default_platforms() {  # every manylinux tag a glibc-$GLIBC x86_64 host accepts, newest first
    local m
    for ((m = ${GLIBC#2.}; m >= 5; m--)); do printf 'manylinux_2_%d_x86_64 ' "$m"; done
    echo manylinux2014_x86_64 manylinux2010_x86_64 manylinux1_x86_64 linux_x86_64
}
PLATFORMS="${PLATFORMS:-$(default_platforms)}"
while [ $# -gt 0 ]; do
    case $1 in
        --versions) versions=${2:?}; shift 2 ;;
        --requirements) requirements=${2:?}; shift 2 ;;
        --wheels-dir) wheels_dir=${2:?}; shift 2 ;;
        --extra-index-url) extra+=(--extra-index-url "${2:?}"); shift 2 ;;
        *) usage ;;
    esac
done
[ -n "$requirements" ] || [ -n "$wheels_dir" ] || usage
init_log
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
shopt -s nullglob

read -r -a vers <<<"$versions"
for v in "${vers[@]}"; do
    [[ $v =~ ^3\.[0-9]+$ ]] || die "bad version: $v"
    mkdir -p "$work/src/$v"
    if [ -n "$wheels_dir" ]; then
        [ -d "$wheels_dir/$v" ] || die "no wheels for Python $v in $wheels_dir/$v"
        src_wheels=("$wheels_dir/$v"/*.whl)
        [ "${#src_wheels[@]}" -gt 0 ] || die "no wheels in $wheels_dir/$v"
        cp "${src_wheels[@]}" "$work/src/$v/"
    else
        plat=()
        for p in $PLATFORMS; do plat+=(--platform "$p"); done
        log "downloading wheels for Python $v"
        "$PYTHON" "$HERE/wheel_target.py" resolve "$v" "$requirements" >"$work/req-$v.txt" \
            || die "cannot read $requirements"
        "$PYTHON" "$HERE/wheel_target.py" download "$v" -- --quiet --only-binary=:all: --implementation cp \
            "${plat[@]}" "${extra[@]}" -r "$work/req-$v.txt" -d "$work/src/$v" || die "pip download failed for Python $v"
        "$PYTHON" "$HERE/wheel_target.py" check "$v" "$requirements" "$work/src/$v" >/dev/null \
            || die "the wheels downloaded for Python $v do not meet their own requirements"
    fi
done

# A wheel file present for every version goes to compatible/ (py3-none-any, abi3); the rest is per version.
mkdir -p "$work/zip/compat/temp_packages/compatible"
first=${vers[0]}
for f in "$work/src/$first"/*.whl; do
    w=$(basename "$f") everywhere=1
    for v in "${vers[@]}"; do [ -f "$work/src/$v/$w" ] || everywhere=0; done
    if [ "$everywhere" -eq 1 ]; then
        mv "$f" "$work/zip/compat/temp_packages/compatible/"
        for v in "${vers[@]}"; do rm -f "$work/src/$v/$w"; done
    fi
done

# requirements.txt: name==version of every wheel the version installs (the file name carries both).
pins() { for f in "$@"; do w=$(basename "$f"); n=${w%%-*}; r=${w#*-}; echo "$n==${r%%-*}"; done; }

rm -f "$out"/packages_compatibles.zip "$out"/packages_python*.zip
(cd "$work/zip/compat" && zip -q -r -X "$out/packages_compatibles.zip" temp_packages)
for v in "${vers[@]}"; do
    d="$work/zip/$v/temp_packages/python$v"
    mkdir -p "$d"
    own=("$work/src/$v"/*.whl)
    [ "${#own[@]}" -eq 0 ] || mv "${own[@]}" "$d/"
    pins "$work/zip/compat/temp_packages/compatible"/*.whl "$d"/*.whl | LC_ALL=C sort >"$d/requirements.txt"
    (cd "$work/zip/$v" && zip -q -r -X "$out/packages_python$v.zip" temp_packages)
    log "Python $v: $(wc -l <"$d/requirements.txt") pinned requirements"
done

manifest="$out/SHA256SUMS"
touch "$manifest"
grep -v -E '[ *]packages_(compatibles|python[0-9.]+)\.zip$' "$manifest" >"$work/manifest" || true
(cd "$out" && sha256sum packages_compatibles.zip packages_python*.zip) >>"$work/manifest"
mv -f "$work/manifest" "$manifest"
log "wrote packages_compatibles.zip and ${#vers[@]} per-version bundles to $out"
