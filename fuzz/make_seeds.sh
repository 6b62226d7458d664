#!/bin/sh
# Writes the seed corpora under fuzz/corpus/ that are made rather than written by hand: CSRs by
# the openssl command line, signed JWS by fleetid's own code (make_seeds, built in build/fuzz).
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

# Certificates for x509_fuzzer: DER, PEM, a chain of two, one with a GeneralizedTime notAfter.
openssl req -x509 -new -key "$tmp/p256.key" -subj "/CN=x509-seed" -days 30 -set_serial 0x8f01 \
  -outform DER -out "$corpus/x509/p256_der"
openssl x509 -inform DER -in "$corpus/x509/p256_der" -out "$corpus/x509/p256_pem"
openssl req -x509 -new -key "$tmp/ed25519.key" -subj "/CN=x509-seed-2" -days 36500 \
  -out "$tmp/ed.pem"
cat "$corpus/x509/p256_pem" "$tmp/ed.pem" > "$corpus/x509/chain_pem"
openssl x509 -in "$tmp/ed.pem" -outform DER -out "$corpus/x509/ed25519_after_2050_der"

build/fuzz/fuzz/make_seeds "$corpus"
