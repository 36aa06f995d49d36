#!/usr/bin/env bats
# demucsServe.sh against a real local HTTP server (127.0.0.1) in a temporary root.
load helpers/common

setup() {
    pub="$BATS_TEST_TMPDIR/pub"
    make_artifacts "$pub"
    chain_env
    dl="$SPARK_ROOT/var/cache/spark/downloads"
    models="$SPARK_ROOT/models-cache"
}

teardown() { stop_server; }

requests_for() { grep -c "\"path\": \"/$1\"" "$SERVER_LOG" || true; }

@test "a full run installs wheels and models; a second run does nothing, asks the host nothing, and says so" {
    start_server "$pub"
    mkdir -p "$SPARK_ROOT/opt/spark/app/mvsep"   # an app tree, so the engine's fallback dir gets linked
    run "$SCRIPTS/demucsServe.sh"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output == *"ready: wheels in"* ]]
    [ "$("$SPARK_ROOT/opt/spark/venv/bin/python" -c 'import sparkprobe_ver; print(sparkprobe_ver.VERSION)')" = 1.0.0 ]
    (cd "$models" && sha256sum -c SHA256SUMS)
    # the readiness facts live with what they describe: the venv and the pack (an image, a volume)
    [ -f "$SPARK_ROOT/opt/spark/venv/.spark-wheels" ] && [ -f "$models/.spark-pack" ]
    [ "$(readlink "$SPARK_ROOT/opt/spark/app/mvsep/models")" = "$models" ]
    [ -L "$TORCH_HOME/hub/checkpoints/04573f0d-f3cf25b2.th" ]
    [ -z "$(ls "$models" | grep staging || true)" ]
    grep -q "ready: wheels in" "$SPARK_ROOT/var/log/spark/boot.log"
    : >"$SERVER_LOG"
    run "$SCRIPTS/demucsServe.sh"
    [ "$status" -eq 0 ]
    [[ $output == *"nothing to do: this machine is already ready"*"BASE_URL not consulted"* ]]
    [ ! -s "$SERVER_LOG" ]
    # CHECK_UPDATES=1 asks for the manifest only, and finds nothing new
    CHECK_UPDATES=1 run "$SCRIPTS/demucsServe.sh"
    [ "$status" -eq 0 ]
    [ "$(wc -l <"$SERVER_LOG")" -eq 1 ] && [ "$(requests_for SHA256SUMS)" -eq 1 ]
}

@test "an interrupted download resumes with a Range request" {
    start_server "$pub" --cut models_part_ab:5000
    SKIP_WHEELS=1 run "$SCRIPTS/demucsServe.sh"
    [ "$status" -eq 0 ]
    [[ $output == *"interrupted"* ]] && [[ $output == *"resuming models_part_ab at byte 5000"* ]]
    grep -q '"path": "/models_part_ab", "range": "bytes=5000-", "status": 206' "$SERVER_LOG"
    (cd "$models" && sha256sum -c SHA256SUMS)
}

@test "a truncated part left by an earlier run is completed, not fetched whole" {
    start_server "$pub"
    mkdir -p "$dl"
    head -c 7000 "$pub/models_part_ab" >"$dl/models_part_ab"
    head -c 3000 "$pub/models_part_ac" >"$dl/models_part_ac.part"   # what a killed run leaves behind
    SKIP_WHEELS=1 run "$SCRIPTS/demucsServe.sh"
    [ "$status" -eq 0 ]
    [[ $output == *"checksum mismatch for models_part_ab"* ]]
    grep -q '"path": "/models_part_ab", "range": "bytes=7000-", "status": 206' "$SERVER_LOG"
    grep -q '"path": "/models_part_ac", "range": "bytes=3000-", "status": 206' "$SERVER_LOG"
    [ "$(requests_for models_part_ac)" -eq 1 ]
    (cd "$models" && sha256sum -c SHA256SUMS)
}

@test "a plain server without Range support (python -m http.server): a stale partial is fetched whole" {
    port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    (cd "$pub" && exec "$PY" -m http.server "$port" --bind 127.0.0.1 >/dev/null 2>&1 3>&-) &
    SERVER_PID=$!
    for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$port/SHA256SUMS" 2>/dev/null && break; sleep 0.05; done
    mkdir -p "$dl"
    head -c 3000 "$pub/models_part_aa" >"$dl/models_part_aa.part"
    BASE_URL="http://127.0.0.1:$port" SKIP_WHEELS=1 run "$SCRIPTS/demucsServe.sh"
    [ "$status" -eq 0 ]
    [[ $output == *"download of models_part_aa failed (curl exit 33)"* ]]
    (cd "$models" && sha256sum -c SHA256SUMS)
}

@test "a corrupted part on disk (same size, other bytes) is fetched again" {
    start_server "$pub"
    mkdir -p "$dl"
    head -c "$(stat -c %s "$pub/models_part_ac")" /dev/urandom >"$dl/models_part_ac"
    SKIP_WHEELS=1 run "$SCRIPTS/demucsServe.sh"
    [ "$status" -eq 0 ]
    [ "$(requests_for models_part_ac)" -ge 2 ]
    (cd "$models" && sha256sum -c SHA256SUMS)
}

@test "a published part with the wrong checksum stops after the retries, naming the file" {
    printf 'garbage' >>"$pub/models_part_ab"
    start_server "$pub"
    VERIFY_ATTEMPTS=2 SKIP_WHEELS=1 run "$SCRIPTS/demucsServe.sh"
    [ "$status" -ne 0 ]
    [[ $output == *"checksum mismatch for models_part_ab after 2 downloads"* ]]
    [ ! -e "$models/Kim_Vocal_2.onnx" ] && [ ! -e "$models/.spark-pack" ]
    grep -q "ERROR: checksum mismatch for models_part_ab" "$SPARK_ROOT/var/log/spark/boot.log"
}

@test "Python: an unsupported python3 (3.9) is skipped for a supported one on PATH" {
    py39=$(ls -d "$HOME"/.pyenv/versions/3.9*/bin/python3.9 2>/dev/null | head -1)
    py312=$(ls -d "$HOME"/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null | head -1)
    [ -n "$py39" ] && [ -n "$py312" ] || skip "needs pyenv's 3.9 and 3.12"
    # a PATH whose only Pythons are the ones linked here
    bin="$BATS_TEST_TMPDIR/bin" && mkdir -p "$bin"
    for f in /usr/bin/* /bin/*; do
        case ${f##*/} in python*) ;; *) [ -e "$bin/${f##*/}" ] || ln -s "$f" "$bin/${f##*/}" ;; esac
    done
    ln -s "$py39" "$bin/python3" && ln -s "$py312" "$bin/python3.12"
    echo "0000000000000000000000000000000000000000000000000000000000000000  packages_python3.12.zip" >>"$pub/SHA256SUMS"
    start_server "$pub"
    PATH="$bin" CHECK_UPDATES=1 SKIP_WHEELS=1 SKIP_MODELS=1 run "$SCRIPTS/demucsServe.sh"
    [ "$status" -eq 0 ]
    [[ $output == *"skipping python3: Python 3.9 is not supported"* ]]
    [[ $output == *"using Python 3.12 ($bin/python3.12)"* ]]
    # with only 3.9 and no installer allowed: a clear stop
    rm "$bin/python3.12"
    PATH="$bin" PYTHON_INSTALL=none run "$SCRIPTS/demucsServe.sh"
    [ "$status" -ne 0 ]
    [[ $output == *"no supported Python"* ]]
}

@test "no artifact host: a fresh machine stops naming what it lacks; an installed one starts offline" {
    BASE_URL="" run "$SCRIPTS/demucsServe.sh"
    [ "$status" -ne 0 ]
    [[ $output == *"cannot get SHA256SUMS from BASE_URL='', and this machine lacks the wheels (no installed venv in"*"the model pack (none installed in $models)"* ]]
    start_server "$pub"
    run "$SCRIPTS/demucsServe.sh"
    [ "$status" -eq 0 ]
    stop_server
    # the wheels and a verified pack are here: no network at all (the host is down, the signature expired)
    DOWNLOAD_ATTEMPTS=1 run "$SCRIPTS/demucsServe.sh"
    [ "$status" -eq 0 ]
    [[ $output == *"already ready"*"BASE_URL not consulted"* ]]
    BASE_URL="" run "$SCRIPTS/demucsServe.sh"
    [ "$status" -eq 0 ]
    # asked to look for updates (or pointed at another release path), an unreachable host is only a warning
    CHECK_UPDATES=1 DOWNLOAD_ATTEMPTS=1 run "$SCRIPTS/demucsServe.sh"
    [ "$status" -eq 0 ]
    [[ $output == *"warning: cannot get SHA256SUMS"*"keeping the installed state"* ]]
    BASE_URL="http://127.0.0.1:9/v2" DOWNLOAD_ATTEMPTS=1 run "$SCRIPTS/demucsServe.sh"
    [ "$status" -eq 0 ]
    [[ $output == *"another release"*"keeping the installed state"* ]]
    # a new volume without the pack: only the pack is missing, and the message says so
    rm -rf "$models"
    BASE_URL="http://127.0.0.1:9/gone" DOWNLOAD_ATTEMPTS=1 run "$SCRIPTS/demucsServe.sh"
    [ "$status" -ne 0 ]
    [[ $output == *"this machine lacks the model pack (none installed in $models)"* ]]
    [[ $output != *"the wheels"* ]]
}

@test "BASE_URL on another release path asks its manifest; a new signature on the same path does not" {
    make_artifacts "$BATS_TEST_TMPDIR/releases/v2"
    mv "$pub" "$BATS_TEST_TMPDIR/releases/v1"
    start_server "$BATS_TEST_TMPDIR/releases"
    root_url=$BASE_URL
    BASE_URL="$root_url/v1" run "$SCRIPTS/demucsServe.sh"
    [ "$status" -eq 0 ]
    v1=$(sha256sum <"$models/Kim_Vocal_2.onnx")
    : >"$SERVER_LOG"
    BASE_URL="$root_url/v1?X-Amz-Signature=new" run "$SCRIPTS/demucsServe.sh"
    [ "$status" -eq 0 ] && [[ $output == *"BASE_URL not consulted"* ]] && [ ! -s "$SERVER_LOG" ]
    BASE_URL="$root_url/v2" run "$SCRIPTS/demucsServe.sh"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output == *"BASE_URL names another release than the installed one ($root_url/v1)"* ]]
    [[ $output == *"model pack installed in $models"* ]]
    [ "$(sha256sum <"$models/Kim_Vocal_2.onnx")" != "$v1" ] && (cd "$models" && sha256sum -c SHA256SUMS)
}

@test "a dir it cannot write is refused at once, before any download; so is an unfilled template value" {
    start_server "$pub"
    MODELS_DIR=/proc/spark-models run "$SCRIPTS/demucsServe.sh"
    [ "$status" -ne 0 ]
    [[ $output == *"cannot write the model pack dir (MODELS_DIR) /proc/spark-models: /proc"* ]]
    DOWNLOAD_DIR=/proc/spark-downloads run "$SCRIPTS/demucsServe.sh"
    [ "$status" -ne 0 ]
    [[ $output == *"cannot write the download dir (DOWNLOAD_DIR) /proc/spark-downloads"* ]]
    MANIFEST_SHA256=REPLACE_WITH_SHA256_OF_SHA256SUMS run "$SCRIPTS/demucsServe.sh"
    [ "$status" -ne 0 ]
    [[ $output == *"unfilled template values: MANIFEST_SHA256 still hold REPLACE_WITH_"* ]]
    [ ! -s "$SERVER_LOG" ]   # nothing was asked of the host
}

@test "every start checks the installed pack: a corrupted model file is fetched again" {
    start_server "$pub"
    SKIP_WHEELS=1 run "$SCRIPTS/demucsServe.sh"
    [ "$status" -eq 0 ]
    printf 'XYZW' | dd of="$models/Kim_Vocal_2.onnx" bs=1 seek=100 conv=notrunc status=none   # same size
    : >"$SERVER_LOG"
    SKIP_WHEELS=1 run "$SCRIPTS/demucsServe.sh"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output == *"model files missing or corrupt in $models: Kim_Vocal_2.onnx"* ]]
    [ "$(requests_for models_part_aa)" -eq 1 ]                     # the pack was fetched again
    (cd "$models" && sha256sum -c SHA256SUMS)
}

@test "a deleted model file is fetched again; a pack left intact is not re-hashed (size+mtime+inode cache)" {
    start_server "$pub"
    SKIP_WHEELS=1 run "$SCRIPTS/demucsServe.sh"
    [ "$status" -eq 0 ]
    rm "$models/04573f0d-f3cf25b2.th"
    SKIP_WHEELS=1 run "$SCRIPTS/demucsServe.sh"
    [ "$status" -eq 0 ]
    [[ $output == *"model files missing or corrupt in $models: 04573f0d-f3cf25b2.th"* ]]
    (cd "$models" && sha256sum -c SHA256SUMS)
    # the next start hashes no model file: a sha256sum on PATH that records what it is asked to hash
    shim="$BATS_TEST_TMPDIR/shim" && mkdir -p "$shim"
    printf '#!/bin/sh\necho "$*" >>"%s/hashed"\nexec %s "$@"\n' "$shim" "$(command -v sha256sum)" >"$shim/sha256sum"
    chmod +x "$shim/sha256sum"
    : >"$shim/hashed"
    PATH="$shim:$PATH" SKIP_WHEELS=1 run "$SCRIPTS/demucsServe.sh"
    [ "$status" -eq 0 ]
    [[ $output == *"nothing to do: this machine is already ready"* ]]
    [ "$(grep -c models-cache "$shim/hashed" || true)" -eq 0 ]
    # a same-size rewrite changes the mtime (or inode): hashed and caught
    sleep 1
    head -c "$(stat -c %s "$models/Kim_Vocal_2.onnx")" /dev/urandom >"$models/Kim_Vocal_2.onnx"
    PATH="$shim:$PATH" SKIP_WHEELS=1 run "$SCRIPTS/demucsServe.sh"
    [ "$status" -eq 0 ]
    grep -q "models-cache/Kim_Vocal_2.onnx" "$shim/hashed"
    (cd "$models" && sha256sum -c SHA256SUMS)
}

@test "a damaged pack with no manifest to fetch it again is a loud stop" {
    start_server "$pub"
    run "$SCRIPTS/demucsServe.sh"
    [ "$status" -eq 0 ]
    stop_server
    rm "$models/Kim_Vocal_2.onnx"
    DOWNLOAD_ATTEMPTS=1 run "$SCRIPTS/demucsServe.sh"
    [ "$status" -ne 0 ]
    [[ $output == *"model files missing or corrupt in $models: Kim_Vocal_2.onnx"* ]]
    [[ $output == *"cannot get SHA256SUMS"*"this machine lacks model files of the pack in $models"* ]]
}

# venv_shims DIR UID: a python3 without venv/ensurepip until apt-get installs python3.X-venv, an apt-get that
# records its calls (and "installs" that package), an id that reports UID.
venv_shims() {
    local dir=$1 real
    real=$(command -v python3)
    mkdir -p "$dir"
    cat >"$dir/python3" <<SH
#!/bin/sh
if [ ! -e "$dir/venv-installed" ]; then
    case "\$*" in *ensurepip*|*"-m venv"*) echo "No module named 'ensurepip'" >&2; exit 1 ;; esac
fi
exec "$real" "\$@"
SH
    cat >"$dir/apt-get" <<SH
#!/bin/sh
echo "apt-get \$*" >>"$dir/calls"
case "\$*" in *"install"*"-venv"*) touch "$dir/venv-installed" ;; esac
SH
    printf '#!/bin/sh\n[ "$1" = -u ] && { echo %s; exit 0; }\nexec /usr/bin/id "$@"\n' "$2" >"$dir/id"
    chmod +x "$dir/python3" "$dir/apt-get" "$dir/id"
}

@test "python3 without venv/ensurepip: as root the venv package is installed with apt-get, then the wheels" {
    start_server "$pub"
    venv_shims "$BATS_TEST_TMPDIR/shim" 0
    PATH="$BATS_TEST_TMPDIR/shim:$PATH" SKIP_MODELS=1 run "$SCRIPTS/demucsServe.sh"
    echo "$output"
    [ "$status" -eq 0 ]
    [[ $output == *"has no venv/ensurepip module"* ]]
    grep -q "apt-get install -y -qq python$(pyver)-venv" "$BATS_TEST_TMPDIR/shim/calls"
    [ "$("$SPARK_ROOT/opt/spark/venv/bin/python" -c 'import sparkprobe; print(sparkprobe.VERSION)')" = 1.0.0 ]
}

@test "python3 without venv and not root: a clear stop naming the package" {
    start_server "$pub"
    venv_shims "$BATS_TEST_TMPDIR/shim" 1000
    PATH="$BATS_TEST_TMPDIR/shim:$PATH" SKIP_MODELS=1 run "$SCRIPTS/demucsServe.sh"
    [ "$status" -ne 0 ]
    [[ $output == *"install python$(pyver)-venv"* ]]
    [ ! -e "$BATS_TEST_TMPDIR/shim/calls" ]
}
