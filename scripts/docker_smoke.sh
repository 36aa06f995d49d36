#!/usr/bin/env bash
# Build the image and run it, for real, in a Docker engine on this machine, with no registry: a stand-in for the
# CUDA base (debootstrap of Debian from the mirror apt uses, tagged with the base's exact name), the unmodified
# `docker build`, a rebuild after a one-line code change (which layers changed, how big, how long), then the
# operator's cases: root-owned volumes (as RunPod mounts them), POST /separate, HEALTHCHECK, SIGINT; a fresh
# container with the pack on its volume and the artifact host gone; --read-only; any --user uid; a mode-700 root
# volume; SPARK_DEVICE=cuda without a GPU; an unfilled template value. Prints PASS/FAIL per step and the figures.
# Too heavy for CI (docs/deploy.md, "Checking the image").
#
# usage: docker_smoke.sh [--requirements FILE] [--keep]     (as root)
#   --requirements  the wheel bundle's requirements [requirements-gpu.txt]; requirements.txt is the CPU build
#   --keep          leave the last containers and the images
# Environment: SMOKE_DIR [/var/tmp/spark-smoke] work dir (the stand-in rootfs and the bundles are reused from
# there); STANDIN_SUITE [trixie] and STANDIN_PYTHON [3.13] the Debian release and its python3;
# DOCKER_DATA_ROOT [/var/lib/docker], DOCKER_STORAGE [overlay2, else vfs] for a dockerd started here.
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
image=spark-separation:smoke token=smoke-token
mounts="$SMOKE_DIR/mounts"
mkdir -p "$SMOKE_DIR"
results=() containers=()

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
    [ -z "${figures:-}" ] || printf '%s' "$figures"
}
figure() { figures+="$*"$'\n'; say "$*"; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
srv_pid=""
cleanup() {
    [ -z "$srv_pid" ] || kill "$srv_pid" 2>/dev/null || true
    if [ "$keep" = 0 ]; then docker rm -f "${containers[@]}" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

# ---- helpers: one container per case, on the host network and a free port -----------------------------------
# run_c NAME DOCKER_RUN_ARGS...: start a fresh container of $image (any earlier one of that name is removed)
run_c() {
    local name=$1
    shift
    docker rm -f "$name" >/dev/null 2>&1 || true
    containers+=("$name")
    port=$(free_port)
    docker run -d --name "$name" --network host -e HOST=127.0.0.1 -e "PORT=$port" "$@" "$image" >/dev/null
}
running() { [ "$(docker inspect -f '{{.State.Running}}' "$1")" = true ]; }
# wait_ready NAME TOKEN: until /ready is 200 (sets took, in seconds with a decimal); fails when the container ends
wait_ready() {
    local t0 now
    t0=$(date +%s%N)
    until curl -fsS -o /dev/null -H "Authorization: Bearer $2" "http://127.0.0.1:$port/ready" 2>/dev/null; do
        now=$(date +%s%N)
        if ! running "$1" || [ $(((now - t0) / 1000000000)) -gt 900 ]; then docker logs --tail 30 "$1"; return 1; fi
        sleep 0.2
    done
    now=$(date +%s%N)
    took=$(awk -v n=$((now - t0)) 'BEGIN { printf "%.1f", n / 1e9 }')
}
# refused NAME TEXT: the container stops by itself within 60 s with a non-zero status and TEXT in its log
refused() {
    for _ in $(seq 120); do running "$1" || break; sleep 0.5; done
    docker logs "$1" >"$SMOKE_DIR/$1.log" 2>&1
    grep 'ERROR' "$SMOKE_DIR/$1.log" | tail -2
    ! running "$1" && [ "$(docker inspect -f '{{.State.ExitCode}}' "$1")" != 0 ] && grep -qF "$2" "$SMOKE_DIR/$1.log"
}
model_requests() { grep -c '"path": "/models_part' "$SMOKE_DIR/requests.log" || true; }
# clean_log FILE: no terminal escape codes and no CUDA / ONNX Runtime error noise
clean_log() {
    if grep -nP '\x1b\[|\[[EW]:onnxruntime|libcuda|CUDA error|Traceback' "$1"; then return 1; fi
}
# root_mounts DIR [MODE]: fresh root-owned DIR/workspace and DIR/runpod-volume (mode 755); sets vols to the
# docker run arguments that mount them as RunPod does (models on /runpod-volume, jobs on /workspace)
root_mounts() {
    rm -rf "$1"
    mkdir -p "$1/workspace" "$1/runpod-volume"
    chown root:root "$1/workspace" "$1/runpod-volume"
    chmod "${2:-755}" "$1/workspace" "$1/runpod-volume"
    vols=(-v "$1/workspace:/workspace" -v "$1/runpod-volume:/runpod-volume"
          -e MODELS_DIR=/runpod-volume/models-cache -e SPARK_DATA_DIR=/workspace/spark)
}

# ---- the engine, the base, the artifacts, the image -------------------------------------------------------
engine() {
    local missing="" p
    for p in docker.io debootstrap curl unzip; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    if [ -n "$missing" ]; then
        # shellcheck disable=SC2086
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    fi
    if ! docker info >/dev/null 2>&1; then
        local driver
        for driver in ${DOCKER_STORAGE:-overlay2 vfs}; do
            say "starting dockerd ($driver, no iptables, no bridge)"
            dockerd --storage-driver="$driver" --iptables=false --bridge=none \
                --data-root "${DOCKER_DATA_ROOT:-/var/lib/docker}" >"$SMOKE_DIR/dockerd.log" 2>&1 &
            for _ in $(seq 60); do docker info >/dev/null 2>&1 && break 2; sleep 1; done
            kill $! 2>/dev/null || true
        done
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
    if docker image inspect "$base" >/dev/null 2>&1; then  # a new import would be a new base: no build cache
        say "stand-in $base already imported"
        return 0
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
        figure "wheel bundles for Python $STANDIN_PYTHON built in $((SECONDS - t0)) s"
    fi
    rm -rf "$pack"
    "$REPO/.venv/bin/python" -m testkit.toypack "$pack" >/dev/null || return 1
    LOG_FILE="" "$REPO/scripts/build_model_pack.sh" "$pack" "$pub" --parts 3 >/dev/null || return 1
    figure "bundles: $(cd "$pub" && du -h --apparent-size packages_compatibles.zip "packages_python$STANDIN_PYTHON.zip" | tr '\t\n' ' ')"
    # The port of the last run when it is free: BASE_URL is a build argument, so the same URL keeps the wheels
    # layer's build cache across runs.
    local port_try
    for port_try in "$(cat "$SMOKE_DIR/port" 2>/dev/null || echo 0)" 0; do
        rm -f "$SMOKE_DIR/port"
        : >"$SMOKE_DIR/requests.log"
        python3 "$REPO/tests/bats/helpers/http_server.py" "$pub" --port "$port_try" --port-file "$SMOKE_DIR/port" \
            --log "$SMOKE_DIR/requests.log" >/dev/null 2>&1 &
        srv_pid=$!
        for _ in $(seq 100); do [ -s "$SMOKE_DIR/port" ] && break 2; kill -0 "$srv_pid" 2>/dev/null || break; sleep 0.1; done
    done
    BASE_URL="http://127.0.0.1:$(cat "$SMOKE_DIR/port")"
    curl -fsS -o /dev/null "$BASE_URL/SHA256SUMS"
}

# docker_build TAG CONTEXT LOG: the unmodified Dockerfile (sets built_s)
docker_build() {
    local t0=$SECONDS
    DOCKER_BUILDKIT=0 docker build --network host --build-arg "BASE_URL=$BASE_URL" --build-arg APP_VERSION=smoke \
        -f "$REPO/Dockerfile" -t "$1" "$2" >"$3" 2>&1 || { tail -30 "$3"; return 1; }
    built_s=$((SECONDS - t0))
}

build() {
    local size
    docker_build "$image" "$REPO" "$SMOKE_DIR/build.log" || return 1
    size=$(docker image inspect -f '{{.Size}}' "$image")
    figure "docker build: $built_s s, image $image $((size / 1000000)) MB (log $SMOKE_DIR/build.log)"
    docker history --format '{{.Size}}\t{{.CreatedBy}}' "$image" | cut -c1-110 >"$SMOKE_DIR/history.txt"
    figure "biggest layers: $(docker history --format '{{.Size}}' "$image" | grep -E 'GB|MB' | tr '\n' ' ')"
    # build-only values are not in the image's environment
    ! docker image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$image" | grep -E '^(BASE_URL|MANIFEST_SHA256)='
}

# A one-line change in the app's code, built from a copy of the tree: only the code layers may change.
rebuild() {
    local ctx="$SMOKE_DIR/context" before after changed
    rm -rf "$ctx" && mkdir -p "$ctx"
    (cd "$REPO" && git ls-files -co --exclude-standard -z | tar --null -T - -c) | tar -x -C "$ctx"
    echo "# smoke: a one-line change at $(date -u +%FT%TZ)" >>"$ctx/service/app.py"
    docker_build "$image-edit" "$ctx" "$SMOKE_DIR/rebuild.log" || return 1
    before=$(docker history -q --no-trunc "$image" | tac)
    after=$(docker history -q --no-trunc "$image-edit" | tac)
    docker history --format '{{.Size}}\t{{.CreatedBy}}' "$image-edit" | cut -c1-110 >"$SMOKE_DIR/history-edit.txt"
    changed=$(comm -13 <(sort <<<"$before") <(sort <<<"$after") | wc -l)
    echo "docker history after the change (top 6):"
    head -6 "$SMOKE_DIR/history-edit.txt"
    local new_bytes
    new_bytes=$(docker history --format '{{.ID}} {{.Size}}' "$image-edit" | head -"$changed" | awk '{print $2}' | tr '\n' ' ')
    figure "rebuild after a one-line code change: $built_s s; $changed new layers, sizes: $new_bytes(docker history: $SMOKE_DIR/history.txt, $SMOKE_DIR/history-edit.txt)"
    # every layer up to the code's COPY is reused: the new ones are the code layers only (megabytes)
    grep -q "Using cache" "$SMOKE_DIR/rebuild.log" && ! docker history --format '{{.Size}}' "$image-edit" \
        | head -"$changed" | grep -q GB
}

# ---- the operator's cases ------------------------------------------------------------------------------------
first_start() {
    root_mounts "$mounts"
    volumes=("${vols[@]}")
    run_c smoke-first "${volumes[@]}" -e "BASE_URL=$BASE_URL" -e APP_VERSION=smoke -e "SPARK_API_TOKEN=$token" || return 1
    wait_ready smoke-first "$token" || return 1
    figure "first start to /ready (toy pack fetched into the root-owned /runpod-volume): $took s"
    local owners server
    owners=$(docker exec smoke-first stat -c '%u %n' /runpod-volume/models-cache /workspace/spark)
    server=$(docker top smoke-first -eo pid,uid,args | awk '/server\.py/ { print $2, $3, $4 }')
    echo "$owners"; echo "server process (uid, command): $server"
    [ "$(grep -c '^10001 ' <<<"$owners")" -eq 2 ] && [ "$(stat -c %u "$mounts/workspace")" = 0 ] \
        && [[ $server == "10001 "* ]] && [ -f "$mounts/runpod-volume/models-cache/.spark-pack" ]
}

separate() {
    local out="$SMOKE_DIR/stems" t0=$SECONDS
    rm -rf "$out" && mkdir -p "$out"
    curl -fsS -H "Authorization: Bearer $token" -F "file=@$REPO/examples/dialog_over_music.flac" \
        "http://127.0.0.1:$port/separate" -o "$out/stems.zip" || return 1
    figure "POST /separate of examples/dialog_over_music.flac ($1): $((SECONDS - t0)) s"
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
separate_first() { separate "first container"; }

healthy() {
    local t0=$SECONDS status
    while :; do
        status=$(docker inspect -f '{{.State.Health.Status}}' smoke-first)
        [ "$status" = healthy ] && break
        [ "$status" != unhealthy ] && [ $((SECONDS - t0)) -lt 120 ] || { echo "health: $status"; return 1; }
        sleep 2
    done
    echo "health: healthy after $((SECONDS - t0)) s more"
    docker logs smoke-first >"$SMOKE_DIR/smoke-first.log" 2>&1
    # the probes (HEALTHCHECK and ours) are not in the access log; the CPU start has no CUDA noise
    ! grep -E '"GET /(health|ready) HTTP/1.1" 200' "$SMOKE_DIR/smoke-first.log" && clean_log "$SMOKE_DIR/smoke-first.log"
}

sigint() {
    docker kill -s INT smoke-first >/dev/null
    for _ in $(seq 60); do running smoke-first || break; sleep 0.5; done
    docker logs smoke-first >"$SMOKE_DIR/smoke-first.log" 2>&1
    echo "exit code $(docker inspect -f '{{.State.ExitCode}}' smoke-first); last lines:"; tail -3 "$SMOKE_DIR/smoke-first.log"
    [ "$(docker inspect -f '{{.State.ExitCode}}' smoke-first)" = 0 ] && grep -q "stopped by SIGINT" "$SMOKE_DIR/smoke-first.log" \
        && clean_log "$SMOKE_DIR/smoke-first.log"
}

# The artifact host is gone (stopped; the URL points nowhere): a fresh container starts from the image's wheels
# and the verified pack on its volume, asking nothing of anyone.
offline() {
    kill "$srv_pid" && wait "$srv_pid" 2>/dev/null; srv_pid=""
    local before
    before=$(wc -l <"$SMOKE_DIR/requests.log")
    run_c smoke-offline "${volumes[@]}" -e "BASE_URL=$BASE_URL" -e "SPARK_API_TOKEN=$token" || return 1
    wait_ready smoke-offline "$token" || return 1
    figure "cold start of a fresh container to /ready, pack on its volume, no artifact host: $took s"
    docker logs smoke-offline 2>&1 | grep -F "BASE_URL not consulted"
    [ "$(wc -l <"$SMOKE_DIR/requests.log")" = "$before" ] || return 1
    docker stop -t 30 smoke-offline >/dev/null
    echo "docker stop: exit $(docker inspect -f '{{.State.ExitCode}}' smoke-offline)"
    [ "$(docker inspect -f '{{.State.ExitCode}}' smoke-offline)" = 0 ]
}

# --read-only: with the two volumes and a tmpfs /tmp it serves; without a data volume it refuses at once.
read_only() {
    run_c smoke-ro --read-only --tmpfs /tmp "${volumes[@]}" -e "SPARK_API_TOKEN=$token" || return 1
    wait_ready smoke-ro "$token" || return 1
    figure "--read-only --tmpfs /tmp, volumes at /workspace and /runpod-volume: /ready in $took s"
    separate "--read-only" || return 1
    docker logs smoke-ro >"$SMOKE_DIR/smoke-ro.log" 2>&1 && clean_log "$SMOKE_DIR/smoke-ro.log" || return 1
    run_c smoke-ro-bare --read-only --tmpfs /tmp -e "SPARK_API_TOKEN=$token" || return 1
    refused smoke-ro-bare "cannot write the data dir (SPARK_DATA_DIR) /workspace/spark: the filesystem is read-only"
}

# Any uid: with no volume it runs in the image's group-writable dirs (and warns that its generated token is not on
# a volume); on root-owned volumes it stops at once, before any model download, saying what to do.
any_user() {
    local before tok
    run_c smoke-uid --user 12345 -e "BASE_URL=$BASE_URL" || return 1
    for _ in $(seq 60); do tok=$(docker exec smoke-uid cat /workspace/spark/api_token 2>/dev/null) && break; sleep 0.5; done
    wait_ready smoke-uid "$tok" || return 1
    figure "--user 12345, no volumes (pack fetched into the image's group-writable /models-cache): /ready in $took s"
    docker logs smoke-uid 2>&1 | grep -E "generated a new API token|not on a volume" || return 1
    docker logs smoke-uid 2>&1 | grep -qF "a new container generates a different token" || return 1
    root_mounts "$SMOKE_DIR/mounts-uid"
    before=$(model_requests)
    run_c smoke-uid-vol --user 12345 "${vols[@]}" -e "BASE_URL=$BASE_URL" || return 1
    refused smoke-uid-vol "/workspace (owner uid 0, mode 755) is not writable by uid 12345" || return 1
    [ "$(model_requests)" = "$before" ]
}

mode700() {
    local before
    root_mounts "$SMOKE_DIR/mounts-700" 700
    before=$(model_requests)
    run_c smoke-700 "${vols[@]}" -e "BASE_URL=$BASE_URL" || return 1
    refused smoke-700 "/workspace (owner uid 0, mode 700) cannot be entered by uid 10001" || return 1
    grep -qF "chmod 755" "$SMOKE_DIR/smoke-700.log" && [ "$(model_requests)" = "$before" ]
}

# SPARK_DEVICE=cuda on this GPU-less machine: /ready 503 with a plain-text reason, HEALTHCHECK unhealthy (the
# image's own check; start period and interval shortened so the smoke test need not wait 20 minutes).
no_gpu() {
    run_c smoke-cuda --health-start-period 2s --health-interval 3s --health-retries 2 "${volumes[@]}" \
        -e SPARK_DEVICE=cuda -e "SPARK_API_TOKEN=$token" || return 1
    local status="" reason="" t0=$SECONDS
    until [[ $reason == *gpu_unusable* ]] || [ $((SECONDS - t0)) -gt 120 ]; do
        sleep 1; reason=$(curl -sS -H "Authorization: Bearer $token" "http://127.0.0.1:$port/ready" 2>/dev/null || true)
    done
    until [ "$status" = unhealthy ] || [ $((SECONDS - t0)) -gt 180 ]; do
        sleep 2; status=$(docker inspect -f '{{.State.Health.Status}}' smoke-cuda)
    done
    reason=$(curl -sS -H "Authorization: Bearer $token" "http://127.0.0.1:$port/ready")
    echo "health: $status; /ready: ${reason:0:300}"
    docker logs smoke-cuda >"$SMOKE_DIR/smoke-cuda.log" 2>&1
    [ "$status" = unhealthy ] && [[ $reason == *gpu_unusable* ]] && [[ $reason != *'\u001b'* ]] \
        && clean_log "$SMOKE_DIR/smoke-cuda.log"
}

# The hardened recipe of docs/deploy.md: any uid, no capabilities, no new privileges, read-only root, on volumes
# that uid owns (the pack copied from the first volume), with no artifact host.
hardened() {
    root_mounts "$SMOKE_DIR/mounts-hard"
    cp -a "$mounts/runpod-volume/models-cache" "$SMOKE_DIR/mounts-hard/runpod-volume/"
    chown -R 10001:0 "$SMOKE_DIR/mounts-hard/workspace" "$SMOKE_DIR/mounts-hard/runpod-volume"
    run_c smoke-hard --user 10001:0 --cap-drop ALL --security-opt no-new-privileges --read-only --tmpfs /tmp \
        "${vols[@]}" -e "BASE_URL=$BASE_URL" -e "SPARK_API_TOKEN=$token" || return 1
    wait_ready smoke-hard "$token" || return 1
    figure "hardened recipe (--user 10001:0 --cap-drop ALL --security-opt no-new-privileges --read-only --tmpfs /tmp), no artifact host: /ready in $took s"
    docker logs smoke-hard >"$SMOKE_DIR/smoke-hard.log" 2>&1 && clean_log "$SMOKE_DIR/smoke-hard.log"
}

placeholder() {
    run_c smoke-template -e "MANIFEST_SHA256=REPLACE_WITH_SHA256_OF_SHA256SUMS" -e "BASE_URL=http://127.0.0.1:9/gone" \
        || return 1
    refused smoke-template "unfilled template values: MANIFEST_SHA256 still hold REPLACE_WITH_"
}

figures=""
step "docker engine" engine
step "stand-in base image $base" standin
step "wheel bundles + toy model pack served on 127.0.0.1" artifacts
step "docker build (unmodified Dockerfile); no build value in the image's environment" build
step "a one-line code change rebuilds only the code layers" rebuild
step "root-owned /workspace and /runpod-volume: /ready, dirs owned by 10001, server runs as 10001" first_start
step "POST /separate of the example clip" separate_first
step "HEALTHCHECK healthy; probes not in the access log; no CUDA noise on a CPU start" healthy
step "SIGINT: clean exit 0, no traceback" sigint
step "--read-only: serves with volumes + tmpfs /tmp; refuses at once without a data volume" read_only
step "--user 12345: serves without volumes (token notice); refused at once on root-owned volumes" any_user
step "mode-700 root volume: refused at once, before any download, with what to do" mode700
step "unfilled template value: refused by name" placeholder
step "fresh container, pack on its volume, artifact host gone: /ready; docker stop exit 0" offline
step "hardened recipe: --user, --cap-drop ALL, no-new-privileges, --read-only, no artifact host" hardened
step "SPARK_DEVICE=cuda without a GPU: unhealthy, /ready reason without terminal codes" no_gpu
summary
