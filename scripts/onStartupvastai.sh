#!/usr/bin/env bash
# Vast.ai on-start script: prepare the instance, fetch entrypoint.sh from a pinned release, check its sha256,
# and run it (which runs demucsServe.sh and then the server, in the foreground).
#
# Environment (defaults in brackets; default paths are prefixed with SPARK_ROOT):
#   APP_VERSION        the release tag (required unless ENTRYPOINT_URL is given); never a branch
#   ENTRYPOINT_URL     [https://raw.githubusercontent.com/$APP_REPO/$APP_VERSION/scripts/entrypoint.sh]
#   ENTRYPOINT_SHA256  required: the sha256 of that entrypoint.sh (published with the release)
#   KEEP_SSH=1         keep the SSH server. By default it is stopped and removed, as the original did: the box
#                      then only exposes the service port (use the provider's console to get in)
#   LOG_FILE           [/var/log/spark/boot.log]; the whole chain appends to it
# Everything else (BASE_URL, MODELS_DIR, HOST, PORT, SPARK_API_TOKEN, ...) passes through to entrypoint.sh.
# Standalone on purpose: it is downloaded alone, so it cannot source scripts/lib.sh.
set -euo pipefail

SPARK_ROOT="${SPARK_ROOT:-}"
LOG_FILE="${LOG_FILE-${SPARK_ROOT}/var/log/spark/boot.log}"
APP_REPO="${APP_REPO:-spark-dubbing/separation-service}"
APP_VERSION="${APP_VERSION:-}"
ENTRYPOINT_URL="${ENTRYPOINT_URL:-${APP_VERSION:+https://raw.githubusercontent.com/$APP_REPO/$APP_VERSION/scripts/entrypoint.sh}}"
ENTRYPOINT_SHA256="${ENTRYPOINT_SHA256:-}"
BOOT_DIR="${BOOT_DIR:-${SPARK_ROOT}/opt/spark/boot}"
KEEP_SSH="${KEEP_SSH:-0}"
export SPARK_ROOT LOG_FILE APP_VERSION APP_REPO

log() {
    local line
    line="$(date -u +%Y-%m-%dT%H:%M:%SZ) [onStartupvastai.sh] $*"
    printf '%s\n' "$line"
    if [ -n "$LOG_FILE" ]; then printf '%s\n' "$line" >>"$LOG_FILE" 2>/dev/null || true; fi
}
die() { log "ERROR: $*"; exit 1; }

if [ -n "$LOG_FILE" ] && ! { mkdir -p "$(dirname "$LOG_FILE")" && touch "$LOG_FILE"; } 2>/dev/null; then
    echo "warning: cannot write $LOG_FILE; logging to stdout only"
    LOG_FILE=""
fi
log "on-start: app ${APP_VERSION:-?}, log in ${LOG_FILE:-stdout only}"

# Check the inputs before changing anything on the machine.
[ -n "$ENTRYPOINT_URL" ] || die "set APP_VERSION (a release tag) or ENTRYPOINT_URL"
[[ $ENTRYPOINT_SHA256 =~ ^[0-9a-f]{64}$ ]] || die "ENTRYPOINT_SHA256 must be the 64-hex sha256 of entrypoint.sh ${APP_VERSION}"

# ---- SSH ----------------------------------------------------------------------------------------------------
if [ "$KEEP_SSH" = 1 ]; then
    log "KEEP_SSH=1: leaving the SSH server alone"
else
    log "stopping and removing the SSH server (set KEEP_SSH=1 to keep it)"
    if command -v service >/dev/null 2>&1; then service ssh stop >/dev/null 2>&1 || true; fi
    if command -v dpkg >/dev/null 2>&1 && dpkg -s openssh-server >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq openssh-server >/dev/null 2>&1 \
            || log "warning: could not remove openssh-server"
    fi
fi

# ---- tools the chain needs (stock images may lack unzip) -----------------------------------------------------
missing=()
for tool in curl unzip sha256sum tar; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing missing tools: ${missing[*]}"
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl unzip coreutils tar ca-certificates \
            || die "cannot install ${missing[*]}"
    else
        die "missing ${missing[*]} and no apt-get as root to install them"
    fi
fi

# ---- entrypoint.sh at the pinned version --------------------------------------------------------------------
mkdir -p "$BOOT_DIR"
ep="$BOOT_DIR/entrypoint.sh"
log "fetching $ENTRYPOINT_URL"
curl -fsSL --retry 5 --retry-delay 2 --connect-timeout 20 -o "$ep.new" "$ENTRYPOINT_URL" \
    || die "cannot download $ENTRYPOINT_URL"
got=$(sha256sum "$ep.new" | cut -d' ' -f1)
if [ "$got" != "$ENTRYPOINT_SHA256" ]; then
    rm -f "$ep.new"
    die "entrypoint.sh from $ENTRYPOINT_URL has sha256 $got, expected ENTRYPOINT_SHA256 $ENTRYPOINT_SHA256: not running it"
fi
mv -f "$ep.new" "$ep"
chmod 0755 "$ep"
log "entrypoint.sh verified; running it"
exec bash "$ep"
