#!/bin/sh
# Writes the seed corpora under fuzz/corpus/ that are made rather than written by hand: CSRs by
# the openssl command line, OCSP requests by `openssl ocsp`, signed JWS by fleetid's own code
# (make_seeds, built in build/fuzz). `make_seeds.sh ocsp` remakes only the named parts (csr, x509,
# ocsp, est, signed, routes).
# Run from the repository root after `cmake --build --preset fuzz`; the hand-written edge cases
# beside them stay as they are.
set -eu
corpus=fuzz/corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

csr() {  # csr NAME KEYGEN-ARGS...: a DER CSR for a fresh key
  name=$1
  shift
  openssl genpkey "$@" -out "$tmp/$name.key" 2>/dev/null
  openssl req -new -key "$tmp/$name.key" -subj "/CN=SN-0001" -outform DER -out "$corpus/csr/$name"
}
csr_seeds() {
  csr p256 -algorithm EC -pkeyopt ec_paramgen_curve:P-256
  csr p384 -algorithm EC -pkeyopt ec_paramgen_curve:P-384
  csr ed25519 -algorithm ED25519
  csr rsa3072 -algorithm RSA -pkeyopt rsa_keygen_bits:3072
  csr rsa2048 -algorithm RSA -pkeyopt rsa_keygen_bits:2048
  csr rsa3072_e3 -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -pkeyopt rsa_keygen_pubexp:3
  csr p521 -algorithm EC -pkeyopt ec_paramgen_curve:P-521
  openssl req -new -key "$tmp/p256.key" -subj "/CN=SN-0001" -addext "subjectAltName=DNS:a.example" \
    -outform DER -out "$corpus/csr/p256_with_extensions"
  openssl ec -in "$tmp/p256.key" -conv_form compressed -out "$tmp/p256c.key" 2>/dev/null
  openssl req -new -key "$tmp/p256c.key" -subj "/CN=SN-0001" -outform DER -out "$corpus/csr/p256_compressed_point"
  head -c 100 "$corpus/csr/p256" > "$corpus/csr/p256_truncated"
}

# Certificates for x509_fuzzer: DER, PEM, a chain of two, one with a GeneralizedTime notAfter
# (made from the csr part's keys, so that part runs first).
x509_seeds() {
  [ -f "$tmp/p256.key" ] || csr_seeds
  openssl req -x509 -new -key "$tmp/p256.key" -subj "/CN=x509-seed" -days 30 -set_serial 0x8f01 \
    -outform DER -out "$corpus/x509/p256_der"
  openssl x509 -inform DER -in "$corpus/x509/p256_der" -out "$corpus/x509/p256_pem"
  openssl req -x509 -new -key "$tmp/ed25519.key" -subj "/CN=x509-seed-2" -days 36500 \
    -out "$tmp/ed.pem"
  cat "$corpus/x509/p256_pem" "$tmp/ed.pem" > "$corpus/x509/chain_pem"
  openssl x509 -in "$tmp/ed.pem" -outform DER -out "$corpus/x509/ed25519_after_2050_der"
}

# OCSP requests as `openssl ocsp -reqout` sends them for certificates of a throwaway CA: the DER
# POST body, and the same request as the text after /ocsp/ of the GET form (RFC 6960 A.1): plain
# base64, percent-encoded as a client that escapes '/', '+' and '=' sends it, and base64url
# (which the route refuses: RFC 6960 asks for base64).
ocsp() {  # ocsp NAME OCSP-ARGS...
  name=$1
  shift
  openssl ocsp -issuer "$tmp/ca.pem" "$@" -reqout "$corpus/ocsp_request/$name" >/dev/null 2>&1
}
# ocsp_ext NAME EXTENSION: a one-CertID request with the request extension EXTENSION (lines of
# an `openssl asn1parse -genconf` SEQUENCE), for what `openssl ocsp` cannot send.
ocsp_ext() {
  cat > "$tmp/ext.cnf" <<EOF
asn1=SEQUENCE:req
[req]
tbs=SEQUENCE:tbs
[tbs]
list=SEQUENCE:list
ext=EXPLICIT:2,SEQUENCE:exts
[list]
one=SEQUENCE:one
[one]
id=SEQUENCE:certid
[certid]
alg=SEQUENCE:alg
nh=FORMAT:HEX,OCTETSTRING:D004B1B38A789F2CD03753035F000C31EE2FEB25
kh=FORMAT:HEX,OCTETSTRING:F99C8A2FC225986C38EAC020AF3A369E57657E02
serial=INTEGER:0x7F3A9C01
[alg]
oid=OID:sha1
null=NULL
[exts]
ext=SEQUENCE:ext
[ext]
$2
EOF
  openssl asn1parse -genconf "$tmp/ext.cnf" -out "$corpus/ocsp_request/$1" >/dev/null
}
ocsp_seeds() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/ca.key" \
    -subj "/CN=Fuzz Issuing CA" -days 1 -out "$tmp/ca.pem" 2>/dev/null
  for n in 1 2 3; do
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/leaf$n.key" \
      -subj "/CN=SN-000$n" -out "$tmp/leaf$n.csr" 2>/dev/null
    openssl x509 -req -in "$tmp/leaf$n.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -days 1 \
      -set_serial "0x7f3a9c0$n" -out "$tmp/leaf$n.pem" 2>/dev/null
  done
  ocsp sha1_nonce -cert "$tmp/leaf1.pem"
  ocsp sha1_no_nonce -cert "$tmp/leaf1.pem" -no_nonce
  ocsp sha256_nonce -sha256 -cert "$tmp/leaf1.pem"
  ocsp sha256_no_nonce -sha256 -cert "$tmp/leaf1.pem" -no_nonce
  ocsp three_certids -cert "$tmp/leaf1.pem" -cert "$tmp/leaf2.pem" -cert "$tmp/leaf3.pem"
  ocsp serial_only -serial 0x7f3a9c01 -no_nonce
  ocsp serial_zero -serial 0 -no_nonce
  ocsp serial_21_octets -serial 0x0102030405060708090a0b0c0d0e0f101112131415 -no_nonce
  ocsp_ext nonce_33_octets 'oid=OID:1.3.6.1.5.5.7.48.1.2
val=OCTWRAP,FORMAT:HEX,OCTETSTRING:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20'
  ocsp_ext nonce_bare 'oid=OID:1.3.6.1.5.5.7.48.1.2
val=FORMAT:HEX,OCTETSTRING:0f1e2d3c4b5a6978'
  ocsp_ext critical_unknown 'oid=OID:1.3.6.1.4.1.99999.1
critical=BOOLEAN:TRUE
val=OCTETSTRING:x'
  ocsp_args=""
  for n in $(seq 1 17); do ocsp_args="$ocsp_args -serial $n"; done
  # shellcheck disable=SC2086
  ocsp seventeen_certids $ocsp_args -no_nonce
  for name in sha1_no_nonce sha256_nonce; do
    openssl base64 -A -in "$corpus/ocsp_request/$name" > "$corpus/ocsp_request/get_$name"
    sed -e 's|%|%25|g' -e 's|/|%2F|g' -e 's|+|%2B|g' -e 's|=|%3D|g' \
      "$corpus/ocsp_request/get_$name" > "$corpus/ocsp_request/get_percent_$name"
    tr '+/' '-_' < "$corpus/ocsp_request/get_$name" | tr -d '=' > "$corpus/ocsp_request/get_base64url_$name"
  done
  head -c 40 "$corpus/ocsp_request/sha1_nonce" > "$corpus/ocsp_request/truncated"
}

# EST simpleenroll bodies: a header block, an empty line, then the base64 of a DER CSR as clients
# send it (lines of 64 with LF or CRLF, one line, no headers at all).
est_seeds() {
  dir=$corpus/est_body
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/est.key" \
    -subj "/CN=SN-0001" -outform DER -out "$tmp/est.der" 2>/dev/null
  headers="Content-Type: application/pkcs10\nContent-Transfer-Encoding: base64\n\n"
  { printf '%b' "$headers"; openssl base64 -in "$tmp/est.der"; } > "$dir/lf_lines"
  { printf '%b' "$headers"; openssl base64 -in "$tmp/est.der" | sed 's/$/\r/'; } > "$dir/crlf_lines"
  { printf '%b' "$headers"; openssl base64 -A -in "$tmp/est.der"; } > "$dir/one_line"
  { printf 'Content-Type: Application/PKCS10; x=y\n\n'; openssl base64 -A -in "$tmp/est.der"; } \
    > "$dir/type_upper_case"
  openssl base64 -in "$tmp/est.der" > "$dir/no_headers"
  { printf "Content-Type: text/plain\n\n"; openssl base64 -A -in "$tmp/est.der"; } > "$dir/text_plain"
  { printf "Content-Type: application/pkcs10\n\n"; head -c 60 "$tmp/est.der" | openssl base64 -A; } \
    > "$dir/truncated_der"
}

# Requests for the routing fuzzer: a transport byte (0 plain HTTP, 1 TLS, 2 TLS as the
# provisioned device, 3 TLS as an unknown device), "METHOD TARGET", headers, an empty line, the
# body. The OCSP and EST bodies are the seeds above (make those first).
route() {  # route NAME TRANSPORT REQUEST-HEAD [BODY-FILE]
  { printf "\\$2"; printf '%s\n\n' "$3"; [ -z "${4:-}" ] || cat "$4"; } > "$corpus/routes/$1"
}
routes_seeds() {
  o=$corpus/ocsp_request
  route healthz 000 "GET /healthz"
  route healthz_device 002 "GET /healthz"
  route head_healthz 000 "HEAD /healthz"
  route delete_healthz 000 "DELETE /healthz"
  route not_found 000 "GET /nothing/here"
  route ocsp_post 000 "POST /ocsp
Content-Type: application/ocsp-request" "$o/sha1_nonce"
  route ocsp_post_three 000 "POST /ocsp
Content-Type: application/ocsp-request" "$o/three_certids"
  route ocsp_post_text 000 "POST /ocsp
Content-Type: text/plain" "$o/sha1_nonce"
  route ocsp_get 000 "GET /ocsp/$(cat "$o/get_sha1_no_nonce")"
  route ocsp_get_percent 000 "GET /ocsp/$(cat "$o/get_percent_sha256_nonce")
If-None-Match: W/\"abc\", *"
  route crl 000 "GET /crl/ecdsa-p256-sha256/498611.crl"
  route crl_delta 000 "GET /crl/ecdsa-p256-sha256/-1-delta.crl
If-None-Match: \"0\""
  route ca_root 000 "GET /ca/root.crt"
  route ca_issuing 000 "GET /ca/ed25519.crt"
  route est_cacerts 002 "GET /.well-known/est/cacerts"
  route est_csrattrs 001 "GET /.well-known/est/csrattrs"
  route est_plain_http 000 "POST /.well-known/est/simpleenroll"
  tail -n +4 "$corpus/est_body/lf_lines" > "$tmp/csr.b64"
  route est_enroll 002 "POST /.well-known/est/simpleenroll
Content-Type: application/pkcs10
Content-Transfer-Encoding: base64" "$tmp/csr.b64"
  route est_reenroll 002 "POST /.well-known/est/simplereenroll
Content-Type: application/pkcs10" "$tmp/csr.b64"
  route est_enroll_unknown 003 "POST /.well-known/est/simpleenroll" "$tmp/csr.b64"
  printf '{"purpose":"enroll"}' > "$tmp/nonce.json"
  route nonce 002 "POST /attest/v1/nonce" "$tmp/nonce.json"
  route nonce_unknown 003 "POST /attest/v1/nonce" "$tmp/nonce.json"
  route evidence 002 "POST /attest/v1/evidence" "$corpus/claims/evidence_es256"
  route confirm 002 "POST /device/v1/rotation/confirm"
  route status 002 "GET /device/v1/status"
  route status_no_chain 001 "GET /device/v1/status"
  route receipt 002 "POST /device/v1/receipt" "$corpus/claims/receipt_es256"
  route audit_key 000 "GET /audit/v1/key"
  route audit_sth 000 "GET /audit/v1/sth"
  route audit_entries 000 "GET /audit/v1/entries?start=0&end=3"
  route audit_inclusion 000 "GET /audit/v1/proof/inclusion?seq=1&size=3"
  route audit_consistency 000 "GET /audit/v1/proof/consistency?first=1&second=3"
  route audit_bad_query 000 "GET /audit/v1/entries?start=0&start=1&end=x"
}

signed_seeds() { build/fuzz/fuzz/make_seeds "$corpus"; }

for part in ${*:-csr x509 ocsp est signed routes}; do "${part}_seeds"; done
