#!/usr/bin/env bash
# Instructions a server binary executes, counted by callgrind: repeatable on a busy
# machine where requests per second are not. Run it with N=0 and N=2000 and divide
# the difference by 2000 for instructions per request.
#
#   bench/callgrind/run.sh target/release/portcullis 2000 me   # GET /v1/me, bearer
#   bench/callgrind/run.sh target/release/portcullis 500 cc    # client_credentials
#
# Needs valgrind (Debian package) and python3. Everything listens on 127.0.0.1.
set -euo pipefail
BIN=$1; N=$2; WHAT=$3; HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
D=$(mktemp -d); PORT=$((30000 + RANDOM % 20000))
trap 'rm -rf "$D"' EXIT
export PORTCULLIS_MASTER_KEY=$(python3 -c 'import base64;print(base64.b64encode(b"k"*32).decode())')
# A first start outside valgrind makes the signing key (random, costly to count).
$BIN serve --listen 127.0.0.1:$PORT --data-dir $D > $D/boot.log 2>&1 & P=$!; sleep 1.5; kill -TERM $P; wait $P || true
CC=""
if [ "$WHAT" = cc ]; then
  OUT=$($BIN clients create --data-dir $D --name bench --grant-type client_credentials --scope reports:read 2>/dev/null)
  CC="$(echo "$OUT" | python3 -c 'import json,sys;d=json.load(sys.stdin);print(d["client_id"], d["client_secret"])')"
fi
PORTCULLIS_LOG__LEVEL=warn valgrind --tool=callgrind --callgrind-out-file=$D/cg.out $BIN serve --listen 127.0.0.1:$PORT --data-dir $D > $D/vg.log 2>&1 & P=$!
python3 "$HERE/client.py" $PORT $N $WHAT $CC > $D/client.log
kill -TERM $P; wait $P || true
grep -m1 "^summary:\|^totals:" $D/cg.out | awk '{print $2}'
