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

build/fuzz/fuzz/make_seeds "$corpus"
