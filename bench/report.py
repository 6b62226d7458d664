#!/usr/bin/env python3
"""Prints fleetid's benchmark figures beside the baselines measured in the same run."""
import json
import re
import sys
from pathlib import Path

out = Path(sys.argv[1])

SPEED_PATTERNS = {
    "ecdsa-p256-sha256": r"256 bits ecdsa \(nistp256\)\s+\S+\s+\S+\s+([\d.]+)",
    "ecdsa-p384-sha384": r"384 bits ecdsa \(nistp384\)\s+\S+\s+\S+\s+([\d.]+)",
    "ed25519": r"253 bits EdDSA \(Ed25519\)\s+\S+\s+\S+\s+([\d.]+)",
    "rsa3072-pss-sha256": r"rsa 3072 bits\s+\S+\s+\S+\s+([\d.]+)",
}


def speed(path):
    text = path.read_text()
    found = {}
    for suite, pattern in SPEED_PATTERNS.items():
        m = re.search(pattern, text)
        found[suite] = float(m.group(1)) if m else None
    return found


base1 = speed(out / "openssl_speed.txt")
base2 = speed(out / "openssl_speed_2.txt")
runs = json.loads((out / "custody_bench.json").read_text())["benchmarks"]
token = {}
for b in runs:
    m = re.match(r"token_sign/([\w-]+)/.*threads:(\d+)", b["name"])
    if m and "items_per_second" in b:
        token[(m.group(1), int(m.group(2)))] = b["items_per_second"]

print()
print("Signatures per second: fleetid through the token vs `openssl speed` (in-memory key)")
print(f"{'suite':<20} {'threads':>7} {'token sign/s':>13} {'openssl sign/s':>15} {'ratio':>7}")
for suite in SPEED_PATTERNS:
    for threads, base in ((1, base1), (2, base2)):
        t = token.get((suite, threads))
        b = base.get(suite)
        ratio = f"{t / b:.2f}x" if t and b else "n/a"
        ts = f"{t:,.0f}" if t else "n/a"
        bs = f"{b:,.0f}" if b else "n/a"
        print(f"{suite:<20} {threads:>7} {ts:>13} {bs:>15} {ratio:>7}")
print()
print("ratio = token / openssl; below 1.0 means the token is slower (expected: every signature")
print("crosses the PKCS#11 boundary and SoftHSM2 adds its own object handling).")

registry_file = out / "registry.jsonl"
if registry_file.exists():
    figures = {}
    for line in registry_file.read_text().splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            figures[(r["db"], r["figure"])] = r
    print("Registry (one process, one connection; rates per second)")
    print(f"{'database':<9} {'figure':<34} {'fleetid':>12} {'raw baseline':>13} {'ratio':>7}")
    rows = [
        ("import", "bulk import (one batch)", "raw_insert_devices_schema"),
        ("import", "bulk import vs single-key table", "raw_insert"),
        ("lookup", "point lookup by serial", "raw_lookup_devices_schema"),
        ("lookup", "point lookup vs single-key table", "raw_lookup"),
        ("paged_query_devices", "paged query, devices/s (pages of 1000)", None),
        ("transition", "transition + history row", None),
    ]
    for db in ("sqlite", "postgres"):
        for figure, label, base in rows:
            f = figures.get((db, figure))
            if not f:
                continue
            b = figures.get((db, base)) if base else None
            ratio = f"{f['per_second'] / b['per_second']:.2f}x" if b else ""
            bs = f"{b['per_second']:,.0f}" if b else ""
            print(f"{db:<9} {label:<34} {f['per_second']:>12,.0f} {bs:>13} {ratio:>7}")
        if (db, "import") in figures:
            f = figures[(db, "import")]
            print(f"{db:<9} {'  (' + str(f['count']) + ' devices imported in ' + str(f['seconds']) + ' s)':<34}")
    print()
    print("raw_insert_devices_schema: the same rows straight into the registry's devices table")
    print("(same columns and indexes) through the database's C API; raw_insert: a table with a")
    print("single unique text key, the rate of the database itself.")

pki_file = out / "pki.jsonl"
if pki_file.exists():
    figs = {}
    for line in pki_file.read_text().splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            figs[r["figure"]] = r
    print()
    print("CA (in process; token = SoftHSM2, database = SQLite)")
    sign = base1.get("ecdsa-p256-sha256")
    verify_m = re.search(r"256 bits ecdsa \(nistp256\)\s+\S+\s+\S+\s+[\d.]+\s+([\d.]+)",
                         (out / "openssl_speed.txt").read_text())
    ceiling = None
    if sign and verify_m:
        v = float(verify_m.group(1))
        ceiling = 1 / (1 / sign + 1 / v)
    for name in ("issue_threads_1", "issue_threads_2"):
        if name in figs:
            f = figs[name]
            extra = f"  (crypto ceiling, 1 core: {ceiling:,.0f}/s = one P-256 verify + one sign; ratio {f['per_second'] / ceiling:.2f}x)" if ceiling else ""
            print(f"  {name:<26} {f['per_second']:>10,.0f} certificates/s{extra}")
    if "ocsp_cached_in_process" in figs:
        f = figs["ocsp_cached_in_process"]
        print(f"  {'ocsp_cached_in_process':<26} {f['per_second']:>10,.0f} answers/s ({f['response_bytes']} bytes each; the same request bytes each time)")
    if "ocsp_cached_unseen_request" in figs:
        f = figs["ocsp_cached_unseen_request"]
        print(f"  {'ocsp_cached_unseen_request':<26} {f['per_second']:>10,.0f} answers/s (cached answer, request bytes new each time: parsed)")
    if "crl_build" in figs:
        f = figs["crl_build"]
        print(f"  {'crl_build':<26} {f['count']:>10,.0f} entries in {f['seconds']:.2f} s, {f['crl_bytes']:,} bytes, peak RSS +{f['peak_rss_growth_mb']} MB")

policy_file = out / "policy.jsonl"
if policy_file.exists():
    rates = {}
    rules = 0
    for line in policy_file.read_text().splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            rates.setdefault(r["figure"], []).append(r["per_second"])
            rules = r["rules"]

    def median(values):
        values = sorted(values)
        return values[len(values) // 2]

    print()
    print(f"Policy (in process, 1 thread, {rules} rules; median of alternated rounds)")
    compiled = median(rates["policy_decisions"]) if "policy_decisions" in rates else None
    naive = median(rates["policy_decisions_interpreted"]) if "policy_decisions_interpreted" in rates else None
    if compiled:
        target = "met" if compiled >= 500000 else "MISSED"
        ratio = f"; interpreted, the same decisions from the rules as written: {naive:,.0f}/s, ratio {compiled / naive:.1f}x" if naive else ""
        print(f"  {'policy_decisions':<26} {compiled:>10,.0f} decisions/s (target >= 500,000: {target}){ratio}")

http_file = out / "http.jsonl"
if http_file.exists():
    http = {}
    for line in http_file.read_text().splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            http[(r["server"], r["figure"])] = r
    pki_figs = figs if pki_file.exists() else {}

    def rate(server, figure):
        f = http.get((server, figure))
        return f["requests_per_second"] if f else None

    def verdict(met):
        return "met" if met else "MISSED"

    def ratio_line(label, value, base, target, detail=""):
        if value and base:
            r = value / base
            print(f"  {label:<40} {r:>7.2f}x  (target >= {target}x: {verdict(r >= target)}){detail}")
        else:
            print(f"  {label:<40} {'n/a':>8}")

    print()
    run = next(iter(http.values()), None)
    if run:
        print(f"HTTP (wrk on 127.0.0.1, {run['threads']} threads x {run['connections']} keep-alive "
              f"connections, {run['seconds']:.0f} s per figure)")
    print(f"{'server':<13} {'figure':<34} {'req/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'bytes':>6}")
    for server, figure, label in (
        ("fleetid", "ocsp_post", "OCSP POST, cached answer"),
        ("fleetid", "ocsp_get", "OCSP GET /ocsp/{base64}, cached"),
        ("nginx", "static_get", "static file of the same size"),
        ("openssl-ocsp", "ocsp_post", "OCSP POST, signs every answer"),
        ("cfssl", "sign", "/api/v1/cfssl/sign"),
    ):
        f = http.get((server, figure))
        if f:
            print(f"{server:<13} {label:<34} {f['requests_per_second']:>10,.0f} {f['p50_ms']:>7.2f} "
                  f"{f['p99_ms']:>7.2f} {f['bytes']:>6}")
    print()
    ratio_line("fleetid OCSP POST / nginx static file", rate("fleetid", "ocsp_post"), rate("nginx", "static_get"), 0.7)
    ratio_line("fleetid OCSP GET / nginx static file", rate("fleetid", "ocsp_get"), rate("nginx", "static_get"), 0.7)
    ratio_line("fleetid OCSP POST / openssl ocsp", rate("fleetid", "ocsp_post"), rate("openssl-ocsp", "ocsp_post"), 5)
    post = http.get(("fleetid", "ocsp_post"))
    if post:
        label = f"fleetid OCSP POST p99, {post['connections']} connections"
        print(f"  {label:<40} {post['p99_ms']:>5.2f} ms  (target < 5 ms: {verdict(post['p99_ms'] < 5)})")
    issue = pki_figs.get("issue_threads_2", {}).get("per_second")
    cfssl = rate("cfssl", "sign")
    detail = f"  {issue:,.0f}/s vs {cfssl:,.0f}/s" if issue and cfssl else ""
    ratio_line("issuance: issue_threads_2 / cfssl sign", issue, cfssl, 1.0, detail)
    print()
    print("fleetid's issuance figure is pki_bench's, in process (CSR in, certificate out, key in the")
    print("token, record committed to SQLite); cfssl's is over HTTP, key in memory, no database.")
    print("openssl ocsp answers in HTTP/1.0 and closes every connection, so wrk reconnects for each request.")

audit_file = out / "audit.jsonl"
if audit_file.exists():
    a = {}
    for line in audit_file.read_text().splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            a[r["figure"]] = r
    print()
    print("Audit log (SQLite; heads signed in the token)")
    sha = a.get("sha256_entry_sized")
    if sha:
        print(f"  {'SHA-256 of an entry-sized input (baseline)':<46} {sha['per_second']:>12,.0f}/s  ({sha['bytes']} bytes)")
    for key, label in (("leaf_hash", "leaf hash (0x00 || entry)"),
                       ("append_durable_1_per_tx", "durable appends, 1 per transaction"),
                       ("append_durable_100_per_tx", "durable appends, 100 per transaction"),
                       ("integrate", "entries integrated into the tree")):
        f = a.get(key)
        if f:
            extra = ""
            if key == "append_durable_100_per_tx":
                extra = f"  (target >= 20,000/s: {'met' if f['per_second'] >= 20000 else 'MISSED'})"
            print(f"  {label:<46} {f['per_second']:>12,.0f}/s{extra}")
    for name, f in sorted(a.items(), key=lambda kv: kv[1].get("count", 0)):
        if name.startswith(("inclusion_proof_at_", "consistency_proof_at_")):
            kind, size = name.rsplit("_at_", 1)
            ms = f["ms_per_proof"]
            print(f"  {kind.replace('_', ' ') + ' at ' + format(int(size), ','):<46} {ms:>12.3f} ms  (target < 1 ms: {'met' if ms < 1 else 'MISSED'})")
        elif name.startswith("grow_to_"):
            print(f"  {'grew the log to ' + format(int(f['count']), ','):<46} {f['seconds']:>10.1f} s   ({f['per_second']:,.0f} entries/s)")
    ex, ve = a.get("export"), a.get("verify_export")
    if ex and ve:
        print(f"  {'export of ' + format(int(ex['count']), ',') + ' entries':<46} {ex['seconds']:>10.2f} s   ({ex['bytes']:,} bytes)")
        print(f"  {'offline verification of that export':<46} {ve['seconds']:>10.2f} s   ({ve['per_second']:,.0f} entries/s; SHA-256 alone would take {ve['count'] / sha['per_second']:.2f} s)" if sha else "")

enroll_file = out / "enroll.jsonl"
if enroll_file.exists():
    rows = [json.loads(line) for line in enroll_file.read_text().splitlines() if line.startswith("{")]
    enroll = {r["connections"]: r for r in rows if r["figure"] == "enroll"}
    handshakes = {r["clients"]: r for r in rows if r["figure"] == "tls_handshake"}
    factory = [r for r in rows if r["figure"] == "factory_make"]
    keep = enroll.get("one-per-enrollment")
    threads = next(iter(enroll.values()), {}).get("threads", "?")
    print()
    print(f"Enrollment (attested EST: nonce, evidence, simpleenroll; fleetid-agent simulate --threads {threads},")
    print("fleetid-server --threads 2; device keys in SoftHSM2) vs openssl s_server handshakes, mutual TLS 1.3")
    print(f"{'':<56} {'enroll/s':>9} {'handshakes/s':>13}")
    for mode, label in (("one-per-enrollment", "fleetid, one fresh connection per enrollment"),
                        ("per-request", "fleetid, a fresh connection per request")):
        r = enroll.get(mode)
        if r:
            print(f"  {label:<54} {r['enrollments_per_second']:>9,.1f} {r['handshakes_per_second']:>13,.1f}"
                  f"  ({r['handshakes_per_enrollment']}/enrollment; {int(r['enrolled'])} devices in {r['seconds']:.1f} s)")
    for clients in sorted(handshakes):
        h = handshakes[clients]
        label = f"openssl s_server (1 thread), {clients} s_time client{'s' if clients > 1 else ''}"
        print(f"  {label:<54} {'':>9} {h['handshakes_per_second']:>13,.1f}  ({h['connections']} in {h['seconds']:.1f} s)")
    for f in factory:
        label = f"factory make: {f['devices']} devices, own token each"
        print(f"  {label:<54} {f['seconds']:>8.2f} s  ({f['per_second']:,.1f} devices/s)")
    print()
    if keep and handshakes:
        best = max(handshakes.values(), key=lambda h: h["handshakes_per_second"])
        for clients in sorted(handshakes):
            h = handshakes[clients]
            r = keep["enrollments_per_second"] / h["handshakes_per_second"]
            label = f"enrollments / s_server handshakes ({clients} client{'s' if clients > 1 else ''})"
            verdict = f"  (target >= 0.5x: {'met' if r >= 0.5 else 'MISSED'})" if h is best else ""
            print(f"  {label:<46} {r:>7.2f}x{verdict}")
    else:
        print(f"  {'enrollments / s_server handshakes':<46} {'n/a':>8}")
    print()
    print("The ratio's enrollments use one fresh connection each (the agent's default); the target is")
    print("judged against s_server's better figure. s_server is single-threaded (one core whatever the")
    print("clients); it verifies each client certificate, sends no session tickets and no HTTP.")
    print("A fleetid enrollment is one full handshake plus four requests (nonce, evidence, simpleenroll,")
    print("cacerts), a signed evidence check and a certificate issued; each device makes its key and CSR")
    print("in its token before the clock starts, as it would at boot.")

operator_file = out / "operator.jsonl"
if operator_file.exists():
    runs = {}
    for line in operator_file.read_text().splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            runs.setdefault((r["db"], r["mode"]), []).append(r)

    def median_rate(rs):
        values = sorted(r["per_second"] for r in rs)
        return values[len(values) // 2]

    print()
    print("Operator API: authorized device.suspend/resume calls over keep-alive mutual TLS (2 connections)")
    print("beside the raw registry transition with the same credential holds and audit entries (2 threads);")
    print("medians of alternated rounds")
    for db in ("sqlite", "postgresql"):
        api, raw = runs.get((db, "api")), runs.get((db, "raw"))
        if not api or not raw:
            continue
        a, w = median_rate(api), median_rate(raw)
        failed = sum(r["failed"] for r in api + raw)
        verdict = "met" if a >= 0.8 * w else "MISSED"
        print(f"  {db:<11} api {a:>9,.1f}/s   raw {w:>9,.1f}/s   ratio {a / w:.2f}x (target >= 0.8x: {verdict})"
              f"{f'; {failed} calls failed' if failed else ''}")
