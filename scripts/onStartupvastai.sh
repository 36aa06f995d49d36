#!/usr/bin/env bash
# Vast.ai on-start script: prepare the instance, fetch entrypoint.sh from a pinned release, check its sha256,
# and run it (which runs demucsServe.sh and then the server, in the foreground).
#
# Environment (defaults in brackets; default paths are prefixed with SPARK_ROOT):
#   APP_VERSION        the release tag (required unless ENTRYPOINT_URL is given); never a branch
#   ENTRYPOINT_URL     [https://raw.githubusercontent.com/$APP_REPO/$APP_VERSION/scripts/entrypoint.sh]
#   ENTRYPOINT_SHA256  required: the sha256 of that entrypoint.sh (published with the release)
#   KEEP_SSH           1: keep the SSH server; 0: stop and remove it (the box then only exposes the service port).
#                      Unset: kept when the instance was launched for SSH (Vast.ai's ssh/jupyter launch modes map
#                      port 22, which sets VAST_TCP_PORT_22; or SSH_CONNECTION is set; or root has authorized_keys),
#                      removed otherwise (entrypoint/args launch), so an ssh-type template never locks its operator out
#   LOG_FILE           [/var/log/spark/boot.log]; the whole chain appends to it
#   SUPERVISE          [1] run entrypoint.sh (and so the server) under a loop that starts it again when it exits:
#                      after RESTART_DELAY [5] s, doubled after each quick exit up to RESTART_DELAY_MAX [300] s,
#                      back to RESTART_DELAY once a run lasted RESTART_RESET_S [600] s. MAX_RESTARTS [unlimited].
#                      LOG_FILE is rotated (copy + truncate, LOG_KEEP [3] old copies) past LOG_MAX_BYTES [50 MB],
#                      checked before each start and every LOG_CHECK_S [60] s. SIGTERM/SIGINT stop the server and it.
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
SUPERVISE="${SUPERVISE:-1}"
RESTART_DELAY="${RESTART_DELAY:-5}"
RESTART_DELAY_MAX="${RESTART_DELAY_MAX:-300}"
RESTART_RESET_S="${RESTART_RESET_S:-600}"
MAX_RESTARTS="${MAX_RESTARTS:-}"
LOG_MAX_BYTES="${LOG_MAX_BYTES:-52428800}"
LOG_KEEP="${LOG_KEEP:-3}"
LOG_CHECK_S="${LOG_CHECK_S:-60}"
export SPARK_ROOT LOG_FILE APP_VERSION APP_REPO
export PYTHONUNBUFFERED=1   # the server's log lines arrive as they are written

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
unfilled=$(for n in $(compgen -e); do [[ ${!n} != *REPLACE_WITH* ]] || printf '%s ' "$n"; done)
[ -z "$unfilled" ] || die "unfilled template values: ${unfilled% } still hold REPLACE_WITH_... placeholders: put the release's real values in the template (docs/deploy.md)"
[ -n "$ENTRYPOINT_URL" ] || die "set APP_VERSION (a release tag) or ENTRYPOINT_URL"
[[ $ENTRYPOINT_SHA256 =~ ^[0-9a-f]{64}$ ]] || die "ENTRYPOINT_SHA256 must be the 64-hex sha256 of entrypoint.sh ${APP_VERSION}"

# ---- SSH ----------------------------------------------------------------------------------------------------
ssh_launch() {  # why this instance was launched for SSH access (empty: it was not)
    if [ -n "${VAST_TCP_PORT_22:-}" ]; then echo "port 22 is mapped (VAST_TCP_PORT_22: ssh/jupyter launch mode)"
    elif [ -n "${SSH_CONNECTION:-}" ]; then echo "started from an SSH session"
    elif [ -s "${SPARK_ROOT}/root/.ssh/authorized_keys" ]; then echo "root has SSH authorized_keys"
    fi
}
if [ -z "${KEEP_SSH:-}" ]; then
    why=$(ssh_launch)
    if [ -n "$why" ]; then KEEP_SSH=1; log "KEEP_SSH unset and $why: keeping the SSH server"; else KEEP_SSH=0; fi
fi
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
[ "$SUPERVISE" = 1 ] || exec bash "$ep"

# ---- supervisor: start entrypoint.sh (and so the server) again whenever it exits ----------------------------
rotate_log() {  # copy + truncate: the running server's tee keeps appending to the same (now empty) file
    local i
    [ -n "$LOG_FILE" ] && [ -f "$LOG_FILE" ] || return 0
    [ "$(stat -c %s "$LOG_FILE")" -gt "$LOG_MAX_BYTES" ] || return 0
    for ((i = LOG_KEEP - 1; i >= 1; i--)); do
        if [ -f "$LOG_FILE.$i" ]; then mv -f "$LOG_FILE.$i" "$LOG_FILE.$((i + 1))"; fi
    done
    cp "$LOG_FILE" "$LOG_FILE.1" && : >"$LOG_FILE"
    log "rotated $LOG_FILE (over $LOG_MAX_BYTES bytes; $LOG_KEEP old copies kept)"
}
child="" stopping=0
on_signal() {
    stopping=1
    log "stopping: sending SIGTERM to the server"
    if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null || true; fi
}
trap on_signal TERM INT
delay=$RESTART_DELAY restarts=0
while :; do
    rotate_log
    started=$SECONDS
    bash "$ep" &
    child=$!
    (while sleep "$LOG_CHECK_S"; do rotate_log; done) &
    rotator=$!
    rc=0
    wait "$child" || rc=$?
    while kill -0 "$child" 2>/dev/null; do rc=0; wait "$child" || rc=$?; done  # a signal interrupted wait
    kill "$rotator" 2>/dev/null || true
    wait "$rotator" 2>/dev/null || true
    child=""
    [ "$stopping" = 1 ] && { log "server stopped (exit $rc)"; exit 0; }
    ran=$((SECONDS - started))
    if [ -n "$MAX_RESTARTS" ] && [ "$restarts" -ge "$MAX_RESTARTS" ]; then
        log "the server exited (status $rc after ${ran}s); MAX_RESTARTS=$MAX_RESTARTS restarts used, giving up"
        exit "$rc"
    fi
    [ "$ran" -ge "$RESTART_RESET_S" ] && delay=$RESTART_DELAY
    restarts=$((restarts + 1))
    log "the server exited (status $rc after ${ran}s); restart $restarts in ${delay}s"
    sleep "$delay" &
    wait $! 2>/dev/null || true
    [ "$stopping" = 1 ] && exit 0
    delay=$((delay * 2 > RESTART_DELAY_MAX ? RESTART_DELAY_MAX : delay * 2))
done
