#!/usr/bin/env bash
# Start the service: get the app at the pinned version (or use the copy baked into the image), make the machine
# ready with demucsServe.sh, make sure there is an API token, then run the server in the foreground.
#
# Environment (defaults in brackets; default paths are prefixed with SPARK_ROOT):
#   APP_VERSION     the release tag to run; the baked copy is used when its VERSION file says the same (or when
#                   APP_VERSION is empty)
#   APP_URL         [https://github.com/$APP_REPO/archive/refs/tags/$APP_VERSION.tar.gz] the app tarball
#   APP_SHA256      its sha256 (checked when set; set it in production)
#   APP_DIR         [/opt/spark/app]   VENV_DIR [/opt/spark/venv]   MODELS_DIR [/models-cache]
#   SPARK_DATA_DIR  [/workspace/spark] jobs, results, and the generated token file
#   SPARK_API_TOKEN the bearer token; when empty one is generated (or the earlier one reused) and written to
#                   TOKEN_FILE [$SPARK_DATA_DIR/api_token], mode 0600
#   SPARK_PYTHON    [$VENV_DIR/bin/python] the interpreter that runs server.py
#   HOST [0.0.0.0]  PORT [8185]  LOG_FILE [/var/log/spark/boot.log]  SKIP_SETUP=1 (do not run demucsServe.sh)
#   SERVE_MODE      [http] http: server.py; runpod: the RunPod serverless worker (deploy/runpod/handler.py)
# This script runs before the app (and scripts/lib.sh) is on disk, so it carries its own small log helpers.
set -euo pipefail

SPARK_ROOT="${SPARK_ROOT:-}"
LOG_FILE="${LOG_FILE-${SPARK_ROOT}/var/log/spark/boot.log}"
APP_REPO="${APP_REPO:-spark-dubbing/separation-service}"
APP_VERSION="${APP_VERSION:-}"
APP_URL="${APP_URL:-${APP_VERSION:+https://github.com/$APP_REPO/archive/refs/tags/$APP_VERSION.tar.gz}}"
APP_DIR="${APP_DIR:-${SPARK_ROOT}/opt/spark/app}"
VENV_DIR="${VENV_DIR:-${SPARK_ROOT}/opt/spark/venv}"
MODELS_DIR="${MODELS_DIR:-${SPARK_ROOT}/models-cache}"
SPARK_DATA_DIR="${SPARK_DATA_DIR:-${SPARK_ROOT}/workspace/spark}"
TOKEN_FILE="${TOKEN_FILE:-$SPARK_DATA_DIR/api_token}"
DOWNLOAD_DIR="${DOWNLOAD_DIR:-${SPARK_ROOT}/var/cache/spark/downloads}"
HOST="${HOST:-0.0.0.0}"
PORT="${PORT:-8185}"
export SPARK_ROOT LOG_FILE APP_DIR VENV_DIR MODELS_DIR DOWNLOAD_DIR
export PYTHONUNBUFFERED=1   # the server's log lines arrive as they are written
# ONNX Runtime's telemetry writes a device id and an event store under $XDG_CACHE_HOME or $HOME/.cache (and /tmp)
# at import: noise under a read-only root, and nothing a separation server should send.
export ORT_DISABLE_TELEMETRY="${ORT_DISABLE_TELEMETRY:-1}"

log() {
    local line
    line="$(date -u +%Y-%m-%dT%H:%M:%SZ) [entrypoint.sh] $*"
    printf '%s\n' "$line"
    if [ -n "$LOG_FILE" ]; then printf '%s\n' "$line" >>"$LOG_FILE" 2>/dev/null || true; fi
}
die() { log "ERROR: $*"; exit 1; }

if [ -n "$LOG_FILE" ] && ! { mkdir -p "$(dirname "$LOG_FILE")" && touch "$LOG_FILE"; } 2>/dev/null; then
    echo "warning: cannot write $LOG_FILE; logging to stdout only"
    LOG_FILE=""
fi

unfilled=$(for n in $(compgen -e); do [[ ${!n} != *REPLACE_WITH* ]] || printf '%s ' "$n"; done)
[ -z "$unfilled" ] || die "unfilled template values: ${unfilled% } still hold REPLACE_WITH_... placeholders: put the release's real values in the template (docs/deploy.md)"

# ---- the app ------------------------------------------------------------------------------------------------
baked=""
[ -f "$APP_DIR/VERSION" ] && baked=$(cat "$APP_DIR/VERSION")
if [ -f "$APP_DIR/server.py" ] && { [ -z "$APP_VERSION" ] || [ "$baked" = "$APP_VERSION" ]; }; then
    log "using the app in $APP_DIR (version ${baked:-unknown})"
else
    [ -n "$APP_URL" ] || die "no app in $APP_DIR and no APP_VERSION/APP_URL to fetch it from"
    mkdir -p "$DOWNLOAD_DIR" "$(dirname "$APP_DIR")"
    tarball="$DOWNLOAD_DIR/app-${APP_VERSION:-latest}.tar.gz"
    log "fetching app ${APP_VERSION} from $APP_URL"
    curl -fsSL --retry 5 --retry-delay 2 --connect-timeout 20 -o "$tarball" "$APP_URL" || die "cannot download $APP_URL"
    if [ -n "${APP_SHA256:-}" ]; then
        got=$(sha256sum "$tarball" | cut -d' ' -f1)
        [ "$got" = "$APP_SHA256" ] || die "app tarball $APP_URL: sha256 $got, expected APP_SHA256 $APP_SHA256"
    else
        log "warning: APP_SHA256 is not set; the tarball is not verified"
    fi
    new=$(mktemp -d "$APP_DIR.new.XXXXXX")
    tar -xzf "$tarball" -C "$new" --strip-components=1 || die "cannot unpack $tarball"
    [ -f "$new/server.py" ] || die "$APP_URL holds no server.py"
    printf '%s\n' "${APP_VERSION:-unknown}" >"$new/VERSION"
    # Swap in the new tree with renames; the old one is removed only after.
    if [ -e "$APP_DIR" ]; then mv "$APP_DIR" "$APP_DIR.old.$$"; fi
    mv "$new" "$APP_DIR"
    rm -rf "$APP_DIR.old.$$" "$tarball"
    log "app ${APP_VERSION} unpacked into $APP_DIR"
fi

# From here the app's own helpers are on disk (lib.sh: ensure_writable). The dirs the server writes are checked
# before demucsServe.sh may download anything: a volume the service user cannot write stops the start at once.
# shellcheck source=scripts/lib.sh
. "$APP_DIR/scripts/lib.sh"
ensure_writable "$SPARK_DATA_DIR" "the data dir (SPARK_DATA_DIR)"
[ -n "${SPARK_API_TOKEN:-}" ] || [ -s "$TOKEN_FILE" ] || ensure_writable "$(dirname "$TOKEN_FILE")" "the token file's dir (TOKEN_FILE)"

# ---- models and wheels --------------------------------------------------------------------------------------
if [ "${SKIP_SETUP:-0}" = 1 ]; then
    log "SKIP_SETUP=1: not running demucsServe.sh"
else
    bash "$APP_DIR/scripts/demucsServe.sh" || die "demucsServe.sh failed (its ERROR line above says why)"
fi

# ---- API token ----------------------------------------------------------------------------------------------
if [ -z "${SPARK_API_TOKEN:-}" ]; then
    if [ -s "$TOKEN_FILE" ]; then
        log "SPARK_API_TOKEN not set: using the token stored in $TOKEN_FILE"
    else
        (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TOKEN_FILE")
        log "SPARK_API_TOKEN not set: generated a new API token, stored in $TOKEN_FILE (mode 0600; read it there, it is never logged); callers send 'Authorization: Bearer <it>'"
        # In a container, a token file outside a volume dies with the container: the next one invents another.
        if [ -f /.dockerenv ] && [ "$(findmnt -n -o TARGET -T "$TOKEN_FILE" 2>/dev/null)" = / ]; then
            log "warning: $TOKEN_FILE is in the container's own filesystem, not on a volume: a new container generates a different token. Mount a volume at $(dirname "$SPARK_DATA_DIR") or set SPARK_API_TOKEN"
        fi
    fi
    SPARK_API_TOKEN=$(cat "$TOKEN_FILE")
fi

# ---- the server ---------------------------------------------------------------------------------------------
PY="${SPARK_PYTHON:-$VENV_DIR/bin/python}"
case "${SERVE_MODE:-http}" in
    http) target=server.py ;;
    runpod) target=deploy/runpod/handler.py ;;
    *) die "SERVE_MODE must be http or runpod, not '${SERVE_MODE}'" ;;
esac
[ -x "$PY" ] || command -v "$PY" >/dev/null 2>&1 || die "no Python to run the server: $PY"
export HOST PORT SPARK_API_TOKEN SPARK_DATA_DIR SPARK_MODELS_DIR="$MODELS_DIR"
# the app's packages (mvsep, service) for a target below the app root (the RunPod worker); the boot chain's venv
# holds the pinned wheels, the app itself is this dir (setup.sh installs it with `pip install -e .` instead)
export PYTHONPATH="$APP_DIR${PYTHONPATH:+:$PYTHONPATH}"
log "starting $target (HOST:PORT $HOST:$PORT, models in $MODELS_DIR, data in $SPARK_DATA_DIR)"
cd "$APP_DIR"
if [ -n "$LOG_FILE" ]; then
    exec "$PY" "$target" > >(tee -a "$LOG_FILE") 2>&1
fi
exec "$PY" "$target"
