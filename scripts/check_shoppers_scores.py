#!/usr/bin/env python3
"""Reads every replayed UCI session's score back from a running cartpulse and
compares it with `cartpulse predict`'s probability for its row (|Δ| < 1e-5).
Row r (from 0) of the predictions is session osi-s{r+1}. A session whose final
score has not arrived yet is retried for up to 60 s. Prints mismatches and a
JSON summary as the last line; exits 1 on any mismatch or missing score."""
import csv, json, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor

base, key, path = sys.argv[1], sys.argv[2], sys.argv[3]
with open(path, newline="") as f:
    offline = {int(r["row"]) + 1: float(r["probability"]) for r in csv.DictReader(f)}

def get(n):
    req = urllib.request.Request(f"{base}/v1/sessions/osi-s{n}", headers={"Authorization": f"Bearer {key}"})
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                sess = json.load(r)
        except Exception as e:  # reported as missing
            sess = {"error": str(e)}
        if sess.get("score") is not None or time.time() > deadline:
            return n, sess
        time.sleep(0.5)

bad, worst, versions = 0, 0.0, set()
with ThreadPoolExecutor(16) as pool:
    for n, sess in pool.map(get, sorted(offline)):
        score = sess.get("score")
        if score is None:
            bad += 1
            if bad <= 20:
                print(f"osi-s{n}: no score: {sess.get('error', sess.get('status'))}", file=sys.stderr)
            continue
        versions.add(sess.get("model_version"))
        d = abs(score - offline[n])
        worst = max(worst, d)
        if d >= 1e-5:
            bad += 1
            if bad <= 20:
                print(f"osi-s{n}: online {score}, offline {offline[n]}", file=sys.stderr)
print(json.dumps({"check": "shoppers_scores", "sessions": len(offline), "mismatched": bad,
                  "max_abs_diff": worst, "model_versions": sorted(v for v in versions if v)}))
sys.exit(1 if bad else 0)
