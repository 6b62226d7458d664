# Helpers shared by the integration tests. Source it; it sets -euo pipefail and a temp dir $W
# removed on exit, and stops every server the test started.
set -euo pipefail
W=$(mktemp -d /tmp/fleetid-it-XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT

failures=0
checks=0
pass() { checks=$((checks + 1)); echo "ok   - $*"; }
fail() { checks=$((checks + 1)); failures=$((failures + 1)); echo "FAIL - $*"; }
# expect DESCRIPTION COMMAND...: the command must succeed.
expect() { local d=$1; shift; if "$@"; then pass "$d"; else fail "$d"; fi; }
finish() {
  echo "$((checks - failures)) passed, $failures failed"
  [[ $failures -eq 0 ]]
}

free_port() {
  python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'
}

# wait_for_log FILE PATTERN [SECONDS]: waits until FILE contains PATTERN.
wait_for_log() {
  local file=$1 pattern=$2 deadline=$((SECONDS + ${3:-60}))
  while ((SECONDS < deadline)); do
    grep -q -- "$pattern" "$file" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for '$pattern' in $file:" >&2
  cat "$file" >&2 || true
  return 1
}

# poll SECONDS COMMAND...: runs COMMAND (quietly) until it succeeds; fails if it has not within
# SECONDS. For changes another process makes visible a little later (the server polls status
# changes made by other processes every 50 ms).
poll() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}

# start_server SERVER DATA: starts fleetid-server on DATA with free HTTP and HTTPS ports and waits
# until it listens. Sets PORT, HPORT, URL (its plain-HTTP base) and PID; its log is
# $W/server.log.
start_server() {
  PORT=$(free_port)
  HPORT=$(free_port)
  URL=http://127.0.0.1:$PORT
  "$1" --data "$2" --listen "127.0.0.1:$PORT" --https-listen "127.0.0.1:$HPORT" >"$W/server.log" 2>&1 &
  PID=$!; PIDS+=("$PID")
  wait_for_log "$W/server.log" "msg=listening"
}

# wait_exit PID SECONDS: waits for PID (a child of this shell) to exit and sets RC to its exit
# status, or to 124 if it is still running after SECONDS.
wait_exit() {
  local pid=$1 deadline=$((SECONDS + $2))
  RC=124
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      RC=0
      wait "$pid" || RC=$?
      return 0
    fi
    sleep 0.1
  done
}

# bootstrap_admin CLI DATA: makes "admin" the first administrator through the command line, with
# a service account's file key so that curl can present it, and sets ADMIN_CURL (curl's options
# to call as admin) and HURL (the HTTPS base). Needs start_server first.
bootstrap_admin() {
  local cli=$1 data=$2
  wait_for_log "$W/server.log" "operator bootstrap code waiting"
  "$cli" --data "$data" ca certs | openssl x509 -out "$W/admin-root.pem"
  HURL=https://localhost:$HPORT
  "$cli" --profile "$W/admin" --server "$HURL" operator bootstrap --name admin \
    --ca-file "$W/admin-root.pem" --code-file "$data/bootstrap-code" --service-account-file-key \
    >/dev/null </dev/null || fail "bootstrap_admin: the first administrator could not bootstrap"
  ADMIN_CURL=(--cacert "$W/admin-root.pem" --cert "$W/admin/chain.pem" --key "$W/admin/operator-1.key.pem")
}

# factory_batch CLI DATA [ARGS...]: a factory ("Acme Devices") makes two sensor-1 devices in
# $W/batch; the authority trusts the manufacturer, imports the signed manifest and accepts the
# firmware, through the data directory, or with ARGS (--profile DIR) through the operator API.
# Sets EU and US to the two serials (still to be provisioned).
factory_batch() {
  local cli=$1 data=$2 serials authority
  shift 2
  authority=(--data "$data")
  (($# == 0)) || authority=("$@")
  head -c 4096 /dev/urandom >"$W/firmware.bin"
  "$cli" factory init --dir "$W/factory" --name "Acme Devices" >/dev/null
  "$cli" factory make --dir "$W/factory" --out "$W/batch" --count 2 --model sensor-1 \
    --firmware "$W/firmware.bin" >/dev/null
  mapfile -t serials <"$W/batch/serials.txt"
  EU=${serials[0]}
  US=${serials[1]}
  "$cli" "${authority[@]}" manufacturer add --cert "$W/factory/manufacturer.pem" --name "Acme Devices" >/dev/null
  "$cli" "${authority[@]}" devices import-manifest "$W/batch/manifest.jws" >/dev/null
  "$cli" "${authority[@]}" attest reference --model sensor-1 --firmware "$W/firmware.bin" >/dev/null
}

# audit_covers CLI DATA: the audit log of DATA verifies offline against a freshly signed head,
# and holds one entry per registry transition, imported batch, certificate issued and
# certificate status change that the database records (each is appended in the transaction that
# makes the change). A certificate issued on hold (a pending rotation) records a status change as
# well as its issuance; its pki.issue entry, which says status "hold", covers both. Enrollment's
# nonces, appraisals, refusals and registrations are counted against their tables, and so are the
# policy's versions, proposals, approvals and activations.
audit_covers() {
  local cli=$1 data=$2 out rc=0
  "$cli" --data "$data" audit head >"$W/audit-head.json"
  "$cli" --data "$data" audit key >"$W/audit-key.pem"
  "$cli" --data "$data" audit export --out "$W/audit-export.jsonl" 2>/dev/null
  out=$("$cli" audit verify --in "$W/audit-export.jsonl" --key "$W/audit-key.pem" \
    --saved-head "$W/audit-head.json" 2>&1) || rc=$?
  expect "the audit log verifies against a signed head (rc $rc)" test "$rc" = 0
  out=$(python3 - "$data/fleetid.db" "$W/audit-export.jsonl" <<'PY'
import collections, json, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
count = lambda sql: db.execute(sql).fetchone()[0]
actions = collections.Counter()
for line in open(sys.argv[2]):
    rec = json.loads(line)
    if rec["kind"] == "entry":
        body = json.loads(rec["body"])
        a = body["action"]
        if a.startswith("attest.") or a.startswith("enroll.") or a.startswith("policy."):
            actions[a] += 1
            continue
        actions["import" if a == "registry.import" else a.split(".")[0] + (".status" if a in ("pki.revoke", "pki.release") else "")] += 1
        if a == "pki.issue" and (body.get("after") or {}).get("status") == "hold":
            actions["pki.status"] += 1  # a rotation's certificate is born on hold: a change row
want = {"registry": count("SELECT COUNT(*) FROM transitions"),
        "import": count("SELECT COUNT(*) FROM import_batches WHERE devices > 0"),
        "pki": count("SELECT COUNT(*) FROM certificates"),
        "pki.status": count("SELECT COUNT(*) FROM certificate_changes")}
tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
if "appraisals" in tables:  # enrollment: every nonce, appraisal, refusal and registration
    want.update({"attest.nonce": count("SELECT COUNT(*) FROM attest_nonces"),
                 "attest.appraise": count("SELECT COUNT(*) FROM appraisals"),
                 "attest.refused": count("SELECT COALESCE(SUM(value), 0) FROM attest_counters"),
                 "attest.reference.add": count("SELECT COUNT(*) FROM reference_values"),
                 "enroll.manufacturer.add": count("SELECT COUNT(*) FROM manufacturers")})
if "policy_versions" in tables:  # the first version, and every proposal, approval and activation
    want.update({"policy.version": count("SELECT COUNT(*) FROM policy_versions") - 1,
                 "policy.propose": count("SELECT COUNT(*) FROM policy_proposals"),
                 "policy.approve": count("SELECT COUNT(*) FROM policy_approvals"),
                 "policy.activate": 1 + count("SELECT COUNT(*) FROM policy_proposals WHERE state = 'applied'")})
got = {k: actions.get(k, 0) for k in want}
print(f"database {want}, audit {got}")
sys.exit(0 if got == want else 1)
PY
  ) && rc=0 || rc=$?
  expect "every change the database records has its audit entry: $out" test "$rc" = 0
}
