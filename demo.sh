#!/usr/bin/env bash
# The main job on a fresh machine: install, start the service on 127.0.0.1:8185 (the demo model pack when no
# real pack is present), separate the bundled example clip with curl, and leave the stems in out/.
# KEEP_SERVING=1 keeps the server running afterwards; INPUT=path separates another file.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || bash setup.sh

export HOST=127.0.0.1 PORT="${PORT:-8185}"
export SPARK_DATA_DIR="${SPARK_DATA_DIR:-$PWD/out/data}"
export SPARK_API_TOKEN="${SPARK_API_TOKEN:-$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(24))')}"
INPUT="${INPUT:-examples/dialog_over_music.flac}"
mkdir -p out
.venv/bin/python server.py >out/server.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT

url="http://$HOST:$PORT"
auth="Authorization: Bearer $SPARK_API_TOKEN"
echo "waiting for $url/ready (log: out/server.log)"
for _ in $(seq 1 300); do
    curl -sf -H "$auth" "$url/ready" >/dev/null && break
    kill -0 $server 2>/dev/null || { cat out/server.log; exit 1; }
    sleep 1
done
curl -sS -H "$auth" "$url/ready"; echo
name=$(basename "${INPUT%.*}")
curl -sSf -H "$auth" -F "file=@$INPUT" "$url/separate" -D out/headers.txt -o "out/${name}_stems.zip"
(cd out && unzip -o -q "${name}_stems.zip")
grep -i '^x-spark-pack' out/headers.txt || true
echo "stems:"; ls -l out/"${name}"_*.wav
if [ "${KEEP_SERVING:-0}" = 1 ]; then
    echo "serving on $url (token in SPARK_API_TOKEN=$SPARK_API_TOKEN); Ctrl-C stops"
    wait $server
fi
