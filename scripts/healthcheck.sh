#!/usr/bin/env bash
# The image's HEALTHCHECK: healthy only when GET /ready answers 200, i.e. the model pack is loaded and, with
# SPARK_DEVICE=cuda, the GPU self-test passed (a box that cannot use its GPU is unhealthy). /ready needs the API
# token: SPARK_API_TOKEN, else the file entrypoint.sh stored it in. The token goes to curl on stdin (a config
# line), never on a command line other processes can read.
#
# Environment: PORT [8185], HOST [0.0.0.0: asked on 127.0.0.1], SPARK_API_TOKEN, TOKEN_FILE
# [$SPARK_DATA_DIR/api_token], SPARK_DATA_DIR [/workspace/spark].
set -euo pipefail

host="${HOST:-0.0.0.0}"
case $host in 0.0.0.0 | "" | "::" | "[::]") host=127.0.0.1 ;; *:*) host="[$host]" ;; esac
token="${SPARK_API_TOKEN:-}"
token_file="${TOKEN_FILE:-${SPARK_DATA_DIR:-/workspace/spark}/api_token}"
if [ -z "$token" ] && [ -r "$token_file" ]; then token=$(cat "$token_file"); fi

body=$(printf 'header = "Authorization: Bearer %s"\n' "$token" \
    | curl -sS --max-time 4 -K - -w '\n%{http_code}' "http://$host:${PORT:-8185}/ready") || { echo "no answer on /ready"; exit 1; }
code=${body##*$'\n'}
echo "/ready $code: ${body%$'\n'*}"
[ "$code" = 200 ]
