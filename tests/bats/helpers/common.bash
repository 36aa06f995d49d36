# Shared setup for the boot-chain bats tests: a temp root, artifacts built by the repo's own builders, and the
# Range-capable test server (helpers/http_server.py) on 127.0.0.1.
REPO="$(cd "$BATS_TEST_DIRNAME/../.." && pwd)"
SCRIPTS="$REPO/scripts"
HELPERS="$BATS_TEST_DIRNAME/helpers"
PY="${TEST_PYTHON:-python3}"

# The Python version the chain will pick from PATH (python3), for naming its wheel bundle.
pyver() { python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }

# make_artifacts DIR: a 3-part model pack of random bytes + wheel bundles for this machine's python3.
make_artifacts() {
    local pub=$1 src="$BATS_TEST_TMPDIR/pack" wheels="$BATS_TEST_TMPDIR/wheels" v
    v=$(pyver)
    mkdir -p "$pub" "$src" "$wheels/$v"
    head -c 60000 /dev/urandom >"$src/Kim_Vocal_2.onnx"
    head -c 30000 /dev/urandom >"$src/04573f0d-f3cf25b2.th"
    (cd "$src" && sha256sum Kim_Vocal_2.onnx 04573f0d-f3cf25b2.th >SHA256SUMS)
    "$SCRIPTS/build_model_pack.sh" "$src" "$pub" --parts 3 >/dev/null
    "$PY" "$HELPERS/make_wheel.py" "$wheels/$v" sparkprobe 1.0.0 >/dev/null
    "$PY" "$HELPERS/make_wheel.py" "$wheels/$v" sparkprobe_ver 1.0.0 "cp${v/./}" >/dev/null
    "$SCRIPTS/build_wheel_bundles.sh" "$pub" --wheels-dir "$wheels" --versions "$v" >/dev/null
}

# start_server DIR [--cut NAME:BYTES]...: serve DIR; sets BASE_URL and SERVER_PID; requests go to $SERVER_LOG.
start_server() {
    local dir=$1
    shift
    SERVER_LOG="$BATS_TEST_TMPDIR/requests.log"
    : >"$SERVER_LOG"
    rm -f "$BATS_TEST_TMPDIR/port"
    "$PY" "$HELPERS/http_server.py" "$dir" --port-file "$BATS_TEST_TMPDIR/port" --log "$SERVER_LOG" "$@" 3>&- &
    SERVER_PID=$!
    for _ in $(seq 100); do [ -s "$BATS_TEST_TMPDIR/port" ] && break; sleep 0.05; done
    BASE_URL="http://127.0.0.1:$(cat "$BATS_TEST_TMPDIR/port")"
    export BASE_URL
}

stop_server() {
    if [ -n "${SERVER_PID:-}" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    SERVER_PID=""
}

# Environment for a chain run in the temp root, fast retries, no real home dir touched.
chain_env() {
    export SPARK_ROOT="$BATS_TEST_TMPDIR/root" TORCH_HOME="$BATS_TEST_TMPDIR/root/torch" RETRY_DELAY=0
    mkdir -p "$SPARK_ROOT"
}

# make_app DIR VERSION: an app tarball DIR/app-VERSION.tar.gz (top dir like GitHub's archives) whose server.py
# records its environment and exits; the entrypoint tests check what the server is started with.
make_app() {
    local dir=$1 version=$2 tree="$BATS_TEST_TMPDIR/apptree/app-$2"
    mkdir -p "$tree/scripts" "$dir"
    cp "$SCRIPTS"/*.sh "$tree/scripts/"
    cat >"$tree/server.py" <<'PY'
import json, os, sys
keys = ("HOST", "PORT", "SPARK_API_TOKEN", "SPARK_MODELS_DIR", "SPARK_DATA_DIR")
with open(os.environ["SERVER_RECORD"], "w") as f:
    json.dump({"cwd": os.getcwd(), "python": sys.executable, **{k: os.environ.get(k) for k in keys}}, f)
PY
    tar -czf "$dir/app-$version.tar.gz" -C "$BATS_TEST_TMPDIR/apptree" "app-$version"
}

# stub_bin DIR NAME...: commands that only record their arguments to DIR/calls (for system services that must not
# be touched on this machine: the SSH server).
stub_bin() {
    local dir=$1 n
    shift
    mkdir -p "$dir"
    for n in "$@"; do
        printf '#!/bin/sh\necho "%s $*" >>"%s/calls"\n' "$n" "$dir" >"$dir/$n"
        chmod +x "$dir/$n"
    done
}
