#!/usr/bin/env bash
# make bench, operator part. Authorized device.suspend (and resume) calls per second through the
# operator API, beside the raw registry transition rate measured in the same run, on SQLite and on
# a throwaway PostgreSQL:
#   api   a fresh fleetid-server (release, --threads 2) with BENCH_OPERATOR_DEVICES active devices
#         (each enrolled by fleetid-agent simulate, so each has a certificate to hold); the
#         administrator bootstrapped through the command line; build/release/bench/operator_bench
#         keeps 2 mutual-TLS connections alive and alternates POST .../suspend and .../resume on
#         its devices for BENCH_OPERATOR_SECONDS: each call authenticated (certificate status,
#         operator, grants), authorized by the policy, applied with the holds or releases of the
#         device's certificate, audited, and answered in JSON.
#   raw   operator_bench in process on a fresh database of the same backend: the same number of
#         active devices and the same 2 threads calling registry::Registry::Get and Transition,
#         with the same holds, releases and audit entries, and no HTTP, TLS, JSON or policy.
# The two alternate for BENCH_OPERATOR_ROUNDS rounds per backend; bench/report.py prints the
# medians and their ratio (target >= 0.8). Writes bench/out/operator.jsonl.
#
# Uses the release binaries as built; it never builds. Everything it starts runs under a
# temporary directory and is stopped, with that directory removed, on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${FLEETID_BENCH_BIN:-$ROOT/build/release/apps}
BENCH=$ROOT/build/release/bench/operator_bench
RESULTS=${BENCH_OPERATOR_RESULTS:-$ROOT/bench/out/operator.jsonl}
DEVICES=${BENCH_OPERATOR_DEVICES:-200}
SECONDS_EACH=${BENCH_OPERATOR_SECONDS:-10}
ROUNDS=${BENCH_OPERATOR_ROUNDS:-3}
THREADS=2

die() { echo "operator_bench: $*" >&2; exit 1; }
for app in "$BIN/fleetid-server" "$BIN/fleetid" "$BIN/fleetid-agent" "$BENCH"; do
  [[ -x $app ]] || die "$app is missing: build the release preset first (make release)"
done

W=$(mktemp -d "${TMPDIR:-/tmp}/fleetid-operator-bench-XXXXXX")
SERVER_PID=
PGDIR=
cleanup() {
  if [[ -n $SERVER_PID ]]; then kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  if [[ -n $PGDIR ]]; then tests/pg/pg.sh stop "$PGDIR"; fi
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_for() {  # wait_for FILE TEXT: until FILE says TEXT (60 s at most)
  local deadline=$((SECONDS + 60))
  until grep -q "$2" "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || { tail -n 20 "$1" >&2; die "timed out waiting for '$2' in $1"; }
    sleep 0.1
  done
}
quiet() { "$@" >>"$W/setup.log" 2>&1 || { tail -n 20 "$W/setup.log" >&2; die "$* failed"; }; }

mkdir -p "$(dirname "$RESULTS")"
: >"$RESULTS"
head -c 4096 /dev/urandom >"$W/fw.bin"
quiet "$BIN/fleetid" factory init --dir "$W/factory" --name "Bench Devices"

# server BACKEND DB_FLAG...: a fresh authority with DEVICES active devices and an administrator.
server() {
  local backend=$1
  shift
  local data=$W/$backend port hport
  port=$(free_port)
  hport=$(free_port)
  HURL=https://127.0.0.1:$hport
  "$BIN/fleetid-server" --data "$data" --listen "127.0.0.1:$port" --https-listen "127.0.0.1:$hport" \
    --threads 2 "$@" >"$W/server-$backend.log" 2>&1 &
  SERVER_PID=$!
  wait_for "$W/server-$backend.log" "msg=listening"
  L=("$BIN/fleetid" --data "$data" --break-glass "$@")  # setup by hand next to the server
  "${L[@]}" ca certs 2>>"$W/setup.log" | openssl x509 -out "$W/root.pem"
  quiet "$BIN/fleetid" --profile "$W/admin-$backend" --server "$HURL" operator bootstrap --name bench \
    --ca-file "$W/root.pem" --code-file "$data/bootstrap-code" --service-account-file-key
  quiet "$BIN/fleetid" factory make --dir "$W/factory" --out "$W/batch-$backend" --count "$DEVICES" \
    --model bench-1 --firmware "$W/fw.bin" --prefix "O${backend:0:1}" --agent "$BIN/fleetid-agent"
  quiet "${L[@]}" manufacturer add --cert "$W/factory/manufacturer.pem" --name "Bench Devices"
  quiet "${L[@]}" attest reference --model bench-1 --firmware "$W/fw.bin"
  quiet "${L[@]}" devices import-manifest "$W/batch-$backend/manifest.jws"
  wait_for "$W/server-$backend.log" "manufacturer trust anchors"
  while read -r serial; do
    [[ -z $serial ]] || quiet "$BIN/fleetid" --profile "$W/admin-$backend" devices provision "$serial" \
      --tenant bench --region r1
  done <"$W/batch-$backend/serials.txt"
  quiet "$BIN/fleetid-agent" simulate --batch "$W/batch-$backend" --server "$HURL" \
    --trust "$W/root.pem" --threads 2
}

stop_server() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

# rounds BACKEND RAW_URL_COMMAND: alternates the API and the raw figure.
rounds() {
  local backend=$1 raw_url=$2 r out
  for ((r = 1; r <= ROUNDS; r++)); do
    out=$("$BENCH" api "$HURL" "$W/root.pem" "$W/admin-$backend/chain.pem" \
      "$W/admin-$backend/operator-1.key.pem" "$W/batch-$backend/serials.txt" "$SECONDS_EACH" \
      "$THREADS" "$backend") || die "operator_bench api failed"
    echo "$out" >>"$RESULTS"
    echo "   round $r api: $out"
    out=$("$BENCH" raw "$($raw_url "$r")" "$DEVICES" "$SECONDS_EACH" "$THREADS" 2>>"$W/setup.log") ||
      die "operator_bench raw failed"
    echo "$out" >>"$RESULTS"
    echo "   round $r raw: $out"
  done
}

echo "== operator API: authorized device.suspend/resume over keep-alive mutual TLS vs raw registry transitions ($DEVICES devices, $THREADS threads, ${SECONDS_EACH}s, $ROUNDS rounds)"
echo "-- sqlite"
server sqlite
sqlite_url() { echo "sqlite:$W/raw-$1.db"; }
rounds sqlite sqlite_url
stop_server

echo "-- postgresql"
PGDIR=/tmp/fleetid-operator-bench-pg-$$  # not under $W (0700): the postgres user must reach it
PGURL=$(tests/pg/pg.sh start "$PGDIR")
server postgresql --database "$PGURL"
PGPORT=$(sed -E 's|.*:([0-9]+)/.*|\1|' <<<"$PGURL")
pg_url() {
  local as=()
  [[ $(id -u) -eq 0 ]] && as=(runuser -u postgres --)
  "${as[@]}" psql -h "$PGDIR" -p "$PGPORT" -U postgres -q -c "CREATE DATABASE raw$1" >/dev/null
  echo "${PGURL%/fleetid}/raw$1"
}
rounds postgresql pg_url
stop_server
