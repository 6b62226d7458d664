#!/usr/bin/env bash
# The command line as the operator API's client (docs/cli.md), against a running server: the first
# administrator bootstraps with a key made in her own SoftHSM2 token (sensitive, never
# extractable; its PIN read from a 0600 file), invites a second administrator and a regional
# operator; a policy change waits for the second administrator's approval, which the CLI signs with
# his operator key and which verifies offline from an audit export alone; the regional operator
# suspends a device in her region (OCSP then answers revoked) and is refused outside it. Each kind
# of failure has its own exit code; tables for people, --json for scripts; the commands that open
# the data directory refuse --server.
SERVER=$1
CLI=$2
AGENT=$3
source "$(dirname "$0")/lib.sh"

DATA=$W/var
start_server "$SERVER" "$DATA"
L=("$CLI" --data "$DATA")  # the direct path, for what the API does not offer yet
H=https://localhost:$HPORT
wait_for_log "$W/server.log" "operator bootstrap code waiting"
"${L[@]}" ca certs >"$W/chain.pem"
openssl x509 -in "$W/chain.pem" -out "$W/root.pem"
umask 077
# as WHO ARGS...: the CLI as WHO's profile; sets RC, stdout in $W/out, stderr in $W/err.
as() {
  local who=$1
  shift
  RC=0
  "$CLI" --profile "$W/$who" "$@" >"$W/out" 2>"$W/err" </dev/null || RC=$?
}
field() { python3 -c 'import json,sys;d=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): d=d[int(k)] if isinstance(d,list) else d[k]
print(d if not isinstance(d,(dict,list)) else json.dumps(d))' "$W/out" "$1"; }
for who in alice bob erin; do head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$W/$who.pin"; done

# --- bootstrap: a key in alice's own token ---
chmod 644 "$W/alice.pin"
as alice --server "$H" operator bootstrap --ca-file "$W/root.pem" --name alice \
  --code-file "$DATA/bootstrap-code" --pin-file "$W/alice.pin"
expect "a PIN file readable by others is refused (exit $RC: $(cat "$W/err"))" \
  sh -c "test $RC = 3 && grep -q 'chmod 600' '$W/err'"
chmod 600 "$W/alice.pin"
as alice --server "$H" operator bootstrap --ca-file "$W/root.pem" --name alice \
  --code-file "$DATA/bootstrap-code"
expect "no PIN and no terminal: a clear error, exit 2 ($(cat "$W/err"))" \
  sh -c "test $RC = 2 && grep -q 'not on a terminal' '$W/err'"
as alice --server "$H" operator bootstrap --ca-file "$W/root.pem" --name alice \
  --code-file "$DATA/bootstrap-code" --pin-file "$W/alice.pin"
expect "alice bootstraps the first administrator ($RC: $(cat "$W/out" "$W/err"))" \
  grep -q "^bootstrapped alice: certificate " "$W/out"
expect "the bootstrap code is used up" test ! -e "$DATA/bootstrap-code"
expect "her profile is private" test "$(stat -c %a "$W/alice")" = 700
expect "... and holds no key and no PIN" \
  sh -c "! grep -rqiE 'PRIVATE KEY|$(cat "$W/alice.pin")' '$W/alice'/*.json '$W/alice'/*.pem"
MOD=$(dpkg -L libsofthsm2 | grep '/libsofthsm2.so$' | head -1)
attrs=$(SOFTHSM2_CONF=$W/alice/token/softhsm2.conf pkcs11-tool --module "$MOD" \
  --token-label fleetid-operator --login --pin "$(cat "$W/alice.pin")" --list-objects --type privkey 2>&1)
expect "her key is in her token: sensitive, never extractable ($(tr '\n' ' ' <<<"$attrs"))" \
  bash -c "grep -q 'label: *operator-1' <<<'$attrs' && grep -q 'never extractable' <<<'$attrs' && grep -q 'sensitive' <<<'$attrs'"
as alice operator whoami --json
expect "whoami: alice, admin everywhere" \
  sh -c "test '$(field operator)' = alice && test '$(field grants.0.role)' = admin"
as alice operator whoami
expect "... and a line for people" grep -q "^alice (certificate " "$W/out"

# --- invitations ---
as alice operator invite bob --grant admin --code-out "$W/bob.code"
expect "alice invites bob ($RC)" grep -q "the one-time code is in $W/bob.code" "$W/out"
expect "the code is in a 0600 file, never on stdout" \
  sh -c "test \$(stat -c %a '$W/bob.code') = 600 && ! grep -qF \"\$(cat '$W/bob.code')\" '$W/out'"
as bob --server "$H" operator enroll --ca-file "$W/root.pem" --code-file "$W/bob.code" \
  --pin-file "$W/bob.pin"
expect "bob enrolls with the code ($RC: $(cat "$W/err"))" grep -q "^enrolled bob" "$W/out"
as alice operator invite erin --grant 'eu-ops@region=eu-west' --code-out "$W/erin.code"
expect "a role the policy lacks is refused: exit 2 ($(cat "$W/err"))" \
  sh -c "test $RC = 2 && grep -q \"no role 'eu-ops'\" '$W/err'"

# --- a policy change, approved with a signature ---
as alice policy show --json
python3 - "$W/out" "$W/policy2.json" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))["document"]
doc["roles"]["eu-ops"] = {"description": "regional on-call", "permit": [{"actions": [
    "device.read", "device.suspend", "device.resume"], "scope": {"regions": ["eu-west"]},
    "why": "regional on-call"}]}
# Devices in eu-west get two-hour LDevIDs, renewed at half their life.
doc["credentials"].insert(0, {"name": "eu-west", "match": {"regions": ["eu-west"]},
    "suites": ["ecdsa-p256-sha256"], "ldevid_lifetime_seconds": 7200, "renew_at_percent": 50})
json.dump(doc, open(sys.argv[2], "w"))
EOF
as alice policy propose "$W/policy2.json" --reason "an on-call role for eu-west"
expect "alice proposes; the diff says what changes" \
  grep -q "role eu-ops gains device.suspend in region eu-west" "$W/out"
id=$(sed -n 's/^proposal \([0-9]*\) .*/\1/p' "$W/out" | head -1)
as alice policy approve "$id"
expect "her own approval is refused by policy: exit 3 ($(cat "$W/err"))" \
  sh -c "test $RC = 3 && grep -q 'never approves their own' '$W/err'"
as alice policy versions --json
expect "nothing changed yet" test "$(field versions.0.active)" = True
as bob policy approve "$id" --reason "reviewed" --json
expect "bob approves, and the change applies ($RC: $(cat "$W/err"))" test "$(field state)" = applied
expect "... his approval signed with his key" test "$(field approvals.0.via)" = signed
as bob policy approve "$id"
expect "approving a decided proposal: conflict, exit 5" test "$RC" = 5

# --- the regional operator at work ---
as alice operator invite erin --grant 'eu-ops@region=eu-west' --code-out "$W/erin.code"
as erin --server "$H" operator enroll --ca-file "$W/root.pem" --code-file "$W/erin.code" \
  --pin-file "$W/erin.pin"
expect "erin enrolls as eu-ops in eu-west ($RC: $(cat "$W/err"))" grep -q "^enrolled erin" "$W/out"
factory_batch "$CLI" "$DATA" --profile "$W/alice"
as alice manufacturer list
expect "alice registered the manufacturer through the API" grep -q '"manufacturer": "Acme Devices"' "$W/out"
as alice devices import-manifest "$W/batch/manifest.jws"
expect "... and imported its manifest: importing it again changes nothing" \
  grep -q '"already_present": 2' "$W/out"
# The data directory is the server's while it runs: a change by hand is refused, or, with
# --break-glass, made and audited as such.
rc=0; "${L[@]}" attest reference --operator alice --model sensor-9 --digest "$(printf 'b%.0s' {1..64})" \
  >"$W/out" 2>"$W/err" || rc=$?
expect "a change by hand next to the server is refused ($rc: $(cat "$W/err"))" \
  sh -c "test $rc = 1 && grep -q 'fleetid-server (pid [0-9]*) holds' '$W/err' && grep -q -- --break-glass '$W/err'"
rc=0; "${L[@]}" --break-glass attest reference --operator alice --model sensor-9 \
  --digest "$(printf 'b%.0s' {1..64})" >"$W/out" 2>"$W/err" || rc=$?
expect "... made with --break-glass ($rc), saying so" sh -c "test $rc = 0 && grep -q break-glass '$W/err'"
"${L[@]}" audit export --out "$W/glass.jsonl" >/dev/null
expect "... and audited as break-glass, with the command" python3 -c '
import json, sys
bodies = [json.loads(json.loads(l)["body"]) for l in open(sys.argv[1]) if "\"body\"" in l]
assert any(b["action"] == "break_glass" and b["subject"] == "attest reference"
           and b["actor"] == "operator:alice" for b in bodies), "no break_glass entry"' "$W/glass.jsonl"
as erin attest reference --model sensor-1 --digest "$(printf 'a%.0s' {1..64})"
expect "erin may not accept firmware: exit 3" test "$RC" = 3
as alice devices provision "$EU" --tenant acme --region eu-west --reason "shipped to Dublin"
expect "alice provisions through the API ($RC: $(cat "$W/err"))" grep -q "$EU *provisioned" "$W/out"
as alice devices provision "$US" --tenant acme --region us-east
wait_for_log "$W/server.log" "manufacturer trust anchors"
A=(--batch "$W/batch" --server "https://127.0.0.1:$HPORT" --trust "$W/root.pem" --firmware "$W/firmware.bin")
"$AGENT" once --device "$EU" "${A[@]}" >"$W/eu.json" 2>>"$W/agent.log"
"$AGENT" once --device "$US" "${A[@]}" >"$W/us.json" 2>>"$W/agent.log"
as erin devices suspend "$US" --reason "on call"
expect "erin is refused outside her region: exit 3, naming device.suspend ($(cat "$W/err"))" \
  sh -c "test $RC = 3 && grep -q 'device.suspend' '$W/err'"
as erin devices suspend "$EU" --reason "lost in transit"
expect "erin suspends the device in her region ($RC: $(cat "$W/err"))" grep -q "$EU *suspended" "$W/out"
cert=$W/batch/devices/$EU/$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["current_cert"])' "$W/eu.json")
awk 'BEGIN{n=0} /BEGIN/{n++} n==2' "$W/chain.pem" >"$W/issuing.pem"
out=$(openssl ocsp -issuer "$W/issuing.pem" -cert "$cert" -url "$URL/ocsp" -CAfile "$W/chain.pem" 2>&1)
expect "OCSP answers revoked for it" grep -q ": revoked" <<<"$out"
lifetime() {  # lifetime CERT: notAfter - notBefore in seconds (notBefore is backdated 5 minutes)
  echo $(($(date -d "$(openssl x509 -in "$1" -noout -enddate | cut -d= -f2)" +%s) -
    $(date -d "$(openssl x509 -in "$1" -noout -startdate | cut -d= -f2)" +%s)))
}
us_cert=$W/batch/devices/$US/$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["current_cert"])' "$W/us.json")
expect "the eu-west credential class gives its device a two-hour LDevID ($(lifetime "$cert") s)" \
  test "$(lifetime "$cert")" = 7500
expect "... and the device elsewhere the default class's day ($(lifetime "$us_cert") s)" \
  test "$(lifetime "$us_cert")" = 86700
expect "... and the agent follows the class's renewal point" \
  grep -q '"renew_at_percent": 50' "$W/batch/devices/$EU/state.json"
openssl ecparam -genkey -name prime256v1 -noout -out "$W/extra.key"
openssl req -new -key "$W/extra.key" -subj "/CN=ignored" -out "$W/extra.csr"
as alice ca issue --device "$EU" --csr "$W/extra.csr" --out "$W/extra.pem"
expect "alice issues a certificate for the device from a CSR ($RC: $(cat "$W/err"))" \
  sh -c "test $RC = 0 && openssl verify -CAfile '$W/chain.pem' '$W/extra.pem' >/dev/null"
expect "... under its credential class ($(lifetime "$W/extra.pem") s)" \
  test "$(lifetime "$W/extra.pem")" = 7500
as erin ca issue --device "$EU" --csr "$W/extra.csr"
expect "erin may not issue: exit 3" test "$RC" = 3
as alice ca status "$(openssl x509 -in "$cert" -noout -serial | cut -d= -f2)" --json
expect "alice reads its certificate through the API: on hold ($RC: $(cat "$W/err"))" \
  sh -c "test '$(field status)' = hold && test '$(field device)' = '$EU'"
as erin ca status "$(openssl x509 -in "$cert" -noout -serial | cut -d= -f2)"
expect "erin may not read certificates: exit 3" test "$RC" = 3
as erin devices show "$EU"
expect "her device view shows the history with her name" grep -qE "suspend +active -> suspended +erin#" "$W/out"
as erin devices show NO-SUCH-DEVICE
expect "an unknown serial outside what erin may see: exit 3" test "$RC" = 3
as alice devices show NO-SUCH-DEVICE
expect "... while alice learns it does not exist: exit 4" test "$RC" = 4
as erin devices list --json
expect "erin's device list holds only what she may read: $EU" \
  test "$(python3 -c 'import json,sys;print(",".join(d["serial"] for d in json.load(open(sys.argv[1]))["devices"]))' "$W/out")" = "$EU"
as alice devices list --region us-east
expect "alice lists by region: a table with $US alone" \
  sh -c "grep -q '^$US ' '$W/out' && ! grep -q '^$EU ' '$W/out' && grep -q '^SERIAL' '$W/out'"
as alice devices list --state suspended --label nothing:here --json
expect "... by state and label (none has that label)" test "$(field devices)" = "[]"
as alice devices list --limit 1 --json
expect "... a page at a time" sh -c "test \"\$(python3 -c 'import json,sys;print(len(json.load(open(sys.argv[1]))[\"devices\"]))' '$W/out')\" = 1 && test '$(field next)' != 0"
as alice devices list --limit 5000
expect "a page too large: exit 2 ($(cat "$W/err"))" test "$RC" = 2
as erin operator list
expect "erin may not list operators: exit 3" test "$RC" = 3

# --- renewal and revocation ---
as erin operator renew
expect "erin renews: a new key and certificate ($RC: $(cat "$W/err"))" grep -q "^renewed erin" "$W/out"
attrs=$(SOFTHSM2_CONF=$W/erin/token/softhsm2.conf pkcs11-tool --module "$MOD" \
  --token-label fleetid-operator --login --pin "$(cat "$W/erin.pin")" --list-objects --type privkey 2>&1)
expect "... the old key is gone from her token" \
  bash -c "grep -q 'label: *operator-2' <<<'$attrs' && ! grep -q 'label: *operator-1' <<<'$attrs'"
as erin operator whoami
expect "... and she works with the new one" grep -q "^erin " "$W/out"
as alice operator list
expect "the table lists three operators" test "$(grep -cE '^(alice|bob|erin) +active' "$W/out")" = 3
as alice operator revoke erin --reason "left the team"
as erin operator whoami
expect "a revoked operator is refused on the next call: exit 7 ($(cat "$W/err"))" test "$RC" = 7

# --- the other exit codes ---
as alice --server https://localhost:1 operator whoami
expect "an unreachable server: exit 6" test "$RC" = 6
as alice devices counts
expect "a command that opens the data directory refuses --profile (exit 1)" \
  sh -c "test $RC = 1 && grep -q 'not offered through the API' '$W/err'"
as nobody operator whoami
expect "no profile: exit 4, saying how to make one" \
  sh -c "test $RC = 4 && grep -q 'operator bootstrap' '$W/err'"

# --- a service account's file key, and signatures that do not belong ---
as alice operator invite robot --grant admin --code-out "$W/robot.code"
as robot --server "$H" operator enroll --ca-file "$W/root.pem" --code-file "$W/robot.code" \
  --service-account-file-key
expect "a service account enrolls with a key in a file, by explicit flag ($RC: $(cat "$W/err"))" \
  sh -c "grep -q '^enrolled robot' '$W/out' && test \$(stat -c %a '$W/robot/operator-1.key.pem') = 600"
as alice policy show --json
python3 - "$W/out" "$W/policy3.json" <<'EOF2'
import json, sys
doc = json.load(open(sys.argv[1]))["document"]
doc["roles"]["night-ops"] = {"description": "nights", "permit": [{"actions": ["device.read"],
    "scope": {}, "why": "nights"}]}
json.dump(doc, open(sys.argv[2], "w"))
EOF2
as alice policy propose "$W/policy3.json"
id3=$(sed -n 's/^proposal \([0-9]*\) .*/\1/p' "$W/out" | head -1)
as alice policy proposals --all --json
bobs=$(python3 -c 'import json,sys;print([p for p in json.load(open(sys.argv[1]))["proposals"] if p["id"]==int(sys.argv[2])][0]["approvals"][0]["signature"])' "$W/out" "$id")
robot_api() {  # robot_api NAME JSON: robot approves proposal id3 with curl and his file key
  CODE=$(curl -sS --max-time 20 --cacert "$W/root.pem" --cert "$W/robot/chain.pem" \
    --key "$W/robot/operator-1.key.pem" -H 'Content-Type: application/json' --data-binary "$2" \
    -o "$W/$1.json" -w '%{http_code}' "$H/api/v1/policy/proposals/$id3/approve") || CODE=000
}
robot_api replay "{\"signature\":\"$bobs\"}"
expect "bob's signature replayed by another operator on another proposal: 401 ($(cat "$W/replay.json"))" \
  test "$CODE" = 401
robot_api garbage '{"signature":"a.b.c"}'
expect "a malformed signature: 400 ($(cat "$W/garbage.json"))" test "$CODE" = 400
as alice policy proposals --json
expect "... and neither counted" test "$(field proposals.0.approvals)" = "[]"
as robot policy approve "$id3" --json
expect "the service account approves, signed with its file key ($RC: $(cat "$W/err"))" \
  sh -c "test '$(field state)' = applied && test '$(field approvals.0.via)' = signed"

# --- the signed approval verifies from the audit log alone ---
kill -TERM "$PID"; wait_exit "$PID" 15
"${L[@]}" audit export --out "$W/export.jsonl" >/dev/null
"${L[@]}" audit key >"$W/audit.pem"
"$CLI" audit verify --in "$W/export.jsonl" --key "$W/audit.pem" --operators-root "$W/root.pem" >"$W/out"
expect "the export verifies, both signed approvals with it" \
  sh -c "test '$(field ok)' = True && test '$(field approvals.signed_verified)' = 2"
python3 - "$W/export.jsonl" "$W/forged.jsonl" <<'EOF'
import json, sys
out = []
for line in open(sys.argv[1]):
    d = json.loads(line)
    if "body" in d and '"policy.approve"' in d["body"] and '"id":1,' in d["body"]:
        body = json.loads(d["body"])
        body["evidence_digest"] = "00" * 32
        d["body"] = json.dumps(body, separators=(",", ":"), sort_keys=True)
    out.append(json.dumps(d))
open(sys.argv[2], "w").write("\n".join(out) + "\n")
EOF
"$CLI" audit verify --in "$W/forged.jsonl" --key "$W/audit.pem" --operators-root "$W/root.pem" >"$W/out" || true
expect "an approval moved to another digest fails" grep -q "the approval of policy proposal $id" "$W/out"
audit_covers "$CLI" "$DATA"
finish
