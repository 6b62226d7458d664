#!/usr/bin/env python3
"""Turns the output of `wrk --latency` into one JSON line for bench/out/http.jsonl.

    wrk_json.py FIGURE SERVER BYTES < wrk-output.txt

Prints the JSON object on stdout and a one-line summary on stderr. Exits 1 if the output holds
no Requests/sec or latency distribution (wrk failed), or if any response was not 2xx/3xx: a
rate of error answers is not a figure.
"""
import json
import re
import sys

# wrk prints durations with the unit it finds readable: 539.00us, 0.86ms, 2.03s, 1.00m, 1.00h.
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
DURATION = r"([\d.]+)(us|ms|s|m|h)\b"


def ms(value, unit):
    return round(float(value) * UNIT_MS[unit], 3)


def main():
    figure, server, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    text = sys.stdin.read()

    rate = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    percentiles = {p: re.search(rf"^\s+{p}%\s+{DURATION}", text, re.M) for p in (50, 75, 90, 99)}
    avg = re.search(rf"^\s+Latency\s+{DURATION}", text, re.M)
    total = re.search(r"^\s+(\d+) requests in " + DURATION, text, re.M)
    setup = re.search(r"^\s+(\d+) threads and (\d+) connections", text, re.M)
    if not rate or not all(percentiles.values()) or not total or not setup:
        sys.stderr.write(f"wrk_json: cannot parse wrk output for {server} {figure}:\n{text}\n")
        return 1

    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    record = {
        "figure": figure,
        "server": server,
        "requests_per_second": float(rate.group(1)),
        "avg_ms": ms(*avg.groups()) if avg else None,
        **{f"p{p}_ms": ms(*m.groups()) for p, m in percentiles.items()},
        "bytes": size,
        "requests": int(total.group(1)),
        "seconds": round(ms(total.group(2), total.group(3)) / 1000, 2),
        "threads": int(setup.group(1)),
        "connections": int(setup.group(2)),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": dict(zip(("connect", "read", "write", "timeout"),
                                  map(int, errors.groups()))) if errors else None,
    }
    print(json.dumps(record, separators=(",", ":")))
    errs = "" if not errors else f", socket errors {record['socket_errors']}"
    sys.stderr.write(f"   {server} {figure}: {record['requests_per_second']:,.0f} req/s, "
                     f"p50 {record['p50_ms']} ms, p99 {record['p99_ms']} ms, {size} bytes{errs}\n")
    if record["non_2xx"]:
        sys.stderr.write(f"wrk_json: {server} {figure}: {record['non_2xx']} responses were not 2xx/3xx:\n{text}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
