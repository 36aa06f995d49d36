#!/usr/bin/env bash
# The test command (README): shell tests of the boot chain, then every Python test.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
bats tests/bats
python -m pytest -q "$@"
