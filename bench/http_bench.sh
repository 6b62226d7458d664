#!/usr/bin/env bash
# make bench, HTTP part. With wrk on 127.0.0.1, same load for every server
# (2 threads, 64 keep-alive connections, BENCH_HTTP_SECONDS each):
#   fleetid      OCSP answers from its cache, POST /ocsp and GET /ocsp/{base64}
#   nginx        a static file of exactly the size of fleetid's OCSP response (baseline a)
#   openssl ocsp OpenSSL's responder over the same certificates, signing every answer (baseline b)
#   cfssl        /api/v1/cfssl/sign with an in-memory P-256 key and no database, beside fleetid's
#                in-process issuance figures from pki_bench
# and writes one JSON object per figure to bench/out/http.jsonl (see bench/wrk_json.py).
#
# Uses the release binaries as built (build/release/apps); it never builds. Everything it
# starts runs under a temporary directory and is stopped, with that directory removed, on exit.
# As root it runs in a private network namespace: `openssl ocsp -port` listens on every
# interface, and no server here should be reachable from outside or meet anyone else's ports.
set -euo pipefail

if [[ -z ${FLEETID_BENCH_NETNS:-} && $(id -u) -eq 0 ]] && unshare -n true 2>/dev/null; then
  FLEETID_BENCH_NETNS=1 exec unshare -n -- "$BASH" "$0" "$@"
fi
if [[ -n ${FLEETID_BENCH_NETNS:-} ]]; then
  ip link set lo up
fi

cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/build/release/apps
RESULTS=$ROOT/bench/out/http.jsonl
DURATION=${BENCH_HTTP_SECONDS:-10}
CERTS=${BENCH_HTTP_CERTS:-20}
WRK=(wrk --threads 2 --connections 64 --duration "${DURATION}s" --latency)
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

die() { echo "http_bench: $*" >&2; exit 1; }

for tool in wrk "$NGINX" openssl cfssl curl python3; do
  command -v "$tool" >/dev/null || die "$tool is missing (scripts/bootstrap.sh bench installs it)"
done
for app in fleetid-server fleetid; do
  [[ -x $BIN/$app ]] || die "$BIN/$app is missing: build the release preset first (make release)"
done
[[ -n ${FLEETID_BENCH_NETNS:-} ]] ||
  echo "http_bench: not root, so no private network namespace: openssl ocsp listens on all interfaces while it runs" >&2

W=$(mktemp -d "${TMPDIR:-/tmp}/fleetid-http-bench-XXXXXX")
SERVERS=()  # process group ids: each server runs in a group of its own (see start)

# in_group PGID: true while a process of the group is still running (zombies do not count).
in_group() {
  ps -A -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

# stop PGID: TERM to the whole group, KILL if anything is left after 5 s. The group matters for
# `openssl ocsp -multi`: a child spins at 100 % CPU once a client has connected and closed
# without sending a byte (which wrk does when it stops), and a TERM to its parent alone leaves
# that child spinning.
stop() {
  local pgid=$1 deadline=$((SECONDS + 5)) kept=() p
  for p in "${SERVERS[@]}"; do [[ $p == "$pgid" ]] || kept+=("$p"); done
  SERVERS=("${kept[@]}")
  kill -TERM -- "-$pgid" 2>/dev/null || true
  while in_group "$pgid" && ((SECONDS < deadline)); do sleep 0.1; done
  if in_group "$pgid"; then
    echo "http_bench: process group $pgid ignored TERM; killing it" >&2
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

# start NAME COMMAND...: runs COMMAND in the background, in a process group of its own (job
# control on for this one job; setsid is no good: `openssl ocsp -multi` calls setpgid itself,
# which fails for a session leader), with its output in $W/NAME.log. Sets PGID.
start() {
  local name=$1; shift
  set -m
  "$@" </dev/null >"$W/$name.log" 2>&1 &
  PGID=$!
  set +m
  SERVERS+=("$PGID")
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

# post URL BODY_FILE CONTENT_TYPE OUT: one POST with curl (it always sends the request it
# connected for, so it cannot trip the openssl ocsp hang); fails on an HTTP error.
post() {
  curl -sf -o "$4" -H "Content-Type: $3" --data-binary "@$2" "$1"
}

size() { stat -c %s "$1"; }

# measure FIGURE SERVER BYTES URL [BODY_FILE CONTENT_TYPE]: runs wrk against URL (GET, or POST
# of BODY_FILE through bench/post_body.lua) and appends the figure to $RESULTS.
measure() {
  local figure=$1 server=$2 bytes=$3 url=$4 out="$W/wrk-$2-$1.txt"
  local script=()
  if (($# > 4)); then
    script=(--script "$ROOT/bench/post_body.lua" "$url" -- "$5" "$6")
  else
    script=("$url")
  fi
  "${WRK[@]}" "${script[@]}" >"$out" || { cat "$out" >&2; die "wrk failed against $server"; }
  python3 "$ROOT/bench/wrk_json.py" "$figure" "$server" "$bytes" <"$out" >>"$RESULTS"
}

mkdir -p "$(dirname "$RESULTS")"
: >"$RESULTS"

# --- fleetid: a fresh authority, CERTS devices each with one certificate ----------------------
echo "== fleetid: cached OCSP over HTTP (wrk ${WRK[*]:1})"
PORT=$(free_port)
URL=http://127.0.0.1:$PORT
# fleetid ARGS...: the operator tool on this authority, its output in $W/fleetid-cli.log. The
# setup changes the data directory by hand next to the running server: --break-glass.
fleetid() {
  "$BIN/fleetid" --break-glass --data "$W/fleetid" --public-url "$URL" "$@" >>"$W/fleetid-cli.log" 2>&1 ||
    { cat "$W/fleetid-cli.log" >&2; die "fleetid $* failed"; }
}
SERVER_ARGS=(--data "$W/fleetid" --listen "127.0.0.1:$PORT" --threads 2)
# Once the server has its HTTPS front, keep that off its default port too.
if grep -q -- --https-listen <<<"$("$BIN/fleetid-server" --help)"; then
  SERVER_ARGS+=(--https-listen "127.0.0.1:$(free_port)")
fi
start fleetid "$BIN/fleetid-server" "${SERVER_ARGS[@]}"
FLEETID_PGID=$PGID
wait_until fleetid grep -q "msg=listening" "$W/fleetid.log"

mkdir "$W/certs"
for ((i = 1; i <= CERTS; i++)); do
  printf '{"serial":"BENCH-%04d","model":"gw-100","manufacturer":"acme","idevid_fingerprint":"%064x"}\n' "$i" "$i"
done >"$W/batch.jsonl"
fleetid devices import "$W/batch.jsonl"
# One device key and CSR serve every device: fleetid writes subject and SAN from the registry,
# so each certificate still names its own device (openssl ocsp's index wants unique subjects).
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/device.key"
openssl req -new -key "$W/device.key" -subj "/CN=bench-device" -out "$W/device.csr"
for ((i = 1; i <= CERTS; i++)); do
  device=$(printf 'BENCH-%04d' "$i")
  fleetid devices provision "$device" --tenant acme --region bench
  fleetid ca issue --device "$device" --csr "$W/device.csr" --out "$W/certs/$device.pem"
done
curl -sf "$URL/ca/root.crt" | openssl x509 -inform DER -out "$W/root.pem"
curl -sf "$URL/ca/ecdsa-p256-sha256.crt" | openssl x509 -inform DER -out "$W/issuing.pem"

# The request every server gets: one SHA-1 CertID, no nonce, for a certificate in the middle.
CERT=$W/certs/$(printf 'BENCH-%04d' $(((CERTS + 1) / 2))).pem
openssl ocsp -issuer "$W/issuing.pem" -cert "$CERT" -no_nonce -reqout "$W/request.der" >/dev/null 2>&1
[[ -s $W/request.der ]] || die "openssl ocsp wrote no request"
GET_PATH=/ocsp/$(openssl base64 -A -in "$W/request.der" |
  python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.stdin.read(), safe=""))')

# check_good NAME RESPONSE VERIFY_OPTION...: the response must be a successful OCSP answer,
# "good" for $CERT, with a signature that verifies.
check_good() {
  local name=$1 response=$2 out; shift 2
  out=$(openssl ocsp -respin "$response" -issuer "$W/issuing.pem" -cert "$CERT" "$@" 2>&1) || true
  if ! grep -q "Response verify OK" <<<"$out" || ! grep -qF "$CERT: good" <<<"$out"; then
    openssl ocsp -respin "$response" -resp_text -noverify >&2 || true
    echo "$out" >&2
    die "$name did not answer a verified 'good' OCSP response"
  fi
}

# These two requests also warm fleetid's cache: the answer is signed once, here.
post "$URL/ocsp" "$W/request.der" application/ocsp-request "$W/fleetid.der" ||
  die "POST $URL/ocsp failed"
check_good fleetid "$W/fleetid.der" -CAfile "$W/root.pem" -verify_other "$W/issuing.pem"
curl -sf -o "$W/fleetid-get.der" "$URL$GET_PATH" || die "GET $URL$GET_PATH failed"
check_good "fleetid (GET)" "$W/fleetid-get.der" -CAfile "$W/root.pem" -verify_other "$W/issuing.pem"
cmp -s "$W/fleetid.der" "$W/fleetid-get.der" ||
  echo "http_bench: note: fleetid answered GET and POST of the same request with different bytes" >&2
BYTES=$(size "$W/fleetid.der")

measure ocsp_post fleetid "$BYTES" "$URL/ocsp" "$W/request.der" application/ocsp-request
measure ocsp_get fleetid "$(size "$W/fleetid-get.der")" "$URL$GET_PATH"
stop "$FLEETID_PGID"

# --- baseline (a): nginx serving fleetid's response as a static file ---------------------------
echo "== baseline: nginx, a static file of the same $BYTES bytes"
PORT=$(free_port)
NG=$W/nginx
mkdir -p "$NG/html" "$NG/temp"
cp "$W/fleetid.der" "$NG/html/ocsp.der"
cat >"$NG/nginx.conf" <<EOF
# As the invoking user: 'user' only matters (and is only allowed to differ) when run as root.
user $(id -un) $(id -gn);
worker_processes 2;
daemon off;
pid $NG/nginx.pid;
error_log $NG/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $NG/temp/client;
  proxy_temp_path $NG/temp/proxy;
  fastcgi_temp_path $NG/temp/fastcgi;
  uwsgi_temp_path $NG/temp/uwsgi;
  scgi_temp_path $NG/temp/scgi;
  default_type application/ocsp-response;
  sendfile on;
  server {
    listen 127.0.0.1:$PORT;
    root $NG/html;
  }
}
EOF
start nginx "$NGINX" -p "$NG" -c "$NG/nginx.conf" -e "$NG/error.log"
NGINX_PGID=$PGID
wait_until nginx curl -sf -o "$W/nginx.der" "http://127.0.0.1:$PORT/ocsp.der"
cmp -s "$W/nginx.der" "$W/fleetid.der" || die "nginx served something else than the file"
measure static_get nginx "$(size "$W/nginx.der")" "http://127.0.0.1:$PORT/ocsp.der"
stop "$NGINX_PGID"

# --- baseline (b): openssl ocsp over the same certificates -------------------------------------
echo "== baseline: openssl ocsp responder (signs every answer), $CERTS certificates in its index"
OS=$W/openssl-ocsp
mkdir "$OS"
# The index of an OpenSSL CA: status, expiry (YYMMDDHHMMSSZ), revocation date (none), serial in
# upper-case hex, file name, subject in OpenSSL's one-line form.
for cert in "$W"/certs/*.pem; do
  expiry=$(date -u -d "$(openssl x509 -in "$cert" -noout -enddate | cut -d= -f2)" +%y%m%d%H%M%SZ)
  serial=$(openssl x509 -in "$cert" -noout -serial | cut -d= -f2)
  subject=$(openssl x509 -in "$cert" -noout -subject -nameopt compat | sed 's/^subject=//')
  printf 'V\t%s\t\t%s\tunknown\t%s\n' "$expiry" "${serial^^}" "$subject"
done >"$OS/index.txt"
# fleetid's keys stay in its token, so the responder signs with a throwaway P-256 key.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj "/O=bench/CN=openssl ocsp responder" -addext extendedKeyUsage=OCSPSigning \
  -keyout "$OS/signer.key" -out "$OS/signer.pem" 2>/dev/null
PORT=$(free_port)
start openssl-ocsp openssl ocsp -index "$OS/index.txt" -port "$PORT" -CA "$W/issuing.pem" \
  -rsigner "$OS/signer.pem" -rkey "$OS/signer.key" -nmin 60 -multi 2 -ignore_err
OPENSSL_PGID=$PGID
wait_until openssl-ocsp post "http://127.0.0.1:$PORT/" "$W/request.der" application/ocsp-request "$W/openssl.der"
check_good "openssl ocsp" "$W/openssl.der" -VAfile "$OS/signer.pem"
measure ocsp_post openssl-ocsp "$(size "$W/openssl.der")" "http://127.0.0.1:$PORT/" \
  "$W/request.der" application/ocsp-request
stop "$OPENSSL_PGID"  # at once: its children may be spinning already (see stop)

# --- issuance: cfssl serve, /api/v1/cfssl/sign ------------------------------------------------
echo "== baseline: cfssl sign (in-memory P-256 key, no database)"
CF=$W/cfssl
mkdir "$CF"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/O=bench/CN=cfssl bench CA" -addext basicConstraints=critical,CA:TRUE \
  -addext keyUsage=critical,keyCertSign,cRLSign -keyout "$CF/ca.key" -out "$CF/ca.pem" 2>/dev/null
# A profile close to fleetid's: 24 hours, clientAuth, AIA and CDP.
cat >"$CF/config.json" <<EOF
{"signing": {"default": {
  "expiry": "24h",
  "usages": ["digital signature", "client auth"],
  "ocsp_url": "http://127.0.0.1/ocsp",
  "crl_url": "http://127.0.0.1/crl/bench.crl",
  "issuer_urls": ["http://127.0.0.1/ca/bench.crt"]
}}}
EOF
python3 -c 'import json, sys; print(json.dumps({"certificate_request": open(sys.argv[1]).read()}))' \
  "$W/device.csr" >"$CF/sign.json"
PORT=$(free_port)
# -loglevel 2 (warnings): at its default (info) cfssl logs four lines per certificate; fleetid none.
start cfssl cfssl serve -address 127.0.0.1 -port "$PORT" -ca "$CF/ca.pem" -ca-key "$CF/ca.key" \
  -config "$CF/config.json" -loglevel 2
CFSSL_PGID=$PGID
SIGN_URL=http://127.0.0.1:$PORT/api/v1/cfssl/sign
wait_until cfssl post "$SIGN_URL" "$CF/sign.json" application/json "$W/cfssl.json"
python3 - "$W/cfssl.json" >"$CF/signed.pem" <<'PY' || { cat "$W/cfssl.json" >&2; die "cfssl did not sign"; }
import json, sys
reply = json.load(open(sys.argv[1]))
if not reply.get("success"):
    sys.exit(1)
print(reply["result"]["certificate"])
PY
openssl verify -CAfile "$CF/ca.pem" "$CF/signed.pem" >/dev/null || die "cfssl's certificate does not verify"
measure sign cfssl "$(size "$W/cfssl.json")" "$SIGN_URL" "$CF/sign.json" application/json
stop "$CFSSL_PGID"

echo "== HTTP figures in ${RESULTS#"$ROOT"/}"
