#!/usr/bin/env python3
"""Reads every replayed UCI session back from a running cartpulse and compares
its 17 features with the CSV row (relative tolerance 1e-6). Row N (from 1) is
session osi-sN. Prints mismatches and a JSON summary as the last line; exits 1
on any mismatch or missing session."""
import csv, json, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor

base, key, path = sys.argv[1], sys.argv[2], sys.argv[3]
MONTHS = {"Jun": "June"}
NUMERIC = ["Administrative", "Administrative_Duration", "Informational", "Informational_Duration",
           "ProductRelated", "ProductRelated_Duration", "BounceRates", "ExitRates", "PageValues",
           "SpecialDay", "OperatingSystems", "Browser", "Region", "TrafficType"]

def get(n):
    req = urllib.request.Request(f"{base}/v1/sessions/osi-s{n}", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return n, json.load(r)
    except Exception as e:  # reported as missing
        return n, {"error": str(e)}

def close(a, b):
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b), 1e-3)

with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
bad = 0
with ThreadPoolExecutor(16) as pool:
    for n, sess in pool.map(get, range(1, len(rows) + 1)):
        row = rows[n - 1]
        feats = sess.get("features")
        if not feats:
            bad += 1
            print(f"row {n}: session missing: {sess.get('error', sess)}", file=sys.stderr)
            continue
        problems = [c for c in NUMERIC if not close(float(row[c]), float(feats[c]))]
        if MONTHS.get(row["Month"], row["Month"]) != feats["Month"]:
            problems.append("Month")
        if row["VisitorType"] != feats["VisitorType"]:
            problems.append("VisitorType")
        if (row["Weekend"] == "TRUE") != feats["Weekend"]:
            problems.append("Weekend")
        if problems:
            bad += 1
            if bad <= 20:
                print(f"row {n}: {', '.join(f'{c} file={row.get(c)} service={feats.get(c)}' for c in problems)}", file=sys.stderr)
print(json.dumps({"check": "shoppers_replay", "rows": len(rows), "mismatched": bad}))
sys.exit(1 if bad else 0)
