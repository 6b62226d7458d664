#!/usr/bin/env bash
# The CA against real relying-party tools: a certificate fleetid issues verifies with
# `openssl verify`; `openssl ocsp` and GnuTLS `ocsptool` say good, then revoked (with the reason)
# right after a revocation, with a verified response signature; `openssl verify -crl_check`
# rejects it with the CRL fetched from its distribution point; a held certificate is revoked,
# then good again after release. Garbage gets the protocol's own error.
SERVER=$1
CLI=$2
source "$(dirname "$0")/lib.sh"

DATA=$W/var
start_server "$SERVER" "$DATA"
# The data directory changed by hand next to the running server: break-glass (docs/cli.md).
F=("$CLI" --data "$DATA" --break-glass --public-url "$URL")
expect "the CA hierarchy is ready at start" grep -q 'msg="certificate authority ready"' "$W/server.log"

fp() { printf '%064x' "$1"; }
for i in 1 2; do
  echo "{\"serial\":\"GW-000$i\",\"model\":\"gw-100\",\"manufacturer\":\"acme\",\"idevid_fingerprint\":\"$(fp $i)\"}"
done >"$W/batch.jsonl"
"${F[@]}" devices import "$W/batch.jsonl" >/dev/null
"${F[@]}" devices provision GW-0001 --tenant acme --region eu >/dev/null

# Chain material from the CA's own AIA endpoints.
curl -sf "$URL/ca/root.crt" | openssl x509 -inform DER -out "$W/root.pem"
curl -sf "$URL/ca/ecdsa-p256-sha256.crt" | openssl x509 -inform DER -out "$W/issuing.pem"

issue() {  # issue NAME DEVICE: device key in software (a device's own business), CSR, certificate
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/$1.key" 2>/dev/null
  openssl req -new -key "$W/$1.key" -subj "/CN=anything-the-device-says" -out "$W/$1.csr"
  "${F[@]}" ca issue --device "$2" --csr "$W/$1.csr" --out "$W/$1.pem" 2>"$W/$1.issue.json"
}
issue dev1 GW-0001
out=$(openssl verify -purpose sslclient -CAfile "$W/root.pem" -untrusted "$W/issuing.pem" "$W/dev1.pem" 2>&1)
expect "openssl verify accepts the issued certificate ($out)" grep -q ": OK" <<<"$out"
subject=$(openssl x509 -in "$W/dev1.pem" -noout -subject -nameopt RFC2253)
expect "the subject comes from the registry, not the CSR ($subject)" grep -q "CN=GW-0001,O=acme" <<<"$subject"
expect "the device identity is a SAN URI" grep -q "URI:urn:fleetid:device:GW-0001" <<<"$(openssl x509 -in "$W/dev1.pem" -noout -ext subjectAltName)"
SERIAL=$(openssl x509 -in "$W/dev1.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')

ocsp() {  # ocsp CERT: openssl's OCSP client against the server
  openssl ocsp -issuer "$W/issuing.pem" -cert "$W/$1.pem" -url "$URL/ocsp" -CAfile "$W/root.pem" \
    -verify_other "$W/issuing.pem" -timeout 5 2>&1
}
ocsp_says() { grep -q -- "$2" <<<"$(ocsp "$1")"; }  # ocsp_says CERT TEXT
gnutls() {  # gnutls CERT: GnuTLS ocsptool, nonce on
  ocsptool --ask="$URL/ocsp" --load-issuer "$W/issuing.pem" --load-cert "$W/$1.pem" \
    --load-trust "$W/issuing.pem" --nonce 2>&1
}
out=$(ocsp dev1)
expect "openssl ocsp: good" grep -q "dev1.pem: good" <<<"$out"
expect "openssl ocsp: response verifies" grep -q "Response verify OK" <<<"$out"
out=$(gnutls dev1)
expect "ocsptool: good" grep -q "Certificate Status: good" <<<"$out"
expect "ocsptool: response verifies" grep -q "Verifying OCSP Response: Success" <<<"$out"

# GET form (RFC 6960 Appendix A.1) and the caching headers of a nonce-less answer.
openssl ocsp -issuer "$W/issuing.pem" -cert "$W/dev1.pem" -no_nonce -reqout "$W/req.der" >/dev/null 2>&1
b64=$(openssl base64 -A -in "$W/req.der" | python3 -c 'import sys,urllib.parse;print(urllib.parse.quote(sys.stdin.read(),safe=""))')
curl -sf -D "$W/get.headers" "$URL/ocsp/$b64" -o "$W/get.der"
out=$(openssl ocsp -respin "$W/get.der" -issuer "$W/issuing.pem" -cert "$W/dev1.pem" -CAfile "$W/root.pem" -verify_other "$W/issuing.pem" 2>&1)
expect "GET /ocsp/{base64} answers good" grep -q "dev1.pem: good" <<<"$out"
expect "a cacheable answer carries max-age (RFC 5019)" grep -qi "cache-control: max-age=" "$W/get.headers"
expect "and Content-Type application/ocsp-response" grep -qi "content-type: application/ocsp-response" "$W/get.headers"
etag=$(grep -i '^etag:' "$W/get.headers" | cut -d' ' -f2 | tr -d '\r')
code=$(curl -s -o "$W/304.body" -w '%{http_code}' -H "If-None-Match: $etag" "$URL/ocsp/$b64")
expect "a client holding the answer gets 304 Not Modified ($code, $etag)" test "$code" = 304 -a ! -s "$W/304.body"
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'If-None-Match: "another"' "$URL/ocsp/$b64")
expect "another entity tag gets the answer ($code)" test "$code" = 200

"${F[@]}" ca revoke "$SERIAL" --reason keyCompromise >"$W/revoke.json"
expect "the operator tool revokes" grep -q '"status": "revoked"' "$W/revoke.json"
poll 10 ocsp_says dev1 "dev1.pem: revoked" || true
out=$(ocsp dev1)
expect "openssl ocsp: revoked right after the revocation" grep -q "dev1.pem: revoked" <<<"$out"
expect "openssl ocsp: with the reason" grep -q "Reason: keyCompromise" <<<"$out"
expect "openssl ocsp: revoked response verifies" grep -q "Response verify OK" <<<"$out"
out=$(gnutls dev1)
expect "ocsptool: revoked" grep -q "Certificate Status: revoked" <<<"$out"

# The CRL from the certificate's own distribution point.
cdp=$(openssl x509 -in "$W/dev1.pem" -noout -ext crlDistributionPoints | grep -o 'http://[^ ]*')
expect "the CDP points at this authority ($cdp)" grep -q "^$URL/crl/ecdsa-p256-sha256/" <<<"$cdp"
curl -sf "$cdp" -o "$W/crl.der"
openssl crl -inform DER -in "$W/crl.der" -out "$W/crl.pem"
curl -sf "$URL/crl/root/0.crl" | openssl crl -inform DER -out "$W/root-crl.pem"
cat "$W/crl.pem" "$W/root-crl.pem" >"$W/crls.pem"
out=$(openssl verify -crl_check_all -CAfile "$W/root.pem" -untrusted "$W/issuing.pem" -CRLfile "$W/crls.pem" "$W/dev1.pem" 2>&1 || true)
expect "openssl verify -crl_check_all rejects it with the fetched CRLs" grep -q "certificate revoked" <<<"$out"

# Hold and release.
issue dev2 GW-0001
SERIAL2=$(openssl x509 -in "$W/dev2.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')
"${F[@]}" ca hold "$SERIAL2" >/dev/null
poll 10 ocsp_says dev2 "Reason: certificateHold" || true
out=$(ocsp dev2)
expect "a held certificate is revoked (certificateHold)" grep -q "Reason: certificateHold" <<<"$out"
# The hold is in the delta CRL named by the full CRL's freshestCRL, against that full CRL.
delta_url=$(openssl crl -in "$W/crl.pem" -noout -text | grep -A2 "Freshest CRL" | grep -o 'http://[^ ]*')
expect "the full CRL names its delta ($delta_url)" grep -q -- "-delta.crl$" <<<"$delta_url"
curl -sf "$delta_url" | openssl crl -inform DER -out "$W/delta1.pem"
text=$(openssl crl -in "$W/delta1.pem" -noout -text)
expect "the delta CRL carries a delta CRL indicator" grep -q "Delta CRL Indicator" <<<"$text"
expect "the delta CRL lists the hold" grep -q "Certificate Hold" <<<"$text"
cat "$W/crl.pem" "$W/delta1.pem" >"$W/base-delta1.pem"
vd() { openssl verify -crl_check -extended_crl -use_deltas -CAfile "$W/root.pem" -untrusted "$W/issuing.pem" -CRLfile "$1" "$W/$2.pem" 2>&1 || true; }
out=$(vd "$W/base-delta1.pem" dev2)
expect "openssl verify -use_deltas: the held certificate is revoked ($out)" grep -q "certificate revoked" <<<"$out"
"${F[@]}" ca release "$SERIAL2" >/dev/null
poll 10 ocsp_says dev2 "dev2.pem: good" || true
out=$(ocsp dev2)
expect "and good again after release" grep -q "dev2.pem: good" <<<"$out"
curl -sf "$delta_url" | openssl crl -inform DER -out "$W/delta2.pem"
expect "the next delta CRL says removeFromCRL" grep -q "Remove From CRL" <<<"$(openssl crl -in "$W/delta2.pem" -noout -text)"
cat "$W/crl.pem" "$W/delta2.pem" >"$W/base-delta2.pem"
out=$(vd "$W/base-delta2.pem" dev2)
expect "openssl verify -use_deltas: good again after release ($out)" grep -q "dev2.pem: OK" <<<"$out"
out=$(vd "$W/base-delta2.pem" dev1)
expect "openssl verify -use_deltas: the revoked one stays revoked ($out)" grep -q "certificate revoked" <<<"$out"
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/crl/ecdsa-p256-sha256/99999999.crl")
expect "a CRL partition that cannot exist yet is a 404, not a new CRL ($code)" test "$code" = 404

# The HTTPS front asks for client certificates and verifies them against the hierarchy; the
# handler sees who the client is, and the authority says whether its certificate still stands.
H=https://localhost:$HPORT
body=$(curl -sS --max-time 5 --cacert "$W/root.pem" --cert "$W/dev2.pem" --key "$W/dev2.key" "$H/healthz")
expect "mTLS: the handler sees the device ($body)" grep -q '"subject":"CN=GW-0001,O=acme"' <<<"$body"
expect "mTLS: and its certificate is good" grep -q '"certificate_status":"good"' <<<"$body"
body=$(curl -sS --max-time 5 --cacert "$W/root.pem" --cert "$W/dev1.pem" --key "$W/dev1.key" "$H/healthz")
expect "mTLS: a revoked certificate is reported revoked ($body)" grep -q '"certificate_status":"revoked"' <<<"$body"
body=$(curl -sS --max-time 5 --cacert "$W/root.pem" "$H/healthz")
expect "HTTPS without a client certificate is served, anonymously" bash -c '! grep -q client <<<"$1"' _ "$body"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=GW-0001 -days 1 \
  -keyout "$W/self.key" -out "$W/self.pem" 2>/dev/null
rc=0; curl -s --max-time 5 --cacert "$W/root.pem" --cert "$W/self.pem" --key "$W/self.key" "$H/healthz" -o /dev/null || rc=$?
expect "mTLS: a self-made certificate fails the handshake (curl rc $rc)" test "$rc" != 0

# Hostile input: the protocol's own error, never a crash or a 500.
head -c 200 /dev/urandom >"$W/garbage"
code=$(curl -s -o "$W/garbage.resp" -w '%{http_code}' -H 'Content-Type: application/ocsp-request' --data-binary @"$W/garbage" "$URL/ocsp")
expect "garbage OCSP request: HTTP 200 with an OCSP error ($code)" test "$code" = 200
expect "garbage OCSP request: malformedRequest" grep -q "malformedrequest" <<<"$(openssl ocsp -respin "$W/garbage.resp" -resp_text 2>&1)"
size=$(stat -c %s "$W/req.der"); head -c $((size - 10)) "$W/req.der" >"$W/truncated"
curl -s -H 'Content-Type: application/ocsp-request' --data-binary @"$W/truncated" "$URL/ocsp" -o "$W/trunc.resp"
expect "truncated OCSP request: malformedRequest" grep -q "malformedrequest" <<<"$(openssl ocsp -respin "$W/trunc.resp" -resp_text 2>&1)"
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/ocsp/%%%not-base64")
expect "a broken GET path is answered, not crashed on ($code)" test "$code" = 200
head -c 200000 /dev/zero >"$W/big"
code=$(curl -s -o "$W/big.resp" -w '%{http_code}' --data-binary @"$W/big" "$URL/ocsp")
expect "an oversized OCSP request is refused with 413 ($code)" test "$code" = 413
code=$(curl -s -o "$W/nocrl.json" -w '%{http_code}' "$URL/crl/no-such-ca/1.crl")
expect "an unknown CRL is a 404 with a JSON body ($code)" test "$code" = 404
echo "not a csr" >"$W/bad.csr"
rc=0; "${F[@]}" ca issue --device GW-0002 --csr "$W/bad.csr" >"$W/bad.out" 2>&1 || rc=$?
expect "a garbage CSR is refused (rc $rc)" grep -q "invalid_argument" "$W/bad.out"
count_certs() {
  python3 -c 'import sqlite3,sys;print(sqlite3.connect(sys.argv[1]).execute("SELECT COUNT(*) FROM certificates WHERE device = ?", (sys.argv[2],)).fetchone()[0])' "$DATA/fleetid.db" "$1"
}
before=$(count_certs GW-0001)
openssl req -in "$W/dev1.csr" -outform DER -out "$W/sig.der"
python3 - "$W/sig.der" <<'PY'
import sys
p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); b[-3] ^= 1; open(p, 'wb').write(b)
PY
rc=0; "${F[@]}" ca issue --device GW-0001 --csr "$W/sig.der" >"$W/sig.out" 2>&1 || rc=$?
expect "a CSR with a bad signature is refused (rc $rc)" grep -q "does not verify" "$W/sig.out"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$W/p384.key" 2>/dev/null
openssl req -new -key "$W/p384.key" -subj "/CN=x" -out "$W/p384.csr"
rc=0; "${F[@]}" ca issue --device GW-0001 --csr "$W/p384.csr" >"$W/p384.out" 2>&1 || rc=$?
expect "a CSR of a suite no issuing CA serves is refused (rc $rc)" grep -q "invalid_argument" "$W/p384.out"
after=$(count_certs GW-0001)
expect "and nothing was stored for the refused requests ($before, $after)" test "$before" = "$after"
rc=0; "${F[@]}" ca issue --device GW-9999 --csr "$W/dev1.csr" >"$W/nodev.out" 2>&1 || rc=$?
expect "an unregistered device gets nothing" grep -q "not_found: no device with serial 'GW-9999'" "$W/nodev.out"
expect "the server is still up" curl -sf "$URL/healthz" -o /dev/null
expect "no 500 was answered" bash -c '! grep -q "status=500" "$1"' _ "$W/server.log"

kill -TERM "$PID"; wait_exit "$PID" 15
expect "the server stops cleanly ($RC)" test "$RC" = 0
audit_covers "$CLI" "$DATA"
finish
