#!/usr/bin/env bash
# Fresh machine (Debian/Ubuntu, root or sudo) -> .venv with everything the service and the tests need.
set -euo pipefail
cd "$(dirname "$0")"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# ffmpeg: test media; espeak-ng/fluidsynth/soundfont/sound-theme-freedesktop: demo-pack data; bats/shellcheck/curl/zip:
# boot-chain tests; chromium/chromium-driver: the operator page's browser test.
APT_PACKAGES="ffmpeg espeak-ng fluidsynth fluid-soundfont-gm sound-theme-freedesktop sox bats shellcheck curl zip unzip
ca-certificates chromium chromium-driver"
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# torch first and pinned: an open-ended torch requirement would pull a multi-GB CUDA build.
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -r requirements-dev.txt
.venv/bin/pip install -q -e .  # the engine, the service and testkit (pyproject.toml): spark-server, spark-separate
.venv/bin/pip install -q -e ./client  # the pipeline client (`spark` command), tested by tests/test_client.py
echo "setup done: .venv ready"
