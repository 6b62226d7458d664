#!/usr/bin/env bash
# make bench, enrollment part. Attested EST enrollment over fresh mutual-TLS connections, beside
# the TLS handshake rate of `openssl s_server` with client certificates, measured in the same run:
#   fleetid        a fresh authority (SQLite, SoftHSM2) with --threads 2; two factory batches of
#                  BENCH_ENROLL_DEVICES devices each (every device its own SoftHSM2 token as secure
#                  element); `fleetid-agent simulate --threads BENCH_ENROLL_THREADS` enrolls one
#                  batch with one fresh connection per enrollment (nonce, evidence, simpleenroll and
#                  cacerts over one keep-alive connection) and the other with a fresh connection per
#                  request (3 full handshakes per enrollment, as three curl calls would)
#   s_server       `openssl s_server -Verify 1 -www`, TLS 1.3, P-256 ECDSA certificates on both
#                  sides, no session tickets (as fleetid); `openssl s_time -new` for
#                  BENCH_TLS_SECONDS, one client alone and then two clients at once (summed).
#                  s_server is single-threaded: it uses one core whatever the clients do.
# The factory step (`fleetid factory make`) is timed too: it is the manufacturer's cost per device.
# Writes one JSON object per figure to bench/out/enroll.jsonl (BENCH_ENROLL_RESULTS overrides).
#
# Uses the release binaries as built (build/release/apps, or FLEETID_BENCH_BIN); it never builds.
# Everything it starts runs under a temporary directory and is stopped, with that directory
# removed, on exit. Servers listen on 127.0.0.1 only.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${FLEETID_BENCH_BIN:-$ROOT/build/release/apps}
BIN=$(cd "$BIN" 2>/dev/null && pwd || echo "$BIN")
RESULTS=${BENCH_ENROLL_RESULTS:-$ROOT/bench/out/enroll.jsonl}
DEVICES=${BENCH_ENROLL_DEVICES:-300}
THREADS=${BENCH_ENROLL_THREADS:-2}
TLS_SECONDS=${BENCH_TLS_SECONDS:-10}

die() { echo "enroll_bench: $*" >&2; exit 1; }

for tool in openssl curl python3 softhsm2-util; do
  command -v "$tool" >/dev/null || die "$tool is missing (scripts/bootstrap.sh bench installs it)"
done
for app in fleetid-server fleetid fleetid-agent; do
  [[ -x $BIN/$app ]] || die "$BIN/$app is missing: build the release preset first (make release)"
done

W=$(mktemp -d "${TMPDIR:-/tmp}/fleetid-enroll-bench-XXXXXX")
SERVERS=()  # process group ids: each server runs in a group of its own (see start)

# in_group PGID: true while a process of the group is still running (zombies do not count).
in_group() {
  ps -A -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

# stop PGID: TERM to the whole group, KILL if anything is left after 5 s.
stop() {
  local pgid=$1 deadline=$((SECONDS + 5)) kept=() p
  for p in "${SERVERS[@]}"; do [[ $p == "$pgid" ]] || kept+=("$p"); done
  SERVERS=("${kept[@]}")
  kill -TERM -- "-$pgid" 2>/dev/null || true
  while in_group "$pgid" && ((SECONDS < deadline)); do sleep 0.1; done
  if in_group "$pgid"; then
    echo "enroll_bench: process group $pgid ignored TERM; killing it" >&2
    kill -KILL -- "-$pgid" 2>/dev/null || true
    while in_group "$pgid"; do sleep 0.1; done
  fi
  wait "$pgid" 2>/dev/null || true
}

cleanup() {
  while ((${#SERVERS[@]} > 0)); do stop "${SERVERS[0]}"; done
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME COMMAND...: runs COMMAND in the background, in a process group of its own, with its
# output in $W/NAME.log. Sets PGID. The s_time clients run this way too, so that an interrupted
# run stops them with the servers.
start() {
  local name=$1; shift
  set -m
  "$@" </dev/null >"$W/$name.log" 2>&1 &
  PGID=$!
  set +m
  SERVERS+=("$PGID")
}

# finish PGID: waits for a process started with start to exit by itself; returns its status.
finish() {
  local pgid=$1 kept=() p status=0
  wait "$pgid" || status=$?
  for p in "${SERVERS[@]}"; do [[ $p == "$pgid" ]] || kept+=("$p"); done
  SERVERS=("${kept[@]}")
  return "$status"
}

free_port() {
  python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}

# wait_until NAME COMMAND...: retries COMMAND for up to 30 s while server NAME (the last one
# started) is running; on failure prints its log and exits.
wait_until() {
  local name=$1 deadline=$((SECONDS + 30)); shift
  until "$@" 2>/dev/null; do
    if ! in_group "$PGID" || ((SECONDS >= deadline)); then
      cat "$W/$name.log" >&2
      die "$name did not come up"
    fi
    sleep 0.1
  done
}

now() { date +%s.%N; }
elapsed() { python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.3f}")' "$1" "$2"; }

# tls_summary HOST:PORT [s_client options]: protocol, key exchange and server key of one
# handshake, as `openssl s_client -brief` reports them (for the record, beside the figures).
tls_summary() {
  local target=$1; shift
  openssl s_client -connect "$target" -brief "$@" </dev/null 2>&1 |
    python3 -c '
import json, re, sys
text = sys.stdin.read()
def field(name):
    m = re.search(rf"^{name}:\s*(.+)$", text, re.M)
    return m.group(1).strip() if m else None
print(json.dumps({"protocol": field("Protocol version"), "ciphersuite": field("Ciphersuite"),
                  "key_exchange": field("(?:Server|Negotiated) Temp Key"),
                  "server_signature": field("Signature type")}))'
}

mkdir -p "$(dirname "$RESULTS")"
: >"$RESULTS"

# --- fleetid: a fresh authority, a manufacturer, two batches ----------------------------------
echo "== fleetid: attested EST enrollment, $DEVICES devices per mode, simulate --threads $THREADS"
PORT=$(free_port)
HPORT=$(free_port)
URL=http://127.0.0.1:$PORT
# fleetid ARGS...: the operator tool on this authority, its output in $W/fleetid-cli.log. The
# setup changes the data directory by hand next to the running server: --break-glass.
fleetid() {
  "$BIN/fleetid" --break-glass --data "$W/auth" --public-url "$URL" "$@" >>"$W/fleetid-cli.log" 2>&1 ||
    { tail -n 30 "$W/fleetid-cli.log" >&2; die "fleetid $* failed"; }
}
start fleetid "$BIN/fleetid-server" --data "$W/auth" --listen "127.0.0.1:$PORT" \
  --https-listen "127.0.0.1:$HPORT" --public-url "$URL" --threads 2
FLEETID_PGID=$PGID
wait_until fleetid grep -q "msg=listening" "$W/fleetid.log"

"$BIN/fleetid" factory init --dir "$W/factory" --name "Bench Devices" >>"$W/fleetid-cli.log" 2>&1 ||
  { tail -n 30 "$W/fleetid-cli.log" >&2; die "fleetid factory init failed"; }
head -c 4096 /dev/urandom >"$W/fw.bin"

# One batch per mode: a device enrolls once. The server is idle meanwhile.
for mode in keepalive perreq; do
  t0=$(now)
  "$BIN/fleetid" factory make --dir "$W/factory" --out "$W/batch-$mode" --count "$DEVICES" \
    --model bench-1 --firmware "$W/fw.bin" --prefix "$([[ $mode == keepalive ]] && echo BK || echo BP)" --agent "$BIN/fleetid-agent" \
    >>"$W/fleetid-cli.log" 2>&1 || { tail -n 30 "$W/fleetid-cli.log" >&2; die "fleetid factory make failed"; }
  seconds=$(elapsed "$t0" "$(now)")
  python3 -c 'import json, sys; n, s = int(sys.argv[1]), float(sys.argv[2]); print(json.dumps(
    {"figure": "factory_make", "server": "fleetid", "devices": n, "seconds": s, "per_second": n / s}))' \
    "$DEVICES" "$seconds" >>"$RESULTS"
  echo "   factory make: $DEVICES devices in $seconds s"
done

fleetid manufacturer add --cert "$W/factory/manufacturer.pem" --name "Bench Devices"
wait_until fleetid grep -q "manufacturer trust anchors" "$W/fleetid.log"
fleetid attest reference --model bench-1 --firmware "$W/fw.bin"
t0=$(now)
provisioned=0
for mode in keepalive perreq; do
  fleetid devices import-manifest "$W/batch-$mode/manifest.jws"
  while read -r serial; do
    [[ -n $serial ]] || continue
    fleetid devices provision "$serial" --tenant bench --region r1
    provisioned=$((provisioned + 1))
  done <"$W/batch-$mode/serials.txt"
done
echo "   provisioned $provisioned devices in $(elapsed "$t0" "$(now)") s (one fleetid process each; not a figure)"
curl -sf "$URL/ca/root.crt" | openssl x509 -inform DER -out "$W/root.pem" || die "no root certificate at $URL/ca/root.crt"
TLS_FLEETID=$(tls_summary "127.0.0.1:$HPORT" -CAfile "$W/root.pem")

# simulate MODE [FLAG]: enrolls batch MODE; appends its figure to $RESULTS.
simulate() {
  local mode=$1 per_enrollment=1 out status=0; shift
  (($# > 0)) && per_enrollment=3
  out=$("$BIN/fleetid-agent" simulate --batch "$W/batch-$mode" --server "https://127.0.0.1:$HPORT" \
    --trust "$W/root.pem" --threads "$THREADS" "$@" 2>"$W/simulate-$mode.log") || status=$?
  if ((status != 0)) || ! grep -q '"enrollments_per_second"' <<<"$out"; then
    echo "$out" >&2
    tail -n 20 "$W/simulate-$mode.log" >&2
    tail -n 20 "$W/fleetid.log" >&2
    die "fleetid-agent simulate $* failed (status $status)"
  fi
  python3 -c '
import json, sys
r = json.loads(sys.argv[1])
per, threads, tls = int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
if r["failed"] or r["enrolled"] != r["devices"]:
    sys.exit(f"enroll_bench: {r}")
r.update({"figure": "enroll", "server": "fleetid", "threads": threads,
          "handshakes_per_enrollment": per,
          "handshakes_per_second": r["enrollments_per_second"] * per, "tls": tls})
print(json.dumps(r))' "$out" "$per_enrollment" "$THREADS" "$TLS_FLEETID" >>"$RESULTS"
  echo "   $out"
}
simulate keepalive
simulate perreq --per-request-connections
stop "$FLEETID_PGID"

# --- baseline: openssl s_server with client certificates, openssl s_time -new ---------------
echo "== baseline: openssl s_server -Verify 1 (single-threaded), s_time -new, ${TLS_SECONDS}s, 1 then 2 clients"
S=$W/s_server
mkdir "$S"
ec_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ec_key "$S/ca.key"
openssl req -x509 -new -key "$S/ca.key" -days 2 -subj "/O=bench/CN=s_server bench CA" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
  -out "$S/ca.pem" 2>/dev/null
# leaf NAME SUBJECT EXTENSIONS: a P-256 certificate signed by the CA above.
leaf() {
  ec_key "$S/$1.key"
  openssl req -new -key "$S/$1.key" -subj "$2" -out "$S/$1.csr" 2>/dev/null
  printf '%s\n' "$3" >"$S/$1.ext"
  openssl x509 -req -in "$S/$1.csr" -CA "$S/ca.pem" -CAkey "$S/ca.key" -CAcreateserial -days 1 \
    -sha256 -extfile "$S/$1.ext" -out "$S/$1.pem" 2>/dev/null
}
leaf srv "/O=bench/CN=127.0.0.1" "$(printf '%s\n' 'basicConstraints=critical,CA:FALSE' \
  'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' 'subjectAltName=IP:127.0.0.1')"
leaf cli "/O=bench/CN=bench-device" "$(printf '%s\n' 'basicConstraints=critical,CA:FALSE' \
  'keyUsage=critical,digitalSignature' 'extendedKeyUsage=clientAuth')"
openssl verify -CAfile "$S/ca.pem" "$S/srv.pem" "$S/cli.pem" >/dev/null || die "the s_server certificates do not verify"

SPORT=$(free_port)
# The same groups as fleetid's HTTPS front offers, and no session tickets: fleetid sends none,
# and s_time closes without reading, so unread tickets would make its close a reset, which can
# cut the server's processing of the client's certificate short. -verify_quiet: no four lines of
# verify trace per connection.
start s_server openssl s_server -accept "127.0.0.1:$SPORT" -cert "$S/srv.pem" -key "$S/srv.key" \
  -CAfile "$S/ca.pem" -Verify 1 -verify_quiet -www -quiet -tls1_3 -groups X25519:P-256:P-384 -num_tickets 0
S_SERVER_PGID=$PGID
# The -www page says whether the client's certificate was received and verified.
wait_until s_server curl -sf --cacert "$S/ca.pem" --cert "$S/cli.pem" --key "$S/cli.key" \
  -o "$S/page.html" "https://127.0.0.1:$SPORT/"
grep -q "^Client certificate" "$S/page.html" || { cat "$S/page.html" >&2; die "s_server did not get the client certificate"; }
grep -q "TLSv1.3" "$S/page.html" || { cat "$S/page.html" >&2; die "s_server did not speak TLS 1.3"; }
TLS_S_SERVER=$(tls_summary "127.0.0.1:$SPORT" -CAfile "$S/ca.pem" -cert "$S/cli.pem" -key "$S/cli.key")

# s_time_run CLIENTS: CLIENTS s_time processes at once; appends the summed figure to $RESULTS.
s_time_run() {
  local clients=$1 i pgids=() t0 t1
  t0=$(now)
  for ((i = 1; i <= clients; i++)); do
    start "s_time-$clients-$i" openssl s_time -connect "127.0.0.1:$SPORT" -new -tls1_3 \
      -cert "$S/cli.pem" -key "$S/cli.key" -CAfile "$S/ca.pem" -time "$TLS_SECONDS"
    pgids+=("$PGID")
  done
  for ((i = 1; i <= clients; i++)); do
    finish "${pgids[i - 1]}" || { cat "$W/s_time-$clients-$i.log" >&2; die "s_time failed"; }
  done
  t1=$(now)
  # Rate = connections / the wall time of the run (s_time's own "real seconds" are whole seconds).
  python3 - "$clients" "$(elapsed "$t0" "$t1")" "$TLS_S_SERVER" "$W"/s_time-"$clients"-*.log >>"$RESULTS" <<'PY'
import json, re, sys
clients, wall, tls = int(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3])
total, real = 0, []
for path in sys.argv[4:]:
    text = open(path).read()
    m = re.search(r"(\d+) connections in (\d+) real seconds", text)
    if not m:
        sys.exit(f"enroll_bench: no connection count in {path}:\n{text}")
    total += int(m.group(1))
    real.append(int(m.group(2)))
print(json.dumps({"figure": "tls_handshake", "server": "openssl-s_server", "clients": clients,
                  "connections": total, "seconds": wall, "s_time_real_seconds": real,
                  "handshakes_per_second": total / wall, "tls": tls}))
PY
  tail -n 1 "$RESULTS" | python3 -c 'import json, sys; r = json.load(sys.stdin); print(
    "   %d s_time client(s): %d handshakes in %.2f s, %.0f/s"
    % (r["clients"], r["connections"], r["seconds"], r["handshakes_per_second"]))'
}
s_time_run 1
s_time_run 2
stop "$S_SERVER_PGID"

echo "== enrollment figures in ${RESULTS#"$ROOT"/}"
