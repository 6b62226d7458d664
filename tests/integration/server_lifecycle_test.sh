#!/usr/bin/env bash
# fleetid-server on its embedded defaults: first start creates the token store, says where its
# data lives and where it listens, answers /healthz, stops cleanly on SIGTERM and SIGINT, and a
# second start reuses everything. No PIN ever reaches the log.
SERVER=$1
source "$(dirname "$0")/lib.sh"

DATA=$W/var
PORT=$(free_port)
HPORT=$(free_port)
"$SERVER" --data "$DATA" --listen "127.0.0.1:$PORT" --https-listen "127.0.0.1:$HPORT" >"$W/run1.log" 2>&1 &
PID=$!; PIDS+=("$PID")
wait_for_log "$W/run1.log" "msg=listening"

expect "first start names its data directory" grep -q "data=$DATA" "$W/run1.log"
expect "first start says where it listens" grep -q "http=http://127.0.0.1:$PORT" "$W/run1.log"
expect "first start created the embedded token" grep -q "created=true" "$W/run1.log"
body=$(curl -sS --max-time 5 "http://127.0.0.1:$PORT/healthz")
expect "/healthz answers ok" test "$(echo "$body" | python3 -c 'import json,sys;print(json.load(sys.stdin)["status"])')" = ok
code=$(curl -s -o "$W/404.json" -w '%{http_code}' --max-time 5 "http://127.0.0.1:$PORT/nope")
expect "unknown path is a 404 with a JSON body" test "$code" = 404
expect "404 body is JSON with an error code" python3 -c "import json;assert json.load(open('$W/404.json'))['error']"

# The HTTPS front: its certificate is issued by the authority's own hierarchy for localhost.
expect "first start says where HTTPS listens" grep -q "https=https://127.0.0.1:$HPORT" "$W/run1.log"
curl -sf "http://127.0.0.1:$PORT/ca/root.crt" | openssl x509 -inform DER -out "$W/root.pem"
body=$(curl -sS --max-time 5 --cacert "$W/root.pem" "https://localhost:$HPORT/healthz")
expect "/healthz over HTTPS verifies against the fleet root ($body)" grep -q '"status":"ok"' <<<"$body"
out=$(openssl s_client -connect "127.0.0.1:$HPORT" -servername localhost -CAfile "$W/root.pem" -verify_return_error </dev/null 2>&1 || true)
expect "openssl s_client: chain verifies" grep -q "Verify return code: 0 (ok)" <<<"$out"
expect "openssl s_client: TLS 1.2 or newer" grep -Eq "TLSv1\.[23]" <<<"$out"
rc=0; curl -s --max-time 5 -o /dev/null "https://localhost:$HPORT/healthz" || rc=$?
expect "a client that does not trust the fleet root refuses the server (curl rc $rc)" test "$rc" = 60
serial1=$(grep -o 'msg="https certificate" serial=[0-9a-f]*' "$W/run1.log" | cut -d= -f3)

expect "data directory is private (0700)" test "$(stat -c %a "$DATA")" = 700
expect "custody directory is private (0700)" test "$(stat -c %a "$DATA/custody")" = 700
expect "user PIN file is 0600" test "$(stat -c %a "$DATA/custody/user.pin")" = 600
expect "SO PIN file is 0600" test "$(stat -c %a "$DATA/custody/so.pin")" = 600
expect "softhsm2.conf points at the private token directory" \
  grep -q "directories.tokendir = $DATA/custody/tokens" "$DATA/custody/softhsm2.conf"

kill -TERM "$PID"
wait_exit "$PID" 15
expect "SIGTERM stops the server with status 0 (got $RC)" test "$RC" = 0
expect "the server said it stopped" grep -q "msg=stopped" "$W/run1.log"

"$SERVER" --data "$DATA" --listen "127.0.0.1:$PORT" --https-listen "127.0.0.1:$HPORT" >"$W/run2.log" 2>&1 &
PID=$!; PIDS+=("$PID")
wait_for_log "$W/run2.log" "msg=listening"
expect "second start reuses the token store" grep -q "created=false" "$W/run2.log"
serial2=$(grep -o 'msg="https certificate" serial=[0-9a-f]*' "$W/run2.log" | cut -d= -f3)
expect "second start reuses the HTTPS certificate ($serial1)" test -n "$serial1" -a "$serial1" = "$serial2"
rc=0; timeout 20 "$SERVER" --data "$DATA" --listen "127.0.0.1:$(free_port)" \
  --https-listen "127.0.0.1:$(free_port)" >"$W/twice.log" 2>&1 || rc=$?
expect "a second server on the same data directory exits 1 (got $rc)" test "$rc" = 1
expect "... naming the server that holds it" grep -q "fleetid-server (pid $PID) holds it" "$W/twice.log"
kill -INT "$PID"
wait_exit "$PID" 15
expect "SIGINT stops the server with status 0 (got $RC)" test "$RC" = 0

for pin in "$DATA/custody/user.pin" "$DATA/custody/so.pin"; do
  expect "no log line contains $(basename "$pin")" bash -c '! grep -qF -- "$(cat "$1")" "$2" "$3"' _ "$pin" "$W/run1.log" "$W/run2.log"
done

# A port already taken: a clear error and a non-zero exit, not a crash.
# SO_REUSEADDR lets the holder bind past the TIME_WAIT connections the server just left on the
# port (Linux still refuses a second bind while the holder listens); the server runs under a
# timeout so that a holder that failed anyway cannot hang the test.
python3 -c "import socket,time
s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(('127.0.0.1',$PORT));s.listen();open('$W/holding','w').close();time.sleep(30)" &
HOLDER=$!; PIDS+=("$HOLDER")
for _ in $(seq 100); do [[ -f $W/holding ]] && break; sleep 0.05; done
expect "the holder took the port" test -f "$W/holding"
rc=0; timeout 20 "$SERVER" --data "$DATA" --listen "127.0.0.1:$PORT" --https-listen "127.0.0.1:$HPORT" >"$W/busy.log" 2>&1 || rc=$?
expect "a busy port exits 1 (got $rc)" test "$rc" = 1
expect "a busy port is reported as unavailable" grep -q "unavailable" "$W/busy.log"
kill "$HOLDER" 2>/dev/null || true

# Configuration errors: named, and nothing created.
echo '{"data_dri": "/tmp/x"}' >"$W/typo.json"
rc=0; "$SERVER" --config "$W/typo.json" --data "$W/never" >"$W/typo.log" 2>&1 || rc=$?
expect "a config typo exits 1" test "$rc" = 1
expect "a config typo names the key" grep -q "unknown config key 'data_dri'" "$W/typo.log"
expect "a config typo creates no data directory" test ! -e "$W/never"
rc=0; "$SERVER" --data "$W/never" --listen "localhost" >"$W/listen.log" 2>&1 || rc=$?
expect "a bad listen address exits 1 and says why" grep -q "not host:port" "$W/listen.log"

# An external module that does not exist: unavailable, with the path.
rc=0; "$SERVER" --data "$W/ext" --module /nonexistent/libhsm.so --pin-env NOPE >"$W/mod.log" 2>&1 || rc=$?
expect "a missing PKCS#11 module exits 1" test "$rc" = 1
expect "a missing PKCS#11 module is named" grep -q "/nonexistent/libhsm.so' does not exist" "$W/mod.log"

finish
