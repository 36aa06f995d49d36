#!/usr/bin/env bats
# docker-entrypoint.sh: as root, create and own the service's dirs on root-owned volumes, then drop to uid 10001.
load helpers/common

setup() {
    [ "$(id -u)" -eq 0 ] || skip "needs root (the privilege drop is what is tested)"
    # a tree uid 10001 can traverse (bats' own temp dirs are 0700)
    t=$(mktemp -d /tmp/spark-entry.XXXXXX)
    chmod 755 "$t"
    export SPARK_ROOT="$t/root" SPARK_HOME="$t/home" LOG_FILE="$t/root/var/log/spark/boot.log"
    export SPARK_DATA_DIR="$SPARK_ROOT/workspace/spark" MODELS_DIR="$SPARK_ROOT/runpod-volume/models-cache"
    mkdir -p "$SPARK_ROOT/workspace" "$SPARK_ROOT/runpod-volume" "$SPARK_HOME"
    chmod 755 "$SPARK_ROOT" "$SPARK_ROOT/workspace" "$SPARK_ROOT/runpod-volume"   # root-owned, as RunPod mounts them
    # stands in for entrypoint.sh: records who it runs as and whether it can write where the service writes
    export SPARK_ENTRYPOINT="$t/record.sh" RECORD="$t/out/record"
    mkdir -m 1777 "$t/out"
    cat >"$SPARK_ENTRYPOINT" <<'SH'
#!/bin/bash
{
    echo "uid=$(id -u) gid=$(id -g) groups=$(id -G) home=$HOME args=$*"
    grep '^CapEff' /proc/self/status
    for d in "$MODELS_DIR" "$SPARK_DATA_DIR" "$SPARK_ROOT/var/cache/spark/downloads" \
             "$SPARK_HOME/.cache/torch" "$(dirname "$LOG_FILE")"; do
        if touch "$d/probe"; then echo "wrote $d"; else echo "cannot write $d"; fi
    done
} >"$RECORD" 2>&1
SH
    chmod 755 "$SPARK_ENTRYPOINT"
}

teardown() { [ -z "${t:-}" ] || rm -rf "$t"; }

@test "as root: the dirs on root-owned volumes are created for uid 10001, then the entry runs as 10001 without capabilities" {
    run "$SCRIPTS/docker-entrypoint.sh" --flag value
    [ "$status" -eq 0 ] || { echo "$output"; false; }
    cat "$RECORD"
    grep -qx "uid=10001 gid=10001 groups=10001 home=$SPARK_HOME args=--flag value" "$RECORD"
    grep -qx $'CapEff:\t0000000000000000' "$RECORD"
    [ "$(grep -c '^wrote ' "$RECORD")" -eq 5 ]
    [ "$(stat -c %u:%g "$MODELS_DIR")" = 10001:10001 ]
    # the mount points themselves stay root's
    [ "$(stat -c %u "$SPARK_ROOT/workspace")" = 0 ] && [ "$(stat -c %u "$SPARK_ROOT/runpod-volume")" = 0 ]
}

@test "a data dir left by a root process is given over whole; an owned one is not walked again" {
    mkdir -p "$SPARK_DATA_DIR/jobs/abc"
    touch "$SPARK_DATA_DIR/jobs/abc/result.zip"
    run "$SCRIPTS/docker-entrypoint.sh"
    [ "$status" -eq 0 ]
    [ "$(stat -c %u "$SPARK_DATA_DIR/jobs/abc/result.zip")" = 10001 ]
    [[ $output == *"giving $SPARK_DATA_DIR to uid 10001"* ]]
    run "$SCRIPTS/docker-entrypoint.sh"
    [ "$status" -eq 0 ]
    [[ $output != *"giving"* ]]
}

@test "started as a non-root user it runs the entry directly" {
    cp "$SCRIPTS/docker-entrypoint.sh" "$t/"   # where uid 10002 can read it
    run setpriv --reuid=10002 --regid=10002 --clear-groups "$t/docker-entrypoint.sh" x
    [ "$status" -eq 0 ]
    grep -q "^uid=10002 gid=10002 .* args=x" "$RECORD"
    [ ! -e "$MODELS_DIR" ] || [ "$(stat -c %u "$MODELS_DIR")" != 10001 ]
}
