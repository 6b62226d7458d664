#!/usr/bin/env bash
# Keys made by one `fleetid` process are found by the next, sign through the token, and the
# signatures verify with the openssl command-line tool. pkcs11-tool (OpenSC) confirms the token's
# own view: sensitive, never extractable, generated on the token.
SERVER=$1
CLI=$2
source "$(dirname "$0")/lib.sh"

DATA=$W/var
MOD=$(dpkg -L libsofthsm2 | grep '/libsofthsm2.so$' | head -1)
printf 'device 0042 tbsCertificate stand-in\n' >"$W/msg"

for suite in ecdsa-p256-sha256 ecdsa-p384-sha384 ed25519 rsa3072-pss-sha256; do
  label="ca-$suite"
  "$CLI" --data "$DATA" keys create "$label" --suite "$suite" >"$W/$label.json" 2>"$W/$label.err"
  expect "$suite: key created" grep -q "\"suite\": \"$suite\"" "$W/$label.json"
  expect "$suite: held in hardware" grep -q '"held_in_hardware": true' "$W/$label.json"
  "$CLI" --data "$DATA" keys pubkey "$label" >"$W/$label.pub.pem"
  "$CLI" --data "$DATA" keys sign "$label" --in "$W/msg" --out "$W/$label.sig"
  case $suite in
    ecdsa-p256-sha256) verify=(openssl dgst -sha256 -verify "$W/$label.pub.pem" -signature "$W/$label.sig" "$W/msg") ;;
    ecdsa-p384-sha384) verify=(openssl dgst -sha384 -verify "$W/$label.pub.pem" -signature "$W/$label.sig" "$W/msg") ;;
    ed25519) verify=(openssl pkeyutl -verify -pubin -inkey "$W/$label.pub.pem" -rawin -in "$W/msg" -sigfile "$W/$label.sig") ;;
    rsa3072-pss-sha256) verify=(openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 -sigopt rsa_mgf1_md:sha256 -verify "$W/$label.pub.pem" -signature "$W/$label.sig" "$W/msg") ;;
  esac
  out=$("${verify[@]}" 2>&1 || true)
  expect "$suite: openssl verifies the token's signature ($out)" grep -qxE "Verified OK|Signature Verified Successfully" <<<"$out"
  cp "$W/msg" "$W/msg.bad"; printf 'x' >>"$W/msg.bad"
  bad=("${verify[@]}"); bad[-1]="$W/msg.bad"
  [[ $suite == ed25519 ]] && bad=(openssl pkeyutl -verify -pubin -inkey "$W/$label.pub.pem" -rawin -in "$W/msg.bad" -sigfile "$W/$label.sig")
  out=$("${bad[@]}" 2>&1 || true)
  expect "$suite: openssl rejects the signature over other bytes" grep -qi "verification failure" <<<"$out"
done

# The token's own view, through OpenSC's pkcs11-tool with the embedded store's PIN.
export SOFTHSM2_CONF=$DATA/custody/softhsm2.conf
objs=$(pkcs11-tool --module "$MOD" --token-label fleetid-authority --login \
  --pin "$(cat "$DATA/custody/user.pin")" --list-objects --type privkey 2>&1)
n=$(grep -c "never extractable, local" <<<"$objs" || true)
expect "pkcs11-tool sees 4 private keys, all sensitive, never extractable, local (saw $n)" test "$n" = 4
access=$(grep Access <<<"$objs" | sed 's/never extractable//g')
expect "pkcs11-tool sees no extractable private key" bash -c '! grep -q extractable <<<"$1"' _ "$access"

# Errors: each with its code and a message naming the problem; nothing changes.
rc=0; "$CLI" --data "$DATA" keys show no-such-key >"$W/e1" 2>&1 || rc=$?
expect "unknown label: exit 1, not_found" grep -q "not_found: no private key labelled 'no-such-key'" "$W/e1"
rc=0; "$CLI" --data "$DATA" keys create ca-ed25519 --suite ed25519 >"$W/e2" 2>&1 || rc=$?
expect "duplicate label: conflict" grep -q "conflict: a key labelled 'ca-ed25519' already exists" "$W/e2"
rc=0; "$CLI" --data "$DATA" keys create weak --suite rsa1024 >"$W/e3" 2>&1 || rc=$?
expect "unsupported suite: invalid_argument" grep -q "invalid_argument: unsupported algorithm suite 'rsa1024'" "$W/e3"
export WRONG_PIN=00000000
rc=0; "$CLI" --data "$DATA" --module "$MOD" --token fleetid-authority --pin-env WRONG_PIN keys list >"$W/e4" 2>&1 || rc=$?
expect "wrong PIN: unauthenticated" grep -q "unauthenticated: wrong PIN for token 'fleetid-authority'" "$W/e4"
expect "wrong PIN is not echoed" bash -c '! grep -q 00000000 "$1"' _ "$W/e4"
rc=0; "$CLI" --data "$DATA" --module "$MOD" --token no-such-token --pin-env WRONG_PIN keys list >"$W/e5" 2>&1 || rc=$?
expect "missing token: not_found" grep -q "not_found: no token labelled 'no-such-token'" "$W/e5"
rc=0; "$CLI" --data "$DATA" --module /nonexistent/p11.so --pin-env WRONG_PIN keys list >"$W/e6" 2>&1 || rc=$?
expect "missing module: unavailable" grep -q "unavailable: PKCS#11 module '/nonexistent/p11.so' does not exist" "$W/e6"
cp "$DATA/custody/user.pin" "$W/loose.pin"; chmod 644 "$W/loose.pin"
rc=0; "$CLI" --data "$DATA" --module "$MOD" --pin-file "$W/loose.pin" keys list >"$W/e7" 2>&1 || rc=$?
expect "world-readable PIN file: permission_denied" grep -q "permission_denied: PIN file '$W/loose.pin' has mode 0644" "$W/e7"
keys=$("$CLI" --data "$DATA" keys list | python3 -c 'import json,sys;print(len(json.load(sys.stdin)))')
expect "after the refusals the token still holds exactly 4 keys (has $keys)" test "$keys" = 4

# A production-style start: external module path, PIN from a 0600 file.
cp "$DATA/custody/user.pin" "$W/hsm.pin"; chmod 600 "$W/hsm.pin"
out=$("$CLI" --data "$W/unused" --module "$MOD" --pin-file "$W/hsm.pin" keys list)
expect "module + PIN file finds the same keys" test "$(python3 -c 'import json,sys;print(len(json.load(sys.stdin)))' <<<"$out")" = 4
expect "an external module creates no embedded store" test ! -e "$W/unused/custody"

finish
