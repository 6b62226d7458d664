#!/usr/bin/env bash
# make demo: a device's life from the factory to retirement, with the commands a newcomer would
# type, each printed before it runs. Everything lives under $DEMO (default ./var/demo): the
# authority on its embedded defaults (SQLite and a SoftHSM2 token), a factory with its own
# token, and a batch of devices, each with a SoftHSM2 token standing in for its secure element.
set -euo pipefail
BIN=${BIN:-./build/release/apps}
DEMO=${DEMO:-./var/demo}
HTTP=${DEMO_HTTP:-127.0.0.1:8180}
HTTPS=${DEMO_HTTPS:-127.0.0.1:8543}
rm -rf "$DEMO"
mkdir -p "$DEMO"

step() { printf '\n\033[1m## %s\033[0m\n' "$*"; }
run() { printf '\033[36m$ %s\033[0m\n' "$*"; "$@"; }

step "The authority: fleetid-server on SQLite and a SoftHSM2 token under $DEMO/authority"
echo "\$ $BIN/fleetid-server --data $DEMO/authority --listen $HTTP --https-listen $HTTPS &"
"$BIN/fleetid-server" --data "$DEMO/authority" --listen "$HTTP" --https-listen "$HTTPS" >"$DEMO/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "msg=listening" "$DEMO/server.log" 2>/dev/null && break; sleep 0.1; done
grep "msg=listening" "$DEMO/server.log"
# Reading the data directory (the CA's certificates, the registry's counts, the audit log) needs
# no server; changing it goes through the operator API, as the first administrator.
FL=("$BIN/fleetid" --data "$DEMO/authority")
"${FL[@]}" ca certs >"$DEMO/chain.pem"
openssl x509 -in "$DEMO/chain.pem" -out "$DEMO/root.pem"
awk 'BEGIN{n=0} /BEGIN/{n++} n==2' "$DEMO/chain.pem" >"$DEMO/issuing.pem"

step "The first administrator: a key in her own token, a certificate for the bootstrap code"
(umask 077 && openssl rand -hex 12 >"$DEMO/admin.pin")
OP=("$BIN/fleetid" --profile "$DEMO/admin")
run "${OP[@]}" --server "https://$HTTPS" operator bootstrap --name demo \
  --ca-file "$DEMO/root.pem" --code-file "$DEMO/authority/bootstrap-code" --pin-file "$DEMO/admin.pin"

step "The factory: a manufacturer CA whose key is in the factory's own token"
run "$BIN/fleetid" factory init --dir "$DEMO/factory" --name "Acme Devices"
head -c 1048576 /dev/urandom >"$DEMO/firmware-1.0.bin"
step "A batch of 4 devices: a secure element each, an IDevID key made inside it, a signed manifest"
run "$BIN/fleetid" factory make --dir "$DEMO/factory" --out "$DEMO/batch" --count 4 --model sensor-1 \
  --firmware "$DEMO/firmware-1.0.bin" --firmware-version 1.0
mapfile -t S <"$DEMO/batch/serials.txt"
run openssl x509 -in "$DEMO/batch/devices/${S[0]}/idevid.pem" -noout -subject -enddate

step "The authority trusts the manufacturer, imports the batch, accepts the firmware, provisions"
run "${OP[@]}" manufacturer add --cert "$DEMO/factory/manufacturer.pem" --name "Acme Devices"
run "${OP[@]}" devices import-manifest "$DEMO/batch/manifest.jws"
run "${OP[@]}" attest reference --model sensor-1 --firmware "$DEMO/firmware-1.0.bin"
quiet() { printf '\033[36m$ %s >/dev/null\033[0m\n' "$*"; "$@" >/dev/null; }
for s in "${S[@]}"; do quiet "${OP[@]}" devices provision "$s" --tenant acme --region eu-west; done
run "${FL[@]}" devices counts
sleep 1.5  # the HTTPS front picks up the new manufacturer as a client trust anchor
A=(--batch "$DEMO/batch" --server "https://$HTTPS" --trust "$DEMO/root.pem")

step "The devices enroll: nonce, evidence signed in the secure element, EST simpleenroll over mTLS"
run "$BIN/fleetid-agent" simulate "${A[@]}" --threads 2
D=$DEMO/batch/devices/${S[0]}
run "${OP[@]}" devices show "${S[0]}"
run openssl verify -CAfile "$DEMO/chain.pem" "$D/ldevid-1.pem"
ocsp() { run openssl ocsp -issuer "$DEMO/issuing.pem" -cert "$1" -url "http://$HTTP/ocsp" -CAfile "$DEMO/chain.pem"; }
ocsp "$D/ldevid-1.pem"

step "Rotation: a new key in the secure element, a pending certificate, proof of possession"
run "$BIN/fleetid-agent" once --rotate --device "${S[0]}" "${A[@]}"
ocsp "$D/ldevid-1.pem"
ocsp "$D/ldevid-2.pem"

step "Suspension and resumption: the certificate goes on hold and comes back"
run "${OP[@]}" devices suspend "${S[1]}" --reason "reported lost"
ocsp "$DEMO/batch/devices/${S[1]}/ldevid-1.pem"
run "${OP[@]}" devices resume "${S[1]}" --reason "found in the van"
ocsp "$DEMO/batch/devices/${S[1]}/ldevid-1.pem"

step "Decommissioning: the agent sees the order, signs a receipt, destroys its LDevID keys"
run "${OP[@]}" devices decommission "${S[2]}" --reason "end of life"
run "$BIN/fleetid-agent" once --device "${S[2]}" "${A[@]}"
run "${OP[@]}" devices show "${S[2]}"
ocsp "$DEMO/batch/devices/${S[2]}/ldevid-1.pem"
echo "# and its IDevID can never enroll again:"
run "$BIN/fleetid-agent" enroll --device "${S[2]}" "${A[@]}" || true

step "Every change above is in the tamper-evident audit log"
run "${FL[@]}" audit head
"${FL[@]}" audit key >"$DEMO/audit-key.pem"
"${FL[@]}" audit export --out "$DEMO/audit.jsonl" 2>/dev/null
run "$BIN/fleetid" audit verify --in "$DEMO/audit.jsonl" --key "$DEMO/audit-key.pem"
printf '\nDone. Everything is under %s; the server log is %s/server.log.\n' "$DEMO" "$DEMO"
