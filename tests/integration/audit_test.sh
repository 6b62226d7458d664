#!/usr/bin/env bash
# The audit log end to end: every registry transition, issuance and revocation made through the
# real binaries has its entry (served only to an operator allowed audit.read; heads and proofs to
# anyone); each entry's inclusion proof from the HTTP API verifies against a
# signed tree head (checked with `openssl dgst -verify` and an independent RFC 9162 verifier in
# Python, tests/vectors/rfc9162_gen.py); a head saved earlier is proven consistent with the newest;
# `fleetid audit verify` accepts the export; archived entries keep their proofs and verify with a
# later export; and the verifier names the entry when one byte of it is changed in the database,
# and catches a rollback with the saved head.
SERVER=$1
CLI=$2
source "$(dirname "$0")/lib.sh"
VECTORS=$(cd "$(dirname "$0")/../vectors" && pwd)

DATA=$W/var
start_server "$SERVER" "$DATA"
# The data directory changed by hand next to the running server: break-glass (docs/cli.md).
F=("$CLI" --data "$DATA" --break-glass --public-url "$URL")
expect "the audit log is ready at start" grep -q 'msg="audit log ready"' "$W/server.log"

fp() { printf '%064x' "$1"; }
for i in 1 2 3; do
  echo "{\"serial\":\"GW-000$i\",\"model\":\"gw-100\",\"manufacturer\":\"acme\",\"idevid_fingerprint\":\"$(fp $i)\"}"
done >"$W/batch.jsonl"
"${F[@]}" devices import "$W/batch.jsonl" --operator alice >/dev/null
"${F[@]}" audit head >"$W/early-head.json"
"${F[@]}" devices provision GW-0001 --tenant acme --region eu --operator alice >/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/d.key" 2>/dev/null
openssl req -new -key "$W/d.key" -subj "/CN=x" -out "$W/d.csr"
"${F[@]}" ca issue --device GW-0001 --csr "$W/d.csr" --out "$W/d.pem" --operator bob 2>/dev/null
SERIAL=$(openssl x509 -in "$W/d.pem" -noout -serial | cut -d= -f2 | tr 'A-F' 'a-f')
"${F[@]}" ca revoke "$SERIAL" --reason keyCompromise --operator bob >/dev/null
"${F[@]}" audit head >"$W/head.json"
"${F[@]}" audit key >"$W/audit.pem"
curl -sf "$URL/audit/v1/key" -o "$W/audit-http.pem"
expect "the HTTP API serves the same audit key" cmp -s "$W/audit.pem" "$W/audit-http.pem"
curl -sf "$URL/audit/v1/sth" -o "$W/sth.json"
expect "the HTTP API serves the newest head" python3 -c "
import json,sys; a=json.load(open('$W/sth.json')); b=json.load(open('$W/head.json')); sys.exit(a['size'] < b['size'])"

SIZE=$(python3 -c "import json;print(json.load(open('$W/head.json'))['size'])")
# Entries name devices, tenants and operators: only operators allowed audit.read see them.
code=$(curl -s -o "$W/anon.json" -w '%{http_code}' "$URL/audit/v1/entries?start=0&end=$SIZE")
expect "entries over plain HTTP: 400 ($code: $(cat "$W/anon.json"))" test "$code" = 400
bootstrap_admin "$CLI" "$DATA"
code=$(curl -s -o "$W/anon.json" -w '%{http_code}' --cacert "$W/admin-root.pem" "$HURL/audit/v1/entries?start=0&end=$SIZE")
expect "entries over HTTPS without an operator certificate: 401 ($code)" test "$code" = 401
curl -sf "${ADMIN_CURL[@]}" "$HURL/audit/v1/entries?start=0&end=$SIZE" -o "$W/entries.json"
actions=$(python3 -c "import json;print(' '.join(json.loads(e['body'])['action'] for e in json.load(open('$W/entries.json'))['entries']))")
for want in registry.import registry.provision pki.issue pki.revoke; do
  expect "an entry records $want ($actions)" grep -qw "$want" <<<"$actions"
done
body=$(python3 -c "import json;print([json.loads(e['body']) for e in json.load(open('$W/entries.json'))['entries'] if json.loads(e['body'])['action']=='pki.revoke'][0])")
expect "the revocation names its actor, subject, states and reason ($body)" \
  python3 -c "import ast,sys; b=ast.literal_eval(sys.argv[1]); sys.exit(not (b['actor']=='operator:bob' and b['subject']=='$SERIAL' and b['before']['status']=='good' and b['after']['status']=='revoked' and b['reason']=='keyCompromise'))" "$body"

# The head's signature, with openssl: the signed message is documented in docs/audit.md.
python3 - "$W/head.json" "$W/msg.bin" "$W/sig.bin" <<'PY'
import json, struct, sys
h = json.load(open(sys.argv[1]))
msg = b"fleetid-audit-tree-head-v1\n" + struct.pack(">QQ", h["size"], h["time_ms"]) + bytes.fromhex(h["root"])
open(sys.argv[2], "wb").write(msg)
open(sys.argv[3], "wb").write(bytes.fromhex(h["signature"]))
PY
out=$(openssl dgst -sha256 -verify "$W/audit.pem" -signature "$W/sig.bin" "$W/msg.bin" 2>&1)
expect "openssl verifies the tree head's signature ($out)" grep -q "Verified OK" <<<"$out"

# Every entry's inclusion proof, and the consistency of the early head with the newest, checked
# by the independent verifier.
for ((i = 0; i < SIZE; i++)); do
  curl -sf "$URL/audit/v1/proof/inclusion?seq=$i&size=$SIZE" -o "$W/inc-$i.json"
done
curl -sf "$URL/audit/v1/proof/consistency?first=$(python3 -c "import json;print(json.load(open('$W/early-head.json'))['size'])")&second=$SIZE" -o "$W/cons.json"
expect "every entry's inclusion proof and the early head's consistency proof verify (RFC 9162)" python3 - "$VECTORS" "$W" "$SIZE" <<'PY'
import hashlib, json, sys
sys.path.insert(0, sys.argv[1])
import rfc9162_gen as r
w, size = sys.argv[2], int(sys.argv[3])
head = json.load(open(f"{w}/head.json"))
early = json.load(open(f"{w}/early-head.json"))
entries = json.load(open(f"{w}/entries.json"))["entries"]
assert len(entries) == size, (len(entries), size)
root = bytes.fromhex(head["root"])
for e in entries:
    proof = json.load(open(f"{w}/inc-{e['seq']}.json"))
    leaf = hashlib.sha256(b"\x00" + e["body"].encode()).digest()
    assert r.verify_inclusion(e["seq"], size, leaf, [bytes.fromhex(p) for p in proof["path"]], root), e["seq"]
cons = json.load(open(f"{w}/cons.json"))
assert r.verify_consistency(early["size"], size, bytes.fromhex(early["root"]), root,
                            [bytes.fromhex(p) for p in cons["path"]])
PY
code=$(curl -s -o "$W/bad.json" -w '%{http_code}' "$URL/audit/v1/proof/inclusion?seq=0&size=99999")
expect "a proof for a size the log does not have is a 400 with JSON ($code)" test "$code" = 400
code=$(curl -s -o /dev/null -w '%{http_code}' "${ADMIN_CURL[@]}" "$HURL/audit/v1/entries?start=x")
expect "a malformed range is a 400 ($code)" test "$code" = 400

"${F[@]}" audit export --out "$W/export.jsonl" 2>/dev/null
out=$("$CLI" audit verify --in "$W/export.jsonl" --key "$W/audit.pem" --saved-head "$W/early-head.json" 2>&1) && rc=0 || rc=$?
expect "fleetid audit verify accepts the untouched log (rc $rc)" test "$rc" = 0

kill -TERM "$PID"; wait_exit "$PID" 15
expect "the server stops cleanly ($RC)" test "$RC" = 0

# Archival: entries 0 and 1 move to a file; their proofs still work, and the archive followed
# by a later export verifies as one log (the later export alone does not).
"${F[@]}" audit archive --before 2 --out "$W/archive.jsonl" 2>/dev/null
"${F[@]}" audit proof --seq 0 --size "$SIZE" >"$W/proof0.json"
expect "an archived entry's inclusion proof still verifies" python3 - "$VECTORS" "$W" "$SIZE" <<'PY'
import hashlib, json, sys
sys.path.insert(0, sys.argv[1])
import rfc9162_gen as r
w, size = sys.argv[2], int(sys.argv[3])
entry = [json.loads(l) for l in open(f"{w}/archive.jsonl") if json.loads(l)["kind"] == "entry"][0]
proof = json.load(open(f"{w}/proof0.json"))
root = bytes.fromhex(json.load(open(f"{w}/head.json"))["root"])
leaf = hashlib.sha256(b"\x00" + entry["body"].encode()).digest()
sys.exit(not r.verify_inclusion(0, size, leaf, [bytes.fromhex(p) for p in proof["path"]], root))
PY
"${F[@]}" audit export --out "$W/live.jsonl" 2>/dev/null
out=$("$CLI" audit verify --in "$W/live.jsonl" --key "$W/audit.pem" 2>&1) && rc=0 || rc=$?
expect "the later export alone misses the archived entries ($out)" grep -q "position 0: the entry there is seq 2" <<<"$out"
out=$("$CLI" audit verify --in "$W/archive.jsonl" --in "$W/live.jsonl" --key "$W/audit.pem" --saved-head "$W/head.json" 2>&1) && rc=0 || rc=$?
expect "the archive and the later export verify as one log (rc $rc)" test "$rc" = 0

# Tampering with the database: one byte of entry 2, then a rollback.
python3 -c "
import sqlite3; c=sqlite3.connect('$DATA/fleetid.db')
b=bytes(c.execute('SELECT body FROM audit_entries WHERE seq=2').fetchone()[0])
i=b.index(b'alice'); b=b[:i]+b'A'+b[i+1:]
c.execute('UPDATE audit_entries SET body=? WHERE seq=2',(b,)); c.commit()"
"${F[@]}" audit export --out "$W/tampered.jsonl" 2>/dev/null
out=$("$CLI" audit verify --in "$W/archive.jsonl" --in "$W/tampered.jsonl" --key "$W/audit.pem" 2>&1) && rc=0 || rc=$?
expect "a changed byte fails verification (rc $rc)" test "$rc" = 1
expect "and the verifier names the entry ($out)" grep -q "entry 2: its body is not what was appended" <<<"$out"
# Two entries swapped, then one deleted: each named by position.
python3 -c "
import sqlite3; c=sqlite3.connect('$DATA/fleetid.db')
c.execute('UPDATE audit_entries SET seq=-1 WHERE seq=3'); c.execute('UPDATE audit_entries SET seq=3 WHERE seq=4')
c.execute('UPDATE audit_entries SET seq=4 WHERE seq=-1'); c.commit()"
"${F[@]}" audit export --out "$W/swapped.jsonl" 2>/dev/null
out=$("$CLI" audit verify --in "$W/archive.jsonl" --in "$W/swapped.jsonl" --key "$W/audit.pem" 2>&1) && rc=0 || rc=$?
expect "two reordered entries are named ($out)" grep -q "entry 3: its body names another seq" <<<"$out"
python3 -c "
import sqlite3; c=sqlite3.connect('$DATA/fleetid.db')
c.execute('UPDATE audit_entries SET seq=-1 WHERE seq=3'); c.execute('UPDATE audit_entries SET seq=3 WHERE seq=4')
c.execute('UPDATE audit_entries SET seq=4 WHERE seq=-1'); c.execute('DELETE FROM audit_entries WHERE seq=3'); c.commit()"
"${F[@]}" audit export --out "$W/deleted.jsonl" 2>/dev/null
out=$("$CLI" audit verify --in "$W/archive.jsonl" --in "$W/deleted.jsonl" --key "$W/audit.pem" 2>&1) && rc=0 || rc=$?
expect "a deleted entry is named ($out)" grep -q "position 3: the entry there is seq 4" <<<"$out"
python3 -c "
import sqlite3; c=sqlite3.connect('$DATA/fleetid.db')
c.execute('DELETE FROM audit_entries WHERE seq >= 3'); c.execute('DELETE FROM audit_heads WHERE size > 3')
c.execute('UPDATE audit_state SET next_seq=3, tree_size=3'); c.commit()"
"${F[@]}" audit export --out "$W/rolled.jsonl" 2>/dev/null
out=$("$CLI" audit verify --in "$W/archive.jsonl" --in "$W/rolled.jsonl" --key "$W/audit.pem" --saved-head "$W/head.json" 2>&1) && rc=0 || rc=$?
expect "a rollback is caught by the saved head (rc $rc): $out" grep -q "saved head at size $SIZE: the export holds only 3 entries" <<<"$out"
finish
