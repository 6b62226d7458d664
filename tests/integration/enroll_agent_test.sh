#!/usr/bin/env bash
# A device's whole life with real processes: the factory makes devices (a SoftHSM2 token per
# device as its secure element, IDevID keys generated inside), the authority imports the signed
# manifest, an operator provisions, fleetid-agent enrolls over EST with mutual TLS and attested
# evidence, `openssl verify` and `openssl ocsp` accept the LDevID, the agent rotates (the old
# certificate revoked as superseded), and decommissioning makes the agent destroy its LDevID keys
# and return a signed receipt, after which every certificate is revoked and the IDevID is refused
# for good. Then crash tests: the agent and the server are SIGKILLed at each step of a rotation
# (failpoints); after each, exactly one credential is usable and a retry completes. Last, a revoked
# LDevID: the agent destroys its key, waits while quarantined and enrolls afresh once allowed.
SERVER=$1
CLI=$2
AGENT=$3
source "$(dirname "$0")/lib.sh"

DATA=$W/var
start_server "$SERVER" "$DATA"
# The data directory changed by hand next to the running server: break-glass (docs/cli.md).
F=("$CLI" --data "$DATA" --break-glass)
MOD=$(dpkg -L libsofthsm2 | grep '/libsofthsm2.so$' | head -1)

# --- the factory ---
head -c 65536 /dev/urandom >"$W/firmware.bin"
head -c 65536 /dev/urandom >"$W/tampered.bin"
"$CLI" factory init --dir "$W/factory" --name "Acme Devices" >/dev/null
"$CLI" factory make --dir "$W/factory" --out "$W/batch" --count 3 --model sensor-1 \
  --firmware "$W/firmware.bin" >"$W/make.json"
mapfile -t SERIALS <"$W/batch/serials.txt"
expect "the factory made 3 devices" test "${#SERIALS[@]}" = 3
D1=${SERIALS[0]}
DEV=$W/batch/devices/$D1
subject=$(openssl x509 -in "$DEV/idevid.pem" -noout -subject -nameopt RFC2253)
expect "the IDevID names the device serial ($subject)" grep -q "serialNumber=$D1" <<<"$subject"
expect "the IDevID never expires (802.1AR)" grep -q "9999" <<<"$(openssl x509 -in "$DEV/idevid.pem" -noout -enddate)"
expect "the IDevID chains to the manufacturer CA" openssl verify -CAfile "$W/factory/manufacturer.pem" "$DEV/idevid.pem"
p11() {  # p11 SERIAL ARGS...: pkcs11-tool on a device's secure element
  local s=$1; shift
  SOFTHSM2_CONF=$W/batch/se/softhsm2.conf pkcs11-tool --module "$MOD" --token-label "$s" --login \
    --pin "$(cat "$W/batch/devices/$s/user.pin")" "$@" 2>/dev/null
}
keys=$(p11 "$D1" --list-objects --type privkey)
expect "the IDevID key is in the device's token, sensitive and never extractable" \
  grep -q "never extractable" <<<"$keys"

# --- the authority imports, an operator provisions and accepts the firmware ---
out=$("${F[@]}" devices import-manifest "$W/batch/manifest.jws" 2>&1 || true)
expect "a manifest from an unregistered manufacturer is refused ($out)" grep -q "not registered" <<<"$out"
"${F[@]}" manufacturer add --cert "$W/factory/manufacturer.pem" --name "Acme Devices" >/dev/null
python3 - "$W/batch/manifest.jws" >"$W/forged.jws" <<'PY'
import base64, json, sys
h, p, s = open(sys.argv[1]).read().strip().split(".")
m = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
m["devices"][0]["firmware_sha256"] = "0" * 64  # a different firmware slipped into the batch
p = base64.urlsafe_b64encode(json.dumps(m).encode()).decode().rstrip("=")
print(h + "." + p + "." + s)
PY
out=$("${F[@]}" devices import-manifest "$W/forged.jws" 2>&1 || true)
expect "a manifest whose payload was changed is refused ($out)" grep -q "signature does not verify" <<<"$out"
expect "no device was imported by the refused manifests" grep -q '"manufactured": 0\|{}' <<<"$("${F[@]}" devices counts)"
"${F[@]}" devices import-manifest "$W/batch/manifest.jws" >/dev/null
expect "the devices appear as manufactured" grep -q '"state": "manufactured"' <<<"$("${F[@]}" devices show "$D1")"
"${F[@]}" attest reference --model sensor-1 --firmware "$W/firmware.bin" >/dev/null
for s in "${SERIALS[@]}"; do "${F[@]}" devices provision "$s" --tenant acme --region eu >/dev/null; done
"${F[@]}" ca certs >"$W/chain.pem"
openssl x509 -in "$W/chain.pem" -out "$W/root.pem"
wait_for_log "$W/server.log" "manufacturer trust anchors"
A=(--batch "$W/batch" --server "https://127.0.0.1:$HPORT" --trust "$W/root.pem")

# --- enrollment ---
out=$("$AGENT" once --device "${SERIALS[2]}" "${A[@]}" --firmware "$W/tampered.bin" 2>&1 || true)
expect "a device measuring unknown firmware is refused ($(tail -1 <<<"$out"))" grep -q "firmware" <<<"$out"
expect "... and stays provisioned" grep -q '"state": "provisioned"' <<<"$("${F[@]}" devices show "${SERIALS[2]}")"
"$AGENT" once --device "$D1" "${A[@]}" >"$W/once.json" 2>"$W/agent.log"
expect "the device is active after enrolling" grep -q '"state": "active"' <<<"$("${F[@]}" devices show "$D1")"
cert1=$DEV/$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["current_cert"])' "$W/once.json")
out=$(openssl verify -purpose sslclient -CAfile "$W/chain.pem" "$cert1" 2>&1)
expect "openssl verify accepts the LDevID ($out)" grep -q ": OK" <<<"$out"
awk 'BEGIN{n=0} /BEGIN/{n++} n==2' "$W/chain.pem" >"$W/issuing.pem"
ocsp() { openssl ocsp -issuer "$W/issuing.pem" -cert "$1" -url "$URL/ocsp" -CAfile "$W/chain.pem" 2>&1; }
expect "OCSP says the LDevID is good" grep -q ": good" <<<"$(ocsp "$cert1")"
expect "the agent keeps the chain and an OCSP answer for offline use" test -s "$DEV/ca.pem" -a -s "$DEV/ocsp.der"
expect "the offline OCSP answer verifies and says good" \
  grep -q ": good" <<<"$(openssl ocsp -respin "$DEV/ocsp.der" -issuer "$W/issuing.pem" -cert "$cert1" -CAfile "$W/chain.pem" 2>&1)"
keys=$(p11 "$D1" --list-objects --type privkey | grep -A4 "label: *ldevid-1" || true)
expect "the LDevID key was generated in the token, never extractable" grep -q "never extractable" <<<"$keys"
expect "the agent never wrote a private key to disk" test -z "$(grep -rl 'PRIVATE KEY' "$W/batch" || true)"

# --- rotation ---
"$AGENT" once --rotate --device "$D1" "${A[@]}" >"$W/once2.json" 2>>"$W/agent.log"
cert2=$DEV/$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["current_cert"])' "$W/once2.json")
expect "the rotation made a new certificate" test "$cert1" != "$cert2"
expect "OCSP: the old certificate is revoked as superseded" grep -qi "reason: superseded" <<<"$(ocsp "$cert1")"
expect "OCSP: the new certificate is good" grep -q ": good" <<<"$(ocsp "$cert2")"
expect "the token holds only the new LDevID key" \
  test "$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["ldevid_keys_in_token"])' "$W/once2.json")" = "['ldevid-2']"
expect "the registry recorded the rotation" grep -q '"event": "rotated"' <<<"$("${F[@]}" devices history "$D1")"

# --- suspension and resumption (seen by relying parties through OCSP) ---
"${F[@]}" devices suspend "$D1" --reason "reported lost" >/dev/null
expect "a suspended device's certificate is on hold" grep -qi "certificateHold" <<<"$(ocsp "$cert2")"
out=$("$AGENT" once --rotate --device "$D1" "${A[@]}" 2>&1) && rc=0 || rc=$?
expect "a suspended device cannot renew: the agent waits ($rc: $(tail -1 <<<"$out"))" \
  test "$rc" != 0 -a -n "$(grep "is suspended: no rotation" <<<"$out" || true)"
expect "... and made no new key" test "$(p11 "$D1" --list-objects --type privkey | grep -c "label: *ldevid")" = 1
"${F[@]}" devices resume "$D1" --reason "found" >/dev/null
expect "after resumption the certificate is good again" grep -q ": good" <<<"$(ocsp "$cert2")"

# --- decommissioning ---
"${F[@]}" devices decommission "$D1" --reason "end of life" >/dev/null
"$AGENT" once --device "$D1" "${A[@]}" >"$W/once3.json" 2>>"$W/agent.log"
expect "the agent obeyed the order and delivered its receipt" \
  grep -q '"receipt_delivered": true' "$W/once3.json"
expect "the device is decommissioned" grep -q '"state": "decommissioned"' <<<"$("${F[@]}" devices show "$D1")"
keys=$(p11 "$D1" --list-objects --type privkey)
expect "the token holds no LDevID key any more" test -z "$(grep ldevid <<<"$keys" || true)"
expect "... only the IDevID, which 802.1AR makes immutable" grep -q "label: *idevid" <<<"$keys"
expect "the receipt verifies with the last LDevID's public key" python3 - "$DEV/receipt.jws" "$cert2" <<'PY'
import base64, json, subprocess, sys
h, p, s = open(sys.argv[1]).read().strip().split(".")
d = lambda x: base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
sig = d(s); r, s_ = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
def der_int(i):
    b = i.to_bytes((i.bit_length() + 8) // 8, "big")
    return b"\x02" + bytes([len(b)]) + b
body = der_int(r) + der_int(s_)
open("/tmp/.receipt.sig", "wb").write(b"\x30" + bytes([len(body)]) + body)
open("/tmp/.receipt.msg", "wb").write((h + "." + p).encode())
pub = subprocess.run(["openssl", "x509", "-in", sys.argv[2], "-pubkey", "-noout"], capture_output=True).stdout
open("/tmp/.receipt.pub", "wb").write(pub)
rc = subprocess.run(["openssl", "dgst", "-sha256", "-verify", "/tmp/.receipt.pub", "-signature", "/tmp/.receipt.sig", "/tmp/.receipt.msg"], capture_output=True).returncode
claims = json.loads(d(p))
sys.exit(rc or (0 if claims["destroyed"] and claims["serial"] else 1))
PY
for c in "$cert1" "$cert2"; do
  expect "every certificate is revoked ($(basename "$c"))" grep -q ": revoked" <<<"$(ocsp "$c")"
done
expect "the last one for cessationOfOperation" grep -qi "cessationOfOperation" <<<"$(ocsp "$cert2")"
out=$("$AGENT" once --device "$D1" "${A[@]}" 2>&1) && rc=0 || rc=$?
expect "the agent knows it is retired and does nothing (rc $rc)" test "$rc" = 0
rm -f "$DEV/state.json"  # even an agent that forgot everything cannot bring the IDevID back
out=$("$AGENT" enroll --device "$D1" "${A[@]}" 2>&1 || true)
expect "the IDevID can never enroll again ($(tail -1 <<<"$out"))" grep -q "never enroll again" <<<"$out"

# --- crash tests: kill the agent, then the server, at each step of a rotation ---
D2=${SERIALS[1]}
DEV2=$W/batch/devices/$D2
"$AGENT" once --device "$D2" "${A[@]}" >/dev/null 2>>"$W/agent.log"
usable() {  # certificates of D2 that are current in the registry and good at the CA
  python3 - "$DATA/fleetid.db" "$D2" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
print(db.execute("""SELECT COUNT(*) FROM credentials c JOIN devices d ON d.id = c.device_id
  JOIN certificates r ON r.serial = c.cert_serial
  WHERE d.serial = ? AND c.role = 'current' AND r.status = 'good'""", (sys.argv[2],)).fetchone()[0])
PY
}
ldevid_keys() { p11 "$D2" --list-objects --type privkey | grep -c "label: *ldevid" || true; }
works() {  # the agent's current credential authenticates: mTLS to /device/v1/status
  python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["current_label"])' "$DEV2/state.json" >/dev/null &&
    "$AGENT" status --device "$D2" "${A[@]}" >/dev/null
}
check_after_crash() {  # check_after_crash STEP
  expect "$1: exactly one usable credential after the crash" test "$(usable)" = 1
  "$AGENT" once --device "$D2" "${A[@]}" >"$W/retry.json" 2>>"$W/agent.log" || true
  expect "$1: a retry completes the rotation (one usable credential, one LDevID key)" \
    test "$(usable)" = 1 -a "$(ldevid_keys)" = 1 -a -z "$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["pending_key"])' "$W/retry.json")"
  local cur=$DEV2/$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["current_cert"])' "$W/retry.json")
  expect "$1: OCSP says the agent's current certificate is good" grep -q ": good" <<<"$(ocsp "$cur")"
}
for step in agent-after-keygen agent-after-issue agent-after-confirm; do
  rc=0
  FLEETID_FAILPOINTS=$step "$AGENT" once --rotate --device "$D2" "${A[@]}" >/dev/null 2>>"$W/agent.log" || rc=$?
  expect "$step: the agent was killed there (rc $rc)" test "$rc" = 137
  check_after_crash "$step"
done
restart_server() {  # restart_server [FAILPOINTS]: same ports, same data
  kill -TERM "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  FLEETID_FAILPOINTS=${1:-} "$SERVER" --data "$DATA" --listen "127.0.0.1:$PORT" \
    --https-listen "127.0.0.1:$HPORT" >"$W/server.log" 2>&1 &
  PID=$!; PIDS+=("$PID")
  wait_for_log "$W/server.log" "msg=listening"
}
for step in server-reenroll-before-commit server-reenroll-after-commit \
            server-confirm-before-commit server-confirm-after-commit; do
  restart_server "$step"
  rc=0
  "$AGENT" once --rotate --device "$D2" "${A[@]}" >/dev/null 2>>"$W/agent.log" || rc=$?
  wait_exit "$PID" 10
  expect "$step: the server was killed there (rc $RC), the agent saw an error (rc $rc)" \
    test "$RC" = 137 -a "$rc" != 0
  restart_server
  check_after_crash "$step"
done

# --- a revoked LDevID (docs/security.md): the agent notices, destroys its key, and enrolls
# afresh with its IDevID when the device's state allows; while suspended or quarantined it waits,
# making no key and asking for no certificate.
js() { python3 -c 'import json,sys;v=json.load(open(sys.argv[1]))[sys.argv[2]];print(v if isinstance(v,str) else json.dumps(v))' "$1" "$2"; }
d2_state() { "${F[@]}" devices show "$D2" | js /dev/stdin state; }
d2_certs() { python3 -c 'import sqlite3,sys;print(sqlite3.connect(sys.argv[1]).execute("SELECT COUNT(*) FROM certificates WHERE device = ?",(sys.argv[2],)).fetchone()[0])' "$DATA/fleetid.db" "$D2"; }
cert_serial() { openssl x509 -in "$1" -noout -serial | cut -d= -f2; }
agent_once() {  # agent_once NAME: `once` for D2, its JSON in $W/NAME.json and its status in RC
  RC=0
  "$AGENT" once --device "$D2" "${A[@]}" >"$W/$1.json" 2>>"$W/agent.log" || RC=$?
}
old_key=$(js "$DEV2/state.json" current_label)
old_serial=$(cert_serial "$DEV2/$(js "$DEV2/state.json" current_cert)")
"${F[@]}" ca hold "$old_serial" >/dev/null
agent_once held
expect "revoked: on hold (suspended) the agent waits (rc $RC, $(js "$W/held.json" device_state): $(js "$W/held.json" waiting_for))" \
  test "$RC" = 0 -a "$(js "$W/held.json" action)" = waiting -a "$(js "$W/held.json" device_state)" = suspended
expect "revoked: ... and keeps its held key, making no other" \
  test "$(ldevid_keys)" = 1 -a "$(js "$W/held.json" current_key)" = "$old_key"
"${F[@]}" ca release "$old_serial" >/dev/null
before=$(d2_certs)
"${F[@]}" ca revoke "$old_serial" --reason keyCompromise >/dev/null
expect "revoked: keyCompromise quarantines the device" test "$(d2_state)" = quarantined
agent_once quarantined1
agent_once quarantined2
expect "revoked: while quarantined the agent waits (rc $RC, $(js "$W/quarantined2.json" device_state): $(js "$W/quarantined2.json" waiting_for))" \
  test "$RC" = 0 -a "$(js "$W/quarantined2.json" action)" = waiting -a "$(js "$W/quarantined2.json" device_state)" = quarantined
expect "revoked: ... it destroyed the revoked key ($(js "$W/quarantined1.json" erased_keys))" \
  test "$(js "$W/quarantined1.json" erased_keys)" = "[\"$old_key\"]" -a "$(js "$W/quarantined1.json" ldevid)" = revoked
expect "revoked: ... and made none: no LDevID key in the token (pkcs11-tool)" test "$(ldevid_keys)" = 0
expect "revoked: ... no current or pending key" \
  test -z "$(js "$W/quarantined2.json" current_key)$(js "$W/quarantined2.json" pending_key)"
expect "revoked: ... and asked for no certificate" test "$(d2_certs)" = "$before"
"${F[@]}" devices clear-quarantine "$D2" --reason "investigated" >/dev/null
expect "revoked: an operator lifts the quarantine: provisioned" test "$(d2_state)" = provisioned
agent_once cleared
new_key=$(js "$W/cleared.json" current_key)
expect "revoked: the next once enrolls a new key with the IDevID (rc $RC, $(js "$W/cleared.json" action) $new_key)" \
  test "$RC" = 0 -a "$(js "$W/cleared.json" action)" = enrolled -a -n "$new_key" -a "$new_key" != "$old_key"
expect "revoked: ... the registry says active" test "$(d2_state)" = active
new_cert=$DEV2/$(js "$W/cleared.json" current_cert)
expect "revoked: ... OCSP says the new certificate is good" grep -q ": good" <<<"$(ocsp "$new_cert")"
expect "revoked: ... the token holds only the new key ($(js "$W/cleared.json" ldevid_keys_in_token))" \
  test "$(ldevid_keys)" = 1 -a "$(js "$W/cleared.json" ldevid_keys_in_token)" = "[\"$new_key\"]"
"${F[@]}" ca revoke "$(cert_serial "$new_cert")" --reason superseded >/dev/null
agent_once superseded
newer_key=$(js "$W/superseded.json" current_key)
expect "revoked: superseded by an operator while active, once enrolls afresh (rc $RC, $(js "$W/superseded.json" action) $newer_key)" \
  test "$RC" = 0 -a "$(js "$W/superseded.json" action)" = enrolled -a -n "$newer_key" -a "$newer_key" != "$new_key"
expect "revoked: ... active, the new certificate good in OCSP, one key in the token" \
  test "$(d2_state)" = active -a "$(ldevid_keys)" = 1 -a \
  -n "$(grep ": good" <<<"$(ocsp "$DEV2/$(js "$W/superseded.json" current_cert)")" || true)"

expect "the agent never logged a PIN or key material" test -z "$(grep -iE 'pin=|BEGIN .*PRIVATE' "$W/agent.log" || true)"

audit_covers "$CLI" "$DATA"
finish
