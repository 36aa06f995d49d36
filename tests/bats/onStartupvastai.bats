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

@test "no pinned checksum or version: stops before touching the machine" {
    ENTRYPOINT_SHA256="" run "$SCRIPTS/onStartupvastai.sh"
    [ "$status" -ne 0 ]
    [[ $output == *"ENTRYPOINT_SHA256 must be"* ]]
    APP_VERSION="" ENTRYPOINT_URL="" run "$SCRIPTS/onStartupvastai.sh"
    [ "$status" -ne 0 ]
    [[ $output == *"set APP_VERSION"* ]]
    [ ! -e "$stubs/calls" ]
}
