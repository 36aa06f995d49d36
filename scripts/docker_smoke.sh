#!/usr/bin/env bash
# Build the image and serve with it, for real, in a Docker engine on this machine, with no registry: a stand-in
# for the CUDA base (debootstrap of Debian from the mirror apt uses, tagged with the base's exact name), the
# unmodified `docker build`, then a container with root-owned bind mounts at /workspace and /runpod-volume (as
# RunPod mounts them): /ready, POST /separate of the example clip, HEALTHCHECK healthy, docker stop. Prints each
# step's result, the build time and the image size. Too heavy for CI (docs/deploy.md, "Checking the image").
#
# usage: docker_smoke.sh [--requirements FILE] [--keep]     (as root)
#   --requirements  the wheel bundle's requirements [requirements-gpu.txt]; requirements.txt is the CPU build
#   --keep          leave the container and the image
# Environment: SMOKE_DIR [/var/tmp/spark-smoke] work dir (the stand-in rootfs and the bundles are reused from
# there); STANDIN_SUITE [trixie] and STANDIN_PYTHON [3.13] the Debian release and its python3;
# DOCKER_DATA_ROOT [/var/lib/docker] for a dockerd started here.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
SMOKE_DIR="${SMOKE_DIR:-/var/tmp/spark-smoke}"
STANDIN_SUITE="${STANDIN_SUITE:-trixie}"
STANDIN_PYTHON="${STANDIN_PYTHON:-3.13}"
requirements=requirements-gpu.txt keep=0
while [ $# -gt 0 ]; do
    case $1 in
        --requirements) requirements=${2:?}; shift 2 ;;
        --keep) keep=1; shift ;;
        *) echo "usage: $0 [--requirements FILE] [--keep]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "run as root (docker, debootstrap, root-owned mounts)" >&2; exit 2; }
requirements=$(cd "$REPO" && realpath "$requirements")
base=$(sed -n 's/^FROM //p' "$REPO/Dockerfile")
cuda=$(sed -E 's/^nvidia\/cuda:([0-9]+\.[0-9]+).*/\1/' <<<"$base")
image=spark-separation:smoke container=spark-smoke token=smoke-token
mkdir -p "$SMOKE_DIR"
results=()

say() { printf '%s [docker_smoke] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
# step NAME FUNCTION: run it, record PASS/FAIL and its seconds; a failed step ends the run. (Called after ||,
# a function runs without errexit: each step returns non-zero on its own failures.)
step() {
    local t0=$SECONDS rc=0
    say "== $1"
    "$2" || rc=$?
    results+=("$(printf '%-4s %5ss  %s' "$([ "$rc" -eq 0 ] && echo PASS || echo FAIL)" $((SECONDS - t0)) "$1")")
    if [ "$rc" -ne 0 ]; then summary; exit 1; fi
}
summary() {
    echo "---- docker_smoke summary ($(basename "$requirements"), base $base) ----"
    printf '%s\n' "${results[@]}"
    [ -z "${figures:-}" ] || printf '%s\n' "$figures"
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
srv_pid=""
cleanup() {
    [ -z "$srv_pid" ] || kill "$srv_pid" 2>/dev/null || true
    if [ "$keep" = 0 ]; then docker rm -f "$container" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

engine() {
    local missing="" p
    for p in docker.io debootstrap curl unzip; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    if [ -n "$missing" ]; then
        # shellcheck disable=SC2086
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    fi
    if ! docker info >/dev/null 2>&1; then
        say "starting dockerd (vfs, no iptables, no bridge)"
        dockerd --storage-driver=vfs --iptables=false --bridge=none --data-root "${DOCKER_DATA_ROOT:-/var/lib/docker}" \
            >"$SMOKE_DIR/dockerd.log" 2>&1 &
        for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    fi
    docker info --format 'engine {{.ServerVersion}}, storage {{.Driver}}'
}

standin() {
    local rootfs="$SMOKE_DIR/rootfs-$STANDIN_SUITE" mirror
    mirror=$(grep -h -o -E 'https?://deb\.debian\.org/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/* \
        2>/dev/null | head -1)
    mirror=${mirror:-http://deb.debian.org/debian}
    if [ ! -x "$rootfs/usr/bin/apt-get" ]; then
        rm -rf "$rootfs"
        debootstrap --variant=minbase --include=ca-certificates "$STANDIN_SUITE" "$rootfs" "$mirror" \
            >"$SMOKE_DIR/debootstrap.log" || return 1
    fi
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
    # the CUDA image's own environment; its entrypoint is replaced by the Dockerfile's anyway
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV NVIDIA_VISIBLE_DEVICES=all' --change 'ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility' \
        --change "ENV NVIDIA_REQUIRE_CUDA=cuda>=$cuda" --change 'CMD ["/bin/bash"]' - "$base" >/dev/null || return 1
    say "stand-in $base: Debian $STANDIN_SUITE from $mirror, python3 $STANDIN_PYTHON"
}

artifacts() {
    local pub pack="$SMOKE_DIR/toypack"
    pub="$SMOKE_DIR/publish-$(basename "$requirements" .txt)"
    mkdir -p "$pub"
    if [ ! -f "$pub/packages_python$STANDIN_PYTHON.zip" ]; then
        local t0=$SECONDS
        env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null LOG_FILE="" "$REPO/scripts/build_wheel_bundles.sh" "$pub" \
            --requirements "$requirements" --versions "$STANDIN_PYTHON" || return 1
        figures+="wheel bundles for Python $STANDIN_PYTHON built in $((SECONDS - t0)) s"$'\n'
    fi
    rm -rf "$pack"
    "$REPO/.venv/bin/python" -m testkit.toypack "$pack" >/dev/null || return 1
    LOG_FILE="" "$REPO/scripts/build_model_pack.sh" "$pack" "$pub" --parts 3 >/dev/null || return 1
    figures+="bundles: $(cd "$pub" && du -h --apparent-size packages_compatibles.zip "packages_python$STANDIN_PYTHON.zip" | tr '\t\n' ' ')"$'\n'
    rm -f "$SMOKE_DIR/port"
    python3 "$REPO/tests/bats/helpers/http_server.py" "$pub" --port-file "$SMOKE_DIR/port" \
        --log "$SMOKE_DIR/requests.log" >/dev/null 2>&1 &
    srv_pid=$!
    for _ in $(seq 100); do [ -s "$SMOKE_DIR/port" ] && break; sleep 0.1; done
    BASE_URL="http://127.0.0.1:$(cat "$SMOKE_DIR/port")"
    curl -fsS -o /dev/null "$BASE_URL/SHA256SUMS"
}

build() {
    local t0=$SECONDS size
    docker rm -f "$container" >/dev/null 2>&1 || true
    DOCKER_BUILDKIT=0 docker build --network host --build-arg "BASE_URL=$BASE_URL" --build-arg APP_VERSION=smoke \
        -t "$image" "$REPO" >"$SMOKE_DIR/build.log" 2>&1 || { tail -30 "$SMOKE_DIR/build.log"; return 1; }
    size=$(docker image inspect -f '{{.Size}}' "$image")
    figures+="docker build: $((SECONDS - t0)) s, image $image $((size / 1000000)) MB (log $SMOKE_DIR/build.log)"$'\n'
}

start() {
    local mounts="$SMOKE_DIR/mounts"
    rm -rf "$mounts"
    mkdir -p "$mounts/workspace" "$mounts/runpod-volume"
    chown root:root "$mounts/workspace" "$mounts/runpod-volume"
    chmod 755 "$mounts/workspace" "$mounts/runpod-volume"
    port=$(free_port)
    docker run -d --name "$container" --network host \
        -v "$mounts/workspace:/workspace" -v "$mounts/runpod-volume:/runpod-volume" \
        -e HOST=127.0.0.1 -e "PORT=$port" -e "BASE_URL=$BASE_URL" -e APP_VERSION=smoke -e "SPARK_API_TOKEN=$token" \
        -e MODELS_DIR=/runpod-volume/models-cache -e SPARK_DATA_DIR=/workspace/spark "$image" >/dev/null || return 1
    local t0=$SECONDS
    until curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$port/ready" >/dev/null 2>&1; do
        if [ "$(docker inspect -f '{{.State.Running}}' "$container")" != true ] || [ $((SECONDS - t0)) -gt 900 ]; then
            docker logs --tail 40 "$container"
            return 1
        fi
        sleep 2
    done
    curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$port/ready"; echo
    figures+="container start to /ready: $((SECONDS - t0)) s"$'\n'
}

volumes() {
    local owners server
    owners=$(docker exec "$container" stat -c '%u %n' /runpod-volume/models-cache /workspace/spark 2>&1 || true)
    echo "$owners"
    server=$(docker top "$container" -eo pid,uid,args | awk '/server\.py/ { print $2, $3, $4 }')
    echo "server process (uid, command): $server"
    [ "$(grep -c '^10001 ' <<<"$owners")" -eq 2 ] && [ "$(stat -c %u "$SMOKE_DIR/mounts/workspace")" = 0 ] \
        && [ "$(stat -c %u "$SMOKE_DIR/mounts/runpod-volume")" = 0 ] && [[ $server == "10001 "* ]] \
        && [ -n "$(ls "$SMOKE_DIR/mounts/runpod-volume/models-cache"/*.onnx 2>/dev/null)" ]
}

separate() {
    local out="$SMOKE_DIR/stems" t0=$SECONDS
    rm -rf "$out"
    mkdir -p "$out"
    curl -fsS -H "Authorization: Bearer $token" -F "file=@$REPO/examples/dialog_over_music.flac" \
        -D "$out/headers.txt" "http://127.0.0.1:$port/separate" -o "$out/stems.zip" || return 1
    figures+="POST /separate of examples/dialog_over_music.flac: $((SECONDS - t0)) s"$'\n'
    unzip -q "$out/stems.zip" -d "$out" || return 1
    "$REPO/.venv/bin/python" - "$REPO/examples/dialog_over_music.flac" "$out" <<'PY'
import sys
from pathlib import Path
import soundfile as sf
src = sf.info(sys.argv[1])
stems = sorted(Path(sys.argv[2]).glob("*.wav"))
print("stems:", [p.name for p in stems])
assert len(stems) == 2, stems
for p in stems:
    i = sf.info(p)
    assert (i.samplerate, i.frames) == (src.samplerate, src.frames), (p, i)
PY
}

healthy() {
    local t0=$SECONDS status
    while :; do
        status=$(docker inspect -f '{{.State.Health.Status}}' "$container")
        [ "$status" = healthy ] && break
        [ "$status" != unhealthy ] && [ $((SECONDS - t0)) -lt 120 ] || { echo "health: $status"; return 1; }
        sleep 2
    done
    echo "health: healthy after $((SECONDS - t0)) s more"
}

stop() {
    local t0=$SECONDS code
    docker stop -t 30 "$container" >/dev/null
    code=$(docker inspect -f '{{.State.ExitCode}}' "$container")
    docker logs "$container" >"$SMOKE_DIR/container.log" 2>&1
    echo "exit code $code after $((SECONDS - t0)) s; last log lines:"
    tail -4 "$SMOKE_DIR/container.log"
    [ "$code" = 0 ] && grep -q "Application shutdown complete" "$SMOKE_DIR/container.log"
}

figures=""
step "docker engine" engine
step "stand-in base image $base" standin
step "wheel bundles + toy model pack served on 127.0.0.1" artifacts
step "docker build (unmodified Dockerfile)" build
step "container with root-owned /workspace and /runpod-volume answers /ready" start
step "service dirs owned by uid 10001, mount points still root's, server runs as 10001" volumes
step "POST /separate of the example clip" separate
step "HEALTHCHECK healthy" healthy
step "docker stop: clean exit" stop
summary
