#!/usr/bin/env bash
# Make this machine ready to serve: a supported Python with the pinned wheels in a venv, and the verified model
# pack unpacked where the engine (and demucs) look. It starts from what is already here: wheels installed in
# VENV_DIR (its marker lives in the venv, so an image that holds the venv holds the fact) and a pack in MODELS_DIR
# that still matches its SHA256SUMS (marker and verify cache live with the pack, so a reused volume keeps them)
# need no network at all. BASE_URL is consulted only for what is missing or damaged (or with CHECK_UPDATES=1); when
# it cannot be reached, the error names what is missing.
#
# From BASE_URL it takes (all checked against BASE_URL/SHA256SUMS):
#   packages_compatibles.zip, packages_python{VER}.zip   wheels, installed in one offline resolver run
#   models_part_aa, models_part_ab, ...                  the split model archive (+ a "models.zip" line)
# Environment (defaults in brackets; default paths are prefixed with SPARK_ROOT):
#   BASE_URL            where the artifacts are (needed only when something is missing)
#   MODELS_DIR          [/models-cache] the model pack dir (SPARK_MODELS_DIR of the server)
#   APP_DIR             [/opt/spark/app] the app; APP_DIR/mvsep/models is linked to MODELS_DIR when absent
#   VENV_DIR            [/opt/spark/venv] the venv the wheels go into
#   DOWNLOAD_DIR        [/var/cache/spark/downloads] downloads (created only when something is fetched)
#   TORCH_HOME          [$HOME/.cache/torch] demucs checkpoints are linked into TORCH_HOME/hub/checkpoints
#   PYTHON              an interpreter to use instead of the first supported one on PATH
#   PYTHON_INSTALL      [auto] auto: apt-get install a supported Python when none is found (root only); none
#   MANIFEST_SHA256     pin the manifest itself (optional)
#   CHECK_UPDATES=1     consult the manifest even when nothing is missing: a new release redoes what changed
#   SKIP_WHEELS=1, SKIP_MODELS=1, KEEP_DOWNLOADS=1, FORCE=1 (redo everything), LOG_FILE
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

reject_placeholders
BASE_URL="${BASE_URL:-}"
BASE_URL="${BASE_URL%/}"
MODELS_DIR="${MODELS_DIR:-${SPARK_ROOT}/models-cache}"
APP_DIR="${APP_DIR:-${SPARK_ROOT}/opt/spark/app}"
VENV_DIR="${VENV_DIR:-${SPARK_ROOT}/opt/spark/venv}"
DOWNLOAD_DIR="${DOWNLOAD_DIR:-${SPARK_ROOT}/var/cache/spark/downloads}"
TORCH_HOME="${TORCH_HOME:-${HOME:-/root}/.cache/torch}"
MANIFEST_NAME="${MANIFEST_NAME:-SHA256SUMS}"
PYTHON_INSTALL="${PYTHON_INSTALL:-auto}"
SKIP_WHEELS="${SKIP_WHEELS:-0}" SKIP_MODELS="${SKIP_MODELS:-0}" CHECK_UPDATES="${CHECK_UPDATES:-0}"
KEEP_DOWNLOADS="${KEEP_DOWNLOADS:-0}" FORCE="${FORCE:-0}"
SUPPORTED="3.11 3.12 3.13 3.14"   # fastapi and python-multipart need >= 3.11; 3.14 only with a published bundle
WHEELS_MARK="$VENV_DIR/.spark-wheels"   # lives with the venv: an image that holds the venv holds the fact
MODELS_MARK="$MODELS_DIR/.spark-pack"   # lives with the models, so a reused volume keeps it
RELEASE_MARK="$MODELS_DIR/.spark-release"   # the BASE_URL (without its query) the pack was last checked against
release="${BASE_URL%%[?#]*}"

init_log
manifest="$DOWNLOAD_DIR/$MANIFEST_NAME"

# pack_intact: every file of the installed pack's SHA256SUMS is there and matches (hashing only the files whose
# size, mtime or inode changed since they were last verified); names the bad ones.
pack_intact() {
    local bad
    mapfile -t bad < <(verify_pack "$MODELS_DIR")
    [ "${#bad[@]}" -eq 0 ] && return 0
    log "model files missing or corrupt in $MODELS_DIR: ${bad[*]}"
    return 1
}

remember_release() { [ -z "$release" ] || { printf '%s\n' "$release" >"$RELEASE_MARK"; } 2>/dev/null || true; }

# The other places that look for models: the engine's mvsep/models fallback and demucs' torch hub cache. Both
# are conveniences (the server is given SPARK_MODELS_DIR), so a read-only app dir or home is not an error.
link_models() {
    local f target="$APP_DIR/mvsep/models" hub="$TORCH_HOME/hub/checkpoints"
    if [ -d "$APP_DIR/mvsep" ] && [ ! -e "$target" ] && [ ! -L "$target" ]; then
        ln -s "$MODELS_DIR" "$target" 2>/dev/null && log "linked $target -> $MODELS_DIR"
    fi
    mkdir -p "$hub" 2>/dev/null && [ -w "$hub" ] || return 0
    for f in "$MODELS_DIR"/*.th; do
        [ -e "$f" ] || continue
        ln -sfn "$f" "$hub/$(basename "$f")" 2>/dev/null || true
    done
}

# ---- what is here already: no network needed for any of it --------------------------------------------------
missing=()
if [ "$SKIP_WHEELS" != 1 ] && ! { [ -f "$WHEELS_MARK" ] && "$VENV_DIR/bin/python" -c '' 2>/dev/null; }; then
    missing+=("the wheels (no installed venv in $VENV_DIR)")
fi
if [ "$SKIP_MODELS" != 1 ]; then
    if [ ! -f "$MODELS_MARK" ]; then
        missing+=("the model pack (none installed in $MODELS_DIR)")
    elif ! pack_intact; then
        missing+=("model files of the pack in $MODELS_DIR (missing or corrupt, listed above)")
    fi
fi
# Pointing BASE_URL at another release path (.../v2) asks for it; a new signature on the same path does not.
if [ "$SKIP_MODELS" != 1 ] && [ -n "$release" ] && [ -f "$RELEASE_MARK" ] && [ "$(cat "$RELEASE_MARK")" != "$release" ]; then
    log "BASE_URL names another release than the installed one ($(cat "$RELEASE_MARK")): checking its manifest"
    CHECK_UPDATES=1
fi
if [ "$FORCE" != 1 ] && [ "${#missing[@]}" -eq 0 ] && [ "$CHECK_UPDATES" != 1 ]; then
    [ "$SKIP_MODELS" = 1 ] || link_models
    log "nothing to do: this machine is already ready (wheels in $VENV_DIR, verified pack in $MODELS_DIR; BASE_URL not consulted)"
    exit 0
fi

# ---- the manifest: what is published now --------------------------------------------------------------------
[ "${#missing[@]}" -eq 0 ] || log "to fetch from BASE_URL: $(IFS=';'; echo "${missing[*]}")"
# Refuse at once, before any download, when the places it would write are not writable.
ensure_writable "$DOWNLOAD_DIR" "the download dir (DOWNLOAD_DIR)"
[ "$SKIP_MODELS" = 1 ] || ensure_writable "$MODELS_DIR" "the model pack dir (MODELS_DIR)"
[ "$SKIP_WHEELS" = 1 ] || [ -f "$WHEELS_MARK" ] || ensure_writable "$(dirname "$VENV_DIR")" "the venv's parent dir (VENV_DIR)"
if [ -z "$BASE_URL" ] || ! fetch "$BASE_URL/$MANIFEST_NAME" "$manifest.new"; then
    if [ "${#missing[@]}" -eq 0 ] && [ "$FORCE" != 1 ]; then
        log "warning: cannot get $MANIFEST_NAME from BASE_URL='${BASE_URL}' to check for updates; keeping the installed state: already ready"
        exit 0
    fi
    die "cannot get $MANIFEST_NAME from BASE_URL='${BASE_URL}', and this machine lacks $(IFS=';'; echo "${missing[*]:-what FORCE=1 redoes}"). Make the artifact host reachable (or set BASE_URL), or start with those in place (a volume at MODELS_DIR holding a verified pack; the image's wheels)"
fi
if [ -n "${MANIFEST_SHA256:-}" ] && [ "$(sha256_of "$manifest.new")" != "$MANIFEST_SHA256" ]; then
    die "$MANIFEST_NAME does not match MANIFEST_SHA256"
fi
mv -f "$manifest.new" "$manifest"

# ---- Python -------------------------------------------------------------------------------------------------
py_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
usable() {  # usable VER: supported and its wheel bundle is published
    case " $SUPPORTED " in *" $1 "*) ;; *) return 1 ;; esac
    [ -n "$(manifest_hash "$manifest" "packages_python$1.zip")" ]
}
find_python() {  # sets PY and PYVER to the first usable interpreter
    local c v
    for c in ${PYTHON:-} python3 python3.13 python3.12 python3.11 python3.14; do
        command -v "$c" >/dev/null 2>&1 || continue
        v=$(py_version "$c") || continue
        if usable "$v"; then PY=$(command -v "$c"); PYVER=$v; return 0; fi
        log "skipping $c: Python $v is not supported (or has no published bundle)"
    done
    return 1
}
install_python() {  # apt-get a supported Python that has a bundle
    local v
    [ "$PYTHON_INSTALL" = auto ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] || return 1
    apt-get update -qq || return 1
    for v in 3.12 3.11 3.13; do
        usable "$v" || continue
        log "installing Python $v with apt-get"
        if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$v" "python$v-venv"; then return 0; fi
    done
    return 1
}
PY="" PYVER=""
if ! find_python; then
    log "no supported Python found (3.11 to 3.13)"
    if ! { install_python && find_python; }; then die "no supported Python: install 3.11 to 3.13 or set PYTHON"; fi
fi
log "using Python $PYVER ($PY)"

# ---- wheels -------------------------------------------------------------------------------------------------
# Debian and Ubuntu ship venv/ensurepip in a separate package: install it when root, else say which one.
ensure_venv_module() {
    "$PY" -c 'import ensurepip, venv' 2>/dev/null && return 0
    log "$PY has no venv/ensurepip module"
    if [ "$PYTHON_INSTALL" = auto ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing python$PYVER-venv with apt-get"
        apt-get update -qq || log "warning: apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$PYVER-venv" \
            || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv \
            || die "cannot install python$PYVER-venv (or python3-venv) with apt-get"
        "$PY" -c 'import ensurepip, venv' 2>/dev/null && return 0
        die "python$PYVER-venv is installed but $PY still has no venv/ensurepip module"
    fi
    die "$PY has no venv module: install python$PYVER-venv (as root: apt-get install python$PYVER-venv) or set PYTHON"
}
install_wheels() {
    local compat="packages_compatibles.zip" own="packages_python$PYVER.zip" key w
    key="python=$PYVER $(manifest_hash "$manifest" "$compat") $(manifest_hash "$manifest" "$own")"
    if [ "$FORCE" != 1 ] && [ -f "$WHEELS_MARK" ] && [ "$(cat "$WHEELS_MARK")" = "$key" ] \
        && "$VENV_DIR/bin/python" -c '' 2>/dev/null; then
        log "wheels already installed in $VENV_DIR"
        return 0
    fi
    get_verified "$BASE_URL" "$manifest" "$DOWNLOAD_DIR" "$compat"
    get_verified "$BASE_URL" "$manifest" "$DOWNLOAD_DIR" "$own"
    w="$DOWNLOAD_DIR/wheels"
    rm -rf "$w"
    mkdir -p "$w"
    unzip -q -o "$DOWNLOAD_DIR/$compat" -d "$w"
    unzip -q -o "$DOWNLOAD_DIR/$own" -d "$w"
    local req="$w/temp_packages/python$PYVER/requirements.txt"
    [ -f "$req" ] || die "$own has no temp_packages/python$PYVER/requirements.txt: refusing an unpinned install"
    if [ -x "$VENV_DIR/bin/python" ] && [ "$(py_version "$VENV_DIR/bin/python")" != "$PYVER" ]; then
        log "recreating $VENV_DIR for Python $PYVER"
        rm -rf "$VENV_DIR"
    fi
    if [ ! -x "$VENV_DIR/bin/python" ]; then
        ensure_venv_module
        "$PY" -m venv "$VENV_DIR" || die "cannot create a venv with $PY (on Debian/Ubuntu: apt-get install python$PYVER-venv)"
    fi
    log "installing $(grep -c . "$req") pinned packages offline into $VENV_DIR"
    # One resolver run over the local files only: a missing wheel fails here instead of reaching an index.
    "$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check --no-index \
        --find-links "$w/temp_packages/compatible" --find-links "$w/temp_packages/python$PYVER" -r "$req" \
        || die "pip could not install the pinned wheels of $own"
    printf '%s\n' "$key" >"$WHEELS_MARK"
    [ "$KEEP_DOWNLOADS" = 1 ] || rm -rf "$w" "${DOWNLOAD_DIR:?}/$compat" "${DOWNLOAD_DIR:?}/$own"
}

# ---- models -------------------------------------------------------------------------------------------------
install_models() {
    local parts key name staging f
    mapfile -t parts < <(manifest_names "$manifest" '^models_part_[a-z]+$')
    [ "${#parts[@]}" -gt 0 ] || die "the manifest lists no models_part_* files"
    key=$(for name in "${parts[@]}" models.zip; do echo "$name $(manifest_hash "$manifest" "$name")"; done)
    if [ "$FORCE" != 1 ] && [ -f "$MODELS_MARK" ] && [ "$(cat "$MODELS_MARK")" = "$key" ]; then
        if pack_intact; then
            log "model pack already installed in $MODELS_DIR (every file verified)"
            remember_release
            link_models
            return 0
        fi
        log "fetching the model pack again to replace them"
        rm -f "$MODELS_MARK"
    fi
    for name in "${parts[@]}"; do get_verified "$BASE_URL" "$manifest" "$DOWNLOAD_DIR" "$name"; done
    log "reassembling the model archive from ${#parts[@]} parts"
    (cd "$DOWNLOAD_DIR" && cat "${parts[@]}") >"$DOWNLOAD_DIR/models.zip"
    local want
    want=$(manifest_hash "$manifest" models.zip)
    if [ -n "$want" ] && [ "$(sha256_of "$DOWNLOAD_DIR/models.zip")" != "$want" ]; then
        rm -f "$DOWNLOAD_DIR/models.zip"
        die "models.zip reassembled from ${parts[*]} does not match the manifest"
    fi

    # Unpack next to the target (same filesystem), verify, then rename file by file: a model file under its
    # final name is always complete, and the marker is written only once all are in place. MODELS_DIR may be a
    # mount point, so it is filled rather than replaced.
    mkdir -p "$MODELS_DIR"
    staging=$(mktemp -d "$MODELS_DIR/.staging.XXXXXX")
    unzip -q "$DOWNLOAD_DIR/models.zip" -d "$staging" || { rm -rf "$staging"; die "cannot unpack models.zip"; }
    if [ -f "$staging/SHA256SUMS" ]; then
        (cd "$staging" && sha256sum --quiet -c SHA256SUMS) || { rm -rf "$staging"; die "the unpacked model files do not match the pack's SHA256SUMS"; }
    fi
    rm -f "$MODELS_MARK" "$MODELS_DIR/$PACK_CACHE_NAME"
    for f in "$staging"/*; do
        [ "$(basename "$f")" = SHA256SUMS ] || mv -f "$f" "$MODELS_DIR/"
    done
    [ ! -f "$staging/SHA256SUMS" ] || mv -f "$staging/SHA256SUMS" "$MODELS_DIR/SHA256SUMS"
    rmdir "$staging"
    remember_verified "$MODELS_DIR"   # just checked in staging: the next start need not hash them again
    printf '%s\n' "$key" >"$MODELS_MARK"
    remember_release
    log "model pack installed in $MODELS_DIR ($(find "$MODELS_DIR" -maxdepth 1 -type f ! -name '.*' | wc -l) files)"
    if [ "$KEEP_DOWNLOADS" != 1 ]; then
        (cd "$DOWNLOAD_DIR" && rm -f models.zip "${parts[@]}")
    else
        rm -f "$DOWNLOAD_DIR/models.zip"
    fi
    link_models
}

# Called as plain commands (not in an `if`) so that `set -e` still applies inside them.
if [ "$SKIP_WHEELS" = 1 ]; then log "SKIP_WHEELS=1: not installing wheels"; else install_wheels; fi
if [ "$SKIP_MODELS" = 1 ]; then log "SKIP_MODELS=1: not installing models"; else install_models; fi
if [ "$SKIP_WHEELS" = 1 ] || [ "$SKIP_MODELS" = 1 ]; then log "done (partial: SKIP_WHEELS=$SKIP_WHEELS SKIP_MODELS=$SKIP_MODELS)"; exit 0; fi
log "ready: wheels in $VENV_DIR, models in $MODELS_DIR"
