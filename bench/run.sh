#!/usr/bin/env bash
# make bench: builds the release preset, then measures fleetid beside a baseline taken in the same
# run on the same machine, and prints them side by side with the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/out
mkdir -p "$OUT"
SECONDS_PER=${BENCH_SECONDS:-3}

echo "== baseline: openssl speed (in-memory keys, 1 thread, ${SECONDS_PER}s each)"
openssl speed -seconds "$SECONDS_PER" ecdsap256 ecdsap384 ed25519 rsa3072 >"$OUT/openssl_speed.txt" 2>/dev/null
openssl speed -multi 2 -seconds "$SECONDS_PER" ecdsap256 ecdsap384 ed25519 rsa3072 >"$OUT/openssl_speed_2.txt" 2>/dev/null

echo "== fleetid: signatures through the PKCS#11 token (SoftHSM2)"
build/release/bench/custody_bench --benchmark_format=console \
  --benchmark_out="$OUT/custody_bench.json" --benchmark_out_format=json

DEVICES=${BENCH_DEVICES:-1000000}
echo "== registry: $DEVICES devices on SQLite and on a throwaway PostgreSQL, beside raw C-API rates"
rm -f "$OUT"/registry.db*
build/release/bench/registry_bench "sqlite:$OUT/registry.db" "$DEVICES" >"$OUT/registry.jsonl"
PGDIR=/tmp/fleetid-pg-bench-$$
trap 'tests/pg/pg.sh stop "$PGDIR"' EXIT
PGURL=$(tests/pg/pg.sh start "$PGDIR")
build/release/bench/registry_bench "$PGURL" "$DEVICES" 2>/dev/null >>"$OUT/registry.jsonl"
rm -f "$OUT"/registry.db*
# Stopped now, not at exit: its autovacuum after a million rows would take a core from the rest.
tests/pg/pg.sh stop "$PGDIR"
trap - EXIT

echo "== CA: issuance, cached OCSP and a large CRL, in process"
build/release/bench/pki_bench "${BENCH_CRL_ENTRIES:-1000000}" 2>/dev/null >"$OUT/pki.jsonl"

echo "== policy: access decisions on a 1,000-rule policy, compiled vs interpreted, 1 thread"
build/release/bench/policy_bench >"$OUT/policy.jsonl"

echo "== audit log: durable appends, tree growth, proofs at ${BENCH_AUDIT_SIZES:-1000000,10000000} entries, export verification"
build/release/bench/audit_bench "${BENCH_AUDIT_SIZES:-1000000,10000000}" 2>/dev/null >"$OUT/audit.jsonl"

echo "== HTTP: cached OCSP vs nginx and openssl ocsp, cfssl sign (wrk, ${BENCH_HTTP_SECONDS:-10}s each)"
bench/http_bench.sh

echo "== enrollment: attested EST over fresh mutual-TLS connections vs openssl s_server + s_time (${BENCH_TLS_SECONDS:-10}s)"
bench/enroll_bench.sh

echo "== operator API: authorized device.suspend over keep-alive mutual TLS vs the raw registry transition"
bench/operator_bench.sh

python3 bench/report.py "$OUT"
