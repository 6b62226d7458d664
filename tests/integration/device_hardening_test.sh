#!/usr/bin/env bash
# The device path of docs/security.md, against the real server: each attack of the report is
# replayed with the real agent or with curl and openssl as the device, and must be refused with a
# 4xx JSON (or EST text) answer that changes nothing.
#  1. an operator's hold or keyCompromise cannot be undone by re-enrolling with the IDevID;
#  2. an anonymous CSR with a 3,000-bit RSA exponent is refused before any signature check;
#  3. nonces are rate-limited (429, Retry-After), unusable ones refused, claims bounded;
#  4. BER CSRs and rotations to the current key are refused;
#  5. receipts must answer the order, name the keys, and carry a sane iat;
#  6. serials, tenants and regions outside the character set are refused;
#  7. revoked and tombstoned credentials cannot read /device/v1/status;
#  8. the database files are 0600;
#  9. /audit/v1/entries near 2^64 does not wrap;
# 10. refused evidence (replays, made-up nonces) is rate-limited per device (429, Retry-After,
#     nothing written past the bucket), and a revoked LDevID's or a tombstoned IDevID's evidence
#     is refused (403) writing nothing;
# 11. ca revoke with another reason than keyCompromise (privilegeWithdrawn) suspends the device,
#     whose IDevID enrolls again only after an operator resumes it;
# 12. an operator's hold cancels a pending rotation: the device's confirm cannot release it.
SERVER=$1
CLI=$2
AGENT=$3
source "$(dirname "$0")/lib.sh"

umask 022  # the database must be owner-only whatever the umask
DATA=$W/var
start_server "$SERVER" "$DATA"
# The data directory changed by hand next to the running server: break-glass (docs/cli.md).
F=("$CLI" --data "$DATA" --break-glass)
H=https://localhost:$HPORT

# --- the device side: curl and openssl (as in est_curl_test.sh) ----------------------------------

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
raw_sig() {  # an ECDSA DER signature (stdin) as ES256's R||S
  local der hex out=""
  der=$(mktemp "$W/sig-XXXXXX")
  cat >"$der"
  for hex in $(openssl asn1parse -inform DER -in "$der" | awk -F: '/INTEGER/ {print $NF}'); do
    while ((${#hex} < 64)); do hex=0$hex; done
    out+=${hex: -64}
  done
  rm -f "$der"
  printf '%b' "$(sed 's/../\\x&/g' <<<"$out")"
}
# jws KEY HEADER PAYLOAD: a compact ES256 JWS.
jws() {
  local input sig
  input=$(printf '%s' "$2" | b64url).$(printf '%s' "$3" | b64url)
  sig=$(printf '%s' "$input" | openssl dgst -sha256 -sign "$1" | raw_sig | b64url)
  printf '%s.%s' "$input" "$sig"
}
sha256_hex() { openssl dgst -sha256 -r "$1" | cut -d' ' -f1; }
key_sha256() { openssl pkey -in "$1" -pubout -outform DER | openssl dgst -sha256 -r | cut -d' ' -f1; }
newkey() { openssl ecparam -genkey -name prime256v1 -noout -out "$W/$1.key"; }
csr_der() { openssl req -new -key "$W/$1.key" -subj "/CN=x" -outform DER -out "$W/$1.csr.der"; }
b64file() { openssl base64 -in "$1" -out "$2"; }

# call NAME WHO PATH [CURL ARGS]: one HTTPS request with $W/WHO.pem and $W/WHO.key (none for -).
# Sets CODE; the body is $W/NAME.out, the headers $W/NAME.hdr.
call() {
  local name=$1 who=$2 path=$3 id=()
  shift 3
  [[ $who == - ]] || id=(--cert "$W/$who.pem" --key "$W/$who.key")
  CODE=$(curl -sS --max-time 20 --cacert "$W/root.pem" -o "$W/$name.out" -D "$W/$name.hdr" \
    -w '%{http_code}' "${id[@]}" "$@" "$H$path" 2>"$W/$name.err") || true
  LAST=$name
}
json_field() { python3 -c 'import json,sys;print(json.load(open(sys.argv[1])).get(sys.argv[2],""))' "$2" "$1" 2>/dev/null || true; }
nonce() {  # nonce NAME WHO PURPOSE: NONCE holds the nonce
  call "$1.nonce" "$2" /attest/v1/nonce -H 'Content-Type: application/json' \
    --data-binary "{\"purpose\":\"$3\"}"
  NONCE=$(json_field nonce "$W/$1.nonce.out")
}
# evidence NAME WHO SERIAL CERTIFIED_KEY [EXTRA_CLAIMS_JSON]: nonce, then evidence signed by WHO.
evidence() {
  local extra=${5:-}
  nonce "$1" "$2" "$([[ $2 == *ldev* ]] && echo reenroll || echo enroll)"
  jws "$W/$2.key" '{"alg":"ES256","typ":"fleetid-evidence+jws"}' "$(printf \
    '{"eat_profile":"urn:fleetid:evidence:1","eat_nonce":"%s","serial":"%s","fw_sha256":"%s","key_sha256":"%s"%s}' \
    "$NONCE" "$3" "$(sha256_hex "$W/fw.bin")" "$(key_sha256 "$W/$4.key")" "$extra")" >"$W/$1.jws"
  call "$1.evidence" "$2" /attest/v1/evidence -H 'Content-Type: application/jose' \
    --data-binary @"$W/$1.jws"
}
# forged NAME WHO SERIAL CERTIFIED_KEY: evidence signed by WHO with a nonce never issued, posted.
forged() {
  jws "$W/$2.key" '{"alg":"ES256","typ":"fleetid-evidence+jws"}' "$(printf \
    '{"eat_profile":"urn:fleetid:evidence:1","eat_nonce":"%s","serial":"%s","fw_sha256":"%s","key_sha256":"%s"}' \
    "$(openssl rand 32 | b64url)" "$3" "$(sha256_hex "$W/fw.bin")" "$(key_sha256 "$W/$4.key")")" >"$W/$1.jws"
  call "$1.evidence" "$2" /attest/v1/evidence -H 'Content-Type: application/jose' \
    --data-binary @"$W/$1.jws"
}
est() {  # est NAME WHO simpleenroll|simplereenroll BODY_FILE
  call "$1.$3" "$2" "/.well-known/est/$3" -H 'Content-Type: application/pkcs10' \
    --data-binary @"$4"
}
p7_pem() { tr -d '\r\n ' <"$1" | openssl base64 -d -A | openssl pkcs7 -inform DER -print_certs -out "$2"; }
state_of() { "${F[@]}" devices show "$1" | json_field state /dev/stdin; }
certs_of() { python3 -c 'import sqlite3,sys;print(sqlite3.connect(sys.argv[1]).execute("SELECT COUNT(*) FROM certificates WHERE device = ?",(sys.argv[2],)).fetchone()[0])' "$DATA/fleetid.db" "$1"; }
rows() { python3 -c 'import sqlite3,sys;print(sqlite3.connect(sys.argv[1]).execute(f"SELECT COUNT(*) FROM {sys.argv[2]}").fetchone()[0])' "$DATA/fleetid.db" "$1"; }
serial_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f'; }
ca_status() { "${F[@]}" ca status "$1" | json_field status /dev/stdin; }
ca_reason() { "${F[@]}" ca status "$1" | json_field reason /dev/stdin; }
is_json_error() { python3 -c 'import json,sys;d=json.load(open(sys.argv[1]));sys.exit(0 if "error" in d else 1)' "$W/$LAST.out"; }

# --- 8. the database files -------------------------------------------------------------------------

for f in fleetid.db fleetid.db-wal fleetid.db-shm; do
  mode=$(stat -c %a "$DATA/$f" 2>/dev/null || echo missing)
  expect "8. $f is owner-only under umask 022 ($mode)" test "$mode" = 600
done

# --- the factory and the authority -------------------------------------------------------------

echo "firmware 1.0" >"$W/fw.bin"
"$CLI" factory init --dir "$W/F" --name "Acme Devices" >/dev/null
for x in x1 x2 x3; do
  newkey "$x"
  openssl req -new -key "$W/$x.key" -subj "/serialNumber=${x^^}" -out "$W/$x.idevid.csr"
done
"$CLI" factory make --dir "$W/F" --out "$W/B" --count 2 --model sensor-1 --firmware "$W/fw.bin" \
  --agent "$AGENT" --external "X-1=$W/x1.idevid.csr" --external "X-2=$W/x2.idevid.csr" \
  --external "X-3=$W/x3.idevid.csr" >/dev/null
mapfile -t SERIALS <"$W/B/serials.txt"
A1=${SERIALS[0]}
A2=${SERIALS[1]}
cp "$W/B/devices/X-1/idevid.pem" "$W/x1.pem"
cp "$W/B/devices/X-2/idevid.pem" "$W/x2.pem"
cp "$W/B/devices/X-3/idevid.pem" "$W/x3.pem"
"${F[@]}" manufacturer add --cert "$W/F/manufacturer.pem" --name "Acme Devices" >/dev/null
"${F[@]}" devices import-manifest "$W/B/manifest.jws" >/dev/null
"${F[@]}" attest reference --model sensor-1 --firmware "$W/fw.bin" >/dev/null
"${F[@]}" ca certs >"$W/chain.pem"
openssl x509 -in "$W/chain.pem" -out "$W/root.pem"
wait_for_log "$W/server.log" "manufacturer trust anchors"

# --- 6. identifiers ----------------------------------------------------------------------------

for tenant in 'acme,O=evil' $'acme\nCN=x' 'a b' "$(printf 'x%.0s' {1..65})"; do
  out=$("${F[@]}" devices provision X-1 --tenant "$tenant" --region eu 2>&1) && rc=0 || rc=$?
  expect "6. tenant '${tenant:0:20}' is refused ($rc: ${out:0:90})" test "$rc" != 0
done
out=$("${F[@]}" devices provision X-1 --tenant acme --region 'eu=1' 2>&1) && rc=0 || rc=$?
expect "6. region 'eu=1' is refused ($rc)" test "$rc" != 0
expect "6. ... and X-1 is still manufactured" test "$(state_of X-1)" = manufactured
printf '{"serial":"GW-1,CN=evil","model":"m","manufacturer":"Acme Devices","idevid_fingerprint":"%s"}\n' \
  "$(printf 'a%.0s' {1..64})" >"$W/bad.jsonl"
out=$("${F[@]}" devices import "$W/bad.jsonl" 2>&1) && rc=0 || rc=$?
expect "6. an import naming serial 'GW-1,CN=evil' is refused ($rc: ${out:0:100})" test "$rc" != 0
for s in "$A1" "$A2" X-1 X-2 X-3; do "${F[@]}" devices provision "$s" --tenant acme --region eu >/dev/null; done
A=(--batch "$W/B" --server "https://127.0.0.1:$HPORT" --trust "$W/root.pem")

# --- 2. the CSR is verified only after the client and the key are checked ----------------------

python3 - "$W/slow.der" <<'PY'
import sys
def der(tag, body):
    n = len(body)
    if n < 0x80: head = bytes([n])
    elif n < 0x100: head = bytes([0x81, n])
    else: head = bytes([0x82, n >> 8, n & 0xff])
    return bytes([tag]) + head + body
def integer(b): return der(0x02, b"\x00" + b)
rsa = bytes.fromhex("2a864886f70d0101")
n = b"\xc5" * 383 + b"\xc7"
e = b"\x80" + b"\xa5" * 374             # a 3,000-bit public exponent
spki = der(0x30, der(0x30, der(0x06, rsa + b"\x01") + b"\x05\x00") +
           der(0x03, b"\x00" + der(0x30, integer(n) + integer(e))))
info = der(0x30, b"\x02\x01\x00" + b"\x30\x00" + spki + b"\xa0\x00")
alg = der(0x30, der(0x06, rsa + b"\x0b") + b"\x05\x00")
open(sys.argv[1], "wb").write(der(0x30, info + alg + der(0x03, b"\x00" + b"\x5a" * 384)))
PY
b64file "$W/slow.der" "$W/slow.b64"
est slow_anon - simpleenroll "$W/slow.b64"
expect "2. an anonymous CSR with a 3,000-bit exponent: 401 before any verification ($CODE)" test "$CODE" = 401
est slow_known x1 simpleenroll "$W/slow.b64"
expect "2. from a known device: 400 naming the exponent ($CODE: $(head -c 100 "$W/$LAST.out"))" \
  grep -q "exponent" "$W/$LAST.out"
expect "2. ... HTTP 400" test "$CODE" = 400

# --- 4. DER only -------------------------------------------------------------------------------

newkey ldev1
csr_der ldev1
python3 - "$W/ldev1.csr.der" "$W/ldev1.ber" <<'PY'
import sys
d = open(sys.argv[1], "rb").read()
n = d[1] & 0x7f if d[1] & 0x80 else 0
if n == 0: ber = d[:1] + bytes([0x81, d[1]]) + d[2:]
else: ber = d[:1] + bytes([0x80 | (n + 1), 0]) + d[2:2 + n] + d[2 + n:]
open(sys.argv[2], "wb").write(ber)
PY
b64file "$W/ldev1.ber" "$W/ldev1.ber.b64"
b64file "$W/ldev1.csr.der" "$W/ldev1.b64"
evidence ev1 x1 X-1 ldev1
expect "evidence for X-1's first key passes ($CODE)" test "$CODE" = 200
est ber x1 simpleenroll "$W/ldev1.ber.b64"
expect "4. a BER CSR is refused: 400 not DER ($CODE: $(head -c 80 "$W/$LAST.out"))" \
  grep -q "not DER" "$W/$LAST.out"
expect "4. ... and no certificate was issued" test "$(certs_of X-1)" = 0
est enroll1 x1 simpleenroll "$W/ldev1.b64"
expect "X-1 enrolls with the DER CSR ($CODE)" test "$CODE" = 200
p7_pem "$W/enroll1.simpleenroll.out" "$W/ldev1.pem"
L1=$(serial_of "$W/ldev1.pem")

# --- 3. nonces that cannot be used; claims ----------------------------------------------------

nonce useless x1 enroll
expect "3. an IDevID nonce while X-1 holds a good LDevID is refused ($CODE)" test "$CODE" = 409
evidence same ldev1 X-1 ldev1
est same_der ldev1 simplereenroll "$W/ldev1.b64"
expect "4. a rotation to the current key is refused ($CODE: $(head -c 80 "$W/$LAST.out"))" test "$CODE" = 400
est same_ber ldev1 simplereenroll "$W/ldev1.ber.b64"
expect "4. ... also when BER-encoded ($CODE)" test "$CODE" = 400
expect "4. ... and no pending certificate was issued" test "$(certs_of X-1)" = 1

audited=$(rows audit_entries)
appraised=$(rows appraisals)
big=$(printf 'x%.0s' {1..40000})
newkey ldev2
evidence big ldev1 X-1 ldev2 ",\"swversion\":\"$big\""
expect "3. a 40 KB swversion is refused ($CODE)" test "$CODE" = 400
evidence nl ldev1 X-1 ldev2 ',"swversion":"1.0\nCN=x"'
expect "3. a swversion with a line break is refused ($CODE)" test "$CODE" = 400
expect "3. ... and is a JSON error" is_json_error
expect "3. ... no appraisal was stored" test "$(rows appraisals)" = "$appraised"
now_audited=$(rows audit_entries)
expect "3. ... only the nonces were audited ($audited + 2 = $now_audited)" test "$now_audited" = $((audited + 2))

# --- 1. the operator's hold and keyCompromise are sticky ---------------------------------------

# With the real agent: A1 enrolls, an operator holds its certificate, the agent tries again.
"$AGENT" once --device "$A1" "${A[@]}" >"$W/a1.json" 2>"$W/a1.log"
expect "A1 is active" test "$(state_of "$A1")" = active
A1C=$(serial_of "$W/B/devices/$A1/$(json_field current_cert "$W/a1.json")")
"${F[@]}" ca hold "$A1C" >/dev/null
expect "1. ca hold suspends the device" test "$(state_of "$A1")" = suspended
before=$(certs_of "$A1")
out=$("$AGENT" enroll --device "$A1" "${A[@]}" 2>&1) && rc=0 || rc=$?
expect "1. the agent cannot re-enroll with its IDevID ($rc: $(tail -1 <<<"$out" | head -c 120))" test "$rc" != 0
expect "1. ... the registry still says suspended" test "$(state_of "$A1")" = suspended
expect "1. ... no certificate was issued" test "$(certs_of "$A1")" = "$before"
expect "1. ... the held certificate is still on hold, not superseded" test "$(ca_status "$A1C")" = hold
out=$("${F[@]}" ca release "$A1C" 2>&1) && rc=0 || rc=$?
expect "1. ca release resumes the device ($rc)" test "$(state_of "$A1")" = active
expect "1. ... and the certificate is good again" test "$(ca_status "$A1C")" = good

# With curl: X-1 (a key on file) is revoked for keyCompromise, and tries to get its key back.
"${F[@]}" ca revoke "$L1" --reason keyCompromise >/dev/null
expect "1. keyCompromise quarantines the device" test "$(state_of X-1)" = quarantined
nonce q x1 enroll
expect "1. a quarantined device gets no nonce ($CODE)" test "$CODE" = 403
est q x1 simpleenroll "$W/ldev1.b64"
expect "1. ... nor a certificate ($CODE)" test "$CODE" = 403
expect "1. ... and has still one certificate" test "$(certs_of X-1)" = 1
"${F[@]}" devices clear-quarantine X-1 --reason "investigated" >/dev/null
expect "1. an operator clears the quarantine: provisioned" test "$(state_of X-1)" = provisioned
evidence again x1 X-1 ldev1
est again x1 simpleenroll "$W/ldev1.b64"
expect "1. the key revoked for keyCompromise is never certified again ($CODE: $(head -c 90 "$W/$LAST.out"))" \
  grep -q "keyCompromise" "$W/$LAST.out"
expect "1. ... HTTP 403" test "$CODE" = 403
newkey ldev3
csr_der ldev3
b64file "$W/ldev3.csr.der" "$W/ldev3.b64"
evidence fresh x1 X-1 ldev3
est fresh x1 simpleenroll "$W/ldev3.b64"
expect "1. a new key with fresh evidence enrolls ($CODE)" test "$CODE" = 200
p7_pem "$W/fresh.simpleenroll.out" "$W/ldev3.pem"
L3=$(serial_of "$W/ldev3.pem")

# With the agent: A2 revoked for keyCompromise cannot enroll again either.
"$AGENT" once --device "$A2" "${A[@]}" >"$W/a2.json" 2>"$W/a2.log"
A2C=$(serial_of "$W/B/devices/$A2/$(json_field current_cert "$W/a2.json")")
"${F[@]}" ca revoke "$A2C" --reason keyCompromise >/dev/null
before=$(certs_of "$A2")
out=$("$AGENT" enroll --device "$A2" "${A[@]}" 2>&1) && rc=0 || rc=$?
expect "1. the agent of a quarantined device cannot enroll ($rc)" test "$rc" != 0
expect "1. ... A2 is still quarantined" test "$(state_of "$A2")" = quarantined
expect "1. ... no certificate was issued" test "$(certs_of "$A2")" = "$before"

# --- 10. refused evidence is bounded; revoked credentials write nothing ------------------------

# X-1's LDevID revoked for keyCompromise: its evidence is refused before anything is written.
audited=$(rows audit_entries)
codes=""
for i in $(seq 1 15); do
  forged revoked$i ldev1 X-1 ldev3
  codes+="$CODE "
done
expect "10. evidence over the LDevID revoked for keyCompromise: 403 each time ($codes)" \
  test "$(grep -o 403 <<<"$codes" | wc -l)" = 15
expect "10. ... and not one audit entry ($audited -> $(rows audit_entries))" \
  test "$(rows audit_entries)" = "$audited"

# X-3 replays one accepted evidence JWS: at most the bucket's worth (10) of refusals is audited.
newkey ldevx3a
csr_der ldevx3a
b64file "$W/ldevx3a.csr.der" "$W/ldevx3a.b64"
evidence x3ev x3 X-3 ldevx3a
expect "X-3's evidence passes ($CODE)" test "$CODE" = 200
audited=$(rows audit_entries)
started=$(date +%s)
codes=""
for i in $(seq 1 20); do
  call replay$i x3 /attest/v1/evidence -H 'Content-Type: application/jose' \
    --data-binary @"$W/x3ev.jws"
  codes+="$CODE "
  [[ $CODE == 429 ]] && break
done
expect "10. replayed evidence: 429 after the refusal bucket ($codes)" test "$CODE" = 429
expect "10. ... with a JSON body" is_json_error
expect "10. ... and Retry-After" grep -qi '^retry-after: [0-9]' "$W/$LAST.hdr"
for i in $(seq 1 10); do
  forged madeup$i x3 X-3 ldevx3a
  [[ $CODE == 429 ]] && break
done
expect "10. made-up nonces are throttled too (429: $CODE)" test "$CODE" = 429
# The bucket is 10, refilled by one every 6 s while these requests ran.
bound=$((10 + ($(date +%s) - started) / 6 + 1))
grown=$(($(rows audit_entries) - audited))
expect "10. ... at most the bucket's worth of audit entries was written ($grown <= $bound)" \
  test "$grown" -le "$bound"
est x3enroll x3 simpleenroll "$W/ldevx3a.b64"
expect "10. X-3 still enrolls with its passing evidence ($CODE)" test "$CODE" = 200
p7_pem "$W/x3enroll.simpleenroll.out" "$W/ldevx3a.pem"
X3A=$(serial_of "$W/ldevx3a.pem")

# --- 12. an operator's hold cancels a pending rotation -------------------------------------------

newkey ldevx3b
csr_der ldevx3b
b64file "$W/ldevx3b.csr.der" "$W/ldevx3b.b64"
evidence x3rot ldevx3a X-3 ldevx3b
expect "X-3's rotation evidence passes ($CODE)" test "$CODE" = 200
est x3rot ldevx3a simplereenroll "$W/ldevx3b.b64"
expect "X-3 gets a pending certificate ($CODE)" test "$CODE" = 200
p7_pem "$W/x3rot.simplereenroll.out" "$W/ldevx3b.pem"
X3B=$(serial_of "$W/ldevx3b.pem")
expect "12. ... on hold" test "$(ca_status "$X3B")" = hold
"${F[@]}" ca hold "$X3A" >/dev/null
expect "12. ca hold of the current certificate suspends X-3" test "$(state_of X-3)" = suspended
expect "12. ... and revokes the pending one" test "$(ca_status "$X3B")" = revoked
expect "12. ... as superseded" test "$(ca_reason "$X3B")" = superseded
"${F[@]}" devices resume X-3 --reason "checked" >/dev/null
expect "12. an operator resumes X-3" test "$(state_of X-3)" = active
call x3confirm ldevx3b /device/v1/rotation/confirm -X POST
expect "12. the device's confirm cannot release the cancelled certificate: 409 ($CODE)" \
  test "$CODE" = 409
expect "12. ... it stays revoked" test "$(ca_status "$X3B")" = revoked
expect "12. ... and the current certificate is good" test "$(ca_status "$X3A")" = good

# --- 11. other revocation reasons are sticky too -------------------------------------------------

A1NOW=$(serial_of "$W/B/devices/$A1/$(json_field current_cert "$W/a1.json")")
"${F[@]}" ca revoke "$A1NOW" --reason privilegeWithdrawn >/dev/null
expect "11. ca revoke --reason privilegeWithdrawn suspends A1" test "$(state_of "$A1")" = suspended
expect "11. ... with the certificate revoked, not held" test "$(ca_status "$A1NOW")" = revoked
before=$(certs_of "$A1")
out=$("$AGENT" enroll --device "$A1" "${A[@]}" 2>&1) && rc=0 || rc=$?
expect "11. the agent cannot re-enroll with its IDevID ($rc: $(tail -1 <<<"$out" | head -c 120))" test "$rc" != 0
expect "11. ... no certificate was issued" test "$(certs_of "$A1")" = "$before"
sleep 1  # the operator's resume comes in a later second than the revocation
"${F[@]}" devices resume "$A1" --reason "privilege restored" >/dev/null
expect "11. an operator resumes A1" test "$(state_of "$A1")" = active
out=$("$AGENT" enroll --device "$A1" "${A[@]}" 2>&1) && rc=0 || rc=$?
expect "11. then A1 enrolls again with fresh attestation ($rc: $(tail -1 <<<"$out" | head -c 120))" test "$rc" = 0
expect "11. ... a new certificate was issued" test "$(certs_of "$A1")" = $((before + 1))
expect "11. ... and A1 is active" test "$(state_of "$A1")" = active

# --- 5 and 7. receipts and status --------------------------------------------------------------

"${F[@]}" devices decommission X-1 --reason "end of life" >/dev/null
call st1 ldev3 /device/v1/status
ORDER=$(json_field order_id "$W/st1.out")
expect "5. the status names the decommissioning order (${ORDER:0:12}...)" test "${#ORDER}" = 64
receipt() {  # receipt NAME ORDER DESTROYED_JSON IAT
  jws "$W/ldev3.key" "{\"alg\":\"ES256\",\"typ\":\"fleetid-receipt+jws\",\"kid\":\"$L3\"}" \
    "{\"serial\":\"X-1\",\"order\":\"$2\",\"destroyed\":$3,\"iat\":$4}" >"$W/$1.receipt"
  call "$1.receipt" - /device/v1/receipt -H 'Content-Type: application/jose' \
    --data-binary @"$W/$1.receipt"
}
KEYS="[{\"label\":\"ldevid-3\",\"key_sha256\":\"$(key_sha256 "$W/ldev3.key")\"}]"
receipt empty "$ORDER" '[]' "$(date +%s)"
expect "5. a receipt destroying nothing: 400 ($CODE)" test "$CODE" = 400
receipt epoch "$ORDER" "$KEYS" 0
expect "5. a receipt of iat 0: 403 ($CODE)" test "$CODE" = 403
receipt other "$(printf '0%.0s' {1..64})" "$KEYS" "$(date +%s)"
expect "5. a receipt answering another order: 403 ($CODE)" test "$CODE" = 403
receipt wrongkey "$ORDER" "[{\"label\":\"ldevid-9\",\"key_sha256\":\"$(key_sha256 "$W/ldev2.key")\"}]" "$(date +%s)"
expect "5. a receipt not naming the LDevID key: 403 ($CODE)" test "$CODE" = 403
expect "5. ... X-1 is still decommissioning" test "$(state_of X-1)" = decommissioning
receipt good "$ORDER" "$KEYS" "$(date +%s)"
expect "5. the receipt answering the order completes it ($CODE)" test "$CODE" = 200
expect "5. ... X-1 is decommissioned" test "$(state_of X-1)" = decommissioned
call st_revoked ldev3 /device/v1/status
expect "7. a revoked LDevID cannot read its status: 403 ($CODE)" test "$CODE" = 403
expect "7. ... as JSON" is_json_error
call st_tomb x1 /device/v1/status
expect "7. a tombstoned IDevID cannot either: 403 ($CODE)" test "$CODE" = 403
call st_old ldev1 /device/v1/status
expect "7. nor the LDevID revoked for keyCompromise: 403 ($CODE)" test "$CODE" = 403
audited=$(rows audit_entries)
forged tomb x1 X-1 ldev3
expect "10. a tombstoned IDevID's evidence: 403 ($CODE)" test "$CODE" = 403
expect "10. ... and nothing audited" test "$(rows audit_entries)" = "$audited"

# --- 3. the nonce rate ---------------------------------------------------------------------------

# The burst is 10, refilled by one every 6 s: however slow this machine's TLS handshakes, a 429
# comes well before 30 requests.
codes=""
for i in $(seq 1 30); do
  nonce rate$i x2 enroll
  codes+="$CODE "
  [[ $CODE == 429 ]] && break
done
expect "3. nonces are rate-limited: 429 after the burst ($codes)" test "$CODE" = 429
expect "3. ... with a JSON body" is_json_error
expect "3. ... and Retry-After" grep -qi '^retry-after: [0-9]' "$W/$LAST.hdr"
expect "3. ... at least the burst was granted first" test "$(grep -o 200 <<<"$codes" | wc -l)" -ge 10

# --- 9. the audit log's range --------------------------------------------------------------------

bootstrap_admin "$CLI" "$DATA"
for q in "start=18446744073709551610&end=18446744073709551615" \
  "start=18446744073709551615&end=18446744073709551615" "start=9223372036854775808&end=9223372036854775809"; do
  code=$(curl -s -o "$W/audit.out" -w '%{http_code}' "${ADMIN_CURL[@]}" "$HURL/audit/v1/entries?$q")
  expect "9. /audit/v1/entries?$q: 400 ($code: $(head -c 80 "$W/audit.out"))" test "$code" = 400
done
code=$(curl -s -o "$W/audit.out" -w '%{http_code}' "${ADMIN_CURL[@]}" "$HURL/audit/v1/entries?start=9223372036854775806&end=9223372036854775807")
expect "9. a range past the log's end is empty ($code: $(head -c 60 "$W/audit.out"))" \
  grep -q '"entries":\[\]' "$W/audit.out"

expect "the server is still up" curl -sf --max-time 5 "$URL/healthz" -o /dev/null
finish
