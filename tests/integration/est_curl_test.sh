#!/usr/bin/env bash
# A third-party device stack enrolls with nothing but `curl` and `openssl` as its EST client
# (RFC 7030): its own key and CSR, an IDevID from its manufacturer's factory, a nonce, evidence
# as a compact JWS (RFC 7515, ES256) signed with the IDevID key, /simpleenroll, and later a
# /simplereenroll rotation confirmed with the new certificate. The results check out with
# `openssl verify` and `openssl ocsp`. Every refusal answers a 4xx (never a 5xx) with a message
# that says what is wrong, and changes nothing: the device's state and version, and its
# certificates and their statuses, are the same before and after.
#
# Not covered here: an expired nonce. The nonce TTL is 60 s, too long to wait for in this test;
# expiry is unit-tested with a fake clock.
SERVER=$1
CLI=$2
AGENT=$3
source "$(dirname "$0")/lib.sh"

DATA=$W/var
start_server "$SERVER" "$DATA"
# The data directory changed by hand next to the running server: break-glass (docs/cli.md).
F=("$CLI" --data "$DATA" --break-glass --public-url "$URL")
H=https://localhost:$HPORT

# --- the device side: plain shell, curl and openssl ----------------------------------------------

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
# raw_sig: an ECDSA DER signature (stdin) as the 64-byte R||S that ES256 wants (stdout).
raw_sig() {
  local der hex out=""
  der=$(mktemp "$W/sig-XXXXXX")
  cat >"$der"
  for hex in $(openssl asn1parse -inform DER -in "$der" | awk -F: '/INTEGER/ {print $NF}'); do
    while ((${#hex} < 64)); do hex=0$hex; done  # left-pad; a 33-byte value loses its leading 00
    out+=${hex: -64}
  done
  rm -f "$der"
  printf '%b' "$(sed 's/../\\x&/g' <<<"$out")"
}
# jws_es256 KEY TYP PAYLOAD: a compact JWS of PAYLOAD signed with KEY.
jws_es256() {
  local input sig
  input=$(printf '{"alg":"ES256","typ":"%s"}' "$2" | b64url).$(printf '%s' "$3" | b64url)
  sig=$(printf '%s' "$input" | openssl dgst -sha256 -sign "$1" | raw_sig | b64url)
  printf '%s.%s' "$input" "$sig"
}
sha256_hex() { openssl dgst -sha256 -r "$1" | cut -d' ' -f1; }
key_sha256() { openssl pkey -in "$1" -pubout -outform DER | openssl dgst -sha256 -r | cut -d' ' -f1; }
newkey() { openssl ecparam -genkey -name prime256v1 -noout -out "$W/$1.key"; }
# csr_b64 KEY: the EST body for a CSR of KEY (base64 of the DER PKCS#10).
csr_b64() {
  openssl req -new -key "$W/$1.key" -subj "/CN=chosen-by-the-device" -outform DER -out "$W/$1.csr.der"
  openssl base64 -in "$W/$1.csr.der" -out "$W/$1.csr.b64"
}

# call NAME WHO PATH [CURL ARGS]: one HTTPS request, with the client certificate and key
# $W/WHO.pem and $W/WHO.key (none if WHO is -). Sets CODE (the HTTP status, 000 if none), RC
# (curl's exit code) and LAST=NAME; the body is in $W/NAME.out, and BODY holds its start.
call() {
  local name=$1 who=$2 path=$3 id=()
  shift 3
  [[ $who == - ]] || id=(--cert "$W/$who.pem" --key "$W/$who.key")
  LAST=$name
  RC=0
  CODE=$(curl -sS --max-time 10 --cacert "$W/root.pem" -o "$W/$name.out" -w '%{http_code}' \
    "${id[@]}" "$@" "$H$path" 2>"$W/$name.err") || RC=$?
  echo "$CODE $name" >>"$W/codes"
  BODY=$(head -c 300 "$W/$name.out" 2>/dev/null | tr -d '\r' | tr '\n' ' ' || true)
}
json_field() { sed -n "s/.*\"$1\":\"\\{0,1\\}\\([^\",}]*\\).*/\\1/p" "$2" 2>/dev/null || true; }
# nonce NAME WHO PURPOSE: asks for a nonce; NONCE holds it.
nonce() {
  call "$1.nonce" "$2" /attest/v1/nonce -H 'Content-Type: application/json' \
    --data-binary "{\"purpose\":\"$3\"}"
  NONCE=$(json_field nonce "$W/$1.nonce.out")
}
# evidence_for SIGNKEY NONCE SERIAL FIRMWARE_FILE CERTIFIED_KEY: the evidence JWS.
evidence_for() {
  jws_es256 "$W/$1.key" fleetid-evidence+jws "$(printf \
    '{"eat_profile":"urn:fleetid:evidence:1","eat_nonce":"%s","serial":"%s","fw_sha256":"%s","key_sha256":"%s","swversion":"tp-os 2.1"}' \
    "$2" "$3" "$(sha256_hex "$4")" "$(key_sha256 "$W/$5.key")")"
}
# send_evidence NAME WHO FILE
send_evidence() {
  call "$1.evidence" "$2" /attest/v1/evidence -H 'Content-Type: application/jose' --data-binary @"$3"
}
# est NAME WHO simpleenroll|simplereenroll BODY_FILE
est() {
  call "$1.$3" "$2" "/.well-known/est/$3" -H 'Content-Type: application/pkcs10' \
    -H 'Content-Transfer-Encoding: base64' --data-binary @"$4"
}
# p7_certs IN OUT: a base64 certs-only PKCS#7 reply to PEM certificates.
p7_certs() { tr -d '\r\n ' <"$1" | openssl base64 -d -A | openssl pkcs7 -inform DER -print_certs -out "$2"; }

ocsp() {  # ocsp CERT_PEM: openssl's OCSP client against the authority
  openssl ocsp -issuer "$W/issuing.pem" -cert "$1" -url "$URL/ocsp" -CAfile "$W/cacerts.pem" -timeout 5 2>&1
}
ocsp_says() { grep -q -- "$2" <<<"$(ocsp "$1")"; }  # ocsp_says CERT_PEM TEXT

# --- the state a refusal must leave alone --------------------------------------------------------

# snapshot SERIAL: the device's state and version, and its certificates with their statuses.
snapshot() {
  "${F[@]}" devices show "$1" >"$W/show.json"
  python3 - "$W/show.json" "$DATA/fleetid.db" "$1" <<'PY'
import json, sqlite3, sys
d = json.load(open(sys.argv[1]))
db = sqlite3.connect(sys.argv[2])
certs = db.execute("SELECT serial, status, COALESCE(reason, '') FROM certificates WHERE device = ? "
                   "ORDER BY serial", (sys.argv[3],)).fetchall()
print(f"state={d['state']} version={d['version']} certificates={len(certs)} "
      + " ".join(f"{s[:8]}:{st}{':' + str(r) if r != '' else ''}" for s, st, r in certs))
PY
}
# refused LABEL WANT_CODE KEYWORD SERIAL BEFORE: the last call was refused with WANT_CODE, its
# body says KEYWORD, the server is still up, and SERIAL's snapshot is still BEFORE.
refused() {
  local label=$1 want=$2 keyword=$3 serial=$4 before=$5 after
  expect "$label: HTTP $want ($CODE)" test "$CODE" = "$want"
  expect "$label: the message says why ($BODY)" grep -qi -- "$keyword" "$W/$LAST.out"
  expect "$label: the server is still up" curl -sf --max-time 5 "$URL/healthz" -o /dev/null
  after=$(snapshot "$serial")
  expect "$label: nothing changed ($after)" test "$after" = "$before"
}

# --- the factories ------------------------------------------------------------------------------

echo "tp-os 2.1 firmware image" >"$W/fw.bin"
echo "tp-os 2.1 firmware image, patched by someone" >"$W/other-fw.bin"
"$CLI" factory init --dir "$W/F" --name "Third Party Inc" >/dev/null
"$CLI" factory init --dir "$W/F2" --name "Unregistered Devices Ltd" >/dev/null
# Each device's own stack makes its key and CSR; the factory only certifies them.
for dev in tp1 tp2 rogue; do newkey "$dev"; done
openssl req -new -key "$W/tp1.key" -subj "/serialNumber=TP-1" -out "$W/tp1.idevid.csr"
openssl req -new -key "$W/tp2.key" -subj "/serialNumber=TP-2" -out "$W/tp2.idevid.csr"
openssl req -new -key "$W/rogue.key" -subj "/serialNumber=RG-1" -out "$W/rogue.idevid.csr"
make_batch() {  # make_batch FACTORY OUT SERIAL=CSR...: --count 0, so no agent-driven device
  local factory=$1 out=$2 ext=()
  shift 2
  for e in "$@"; do ext+=(--external "$e"); done
  "$CLI" factory make --dir "$factory" --out "$out" --count 0 --agent "$AGENT" --model tp-1 \
    --firmware "$W/fw.bin" "${ext[@]}" >"$out.log" 2>&1 || { cat "$out.log"; exit 1; }
}
make_batch "$W/F" "$W/BATCH" "TP-1=$W/tp1.idevid.csr" "TP-2=$W/tp2.idevid.csr"
make_batch "$W/F2" "$W/BATCH2" "RG-1=$W/rogue.idevid.csr"
cp "$W/BATCH/devices/TP-1/idevid.pem" "$W/tp1.pem"
cp "$W/BATCH/devices/TP-2/idevid.pem" "$W/tp2.pem"
cp "$W/BATCH2/devices/RG-1/idevid.pem" "$W/rogue.pem"
expect "the factory certified the device's own key" test \
  "$(openssl x509 -in "$W/tp1.pem" -noout -pubkey | openssl pkey -pubin -outform DER | openssl dgst -sha256 -r)" = \
  "$(openssl pkey -in "$W/tp1.key" -pubout -outform DER | openssl dgst -sha256 -r)"

# --- the authority: the manufacturer, its batch, the firmware, the devices -----------------------

"${F[@]}" manufacturer add --cert "$W/F/manufacturer.pem" --name "Third Party Inc" >/dev/null
"${F[@]}" devices import-manifest "$W/BATCH/manifest.jws" >/dev/null
"${F[@]}" attest reference --model tp-1 --firmware "$W/fw.bin" >/dev/null
"${F[@]}" devices provision TP-1 --tenant t --region r >/dev/null
"${F[@]}" devices provision TP-2 --tenant t --region r >/dev/null
"${F[@]}" ca certs >"$W/ca-certs.pem"
openssl x509 -in "$W/ca-certs.pem" -out "$W/root.pem"  # the first one is the root
expect "the server trusts the new manufacturer for TLS client certificates" \
  wait_for_log "$W/server.log" "manufacturer trust anchors" 10

# --- /cacerts and /csrattrs ----------------------------------------------------------------------

call cacerts - /.well-known/est/cacerts
expect "GET /cacerts: 200 ($CODE)" test "$CODE" = 200
p7_certs "$W/cacerts.out" "$W/cacerts.pem"
n=$(grep -c 'BEGIN CERTIFICATE' "$W/cacerts.pem")
expect "/cacerts: a certs-only PKCS#7 of the root and the issuing CA ($n certificates)" test "$n" -ge 2
expect "/cacerts: the root is the one pinned out of band" \
  grep -qF "$(sed -n 2p "$W/root.pem")" "$W/cacerts.pem"
call csrattrs - /.well-known/est/csrattrs
expect "GET /csrattrs: 200 ($CODE)" test "$CODE" = 200
attrs=$(tr -d '\r\n ' <"$W/csrattrs.out" | openssl base64 -d -A | openssl asn1parse -inform DER 2>&1)
expect "/csrattrs: asks for ecdsa-with-SHA256" grep -q "ecdsa-with-SHA256" <<<"$attrs"
expect "/csrattrs: asks for an EC key on prime256v1" grep -q "prime256v1" <<<"$attrs"
code=$(curl -s -o "$W/http-est.out" -w '%{http_code}' "$URL/.well-known/est/cacerts")
expect "EST over plain HTTP is refused ($code: $(head -c 80 "$W/http-est.out"))" \
  grep -q "HTTPS only" "$W/http-est.out"

# --- refusals before the first enrollment ---------------------------------------------------------

newkey ldev   # the key the LDevID will certify
csr_b64 ldev
snap=$(snapshot TP-1)
echo "     TP-1 before: $snap"
expect "TP-1 is provisioned" grep -q "state=provisioned" <<<"$snap"

# (i) no client certificate.
est noclient - simpleenroll "$W/ldev.csr.b64"
refused "(i) simpleenroll without a client certificate" 401 "client certificate" TP-1 "$snap"

# (h) malformed bodies.
printf '!!!notbase64' >"$W/notb64.b64"
est notb64 tp1 simpleenroll "$W/notb64.b64"
refused "(h) a body that is not base64" 400 "base64" TP-1 "$snap"
head -c 300 /dev/urandom | openssl base64 >"$W/random.b64"
est random tp1 simpleenroll "$W/random.b64"
refused "(h) base64 of bytes that are not DER" 400 "CSR\|PKCS#10\|DER" TP-1 "$snap"
printf 'this is not a JWS' >"$W/notjws"
send_evidence notjws tp1 "$W/notjws"
refused "(h) evidence that is not a JWS" 400 "JWS" TP-1 "$snap"
expect "(h) which is a JSON error invalid_argument" grep -q '"error":"invalid_argument"' "$W/notjws.evidence.out"

# (g) a CSR whose signature does not verify: one bit of the signature flipped.
cp "$W/ldev.csr.der" "$W/badsig.der"
python3 - "$W/badsig.der" <<'PY'
import sys
p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); b[-3] ^= 1; open(p, 'wb').write(b)
PY
openssl base64 -in "$W/badsig.der" -out "$W/badsig.b64"
est badsig tp1 simpleenroll "$W/badsig.b64"
refused "(g) a CSR with a bad signature" 400 "signature\|verify" TP-1 "$snap"

# (d) evidence for firmware the authority does not accept.
nonce fw tp1 enroll
expect "a nonce for the IDevID: 200 ($CODE)" test "$CODE" = 200 -a -n "$NONCE"
evidence_for tp1 "$NONCE" TP-1 "$W/other-fw.bin" ldev >"$W/fw.jws"
send_evidence fw tp1 "$W/fw.jws"
refused "(d) evidence of unknown firmware" 403 "firmware" TP-1 "$snap"
est fw tp1 simpleenroll "$W/ldev.csr.b64"
refused "(d) and no certificate on the strength of failed evidence" 403 "no fresh, passing evidence" TP-1 "$snap"

# (c) passing evidence for key A, a CSR for key B.
newkey keyA
nonce keya tp1 enroll
evidence_for tp1 "$NONCE" TP-1 "$W/fw.bin" keyA >"$W/keya.jws"
send_evidence keya tp1 "$W/keya.jws"
expect "(c) evidence naming key A passes ($CODE: $BODY)" test "$CODE" = 200
est keyb tp1 simpleenroll "$W/ldev.csr.b64"
refused "(c) a CSR for key B" 403 "no fresh, passing evidence names the key in this CSR" TP-1 "$snap"

# Evidence not signed by the client certificate's key.
nonce forged tp1 enroll
evidence_for keyA "$NONCE" TP-1 "$W/fw.bin" ldev >"$W/forged.jws"
send_evidence forged tp1 "$W/forged.jws"
refused "evidence signed by another key than the client certificate's" 401 "not signed" TP-1 "$snap"

# (e) an IDevID of a manufacturer the authority never registered.
nonce rogue rogue enroll
if [[ $RC != 0 ]]; then
  expect "(e) unregistered manufacturer: the TLS handshake fails (curl rc $RC)" test "$RC" = 35 -o "$RC" = 56
else
  refused "(e) unregistered manufacturer: the nonce is refused" 403 "manufacturer" TP-1 "$snap"
fi
evidence_for rogue "anything" RG-1 "$W/fw.bin" ldev >"$W/rogue.jws"
send_evidence rogue rogue "$W/rogue.jws"
if [[ $RC != 0 ]]; then
  expect "(e) unregistered manufacturer: evidence cannot even be sent (curl rc $RC)" test "$RC" = 35 -o "$RC" = 56
else
  refused "(e) unregistered manufacturer: evidence is refused" 403 "manufacturer" TP-1 "$snap"
fi
est rogue rogue simpleenroll "$W/ldev.csr.b64"
if [[ $RC != 0 ]]; then
  echo "     (e) the unregistered IDevID fails the TLS handshake (curl rc $RC: $(head -c 120 "$W/rogue.simpleenroll.err"))"
  expect "(e) unregistered manufacturer: simpleenroll fails the TLS handshake (curl rc $RC)" test "$RC" = 35 -o "$RC" = 56
else
  echo "     (e) the unregistered IDevID completes the TLS handshake and gets HTTP $CODE"
  refused "(e) unregistered manufacturer: simpleenroll is refused" 403 "manufacturer" TP-1 "$snap"
fi
expect "(e) the unregistered device is unknown to the registry" \
  bash -c '! "$@" devices show RG-1 >/dev/null 2>&1' _ "${F[@]}"

# --- the enrollment ------------------------------------------------------------------------------

# (a) The evidence is accepted once; the same evidence again is a replay.
nonce enroll tp1 enroll
expect "nonce: 200 with an expiry ($BODY)" grep -q '"expires_at":[0-9]' "$W/enroll.nonce.out"
evidence_for tp1 "$NONCE" TP-1 "$W/fw.bin" ldev >"$W/enroll.jws"
expect "the evidence is a three-part compact JWS" grep -Eq '^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{86}$' "$W/enroll.jws"
send_evidence enroll tp1 "$W/enroll.jws"
expect "evidence: 200 pass ($BODY)" grep -q '"result":"pass"' "$W/enroll.evidence.out"
send_evidence replay tp1 "$W/enroll.jws"
refused "(a) the same evidence again" 403 "replay" TP-1 "$snap"
"${F[@]}" attest counters >"$W/counters.json"
replayed=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1])).get("nonce_replayed",0))' "$W/counters.json")
expect "(a) attest counters: nonce_replayed = $replayed (>= 1)" test "$replayed" -ge 1

est enroll tp1 simpleenroll "$W/ldev.csr.b64"
expect "simpleenroll: 200 ($CODE $(head -c 100 "$W/enroll.simpleenroll.err"))" test "$CODE" = 200
p7_certs "$W/enroll.simpleenroll.out" "$W/ldev.pem"
# The issuing CA is the one that signed the LDevID.
issuer=$(openssl x509 -in "$W/ldev.pem" -noout -issuer -nameopt RFC2253 | sed 's/^issuer=//')
awk -v RS='-----END CERTIFICATE-----\n' -v ORS='-----END CERTIFICATE-----\n' \
  -v dir="$W" 'NF {print > (dir "/cacert-" NR ".pem")}' "$W/cacerts.pem"
for c in "$W"/cacert-*.pem; do
  if [[ $(openssl x509 -in "$c" -noout -subject -nameopt RFC2253 | sed 's/^subject=//') == "$issuer" ]]; then
    cp "$c" "$W/issuing.pem"
  fi
done
expect "the LDevID's issuer is in /cacerts ($issuer)" test -s "$W/issuing.pem"
out=$(openssl verify -purpose sslclient -CAfile "$W/cacerts.pem" "$W/ldev.pem" 2>&1)
expect "openssl verify accepts the LDevID ($out)" grep -q ": OK" <<<"$out"
expect "the LDevID certifies the new key" test \
  "$(openssl x509 -in "$W/ldev.pem" -noout -pubkey | openssl pkey -pubin -outform DER | openssl dgst -sha256 -r)" = \
  "$(openssl pkey -in "$W/ldev.key" -pubout -outform DER | openssl dgst -sha256 -r)"
out=$(ocsp "$W/ldev.pem")
expect "openssl ocsp: the LDevID is good" grep -q "ldev.pem: good" <<<"$out"
expect "openssl ocsp: response verifies" grep -q "Response verify OK" <<<"$out"
snap=$(snapshot TP-1)
echo "     TP-1 after enrollment: $snap"
expect "fleetid devices show: TP-1 is active" grep -q '"state": "active"' "$W/show.json"
call status ldev /device/v1/status
expect "GET /device/v1/status with the LDevID: active ($BODY)" grep -q '"state":"active"' "$W/status.out"

# An active device holding a good LDevID cannot enroll again with its IDevID: it renews instead.
newkey again
csr_b64 again
nonce again tp1 enroll
evidence_for tp1 "$NONCE" TP-1 "$W/fw.bin" again >"$W/again.jws"
send_evidence again tp1 "$W/again.jws"
est again tp1 simpleenroll "$W/again.csr.b64"
refused "an active device enrolling again with its IDevID" 409 "renew it with simplereenroll" TP-1 "$snap"

# --- the rotation: simplereenroll, then confirm with the new certificate --------------------------

newkey ldev2
csr_b64 ldev2
nonce rot ldev reenroll
expect "a reenroll nonce for the LDevID: 200 ($CODE)" test "$CODE" = 200 -a -n "$NONCE"
evidence_for ldev "$NONCE" TP-1 "$W/fw.bin" ldev2 >"$W/rot.jws"
send_evidence rot ldev "$W/rot.jws"
expect "reenroll evidence: 200 pass ($BODY)" grep -q '"result":"pass"' "$W/rot.evidence.out"
est rot ldev simplereenroll "$W/ldev2.csr.b64"
expect "simplereenroll: 200 ($CODE)" test "$CODE" = 200
p7_certs "$W/rot.simplereenroll.out" "$W/ldev2.pem"
out=$(openssl verify -purpose sslclient -CAfile "$W/cacerts.pem" "$W/ldev2.pem" 2>&1)
expect "openssl verify accepts the renewed certificate ($out)" grep -q ": OK" <<<"$out"
out=$(ocsp "$W/ldev2.pem")
expect "openssl ocsp: the renewed certificate is pending (certificateHold) until confirmed" \
  grep -q "Reason: certificateHold" <<<"$out"
out=$(ocsp "$W/ldev.pem")
expect "openssl ocsp: the old LDevID is still good meanwhile" grep -q "ldev.pem: good" <<<"$out"
call confirm ldev2 /device/v1/rotation/confirm -X POST
expect "POST /device/v1/rotation/confirm with the new certificate: 200 ($BODY)" test "$CODE" = 200
poll 10 ocsp_says "$W/ldev.pem" "Reason: superseded" || true
out=$(ocsp "$W/ldev2.pem")
expect "openssl ocsp: the renewed certificate is good" grep -q "ldev2.pem: good" <<<"$out"
out=$(ocsp "$W/ldev.pem")
expect "openssl ocsp: the old LDevID is revoked" grep -q "ldev.pem: revoked" <<<"$out"
expect "openssl ocsp: with reason superseded" grep -q "Reason: superseded" <<<"$out"
call status2 ldev2 /device/v1/status
expect "GET /device/v1/status with the new certificate: active ($BODY)" grep -q '"state":"active"' "$W/status2.out"
snap=$(snapshot TP-1)
echo "     TP-1 after the rotation: $snap"

# A superseded LDevID cannot renew.
newkey ldev3
csr_b64 ldev3
est old ldev simplereenroll "$W/ldev3.csr.b64"
refused "simplereenroll with the superseded LDevID" 403 "only the current, good LDevID" TP-1 "$snap"
# Nor can the current one rotate to the key it already has.
csr_b64 ldev2
est same ldev2 simplereenroll "$W/ldev2.csr.b64"
refused "simplereenroll that keeps the current key" 400 "new key" TP-1 "$snap"

# --- (f) suspended and decommissioned devices -----------------------------------------------------

"${F[@]}" devices suspend TP-1 --reason "x" >/dev/null
poll 10 ocsp_says "$W/ldev2.pem" "Reason: certificateHold" || true
snap=$(snapshot TP-1)
echo "     TP-1 suspended: $snap"
expect "(f) TP-1 is suspended" grep -q "state=suspended" <<<"$snap"
nonce susp ldev2 reenroll
echo "     (f) a reenroll nonce for the suspended device: HTTP $CODE"
if [[ $CODE == 200 ]]; then
  evidence_for ldev2 "$NONCE" TP-1 "$W/fw.bin" ldev3 >"$W/susp.jws"
  send_evidence susp ldev2 "$W/susp.jws"
  echo "     (f) evidence of the suspended device: HTTP $CODE $BODY"
fi
est susp ldev2 simplereenroll "$W/ldev3.csr.b64"
refused "(f) simplereenroll of a suspended device" 403 "suspended\|on_hold\|hold" TP-1 "$snap"
"${F[@]}" devices resume TP-1 --reason "y" >/dev/null
poll 10 ocsp_says "$W/ldev2.pem" "ldev2.pem: good" || true
expect "(f) resume restores TP-1 to active" grep -q "state=active" <<<"$(snapshot TP-1)"
out=$(ocsp "$W/ldev2.pem")
expect "(f) and its LDevID is good again" grep -q "ldev2.pem: good" <<<"$out"
call status3 ldev2 /device/v1/status
expect "(f) GET /device/v1/status: active ($BODY)" grep -q '"state":"active"' "$W/status3.out"

"${F[@]}" devices decommission TP-2 --reason "x" >/dev/null
snap2=$(snapshot TP-2)
echo "     TP-2 decommissioned: $snap2"
newkey tp2ldev
csr_b64 tp2ldev
nonce tp2 tp2 enroll
echo "     (f) an enroll nonce for the decommissioned device: HTTP $CODE"
if [[ $CODE == 200 ]]; then
  evidence_for tp2 "$NONCE" TP-2 "$W/fw.bin" tp2ldev >"$W/tp2.jws"
  send_evidence tp2 tp2 "$W/tp2.jws"
  echo "     (f) evidence of the decommissioned device: HTTP $CODE $BODY"
fi
est tp2 tp2 simpleenroll "$W/tp2ldev.csr.b64"
refused "(f) simpleenroll of a decommissioned device" 403 "decommission" TP-2 "$snap2"

# --- the end ------------------------------------------------------------------------------------

n=$(wc -l <"$W/codes")
expect "none of the $n requests was answered with a 5xx" bash -c '! grep -q "^5" "$1"' _ "$W/codes"
expect "the server logged no error" bash -c '! grep -Eq "^[^ ]+ (error|fatal) " "$1"' _ "$W/server.log"
kill -TERM "$PID"; wait_exit "$PID" 15
expect "the server stops cleanly ($RC)" test "$RC" = 0
audit_covers "$CLI" "$DATA"
finish
