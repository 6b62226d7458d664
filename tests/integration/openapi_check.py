"""Checks recorded operator API calls against docs/openapi.json.

    openapi_check.py OPENAPI CALLS

CALLS has one call a line, tab-separated: method, path (under /api/v1, query included), HTTP
status, and the file holding the answer's body. Each call must name a path and method the
document has, its status must be one the operation documents (exactly, or its range such as 4XX),
and its body must validate against that response's schema (JSON Schema 2020-12, as OpenAPI 3.1
uses). Prints the document's operations no call reached; exits 1 naming every mismatch.
"""
import json
import re
import sys

import jsonschema


def main():
    doc = json.load(open(sys.argv[1]))
    templates = []
    for template, item in doc["paths"].items():
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        templates.append((template, re.compile(pattern), item))
    # Exact templates before ones with parameters, so /operators/invitations is not /operators/{name}.
    templates.sort(key=lambda t: t[0].count("{"))
    problems, reached, calls = [], set(), 0
    for line in open(sys.argv[2]):
        method, path, status, body_file = line.rstrip("\n").split("\t")
        calls += 1
        path = path.split("?")[0]
        where = f"{method} {path} -> {status}"
        match = next(((t, item) for t, rx, item in templates if rx.match(path)), None)
        if match is None:
            # An unknown route is answered as every refusal is, with a 404.
            if status != "404":
                problems.append(f"{where}: no path of the document matches")
            continue
        template, item = match
        operation = item.get(method.lower())
        if operation is None:
            problems.append(f"{where}: {template} documents no {method}")
            continue
        reached.add((method, template))
        responses = operation["responses"]
        response = responses.get(status) or responses.get(status[0] + "XX")
        if response is None:
            problems.append(f"{where}: {template} documents no status {status}")
            continue
        schema = response["content"]["application/json"]["schema"]
        try:
            body = json.load(open(body_file))
        except (OSError, ValueError) as e:
            problems.append(f"{where}: the answer is not JSON ({e})")
            continue
        validator = jsonschema.Draft202012Validator(dict(schema, components=doc["components"]))
        for error in validator.iter_errors(body):
            problems.append(f"{where}: {'/'.join(map(str, error.absolute_path))}: {error.message}")
    missed = sorted(f"{m.upper()} {t}" for t, item in doc["paths"].items() for m in item
                    if (m.upper(), t) not in reached)
    print(f"{calls} calls checked against {len(doc['paths'])} paths; not reached by this test: "
          + (", ".join(missed) or "none"))
    for p in problems:
        print("MISMATCH", p)
    sys.exit(1 if problems else 0)


main()
