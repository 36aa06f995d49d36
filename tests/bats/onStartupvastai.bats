#!/usr/bin/env bats
# onStartupvastai.sh: instance preparation (SSH), entrypoint.sh fetched at a pinned version and checked.
load helpers/common

setup() {
    chain_env
    pub="$BATS_TEST_TMPDIR/pub"
    mkdir -p "$pub/v1.2.3/scripts"
    cp "$SCRIPTS/entrypoint.sh" "$pub/v1.2.3/scripts/"
    make_app "$pub" v1.2.3
    start_server "$pub"
    export APP_VERSION=v1.2.3 ENTRYPOINT_URL="$BASE_URL/v1.2.3/scripts/entrypoint.sh"
    export ENTRYPOINT_SHA256=$(sha256sum "$SCRIPTS/entrypoint.sh" | cut -d' ' -f1)
    export APP_URL="$BASE_URL/app-v1.2.3.tar.gz" SKIP_SETUP=1 SPARK_PYTHON=python3 SERVER_RECORD="$BATS_TEST_TMPDIR/server.json"
    stubs="$BATS_TEST_TMPDIR/stubs"
    stub_bin "$stubs" service dpkg apt-get
    export PATH="$stubs:$PATH"
    unset KEEP_SSH SSH_CONNECTION VAST_TCP_PORT_22      # what an entrypoint-type launch sees
    export MAX_RESTARTS=0 RESTART_DELAY=1 RESTART_DELAY_MAX=2 LOG_CHECK_S=1
}

teardown() { stop_server; }

@test "default: stops and removes the SSH server, then runs the verified entrypoint.sh through to the server" {
    run "$SCRIPTS/onStartupvastai.sh"
    echo "$output"
    [ "$status" -eq 0 ]
    grep -qx "service ssh stop" "$stubs/calls"
    grep -q "^apt-get remove .*openssh-server" "$stubs/calls"
    [[ $output == *"entrypoint.sh verified; running it"* ]]
    [ -f "$SERVER_RECORD" ]                              # entrypoint.sh went on to start the app's server
    cmp "$SPARK_ROOT/opt/spark/boot/entrypoint.sh" "$SCRIPTS/entrypoint.sh"
    grep -q "\[onStartupvastai.sh\]" "$SPARK_ROOT/var/log/spark/boot.log"
    grep -q "\[entrypoint.sh\]" "$SPARK_ROOT/var/log/spark/boot.log"
}

@test "KEEP_SSH=1 leaves the SSH server alone" {
    KEEP_SSH=1 run "$SCRIPTS/onStartupvastai.sh"
    [ "$status" -eq 0 ]
    [ ! -e "$stubs/calls" ]
}

@test "a wrong ENTRYPOINT_SHA256 is refused: nothing is run" {
    ENTRYPOINT_SHA256=$(printf 'a%.0s' $(seq 64)) KEEP_SSH=1 run "$SCRIPTS/onStartupvastai.sh"
    [ "$status" -ne 0 ]
    [[ $output == *"expected ENTRYPOINT_SHA256"* ]]
    [ ! -e "$SPARK_ROOT/opt/spark/boot/entrypoint.sh" ] && [ ! -e "$SERVER_RECORD" ]
}

@test "an unfilled template value is named: stops before touching the machine" {
    ENTRYPOINT_SHA256=REPLACE_WITH_SHA256_OF_scripts/entrypoint.sh_AT_v1.0.0 run "$SCRIPTS/onStartupvastai.sh"
    [ "$status" -ne 0 ]
    [[ $output == *"unfilled template values: ENTRYPOINT_SHA256 still hold REPLACE_WITH_"* ]]
    [ ! -e "$BATS_TEST_TMPDIR/stubs/calls" ]
}

@test "no pinned checksum or version: stops before touching the machine" {
    ENTRYPOINT_SHA256="" run "$SCRIPTS/onStartupvastai.sh"
    [ "$status" -ne 0 ]
    [[ $output == *"ENTRYPOINT_SHA256 must be"* ]]
    APP_VERSION="" ENTRYPOINT_URL="" run "$SCRIPTS/onStartupvastai.sh"
    [ "$status" -ne 0 ]
    [[ $output == *"set APP_VERSION"* ]]
    [ ! -e "$stubs/calls" ]
}

@test "KEEP_SSH unset on an ssh-type launch keeps the SSH server; KEEP_SSH=0 still removes it" {
    VAST_TCP_PORT_22=40022 run "$SCRIPTS/onStartupvastai.sh"
    [ "$status" -eq 0 ]
    [[ $output == *"KEEP_SSH unset and port 22 is mapped"* ]]
    [ ! -e "$stubs/calls" ]
    SSH_CONNECTION="127.0.0.1 5000 127.0.0.1 22" run "$SCRIPTS/onStartupvastai.sh"
    [[ $output == *"started from an SSH session: keeping the SSH server"* ]] && [ ! -e "$stubs/calls" ]
    mkdir -p "$SPARK_ROOT/root/.ssh" && echo "ssh-ed25519 AAAA operator" >"$SPARK_ROOT/root/.ssh/authorized_keys"
    run "$SCRIPTS/onStartupvastai.sh"
    [[ $output == *"root has SSH authorized_keys: keeping the SSH server"* ]] && [ ! -e "$stubs/calls" ]
    KEEP_SSH=0 VAST_TCP_PORT_22=40022 run "$SCRIPTS/onStartupvastai.sh"
    [ "$status" -eq 0 ]
    grep -qx "service ssh stop" "$stubs/calls"
}

@test "the supervisor starts the server again when it exits, with a doubling back-off" {
    SECONDS=0
    MAX_RESTARTS=3 KEEP_SSH=1 run "$SCRIPTS/onStartupvastai.sh"
    echo "$output"
    [ "$status" -eq 0 ]                                      # the last run's own status
    [ "$(grep -c 'starting server.py' "$SPARK_ROOT/var/log/spark/boot.log")" -eq 4 ]
    [[ $output == *"the server exited (status 0 after "*"restart 1 in 1s"* ]]
    [[ $output == *"restart 2 in 2s"* ]] && [[ $output == *"restart 3 in 2s"* ]]   # capped at RESTART_DELAY_MAX
    [[ $output == *"MAX_RESTARTS=3 restarts used, giving up"* ]]
    [ "$SECONDS" -ge 5 ]
}

# long_running_app: the app's server.py writes a line to stdout and then runs until SIGTERM, recording it.
long_running_app() {
    local tree="$BATS_TEST_TMPDIR/apptree/app-v1.2.3"
    cat >"$tree/server.py" <<'PY'
import os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: (open(os.environ["SERVER_RECORD"], "w").write("sigterm"), sys.exit(0)))
print("x" * 3000)
while True:
    time.sleep(0.1)
PY
    tar -czf "$pub/app-v1.2.3.tar.gz" -C "$BATS_TEST_TMPDIR/apptree" app-v1.2.3
}

@test "the supervisor rotates a large log and stops the server on SIGTERM" {
    long_running_app
    log="$SPARK_ROOT/var/log/spark/boot.log"
    mkdir -p "$(dirname "$log")"
    head -c 5000 /dev/zero | tr '\0' 'a' >"$log"           # left by an earlier boot, over the limit
    echo "older" >"$log.1"
    KEEP_SSH=1 LOG_MAX_BYTES=2000 LOG_KEEP=2 "$SCRIPTS/onStartupvastai.sh" >"$BATS_TEST_TMPDIR/out" 2>&1 &
    sup=$!
    for _ in $(seq 100); do grep -q xxxx "$log.1" 2>/dev/null && break; sleep 0.1; done
    # before the start: boot.log -> .1 (and "older" -> .2); while the server ran (copy + truncate): boot.log,
    # now holding the server's output, -> .1 and the first copy -> .2; "older" fell off (LOG_KEEP=2)
    grep -q xxxx "$log.1"
    [ "$(head -c 5000 "$log.2" | tr -d a)" = "" ] && [ ! -e "$log.3" ]
    [ -z "$(grep -rl older "$(dirname "$log")" || true)" ]
    [ "$(stat -c %s "$log")" -lt 2000 ] && grep -q "rotated" "$log"
    kill -TERM "$sup"
    wait "$sup"
    [ "$(cat "$SERVER_RECORD")" = sigterm ]
    grep -q "server stopped" "$BATS_TEST_TMPDIR/out"
}
