#!/usr/bin/env bash
# The CA's limits of docs/security.md, against the real server with openssl and curl:
# - a flood of never-issued serials neither grows the server (RSS) nor buys a signature each:
#   past a small budget they get an unsigned `unauthorized`; serial 0 and -1 are answered with
#   their own CertID;
# - serials over 20 octets, nonces over 32 octets and unknown critical extensions are
#   malformedRequest, a POST of another media type is a 415;
# - nonced requests for an issued serial buy at most ocsp_fresh_per_second signatures; beyond, the
#   pre-signed answer without the nonce;
# - a key revoked for keyCompromise is never certified again, also when the compromise is found
#   after another revocation;
# - device CRL partitions follow the 24-hour device lifetime, server certificates have their own;
# - the HTTPS certificate is replaced within seconds of its revocation (and its key too, when the
#   key is compromised), and a server whose key was revoked for keyCompromise while it was
#   stopped starts with a new key;
# - an issuing CA is revocable, and `openssl verify -crl_check_all` then refuses its chains.
SERVER=$1
CLI=$2
source "$(dirname "$0")/lib.sh"

DATA=$W/var
start_server "$SERVER" "$DATA"
# The data directory changed by hand next to the running server: break-glass (docs/cli.md).
F=("$CLI" --data "$DATA" --break-glass --public-url "$URL")
H=https://localhost:$HPORT
ISSUER=ecdsa-p256-sha256

fp() { printf '%064x' "$1"; }
for i in 1 2 3; do
  echo "{\"serial\":\"GW-000$i\",\"model\":\"gw-100\",\"manufacturer\":\"acme\",\"idevid_fingerprint\":\"$(fp $i)\"}"
done >"$W/batch.jsonl"
"${F[@]}" devices import "$W/batch.jsonl" >/dev/null
for i in 1 2 3; do "${F[@]}" devices provision "GW-000$i" --tenant acme --region eu >/dev/null; done
curl -sf "$URL/ca/root.crt" | openssl x509 -inform DER -out "$W/root.pem"
curl -sf "$URL/ca/$ISSUER.crt" | openssl x509 -inform DER -out "$W/issuing.pem"

issue() {  # issue NAME DEVICE [KEY]: a CSR for a new key (or NAME's existing one), certified
  [[ -f "$W/$1.key" ]] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/$1.key" 2>/dev/null
  openssl req -new -key "$W/$1.key" -subj "/CN=x" -out "$W/$1.csr"
  "${F[@]}" ca issue --device "$2" --csr "$W/$1.csr" --out "$W/$1.pem" 2>"$W/$1.issue.json"
}
serial_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f'; }
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$PID/status"; }

# OCSP requests are built here, byte by byte, so any serial, nonce or extension can be asked.
openssl ocsp -issuer "$W/issuing.pem" -serial 0x1234 -no_nonce -reqout "$W/template.der" >/dev/null 2>&1
cat >"$W/ocsp.py" <<'PY'
import http.client, subprocess, sys

def tlv(tag, body):
    n = len(body)
    if n < 0x80:
        head = bytes([n])
    else:
        b = n.to_bytes((n.bit_length() + 7) // 8, "big")
        head = bytes([0x80 | len(b)]) + b
    return bytes([tag]) + head + body

def integer(value):
    n = max(1, (value.bit_length() + 8) // 8)
    return tlv(0x02, value.to_bytes(n, "big", signed=True))

def read_tlv(b, i):
    tag, n = b[i], b[i + 1]
    i += 2
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(b[i:i + k], "big")
        i += k
    return tag, b[i:i + n], i + n

# The template's CertID: its hash algorithm and issuer hashes, reused with any serial.
req = open(sys.argv[1], "rb").read()
_, tbs, _ = read_tlv(req, 0)
_, tbs, _ = read_tlv(tbs, 0)
_, request_list, _ = read_tlv(tbs, 0)
_, one, _ = read_tlv(request_list, 0)
_, certid, _ = read_tlv(one, 0)
i, parts = 0, []
while i < len(certid):
    start = i
    _, _, i = read_tlv(certid, i)
    parts.append(certid[start:i])
alg_and_hashes = b"".join(parts[:3])

def request(serial, serial_bytes=None, nonce=None, extension=None):
    s = tlv(0x02, serial_bytes) if serial_bytes is not None else integer(serial)
    body = tlv(0x30, tlv(0x30, tlv(0x30, alg_and_hashes + s)))
    exts = b""
    if nonce is not None:
        oid = tlv(0x06, bytes.fromhex("2b0601050507300102"))
        exts += tlv(0x30, oid + tlv(0x04, tlv(0x04, nonce)))
    if extension is not None:
        oid = tlv(0x06, bytes.fromhex("2b0601040183b20301"))
        crit = tlv(0x01, b"\xff") if extension == "critical" else b""
        exts += tlv(0x30, oid + crit + tlv(0x04, tlv(0x05, b"")))
    if exts:
        body += tlv(0xA2, tlv(0x30, exts))
    return tlv(0x30, tlv(0x30, body))

def status(resp):
    _, body, _ = read_tlv(resp, 0)
    tag, value, _ = read_tlv(body, 0)
    return value[0]

cmd = sys.argv[2]
if cmd == "write":  # write OUT SERIAL [nonce-length|critical|noncritical|long-serial]
    out, serial = sys.argv[3], int(sys.argv[4], 0)
    extra = sys.argv[5] if len(sys.argv) > 5 else ""
    kw = {}
    if extra.startswith("nonce"):
        kw["nonce"] = bytes([0xAB]) * int(extra[5:])
    elif extra in ("critical", "noncritical"):
        kw["extension"] = extra
    elif extra.startswith("serial-octets"):
        kw["serial_bytes"] = b"\x11" * int(extra[13:])
    open(out, "wb").write(request(serial, **kw))
elif cmd == "flood":  # flood HOST PORT COUNT: distinct never-issued serials over keep-alive
    host, port, count = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    conn = http.client.HTTPConnection(host, port, timeout=10)
    counts = {}
    for k in range(count):
        conn.request("POST", "/ocsp", body=request(0x7E000000 + k),
                     headers={"Content-Type": "application/ocsp-request"})
        r = conn.getresponse()
        s = status(r.read())
        counts[s] = counts.get(s, 0) + 1
    # OCSPResponseStatus: 0 successful (signed), 6 unauthorized (unsigned)
    print(counts.get(0, 0), counts.get(6, 0), sum(counts.values()))
elif cmd == "nonceflood":  # nonceflood HOST PORT SERIAL COUNT OUT: one issued serial, fresh nonces
    import os, time
    host, port, serial, count, out = sys.argv[3], int(sys.argv[4]), int(sys.argv[5], 0), int(sys.argv[6]), sys.argv[7]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    echoed, without, other = 0, 0, 0
    start = time.monotonic()
    for k in range(count):
        nonce = os.urandom(16)
        conn.request("POST", "/ocsp", body=request(serial, nonce=nonce),
                     headers={"Content-Type": "application/ocsp-request"})
        body = conn.getresponse().read()
        if status(body) != 0:
            other += 1
        elif nonce in body:
            echoed += 1
        else:
            without += 1
            open(out, "wb").write(body)
    print(echoed, without, other, int(time.monotonic() - start) + 1)
PY
ocsp_req() { python3 "$W/ocsp.py" "$W/template.der" write "$@"; }
post() {  # post REQUEST RESPONSE: POST an OCSP request, prints the HTTP status
  curl -s -o "$2" -w '%{http_code}' -H 'Content-Type: application/ocsp-request' --data-binary @"$1" "$URL/ocsp"
}
resp_text() { openssl ocsp -respin "$1" -resp_text -noverify 2>&1; }

# --- Serial 0 and -1 each get their own CertID (they shared one cache key).
for s in 0 -1 0; do
  ocsp_req "$W/s.der" "$s"
  post "$W/s.der" "$W/s.resp" >/dev/null
  text=$(resp_text "$W/s.resp")
  want=$([[ $s == 0 ]] && echo "Serial Number: 00" || echo "Serial Number: -01")
  expect "serial $s: answered unknown with its own CertID ($(grep -m1 'Serial Number' <<<"$text" | xargs))" \
    bash -c 'grep -q "Cert Status: unknown" <<<"$1" && grep -qx " *$2" <<<"$1"' _ "$text" "$want"
done

# --- OCSP details.
ocsp_req "$W/s20.der" 0 serial-octets20; post "$W/s20.der" "$W/s20.resp" >/dev/null
expect "a 20-octet serial is answered (unknown)" grep -q "Cert Status: unknown" <<<"$(resp_text "$W/s20.resp")"
ocsp_req "$W/s21.der" 0 serial-octets21; post "$W/s21.der" "$W/s21.resp" >/dev/null
expect "a 21-octet serial is malformedRequest (RFC 5280 §4.1.2.2), not tryLater" \
  grep -qi "malformedrequest" <<<"$(resp_text "$W/s21.resp")"
issue dev1 GW-0001
SERIAL1=$(serial_of "$W/dev1.pem")
dev_req() {  # dev_req OUT EXTRA: dev1's serial with EXTRA (nonceN, critical, noncritical)
  ocsp_req "$1" "0x$SERIAL1" "$2"
}
dev_req "$W/n32.der" nonce32; post "$W/n32.der" "$W/n32.resp" >/dev/null
text=$(resp_text "$W/n32.resp")
expect "a 32-octet nonce: answered good" grep -q "Cert Status: good" <<<"$text"
expect "and the nonce is echoed (RFC 8954)" grep -qi "$(printf 'ab%.0s' {1..16})" <<<"$(tr -d ' :\n' <<<"$text" | tr 'A-F' 'a-f')"
dev_req "$W/n33.der" nonce33; post "$W/n33.der" "$W/n33.resp" >/dev/null
expect "a 33-octet nonce is malformedRequest (RFC 8954 §2.1)" grep -qi "malformedrequest" <<<"$(resp_text "$W/n33.resp")"
dev_req "$W/crit.der" critical; post "$W/crit.der" "$W/crit.resp" >/dev/null
expect "an unknown critical request extension is malformedRequest" grep -qi "malformedrequest" <<<"$(resp_text "$W/crit.resp")"
dev_req "$W/noncrit.der" noncritical; post "$W/noncrit.der" "$W/noncrit.resp" >/dev/null
expect "an unknown non-critical one is ignored" grep -q "Cert Status: good" <<<"$(resp_text "$W/noncrit.resp")"
code=$(curl -s -o "$W/415.json" -w '%{http_code}' -H 'Content-Type: application/x-www-form-urlencoded' \
  --data-binary @"$W/n32.der" "$URL/ocsp")
expect "a POST of another media type is a 415 ($code)" test "$code" = 415
expect "with a JSON body" grep -q '"error":"unsupported_media_type"' "$W/415.json"
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: Application/OCSP-Request; x=y' \
  --data-binary @"$W/n32.der" "$URL/ocsp")
expect "the media type is compared case-insensitively, parameters aside ($code)" test "$code" = 200
out=$(openssl ocsp -issuer "$W/issuing.pem" -cert "$W/dev1.pem" -url "$URL/ocsp" -CAfile "$W/root.pem" \
  -verify_other "$W/issuing.pem" -timeout 5 2>&1)
expect "openssl ocsp (16-octet nonce) still answered good" grep -q "dev1.pem: good" <<<"$out"

# --- Nonced requests cannot come from the pre-signed cache: at most ocsp_fresh_per_second (200)
#     of them are signed per second; past that the cached answer is served without the nonce.
read -r echoed without other secs < <(python3 "$W/ocsp.py" "$W/template.der" nonceflood 127.0.0.1 "$PORT" "0x$SERIAL1" 2000 "$W/nononce.resp")
echo "# 2000 nonced requests in ${secs}s: $echoed with their nonce, $without without, $other other"
expect "fresh signatures stay within the budget ($echoed in ${secs}s)" \
  test "$echoed" -le $((200 * (secs + 1))) -a "$other" = 0
# The flood can only pass the budget where the server answers faster than 200 a second: a debug
# build does, the sanitizer build (about 120 a second here) does not. Where it cannot, the budget's
# refusals are left to PkiTest's flood on an injected clock, and the checks below are skipped.
if ((2000 > 200 * (secs + 1))); then
  expect "beyond it the answers come without the nonce ($without)" test "$without" -gt 0
  out=$(openssl ocsp -respin "$W/nononce.resp" -issuer "$W/issuing.pem" -CAfile "$W/root.pem" \
    -verify_other "$W/issuing.pem" -resp_text 2>&1)
  expect "such an answer verifies with openssl" grep -q "Response verify OK" <<<"$out"
  expect "and says good" grep -q "Cert Status: good" <<<"$out"
  expect "and carries no nonce" bash -c '! grep -qi "nonce" <<<"$1"' _ "$out"
else
  echo "# skipped: 2000 requests in ${secs}s never passed the budget of 200 a second in this build"
fi

# --- Keys revoked for keyCompromise are never certified again.
"${F[@]}" ca revoke "$SERIAL1" --reason keyCompromise >"$W/revoke1.json"
expect "dev1 revoked for keyCompromise" grep -q '"reason": "keyCompromise"' "$W/revoke1.json"
rc=0; issue dev1 GW-0001 || rc=$?
expect "the same key for the same device is refused (rc $rc)" grep -q "permission_denied" "$W/dev1.issue.json"
cp "$W/dev1.key" "$W/dev1b.key"
rc=0; issue dev1b GW-0002 || rc=$?
expect "the same key for another device is refused (rc $rc)" grep -q "permission_denied" "$W/dev1b.issue.json"
issue dev2 GW-0001
expect "a new key for the same device is certified" openssl x509 -in "$W/dev2.pem" -noout
# A compromise found after another revocation (a rotated-out key, superseded) is still recorded.
issue dev4 GW-0003
SERIAL4=$(serial_of "$W/dev4.pem")
"${F[@]}" ca revoke "$SERIAL4" --reason superseded >/dev/null
rc=0; "${F[@]}" ca revoke "$SERIAL4" --reason keyCompromise >"$W/revoke4.json" 2>&1 || rc=$?
expect "a superseded certificate can be revoked for keyCompromise (rc $rc)" grep -q '"reason": "keyCompromise"' "$W/revoke4.json"
rc=0; issue dev4 GW-0003 || rc=$?
expect "and its key is never certified again (rc $rc)" grep -q "permission_denied" "$W/dev4.issue.json"

# --- CRL partitions: device certificates by hour within their 24-hour life, server
#     certificates in their own.
cdp=$(openssl x509 -in "$W/dev2.pem" -noout -ext crlDistributionPoints | grep -o 'http://[^ ]*')
hour=$(basename "$cdp" .crl)
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/crl/$ISSUER/$((hour - 24)).crl")
expect "a device partition within 24 hours is served ($code)" test "$code" = 200
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/crl/$ISSUER/$((hour - 26)).crl")
expect "one 26 hours old is not (it was, for 30 days) ($code)" test "$code" = 404
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/crl/$ISSUER/$((hour - 24 * 29)).crl")
expect "nor one 29 days old ($code)" test "$code" = 404

# --- The HTTPS certificate: revoked, it is replaced within seconds for new handshakes.
served() {  # served OUT: the certificate a new handshake presents
  openssl s_client -connect "127.0.0.1:$HPORT" -servername localhost </dev/null 2>/dev/null | openssl x509 -out "$1"
}
served "$W/https1.pem"
HS1=$(serial_of "$W/https1.pem")
scdp=$(openssl x509 -in "$W/https1.pem" -noout -ext crlDistributionPoints | grep -o 'http://[^ ]*')
expect "the server certificate's CRL partition is its own class ($scdp)" grep -q "/crl/$ISSUER/-[0-9]*.crl$" <<<"$scdp"
"${F[@]}" ca revoke "$HS1" --reason superseded >/dev/null
renewed=""
for _ in $(seq 150); do
  served "$W/https2.pem" && [[ $(serial_of "$W/https2.pem") != "$HS1" ]] && { renewed=yes; break; }
  sleep 0.1
done
HS2=$(serial_of "$W/https2.pem")
expect "a new handshake presents another certificate within 15 s ($HS1 -> $HS2)" test "$renewed" = yes
out=$(openssl verify -purpose sslserver -verify_hostname localhost -CAfile "$W/root.pem" -untrusted "$W/issuing.pem" "$W/https2.pem" 2>&1)
expect "and it verifies ($out)" grep -q ": OK" <<<"$out"
expect "and the CA says it is good" grep -q '"status": "good"' <<<"$("${F[@]}" ca status "$HS2")"
curl -sf "$scdp" | openssl crl -inform DER -out "$W/server-crl.pem"
out=$(openssl verify -crl_check -CAfile "$W/root.pem" -untrusted "$W/issuing.pem" -CRLfile "$W/server-crl.pem" "$W/https1.pem" 2>&1 || true)
expect "the revoked one is on its partition's CRL ($out)" grep -q "certificate revoked" <<<"$out"
body=$(curl -sS --max-time 5 --cacert "$W/root.pem" "$H/healthz")
expect "HTTPS clients are served with the new certificate ($body)" grep -q '"status":"ok"' <<<"$body"
expect "the server logged the renewal" grep -q 'msg="https certificate renewed"' "$W/server.log"
# Revoked for keyCompromise: the key is replaced too.
"${F[@]}" ca revoke "$HS2" --reason keyCompromise >/dev/null
renewed=""
for _ in $(seq 150); do
  served "$W/https3.pem" && [[ $(serial_of "$W/https3.pem") != "$HS2" ]] && { renewed=yes; break; }
  sleep 0.1
done
expect "after keyCompromise a new handshake presents another certificate" test "$renewed" = yes
k2=$(openssl x509 -in "$W/https2.pem" -noout -pubkey)
k3=$(openssl x509 -in "$W/https3.pem" -noout -pubkey)
expect "for a new key" test "$k2" != "$k3"
body=$(curl -sS --max-time 5 --cacert "$W/root.pem" "$H/healthz")
expect "HTTPS clients are served with the new key ($body)" grep -q '"status":"ok"' <<<"$body"
expect "the old key was destroyed only after the new one served" grep -q 'msg="retired https key destroyed"' "$W/server.log"
# Revoked for keyCompromise while the server is stopped: it starts with a new key.
HS3=$(serial_of "$W/https3.pem")
kill -TERM "$PID"; wait_exit "$PID" 15
expect "the server stops ($RC)" test "$RC" = 0
"${F[@]}" ca revoke "$HS3" --reason keyCompromise >/dev/null
cp "$W/server.log" "$W/server-1.log"
# The same ports: the certificates issued so far name them in their CDP and AIA URLs.
"$SERVER" --data "$DATA" --listen "127.0.0.1:$PORT" --https-listen "127.0.0.1:$HPORT" >"$W/server.log" 2>&1 &
PID=$!; PIDS+=("$PID")
wait_for_log "$W/server.log" "msg=listening"
served "$W/https4.pem"
k4=$(openssl x509 -in "$W/https4.pem" -noout -pubkey)
expect "restarted after its key was revoked for keyCompromise, it serves another certificate" \
  test "$(serial_of "$W/https4.pem")" != "$HS3"
expect "for a new key" test "$k3" != "$k4"
out=$(openssl verify -purpose sslserver -verify_hostname localhost -CAfile "$W/root.pem" -untrusted "$W/issuing.pem" "$W/https4.pem" 2>&1)
expect "which verifies ($out)" grep -q ": OK" <<<"$out"
expect "and is good" grep -q '"status": "good"' <<<"$("${F[@]}" ca status "$(serial_of "$W/https4.pem")")"
expect "the server logged the replacement" grep -q 'msg="https key compromised: replacing it"' "$W/server.log"

# --- Issuing CAs are revocable by the root: the root's CRL lists them.
chain_check() {  # chain_check LEAF: openssl verify -crl_check_all with the CRLs fetched now
  curl -sf "$(openssl x509 -in "$1" -noout -ext crlDistributionPoints | grep -o 'http://[^ ]*')" |
    openssl crl -inform DER -out "$W/leaf-crl.pem"
  curl -sf "$URL/crl/root/0.crl" | openssl crl -inform DER -out "$W/root-crl.pem"
  cat "$W/leaf-crl.pem" "$W/root-crl.pem" >"$W/all-crls.pem"
  openssl verify -crl_check_all -CAfile "$W/root.pem" -untrusted "$W/issuing.pem" -CRLfile "$W/all-crls.pem" "$1" 2>&1 || true
}
out=$(chain_check "$W/dev2.pem")
expect "openssl verify -crl_check_all accepts a device chain under a good CA ($out)" grep -q ": OK" <<<"$out"
CA_SERIAL=$(serial_of "$W/issuing.pem")
rc=0; "${F[@]}" ca revoke "$CA_SERIAL" --reason cACompromise >"$W/ca-revoke.json" 2>&1 || rc=$?
expect "fleetid ca revoke revokes the issuing CA (rc $rc)" grep -q '"status": "revoked"' "$W/ca-revoke.json"
root_crl_text() { openssl crl -in <(curl -sf "$URL/crl/root/0.crl" | openssl crl -inform DER) -noout -text; }
root_crl_lists() { grep -qi "Serial Number: $1" <<<"$(root_crl_text)"; }
poll 10 root_crl_lists "$CA_SERIAL" || true
text=$(root_crl_text)
expect "the root's CRL lists it" grep -qi "Serial Number: $CA_SERIAL" <<<"$text"
out=$(chain_check "$W/dev2.pem")
expect "openssl verify -crl_check_all refuses the chain ($out)" grep -q "certificate revoked" <<<"$out"
rc=0; issue dev3 GW-0003 || rc=$?
expect "the revoked CA issues nothing more (rc $rc)" grep -q "unavailable: issuing CA" "$W/dev3.issue.json"

# --- A flood of never-issued serials: bounded memory, bounded signatures.
for k in $(seq 200); do curl -s -o /dev/null -H 'Content-Type: application/ocsp-request' --data-binary @"$W/s.der" "$URL/ocsp"; done
before=$(rss_kb)
start=$SECONDS
read -r signed refused total < <(python3 "$W/ocsp.py" "$W/template.der" flood 127.0.0.1 "$PORT" 20000)
elapsed=$((SECONDS - start + 1))
after=$(rss_kb)
echo "# 20000 never-issued serials in ${elapsed}s: $signed signed, $refused unauthorized; RSS ${before} -> ${after} kB"
expect "the flood's signed answers stay within the budget (${signed} in ${elapsed}s)" \
  test "$signed" -le $((20 * (elapsed + 1))) -a $((signed + refused)) = 20000 -a "$total" = 20000
# Under ASan the allocator keeps up to 256 MB of freed memory in quarantine, so resident memory
# says nothing about the cache there (PkiTest checks the cache's size itself).
if [[ -z ${FLEETID_SANITIZED:-} ]]; then
  expect "RSS stays bounded after 20000 never-issued serials (${before} -> ${after} kB)" \
    test $((after - before)) -lt 8192
else
  echo "# RSS bound not checked under the sanitizers"
fi
out=$(openssl ocsp -issuer "$W/issuing.pem" -cert "$W/dev2.pem" -url "$URL/ocsp" -noverify -timeout 5 2>&1)
expect "an issued serial is answered whatever the budget ($out)" grep -q "dev2.pem: good" <<<"$out"

expect "the server is still up" curl -sf "$URL/healthz" -o /dev/null
expect "no 500 was answered" bash -c '! grep -q "status=500" "$1"' _ "$W/server.log"
kill -TERM "$PID"; wait_exit "$PID" 15
expect "the server stops cleanly ($RC)" test "$RC" = 0
n=$("${F[@]}" keys list 2>&1 | grep -c "fleetid-server-tls" || true)
expect "one HTTPS key is left in the token ($n)" test "$n" = 1
audit_covers "$CLI" "$DATA"
finish
