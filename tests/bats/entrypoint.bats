#!/usr/bin/env bats
# entrypoint.sh: app at the pinned version (or the baked copy), setup, API token, server in the foreground.
load helpers/common

setup() {
    chain_env
    pub="$BATS_TEST_TMPDIR/pub"
    make_app "$pub" v1.2.3
    start_server "$pub"
    export APP_VERSION=v1.2.3 APP_URL="$BASE_URL/app-v1.2.3.tar.gz"
    export APP_SHA256=$(sha256sum "$pub/app-v1.2.3.tar.gz" | cut -d' ' -f1)
    export SKIP_SETUP=1 SPARK_PYTHON=python3 SERVER_RECORD="$BATS_TEST_TMPDIR/server.json" PORT=18185
    app="$SPARK_ROOT/opt/spark/app"
    token_file="$SPARK_ROOT/workspace/spark/api_token"
}

teardown() { stop_server; }

field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$SERVER_RECORD" "$1"; }

@test "fetches and verifies the pinned app, generates a 0600 token, starts the server with HOST/PORT" {
    run "$SCRIPTS/entrypoint.sh"
    echo "$output"
    [ "$status" -eq 0 ]
    [ "$(cat "$app/VERSION")" = v1.2.3 ] && [ -f "$app/scripts/demucsServe.sh" ]
    [ "$(stat -c %a "$token_file")" = 600 ]
    token=$(cat "$token_file")
    [ "${#token}" -eq 64 ]
    [[ $output == *"generated a new API token, stored in $token_file"* ]]
    [[ $output != *"$token"* ]]                         # the token itself is never logged
    ! grep -q "$token" "$SPARK_ROOT/var/log/spark/boot.log"
    [ "$(field SPARK_API_TOKEN)" = "$token" ]
    [ "$(field HOST)" = 0.0.0.0 ] && [ "$(field PORT)" = 18185 ]
    [ "$(field SPARK_MODELS_DIR)" = "$SPARK_ROOT/models-cache" ]
    [ "$(field cwd)" = "$app" ]
    # a restart reuses the stored token, and the app already there (no second download)
    : >"$SERVER_LOG"
    run "$SCRIPTS/entrypoint.sh"
    [ "$status" -eq 0 ]
    [ "$(field SPARK_API_TOKEN)" = "$token" ]
    [ ! -s "$SERVER_LOG" ]
}

@test "a given SPARK_API_TOKEN is used and not written anywhere" {
    SPARK_API_TOKEN=s3cret-given run "$SCRIPTS/entrypoint.sh"
    [ "$status" -eq 0 ]
    [ "$(field SPARK_API_TOKEN)" = s3cret-given ]
    [ ! -e "$token_file" ]
}

@test "an app tarball with the wrong sha256 is refused and nothing is unpacked" {
    APP_SHA256=$(printf '0%.0s' $(seq 64)) run "$SCRIPTS/entrypoint.sh"
    [ "$status" -ne 0 ]
    [[ $output == *"expected APP_SHA256"* ]]
    [ ! -e "$app" ] && [ ! -e "$SERVER_RECORD" ]
}

@test "the copy baked into the image is used when its VERSION matches (no download)" {
    mkdir -p "$app/scripts" && cp "$SCRIPTS"/*.sh "$app/scripts/"
    echo 'raise SystemExit(3)' >"$app/server.py" && echo v1.2.3 >"$app/VERSION"
    APP_URL="http://127.0.0.1:9/unreachable" run "$SCRIPTS/entrypoint.sh"
    [ "$status" -eq 3 ]                                  # ran the baked server.py
    [[ $output == *"using the app in $app (version v1.2.3)"* ]]
    # another pinned version replaces it
    APP_VERSION=v1.2.4 APP_URL="$BASE_URL/app-v1.2.3.tar.gz" run "$SCRIPTS/entrypoint.sh"
    [ "$status" -eq 0 ] && [ "$(cat "$app/VERSION")" = v1.2.4 ]
}

@test "a failing setup stops the start: the server is not run" {
    SKIP_SETUP=0 BASE_URL="" run "$SCRIPTS/entrypoint.sh"
    [ "$status" -ne 0 ]
    [[ $output == *"demucsServe.sh failed"* ]]
    [ ! -e "$SERVER_RECORD" ]
}

@test "a data dir the service cannot write stops the start at once, before setup downloads anything" {
    SKIP_SETUP=0 SPARK_DATA_DIR=/proc/spark-data run "$SCRIPTS/entrypoint.sh"
    [ "$status" -ne 0 ]
    [[ $output == *"cannot write the data dir (SPARK_DATA_DIR) /proc/spark-data"* ]]
    [[ $output != *"demucsServe"* ]] && [ ! -e "$SERVER_RECORD" ]
}

@test "an unfilled template value is refused by name before anything is fetched" {
    : >"$SERVER_LOG"
    APP_SHA256=REPLACE_WITH_SHA256_OF_THE_v1.2.3_TARBALL run "$SCRIPTS/entrypoint.sh"
    [ "$status" -ne 0 ]
    [[ $output == *"unfilled template values: APP_SHA256 still hold REPLACE_WITH_"* ]]
    [ ! -s "$SERVER_LOG" ] && [ ! -e "$app" ]
}
