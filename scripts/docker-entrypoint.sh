#!/usr/bin/env bash
# The image's entry point. Cloud hosts mount volumes owned by root (RunPod: /workspace, /runpod-volume), where
# the service user cannot create its dirs. Started as root, this creates the dirs the service writes, gives them
# to the service user (uid SPARK_UID, 10001), and only then runs entrypoint.sh as that user, without
# capabilities. Started as another user (docker run --user, Kubernetes runAsUser), it runs entrypoint.sh as is.
#
# A dir it cannot create (a read-only root filesystem) is left to entrypoint.sh, which checks every dir the service
# writes as the service user and stops with what to do before anything is downloaded.
#
# Environment: the paths entrypoint.sh and demucsServe.sh use (MODELS_DIR, SPARK_DATA_DIR, TOKEN_FILE, LOG_FILE,
# DOWNLOAD_DIR, TORCH_HOME; defaults under SPARK_ROOT as there), SPARK_UID [10001],
# SPARK_GID [SPARK_UID], SPARK_HOME [/home/spark], SPARK_ENTRYPOINT [this dir's entrypoint.sh].
set -euo pipefail

SPARK_ROOT="${SPARK_ROOT:-}"
SPARK_UID="${SPARK_UID:-10001}"
SPARK_GID="${SPARK_GID:-$SPARK_UID}"
SPARK_HOME="${SPARK_HOME:-/home/spark}"
SPARK_ENTRYPOINT="${SPARK_ENTRYPOINT:-$(dirname "$0")/entrypoint.sh}"

if [ "$(id -u)" != 0 ]; then exec "$SPARK_ENTRYPOINT" "$@"; fi

log() { printf '%s [docker-entrypoint.sh] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }

data="${SPARK_DATA_DIR:-${SPARK_ROOT}/workspace/spark}"
log_file="${LOG_FILE-${SPARK_ROOT}/var/log/spark/boot.log}"
dirs=(
    "${MODELS_DIR:-${SPARK_ROOT}/models-cache}"
    "$data"
    "$(dirname "${TOKEN_FILE:-$data/api_token}")"
    "${DOWNLOAD_DIR:-${SPARK_ROOT}/var/cache/spark/downloads}"
    "${TORCH_HOME:-$SPARK_HOME/.cache/torch}"
)
[ -z "$log_file" ] || dirs+=("$(dirname "$log_file")")

for d in "${dirs[@]}"; do
    mkdir -p "$d" 2>/dev/null || continue
    # Only the service's own dirs change owner, never the mount point above them. A dir another uid owns is
    # given over whole, once (a volume first used by a root process); an owned one is left alone (fast restarts;
    # the image's own dirs are 10001:0 and group-writable, for any uid started with --user).
    if [ "$(stat -c %u "$d")" != "$SPARK_UID" ]; then
        log "giving $d to uid $SPARK_UID"
        chown -R "$SPARK_UID:$SPARK_GID" "$d" || log "warning: could not give all of $d to uid $SPARK_UID"
    fi
done
if [ -n "$log_file" ] && [ -e "$log_file" ] && [ "$(stat -c %u "$log_file")" != "$SPARK_UID" ]; then chown "$SPARK_UID:$SPARK_GID" "$log_file"; fi

export HOME="$SPARK_HOME" USER=spark
exec setpriv --reuid="$SPARK_UID" --regid="$SPARK_GID" --clear-groups --inh-caps=-all --bounding-set=-all \
    -- "$SPARK_ENTRYPOINT" "$@"
