#!/usr/bin/env bash
# The operator plane with nothing but curl and openssl as the client: the first start writes a
# one-time bootstrap code (0600) and no default password exists; the code buys the first
# administrator's certificate from the operators' CA; she invites a second administrator and a
# regional operator; a policy change waits for the second administrator's approval (self-approval
# refused); the regional operator suspends an active device in her region (OCSP then answers
# revoked) and is refused, with a JSON 403 naming the permission, outside it; a device's
# certificate is never an operator's; a revoked operator is refused on the next call. Every answer
# is JSON with a request id, and bad input gets a 4xx.
SERVER=$1
CLI=$2
AGENT=$3
source "$(dirname "$0")/lib.sh"

DATA=$W/var
start_server "$SERVER" "$DATA"
F=("$CLI" --data "$DATA")
H=https://localhost:$HPORT

# --- the bootstrap code ---
wait_for_log "$W/server.log" "operator bootstrap code waiting"
CODE_FILE=$DATA/bootstrap-code
expect "the first start wrote a bootstrap code" test -s "$CODE_FILE"
expect "readable by its owner only" test "$(stat -c %a "$CODE_FILE")" = 600
expect "the log says where it is" grep -q "file=$CODE_FILE" "$W/server.log"
expect "the log never shows the code" test -z "$(grep -F "$(cat "$CODE_FILE")" "$W/server.log" || true)"
"${F[@]}" ca certs >"$W/chain.pem"
openssl x509 -in "$W/chain.pem" -out "$W/root.pem"

newkey() { openssl ecparam -genkey -name prime256v1 -noout -out "$W/$1.key"; }
csr_pem() { openssl req -new -key "$W/$1.key" -subj "/CN=ignored" 2>/dev/null; }
# api NAME WHO METHOD PATH [JSON]: one call; WHO's certificate and key (none if -). Sets CODE;
# the body is in $W/NAME.json.
api() {
  local name=$1 who=$2 method=$3 path=$4 data=${5-} id=() body=()
  [[ $who == - ]] || id=(--cert "$W/$who.chain.pem" --key "$W/$who.key")
  [[ -z $data ]] || body=(-H 'Content-Type: application/json' --data-binary "$data")
  CODE=$(curl -sS --max-time 20 --cacert "$W/root.pem" -X "$method" -o "$W/$name.json" \
    -D "$W/$name.headers" -w '%{http_code}' "${id[@]}" "${body[@]}" "$H$path" 2>"$W/$name.err") || CODE=000
  # Every answer is checked against docs/openapi.json at the end.
  [[ $CODE == 000 ]] || printf '%s\t%s\t%s\t%s\n' "$method" "${path#/api/v1}" "$CODE" "$W/$name.json" >>"$W/calls.tsv"
}
field() { python3 -c 'import json,sys;d=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): d=d[int(k)] if isinstance(d,list) else d[k]
print(d if not isinstance(d,(dict,list)) else json.dumps(d))' "$W/$1.json" "$2"; }
# keep NAME WHO: stores the certificate and chain an exchange returned as $W/WHO.chain.pem.
keep() { python3 -c 'import json,sys;d=json.load(open(sys.argv[1]));print(d["certificate"]+"".join(d["chain"]),end="")' "$W/$1.json" >"$W/$2.chain.pem"; }
is_error() {  # is_error NAME STATUS ERROR: a JSON error body with a request id
  test "$CODE" = "$2" && test "$(field "$1" error)" = "$3" && test -n "$(field "$1" request_id)"
}

newkey alice
api boot-wrong - POST /api/v1/operators/bootstrap \
  "$(python3 -c 'import json,sys;print(json.dumps({"code":"guess","name":"alice","csr":sys.stdin.read()}))' < <(csr_pem alice))"
expect "a wrong bootstrap code is refused (403 $(field boot-wrong message))" is_error boot-wrong 403 permission_denied
api boot - POST /api/v1/operators/bootstrap \
  "$(python3 -c 'import json,sys;print(json.dumps({"code":open(sys.argv[1]).read().strip(),"name":"alice","csr":sys.stdin.read()}))' "$CODE_FILE" < <(csr_pem alice))"
expect "the bootstrap code buys the first administrator's certificate ($CODE)" test "$CODE" = 201
keep boot alice
expect "the code's file is gone" test ! -e "$CODE_FILE"
openssl x509 -in "$W/alice.chain.pem" -out "$W/alice.pem"
names=$(openssl x509 -in "$W/alice.pem" -noout -subject -issuer -nameopt RFC2253)
expect "her certificate names her ($names)" grep -q "subject=CN=alice,O=fleetid operators" <<<"$names"
expect "... and comes from the operators' CA" grep -q "issuer=CN=fleetid Operator CA" <<<"$names"
out=$(openssl verify -purpose sslclient -CAfile "$W/root.pem" -untrusted "$W/alice.chain.pem" "$W/alice.pem" 2>&1)
expect "openssl verifies it as a TLS client certificate ($out)" grep -q ": OK" <<<"$out"

api whoami alice GET /api/v1/whoami
expect "whoami names the authenticated operator" test "$(field whoami operator)" = alice
expect "... holds admin everywhere" test "$(field whoami grants.0.role)" = admin
expect "... and a request id in the body and the header" grep -qi "x-request-id: $(field whoami request_id)" "$W/whoami.headers"
api again - POST /api/v1/operators/bootstrap '{"code":"x","name":"bob","csr":"AA=="}'
expect "bootstrap is over ($CODE $(field again error))" test "$CODE" = 403 -o "$CODE" = 409
api anon - GET /api/v1/whoami
expect "no certificate: 401 JSON" is_error anon 401 unauthenticated
code=$(curl -s -o "$W/plain.json" -w '%{http_code}' "$URL/api/v1/whoami")
expect "plain HTTP: refused with a JSON 400 ($code)" test "$code" = 400

# --- bad input: 4xx JSON, never 5xx ---
api bad-json alice POST /api/v1/operators/invitations '{"name":'
expect "malformed JSON: 400" is_error bad-json 400 invalid_argument
api bad-field alice POST /api/v1/operators/invitations '{"name":"x","grants":[{"role":"auditor"}],"admin":true}'
expect "an unknown field: 400 naming it ($(field bad-field message))" grep -q "unknown field 'admin'" "$W/bad-field.json"
api bad-type alice POST /api/v1/operators/invitations '{"name":7,"grants":[]}'
expect "a wrong type: 400" is_error bad-type 400 invalid_argument
api dup alice POST /api/v1/operators/invitations '{"name":"x","name":"y","grants":[{"role":"auditor"}]}'
expect "a repeated key: 400" is_error dup 400 invalid_argument
api nowhere alice GET /api/v1/no/such/route
expect "an unknown route: 404 JSON" is_error nowhere 404 not_found
head -c 2000000 /dev/zero | tr '\0' 'a' >"$W/huge"
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$W/root.pem" --cert "$W/alice.chain.pem" --key "$W/alice.key" \
  -H 'Content-Type: application/json' --data-binary @"$W/huge" "$H/api/v1/operators/invitations")
expect "an oversized body: 413 ($code)" test "$code" = 413

# --- a second administrator, a policy change with an approval ---
invite() {  # invite NAME GRANTS_JSON: alice invites NAME, who enrolls with a new key
  api "inv-$1" alice POST /api/v1/operators/invitations "{\"name\":\"$1\",\"grants\":$2}"
  newkey "$1"
  api "enroll-$1" - POST /api/v1/operators/enroll \
    "$(python3 -c 'import json,sys;print(json.dumps({"code":sys.argv[1],"csr":sys.stdin.read()}))' "$(field "inv-$1" code)" < <(csr_pem "$1"))"
  keep "enroll-$1" "$1"
}
invite dave '[{"role":"admin"}]'
expect "an invitation's code enrolls the invited operator ($CODE)" test "$CODE" = 201
"${F[@]}" policy show | python3 -c '
import json,sys
doc=json.load(sys.stdin)["document"]
doc["roles"]["eu-ops"]={"description":"regional on-call","permit":[{"actions":["device.read","device.suspend","device.resume"],"scope":{"regions":["eu-west"]},"why":"regional on-call"}]}
print(json.dumps({"document":doc,"base":1,"reason":"regional on-call for eu-west"}))' >"$W/proposal.json"
api propose alice POST /api/v1/policy/proposals "$(cat "$W/proposal.json")"
expect "alice proposes a regional role ($CODE)" test "$CODE" = 201
expect "... and sees its diff" grep -q "role eu-ops gains device.suspend in region eu-west" "$W/propose.json"
id=$(field propose id)
api still alice GET /api/v1/policy
expect "nothing changes before the approval" test "$(field still version)" = 1
api self alice POST "/api/v1/policy/proposals/$id/approve" '{"reason":"mine"}'
expect "self-approval is refused with a JSON 403 ($(field self message))" is_error self 403 permission_denied
api approve dave POST "/api/v1/policy/proposals/$id/approve" '{"reason":"reviewed"}'
expect "dave's approval activates it" test "$(field approve state)" = applied
api now alice GET /api/v1/policy
expect "version 2 is active" test "$(field now version)" = 2
hash2=$(field now hash)

# --- a regional operator at work ---
invite erin '[{"role":"eu-ops","scope":{"regions":["eu-west"]}}]'
expect "erin enrolls with eu-ops in eu-west ($CODE)" test "$CODE" = 201
MOD=$(dpkg -L libsofthsm2 | grep '/libsofthsm2.so$' | head -1)
# The factory's batch reaches the authority by hand, next to the running server: break-glass.
factory_batch "$CLI" "$DATA" --data "$DATA" --break-glass
api prov-eu alice POST "/api/v1/devices/$EU/provision" '{"tenant":"acme","region":"eu-west"}'
expect "alice provisions $EU in eu-west ($CODE)" test "$(field prov-eu state)" = provisioned
api prov-us alice POST "/api/v1/devices/$US/provision" '{"tenant":"acme","region":"us-east","reason":"shipped"}'
wait_for_log "$W/server.log" "manufacturer trust anchors"
A=(--batch "$W/batch" --server "https://127.0.0.1:$HPORT" --trust "$W/root.pem" --firmware "$W/firmware.bin")
"$AGENT" once --device "$EU" "${A[@]}" >"$W/eu.json" 2>>"$W/agent.log"
"$AGENT" once --device "$US" "${A[@]}" >"$W/us.json" 2>>"$W/agent.log"
api show-eu erin GET "/api/v1/devices/$EU"
expect "erin reads a device in her region ($CODE)" test "$(field show-eu state)" = active
api show-us erin GET "/api/v1/devices/$US"
expect "... not one outside it (403)" is_error show-us 403 permission_denied
api suspend-us erin POST "/api/v1/devices/$US/suspend" '{"reason":"on call"}'
expect "suspending outside her region: a JSON 403 naming device.suspend" \
  sh -c "test $CODE = 403 && grep -q 'device.suspend' '$W/suspend-us.json'"
api suspend-eu erin POST "/api/v1/devices/$EU/suspend" '{"reason":"lost in transit"}'
expect "erin suspends the device in her region ($CODE)" test "$(field suspend-eu state)" = suspended
cert=$W/batch/devices/$EU/$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["current_cert"])' "$W/eu.json")
awk 'BEGIN{n=0} /BEGIN/{n++} n==2' "$W/chain.pem" >"$W/issuing.pem"
out=$(openssl ocsp -issuer "$W/issuing.pem" -cert "$cert" -url "$URL/ocsp" -CAfile "$W/chain.pem" 2>&1)
expect "OCSP answers revoked for the suspended device's certificate" grep -q ": revoked" <<<"$out"
api hist alice GET "/api/v1/devices/$EU"
expect "the history names erin, authenticated by her certificate" \
  grep -q "\"actor\":\"$(python3 -c 'import sys;print("erin#"+sys.argv[1])' "$(field enroll-erin serial)")\"" "$W/hist.json"
expect "... and the policy version that allowed it" grep -q "\"policy_version\":\"$hash2\"" "$W/hist.json"
api ghost-erin erin GET /api/v1/devices/NO-SUCH-DEVICE
expect "an unknown serial outside what erin may see: 403, not 404 ($CODE)" is_error ghost-erin 403 permission_denied
api ghost-alice alice GET /api/v1/devices/NO-SUCH-DEVICE
expect "... while alice, who may read every device, learns it does not exist (404)" is_error ghost-alice 404 not_found
api erin-invite erin POST /api/v1/operators/invitations '{"name":"frank","grants":[{"role":"eu-ops","scope":{"regions":["eu-west"]}}]}'
expect "erin may not invite (403)" is_error erin-invite 403 permission_denied

# --- identities never cross ---
# A device certificate (for a key in a file, issued for a registered device) is not an operator's.
newkey gadget
openssl req -new -key "$W/gadget.key" -subj "/CN=ignored" -out "$W/gadget.csr" 2>/dev/null
api gadget-issue alice POST "/api/v1/devices/$US/certificates" "$(python3 -c 'import json,sys;print(json.dumps({"csr":sys.stdin.read()}))' <"$W/gadget.csr")"
field gadget-issue certificate >"$W/gadget.chain.pem"
api gadget gadget GET /api/v1/whoami
expect "a device's certificate is refused by the operator API (401: $(field gadget message))" \
  is_error gadget 401 unauthenticated
# ... and an operator's certificate never enrolls a device.
openssl req -in "$W/gadget.csr" -outform DER | openssl base64 >"$W/gadget.csr.b64"
code=$(curl -s -o "$W/est.out" -w '%{http_code}' --cacert "$W/root.pem" --cert "$W/alice.chain.pem" \
  --key "$W/alice.key" -H 'Content-Type: application/pkcs10' --data-binary @"$W/gadget.csr.b64" \
  "$H/.well-known/est/simpleenroll")
expect "an operator's certificate is refused by EST ($code: $(cat "$W/est.out"))" \
  sh -c "test $code = 403 && grep -q 'operator certificate never enrolls' '$W/est.out'"

# --- Idempotency-Key: a retried mutation is answered again, not applied again ---
idem() {  # idem NAME KEY BODY PATH: alice POSTs BODY to PATH with Idempotency-Key KEY
  CODE=$(curl -sS --max-time 20 --cacert "$W/root.pem" --cert "$W/alice.chain.pem" --key "$W/alice.key" \
    -H 'Content-Type: application/json' -H "Idempotency-Key: $2" --data-binary "$3" \
    -o "$W/$1.json" -D "$W/$1.headers" -w '%{http_code}' "$H$4" 2>"$W/$1.err") || CODE=000
  [[ $CODE == 000 ]] || printf '%s\t%s\t%s\t%s\n' POST "${4#/api/v1}" "$CODE" "$W/$1.json" >>"$W/calls.tsv"
}
idem idem1 retry-7f3a '{"reason":"stolen"}' "/api/v1/devices/$US/suspend"
expect "a suspension with an Idempotency-Key ($CODE)" test "$(field idem1 state)" = suspended
idem idem2 retry-7f3a '{"reason":"stolen"}' "/api/v1/devices/$US/suspend"
expect "the retry gets the first answer again, marked replayed" \
  sh -c "test $CODE = 200 && cmp -s '$W/idem1.json' '$W/idem2.json' && grep -qi '^idempotent-replayed: true' '$W/idem2.headers'"
api us-history alice GET "/api/v1/devices/$US"
expect "... and the device was suspended once" \
  test "$(python3 -c 'import json,sys;print(sum(e["event"]=="suspend" for e in json.load(open(sys.argv[1]))["history"]))' "$W/us-history.json")" = 1
idem idem3 retry-7f3a '{"reason":"another"}' "/api/v1/devices/$US/suspend"
expect "the key with another body: 409" is_error idem3 409 conflict
idem idem4 'two words' '{"reason":"x"}' "/api/v1/devices/$US/resume"
expect "a malformed key: 400" is_error idem4 400 invalid_argument

# --- the CA through the API: a device's certificate is the device's lifecycle ---
serial_of() { openssl x509 -in "$W/batch/devices/$1/$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["current_cert"])' "$2")" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f'; }
EUC=$(serial_of "$EU" "$W/eu.json")
USC=$(serial_of "$US" "$W/us.json")
api cert-erin erin GET "/api/v1/ca/certificates/$EUC"
expect "erin may not read certificates (403 naming ca.read)" sh -c "test $CODE = 403 && grep -q 'ca.read' '$W/cert-erin.json'"
api cert-eu alice GET "/api/v1/ca/certificates/$EUC"
expect "alice reads the suspended device's certificate: on hold, its device named" \
  sh -c "test '$(field cert-eu device)' = '$EU' && test '$(field cert-eu status)' != good"
api release-us alice POST "/api/v1/ca/certificates/$USC/release" '{"reason":"found again"}'
expect "releasing the suspended device's certificate resumes the device ($CODE)" test "$(field release-us status)" = good
api us-after-release alice GET "/api/v1/devices/$US"
expect "... the device is active again" test "$(field us-after-release state)" = active
api revoke-bad alice POST "/api/v1/ca/certificates/$USC/revoke" '{"revocation_reason":"certificateHold","reason":"x"}'
expect "a hold is not a revocation (400)" is_error revoke-bad 400 invalid_argument
api revoke-us alice POST "/api/v1/ca/certificates/$USC/revoke" '{"revocation_reason":"keyCompromise","reason":"key copied"}'
expect "revoking it as compromised ($CODE)" test "$(field revoke-us reason)" = keyCompromise
api us-quarantined alice GET "/api/v1/devices/$US"
expect "... quarantines the device" test "$(field us-quarantined state)" = quarantined
out=$(openssl ocsp -issuer "$W/issuing.pem" -cert "$W/batch/devices/$US/$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["current_cert"])' "$W/us.json")" \
  -url "$URL/ocsp" -CAfile "$W/chain.pem" 2>&1)
expect "... and OCSP says keyCompromise" grep -q "Reason: keyCompromise" <<<"$out"
api cert-op alice POST "/api/v1/ca/certificates/$(field whoami serial)/revoke" '{"revocation_reason":"keyCompromise","reason":"x"}'
expect "an operator's certificate is revoked with its operator, not here (409)" is_error cert-op 409 conflict
api cert-ghost alice GET /api/v1/ca/certificates/00ff00ff
expect "an unknown certificate: 404 for alice" is_error cert-ghost 404 not_found
api cert-ghost-erin erin GET /api/v1/ca/certificates/00ff00ff
expect "... 403 for erin" is_error cert-ghost-erin 403 permission_denied

# --- the rest of the routes, for the OpenAPI check below ---
api makers alice GET /api/v1/manufacturers
expect "the manufacturer registered through the data directory is listed" \
  test "$(field makers manufacturers.0.name)" = "Acme Devices"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/maker2.key" \
  -subj "/CN=Second Maker CA" -days 30 -out "$W/maker2.pem" 2>/dev/null
json_of() { python3 -c 'import json,sys;print(json.dumps(dict(zip(sys.argv[1::2],sys.argv[2::2]))))' "$@"; }
api maker2 alice POST /api/v1/manufacturers "$(json_of name "Second Maker" certificate "$(cat "$W/maker2.pem")")"
expect "alice registers a second manufacturer ($CODE)" \
  test "$CODE:$(field maker2 fingerprint)" = "201:$(openssl x509 -in "$W/maker2.pem" -outform DER | sha256sum | cut -c1-64)"
api maker-bad alice POST /api/v1/manufacturers '{"name":"x","certificate":"junk"}'
expect "... a certificate that is none: 400" is_error maker-bad 400 invalid_argument
api maker-erin erin POST /api/v1/manufacturers "$(json_of name "Erin's" certificate "$(cat "$W/maker2.pem")")"
expect "... erin may not (403)" is_error maker-erin 403 permission_denied
api manifest alice POST /api/v1/manifests "$(json_of manifest "$(cat "$W/batch/manifest.jws")")"
expect "importing the batch's manifest again changes nothing" test "$(field manifest already_present)" = 2
api manifest-bad alice POST /api/v1/manifests '{"manifest":"a.b.c"}'
expect "... a manifest that is no JWS: 4xx ($CODE)" sh -c "test $CODE -ge 400 && test $CODE -lt 500"
api reference alice POST /api/v1/reference-values "{\"model\":\"sensor-2\",\"firmware_sha256\":\"$(head -c 9 /dev/urandom | sha256sum | cut -c1-64)\"}"
expect "alice accepts a firmware measurement for sensor-2 ($CODE)" test "$CODE" = 201
api reference-bad alice POST /api/v1/reference-values '{"model":"sensor-2","firmware_sha256":"XYZ"}'
expect "... a digest that is none: 400" is_error reference-bad 400 invalid_argument
newkey extra
api issue alice POST "/api/v1/devices/$EU/certificates" "$(json_of csr "$(csr_pem extra)")"
field issue certificate >"$W/extra.pem"
expect "alice issues a certificate for $EU from a CSR ($CODE)" \
  sh -c "test $CODE = 201 && openssl verify -CAfile '$W/chain.pem' '$W/extra.pem' >/dev/null"
api issue-erin erin POST "/api/v1/devices/$EU/certificates" "$(json_of csr "$(csr_pem extra)")"
expect "... erin may not (403)" is_error issue-erin 403 permission_denied
api list-eu alice GET "/api/v1/devices?region=eu-west&state=suspended&limit=10"
expect "alice lists the suspended devices in eu-west: $EU" test "$(field list-eu devices.0.serial)" = "$EU"
api list-erin erin GET "/api/v1/devices"
expect "erin's list holds only her region's device" test "$(python3 -c 'import json,sys;print(len(json.load(open(sys.argv[1]))["devices"]))' "$W/list-erin.json")" = 1
api list-bad alice GET "/api/v1/devices?colour=red"
expect "an unknown filter: 400 naming it" sh -c "test $CODE = 400 && grep -q colour '$W/list-bad.json'"
api version1 alice GET /api/v1/policy/versions/1
expect "version 1 with its diff from the active one" grep -q "role eu-ops" "$W/version1.json"
api proposal1 alice GET "/api/v1/policy/proposals/$id"
api all-proposals alice GET "/api/v1/policy/proposals?all=true"
api op-erin alice GET /api/v1/operators/erin
api operators alice GET /api/v1/operators
python3 - "$W/proposal.json" "$W/proposal3.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1])); p["base"] = 2; p["document"]["description"] = "third"
json.dump(p, open(sys.argv[2], "w"))
PY
api propose3 alice POST /api/v1/policy/proposals "$(cat "$W/proposal3.json")"
api withdraw-dave dave POST "/api/v1/policy/proposals/$(field propose3 id)/withdraw" '{}'
expect "only the requester withdraws (403)" test "$CODE" = 403
api withdraw alice POST "/api/v1/policy/proposals/$(field propose3 id)/withdraw" '{"reason":"not yet"}'
expect "alice withdraws her proposal" test "$(field withdraw state)" = withdrawn
api propose4 alice POST /api/v1/policy/proposals "$(cat "$W/proposal3.json")"
api reject dave POST "/api/v1/policy/proposals/$(field propose4 id)/reject" '{"reason":"no"}'
expect "dave rejects the next" test "$(field reject state)" = rejected
newkey dave2
api renew dave POST /api/v1/operators/renew \
  "$(python3 -c 'import json,sys;print(json.dumps({"csr":sys.stdin.read()}))' < <(csr_pem dave2))"
expect "dave renews with a new key ($CODE)" test "$CODE" = 201
keep renew dave2
api dave2 dave2 GET /api/v1/whoami
expect "... and is dave with it" test "$(field dave2 operator)" = dave
api dave-old dave GET /api/v1/whoami
expect "... while his old certificate is refused (401)" is_error dave-old 401 unauthenticated
api versions alice GET /api/v1/policy/versions
expect "every policy version is listed, version 2 active" python3 -c '
import json, sys
versions = json.load(open(sys.argv[1]))["versions"]
assert [v["version"] for v in versions if v["active"]] == [2] and len(versions) >= 2, versions' "$W/versions.json"
api quarantine-eu alice POST "/api/v1/devices/$EU/quarantine" '{"reason":"tampering suspected"}'
expect "alice quarantines $EU ($CODE)" test "$(field quarantine-eu state)" = quarantined
api clear-eu alice POST "/api/v1/devices/$EU/clear-quarantine" '{"reason":"inspected"}'
expect "... and lifts it: the device enrolls afresh ($CODE)" test "$(field clear-eu state)" = provisioned
api decom-eu alice POST "/api/v1/devices/$EU/decommission" '{"reason":"end of life"}'
expect "alice orders $EU decommissioned ($CODE)" test "$(field decom-eu state)" = decommissioning
api undecom-eu alice POST "/api/v1/devices/$EU/cancel-decommission" '{"reason":"not yet"}'
expect "... and cancels it within the grace period ($CODE)" test "$(field undecom-eu state)" = provisioned
GADGET=$(openssl x509 -in "$W/gadget.chain.pem" -noout -serial | cut -d= -f2)
api hold-gadget alice POST "/api/v1/ca/certificates/$GADGET/hold" '{"reason":"lost"}'
expect "a certificate that is no device's credential is held by the CA alone ($CODE)" \
  test "$(field hold-gadget status)" = hold
api openapi - GET /api/v1/openapi.json
expect "GET /api/v1/openapi.json serves docs/openapi.json as it is" \
  cmp -s "$W/openapi.json" "$(dirname "$0")/../../docs/openapi.json"
api grant-dave alice POST /api/v1/operators/dave/grants '{"role":"auditor"}'
expect "alice grants dave one more role ($CODE)" sh -c "test $CODE = 201 && grep -q '\"role\":\"auditor\"' '$W/grant-dave.json'"

# --- revocation of an operator ---
api revoke alice POST /api/v1/operators/erin/revoke '{"reason":"left the team"}'
expect "alice revokes erin ($CODE)" test "$(field revoke state)" = revoked
api after erin GET "/api/v1/devices/$EU"
expect "erin is refused on her next call (401)" is_error after 401 unauthenticated

# Every answer of the operator API was JSON with a request id, and none was a 5xx.
expect "no 5xx answer" test -z "$(grep -l '^HTTP/[0-9.]* 5' "$W"/*.headers || true)"
expect "the log names each request id" grep -q "request_id=$(field whoami request_id)" "$W/server.log"
PY=python3
$PY -c 'import jsonschema' 2>/dev/null || PY=/usr/bin/python3
out=$($PY "$(dirname "$0")/openapi_check.py" "$(dirname "$0")/../../docs/openapi.json" "$W/calls.tsv" 2>&1) && rc=0 || rc=$?
expect "every answer above matches docs/openapi.json, each route in it (rc $rc): $out" test "$rc" = 0
kill -TERM "$PID"; wait_exit "$PID" 15
audit_covers "$CLI" "$DATA"
finish
