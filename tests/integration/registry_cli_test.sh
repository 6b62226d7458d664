#!/usr/bin/env bash
# The device registry from the operator's command line, on the embedded SQLite database: a factory
# batch imports once and only once, a bad line is named and imports nothing, provisioning is
# recorded in the history, and the server finds the same registry.
SERVER=$1
CLI=$2
source "$(dirname "$0")/lib.sh"

DATA=$W/var
fp() { printf '%064x' "$1"; }
cat >"$W/batch-7.jsonl" <<JSON
# factory batch 7, line 3
{"serial":"GW-0001","model":"gw-100","manufacturer":"acme","idevid_fingerprint":"$(fp 1)","firmware_version":"1.0.0","labels":{"site":"berlin"}}
{"serial":"GW-0002","model":"gw-100","manufacturer":"acme","idevid_fingerprint":"$(fp 2)","firmware_version":"1.0.0"}

{"serial":"GW-0003","model":"gw-100","manufacturer":"acme","idevid_fingerprint":"$(fp 3)","firmware_version":"1.0.0"}
JSON

out=$("$CLI" --data "$DATA" devices import "$W/batch-7.jsonl")
expect "a batch imports its 3 devices" grep -q '"imported": 3' <<<"$out"
out=$("$CLI" --data "$DATA" devices import "$W/batch-7.jsonl")
expect "re-running the import imports nothing twice" grep -q '"already_present": 3' <<<"$out"

cat >"$W/bad.jsonl" <<JSON
{"serial":"GW-0100","model":"gw-100","manufacturer":"acme","idevid_fingerprint":"$(fp 100)"}
{"serial":"GW-0101","model":"gw-100","manufacturer":"acme","idevid_fingerprint":"not-hex"}
JSON
rc=0; "$CLI" --data "$DATA" devices import "$W/bad.jsonl" >"$W/bad.out" 2>&1 || rc=$?
expect "a bad line fails the import (exit $rc)" test "$rc" = 1
expect "the bad line is named" grep -q "line 2" "$W/bad.out"
rc=0; "$CLI" --data "$DATA" devices show GW-0100 >"$W/none.out" 2>&1 || rc=$?
expect "nothing of the bad batch was imported" grep -q "not_found: no device with serial 'GW-0100'" "$W/none.out"

out=$("$CLI" --data "$DATA" devices show GW-0001)
expect "a device starts as manufactured" grep -q '"state": "manufactured"' <<<"$out"
expect "its labels are kept" grep -q '"site": "berlin"' <<<"$out"
out=$("$CLI" --data "$DATA" devices provision GW-0001 --tenant acme-fleet --region eu-west --operator alice)
expect "provisioning binds tenant and region" grep -q '"tenant": "acme-fleet"' <<<"$out"
expect "provisioning moves it to provisioned" grep -q '"state": "provisioned"' <<<"$out"
out=$("$CLI" --data "$DATA" devices history GW-0001)
expect "the history records the actor" grep -q '"actor": "alice"' <<<"$out"
expect "the history records the event" grep -q '"event": "provision"' <<<"$out"

# The policy: the first start installed the built-in version, and every record names it.
out=$("$CLI" --data "$DATA" policy versions)
hash=$(python3 -c 'import json,sys;v=json.load(sys.stdin);assert len(v)==1 and v[0]["active"] and v[0]["version"]==1,v;print(v[0]["hash"])' <<<"$out")
expect "the built-in policy is version 1, named by its hash" grep -Eq '^[0-9a-f]{64}$' <<<"$hash"
out=$("$CLI" --data "$DATA" devices history GW-0001)
expect "the history names the policy version it was decided under" grep -q "\"policy_version\": \"$hash\"" <<<"$out"
"$CLI" --data "$DATA" policy show | python3 -c '
import json,sys
doc=json.load(sys.stdin)["document"]
doc["roles"]["eu-ops"]={"permit":[{"actions":["device.suspend"],"scope":{"regions":["eu-west"]},"why":"on call"}]}
json.dump(doc,open(sys.argv[1],"w"))
doc["roles"]["eu-ops"]["superuser"]=True
json.dump(doc,open(sys.argv[2],"w"))' "$W/policy.json" "$W/bad-policy.json"
out=$("$CLI" --data "$DATA" policy check "$W/policy.json")
expect "checking a document shows its diff from the active version" grep -q "role eu-ops gains device.suspend in region eu-west" <<<"$out"
rc=0; "$CLI" --data "$DATA" policy check "$W/bad-policy.json" >"$W/bad-policy.out" 2>&1 || rc=$?
expect "an unknown key is refused (exit $rc)" test "$rc" = 1
expect "the refusal names the key by its JSON pointer" grep -q "invalid_argument: policy /roles/eu-ops/superuser" "$W/bad-policy.out"

rc=0; "$CLI" --data "$DATA" devices provision GW-0001 --tenant x --region y >"$W/again.out" 2>&1 || rc=$?
expect "provisioning twice is a conflict" grep -q "conflict: 'provision' is not allowed from state 'provisioned'" "$W/again.out"
out=$("$CLI" --data "$DATA" devices list --state manufactured)
expect "listing by state finds the other two" test "$(python3 -c 'import json,sys;print(len(json.load(sys.stdin)["devices"]))' <<<"$out")" = 2
out=$("$CLI" --data "$DATA" devices counts)
expect "counts per state" python3 -c 'import json,sys;c=json.load(sys.stdin);assert c=={"manufactured":2,"provisioned":1},c' <<<"$out"

start_server "$SERVER" "$DATA"
expect "the server opens the same registry" grep -q "msg=\"registry ready\" database=sqlite:$DATA/fleetid.db devices=3" "$W/server.log"
kill -TERM "$PID"; wait_exit "$PID" 15

audit_covers "$CLI" "$DATA"
finish
