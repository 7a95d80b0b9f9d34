"""Peers of the purchase-intent model on exactly the folds `cartpulse train` used.

Reads the UCI Online Shoppers CSV, the folds (`cartpulse train --folds-out`,
CSV row,seed,fold) and cartpulse's out-of-fold probabilities (`--oof-out`, CSV
row,seed,fold,label,score,threshold). For every repeat (split seed) and fold it
fits each peer on the other folds only and scores the held-out fold:

- logistic regression (one-hot categoricals, log1p counts/durations/PageValues,
  standardized), stated C = 1;
- XGBoost, stated 300 trees, depth 4, learning rate 0.05 (the issue's figures);
- scikit-learn HistGradientBoosting, stated library defaults, native
  categorical Month/VisitorType.

Each peer runs twice: "stated" (the hyperparameters above, threshold 0.5) and
"tuned" (a small grid chosen by log-loss on 3 inner stratified folds of the
training part only; the decision threshold maximizes accuracy on those inner
out-of-fold scores, like cartpulse's). The held-out fold is never looked at
before it is scored.

Then, per peer, the per-fold paired differences (cartpulse - peer) of accuracy
and ROC AUC, with the Nadeau & Bengio corrected resampled t-test:
t = mean(d) / sqrt((1/J + n_test/n_train) * var(d)), J = repeats x folds,
J - 1 degrees of freedom. "beats" is claimed only when mean(d) > 0 and the
two-sided p < 0.05.

Also printed: the upper bound on accuracy of any threshold rule on cartpulse's
scores (the best cut of each held-out fold chosen on its own labels), and per
peer the smallest mean gain the corrected test would call significant at the
observed spread of per-fold differences.

Last stdout line: JSON.
"""

import argparse
import os
import csv
import json
import math
import sys
import time

import numpy as np
import scipy
import sklearn
import xgboost
from scipy import stats
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

MONTHS = {"Jan": 1, "Feb": 2, "Mar": 3, "Apr": 4, "May": 5, "June": 6, "Jun": 6, "Jul": 7, "Aug": 8,
          "Sep": 9, "Oct": 10, "Nov": 11, "Dec": 12}
VISITOR = {"Returning_Visitor": 0, "New_Visitor": 1, "Other": 2}
NUMERIC = ["Administrative", "Administrative_Duration", "Informational", "Informational_Duration",
           "ProductRelated", "ProductRelated_Duration", "BounceRates", "ExitRates", "PageValues", "SpecialDay"]
LOG1P = {"Administrative", "Administrative_Duration", "Informational", "Informational_Duration",
         "ProductRelated", "ProductRelated_Duration", "PageValues"}
CATEGORICAL = ["Month", "OperatingSystems", "Browser", "Region", "TrafficType", "VisitorType", "Weekend"]
INNER_FOLDS = 3


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    num = np.array([[float(r[c]) for c in NUMERIC] for r in rows])
    cat = np.array([[MONTHS[r["Month"]], int(r["OperatingSystems"]), int(r["Browser"]), int(r["Region"]),
                     int(r["TrafficType"]), VISITOR[r["VisitorType"]], int(r["Weekend"].upper() == "TRUE")]
                    for r in rows], dtype=float)
    y = np.array([int(r["Revenue"].upper() == "TRUE") for r in rows])
    return num, cat, y


def linear_matrix(num, cat):
    x = num.copy()
    for j, c in enumerate(NUMERIC):
        if c in LOG1P:
            x[:, j] = np.log1p(np.maximum(x[:, j], 0.0))
    return np.hstack([x, (num[:, [8]] > 0).astype(float), cat])


def make_lr(C):
    n = len(NUMERIC) + 1
    pre = ColumnTransformer([
        ("num", StandardScaler(), list(range(n))),
        ("cat", OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=10), list(range(n, n + len(CATEGORICAL)))),
    ])
    return Pipeline([("pre", pre), ("lr", LogisticRegression(C=C, max_iter=5000))])


def make_xgb(jobs, n_estimators=300, max_depth=4, learning_rate=0.05, min_child_weight=1.0, subsample=1.0):
    return xgboost.XGBClassifier(n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate,
                                 min_child_weight=min_child_weight, subsample=subsample, tree_method="hist",
                                 n_jobs=jobs, random_state=0, verbosity=0)


def make_hgb(max_iter=100, learning_rate=0.1, max_leaf_nodes=31, l2_regularization=0.0):
    # Month and VisitorType as native categoricals (columns 10 and 15 of the tree matrix).
    mask = [False] * len(NUMERIC) + [True, False, False, False, False, True, False]
    return HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=learning_rate, max_leaf_nodes=max_leaf_nodes,
                                          l2_regularization=l2_regularization, categorical_features=mask,
                                          early_stopping=False, random_state=0)


def peers(jobs):
    """name -> (matrix kind, stated factory, grid of factories with labels)."""
    return {
        "logistic_regression": ("linear", lambda: make_lr(1.0),
                                [(f"C={C}", (lambda C=C: make_lr(C))) for C in (0.01, 0.1, 1.0, 10.0)]),
        "xgboost": ("tree", lambda: make_xgb(jobs),
                    [(f"depth={d},lr={lr},trees={n}", (lambda d=d, lr=lr, n=n: make_xgb(jobs, n, d, lr)))
                     for d, lr, n in ((3, 0.05, 300), (4, 0.05, 300), (6, 0.05, 300), (4, 0.02, 600),
                                      (3, 0.1, 300), (6, 0.02, 600))]),
        "hist_gradient_boosting": ("tree", lambda: make_hgb(),
                                   [(f"lr={lr},leaves={l},iter={it},l2={l2}",
                                     (lambda lr=lr, l=l, it=it, l2=l2: make_hgb(it, lr, l, l2)))
                                    for lr, l, it, l2 in ((0.1, 31, 100, 0.0), (0.05, 15, 200, 0.0), (0.05, 31, 200, 1.0),
                                                          (0.03, 15, 400, 1.0))]),
    }


def best_accuracy_threshold(p, y):
    """Midpoint cut maximizing accuracy; among ties the median cut (as cartpulse's)."""
    order = np.argsort(p, kind="mergesort")
    ps, ys = p[order], y[order]
    correct = ys.sum()
    best, cuts = correct, [ps[0] - 1e-6]
    i = 0
    while i < len(ps):
        s = ps[i]
        while i < len(ps) and ps[i] == s:
            correct += -1 if ys[i] else 1
            i += 1
        cut = (s + ps[i]) / 2 if i < len(ps) else s + 1e-6
        if correct > best:
            best, cuts = correct, [cut]
        elif correct == best:
            cuts.append(cut)
    return cuts[len(cuts) // 2]


def fit_predict(factory, x_tr, y_tr, x_te):
    m = factory()
    m.fit(x_tr, y_tr)
    return m.predict_proba(x_te)[:, 1]


def tuned(grid, x_tr, y_tr, x_te, seed):
    """Choose a config by inner-fold log-loss, refit on all training rows."""
    inner = StratifiedKFold(INNER_FOLDS, shuffle=True, random_state=seed)
    best = None
    for label, factory in grid:
        oof = np.zeros(len(y_tr))
        for a, b in inner.split(x_tr, y_tr):
            oof[b] = fit_predict(factory, x_tr[a], y_tr[a], x_tr[b])
        loss = log_loss(y_tr, np.clip(oof, 1e-7, 1 - 1e-7))
        if best is None or loss < best[0]:
            best = (loss, label, factory, oof)
    _, label, factory, oof = best
    return fit_predict(factory, x_tr, y_tr, x_te), best_accuracy_threshold(oof, y_tr), label


def oracle_accuracy(p, y):
    """Accuracy at the best cut chosen on these very labels: an upper bound on
    what any threshold rule could reach with these scores, never a figure."""
    order = np.argsort(p, kind="mergesort")
    ps, ys = p[order], y[order]
    # Cutting before sorted position i (only where the score changes):
    # negatives below plus positives at or above.
    neg_below = np.concatenate([[0], np.cumsum(1 - ys)])
    pos_above = ys.sum() - np.concatenate([[0], np.cumsum(ys)])
    allowed = np.concatenate([[True], ps[1:] != ps[:-1], [True]])
    return float((neg_below + pos_above)[allowed].max() / len(p))


def needed_gain(d, n_test, n_train, alpha=0.05):
    """The smallest mean difference the corrected t-test would call
    significant at this spread of per-fold differences."""
    d = np.asarray(d, dtype=float)
    j = len(d)
    return float(stats.t.ppf(1 - alpha / 2, df=j - 1) * math.sqrt((1.0 / j + n_test / n_train) * d.var(ddof=1)))


def nadeau_bengio(d, n_test, n_train):
    d = np.asarray(d, dtype=float)
    j = len(d)
    mean, var = d.mean(), d.var(ddof=1)
    denom = math.sqrt((1.0 / j + n_test / n_train) * var) if var > 0 else 0.0
    if denom == 0.0:
        return mean, float("inf") if mean != 0 else 0.0, 0.0 if mean != 0 else 1.0
    t = mean / denom
    p = 2 * stats.t.sf(abs(t), df=j - 1)
    return mean, t, p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--folds", required=True, help="cartpulse train --folds-out")
    ap.add_argument("--oof", required=True, help="cartpulse train --oof-out")
    ap.add_argument("--jobs", type=int, default=1, help="XGBoost threads")
    ap.add_argument("--no-tuning", action="store_true", help="stated hyperparameters only")
    ap.add_argument("--peers-cache", help="JSON file of the peers' per-fold figures: read if it exists (folds it "
                    "holds are not refitted), written as folds are done; the peers do not depend on cartpulse's "
                    "scores, so one run of them serves any configuration on the same data and folds")
    args = ap.parse_args()
    cache = {}
    if args.peers_cache and os.path.exists(args.peers_cache):
        with open(args.peers_cache) as f:
            cache = json.load(f)

    num, cat, y = load(args.data)
    n = len(y)
    x_lin = linear_matrix(num, cat)
    x_tree = np.hstack([num, cat])
    folds = {}
    with open(args.folds, newline="") as f:
        for r in csv.DictReader(f):
            folds.setdefault(int(r["seed"]), np.zeros(n, dtype=int))[int(r["row"])] = int(r["fold"])
    ours = {}
    with open(args.oof, newline="") as f:
        for r in csv.DictReader(f):
            s = int(r["seed"])
            if s not in ours:
                ours[s] = (np.zeros(n), np.zeros(n), np.zeros(n, dtype=int))
            i = int(r["row"])
            ours[s][0][i] = float(r["score"])
            ours[s][1][i] = float(r["threshold"])
            ours[s][2][i] = int(r["fold"])
            assert int(r["label"]) == y[i], f"row {i}: label differs from {args.data}"
    seeds = sorted(folds)
    assert seeds == sorted(ours), f"folds seeds {seeds} vs scores seeds {sorted(ours)}"
    for s in seeds:
        assert (ours[s][2] == folds[s]).all(), f"seed {s}: --oof-out folds differ from --folds-out"
    k = int(max(folds[seeds[0]]) + 1)

    models = peers(args.jobs)
    variants = [(name, "stated") for name in models] + ([] if args.no_tuning else [(name, "tuned") for name in models])
    per_fold = {("cartpulse", ""): []}
    for v in variants:
        per_fold[v] = []
    chosen = {v: [] for v in variants}
    sizes = []
    t_start = time.monotonic()
    for s in seeds:
        for f in range(k):
            te = np.where(folds[s] == f)[0]
            tr = np.where(folds[s] != f)[0]
            sizes.append((len(te), len(tr)))
            p, thr = ours[s][0][te], ours[s][1][te]
            per_fold[("cartpulse", "")].append(
                {"seed": s, "fold": f, "accuracy": float(((p >= thr) == (y[te] == 1)).mean()),
                 "auc": roc_auc_score(y[te], p), "oracle_accuracy": oracle_accuracy(p, y[te])})
            for name, kind in variants:
                key = f"{name}|{kind}|{s}|{f}|{len(te)}|{int(y[te].sum())}|{int(te[:50].sum())}"
                if key in cache:
                    row, label = cache[key]
                else:
                    mat, stated_factory, grid = models[name]
                    x = x_lin if mat == "linear" else x_tree
                    t0 = time.monotonic()
                    if kind == "stated":
                        q, cut, label = fit_predict(stated_factory, x[tr], y[tr], x[te]), 0.5, "stated"
                    else:
                        q, cut, label = tuned(grid, x[tr], y[tr], x[te], seed=s * 100 + f)
                    row = {"seed": s, "fold": f, "accuracy": float(((q >= cut) == (y[te] == 1)).mean()),
                           "auc": roc_auc_score(y[te], q), "seconds": time.monotonic() - t0}
                    cache[key] = (row, label)
                chosen[(name, kind)].append(label)
                per_fold[(name, kind)].append(row)
            if args.peers_cache:
                with open(args.peers_cache + ".tmp", "w") as out_cache:
                    json.dump(cache, out_cache)
                os.replace(args.peers_cache + ".tmp", args.peers_cache)
            print(f"seed {s} fold {f + 1}/{k} done ({time.monotonic() - t_start:.0f} s)", file=sys.stderr, flush=True)

    n_test = np.mean([a for a, _ in sizes])
    n_train = np.mean([b for _, b in sizes])

    def summary(rows):
        by_seed = {}
        for r in rows:
            by_seed.setdefault(r["seed"], []).append(r)
        acc = np.array([np.mean([r["accuracy"] for r in v]) for v in by_seed.values()])
        auc = np.array([np.mean([r["auc"] for r in v]) for v in by_seed.values()])
        sd = lambda a: float(a.std(ddof=1)) if len(a) > 1 else 0.0
        return {"accuracy": float(acc.mean()), "accuracy_repeat_std": sd(acc), "worst_accuracy": float(acc.min()),
                "auc": float(auc.mean()), "auc_repeat_std": sd(auc), "worst_auc": float(auc.min())}

    ours_rows = per_fold[("cartpulse", "")]
    out = {"repeats": len(seeds), "seeds": seeds, "folds": k, "cartpulse": summary(ours_rows), "peers": {},
           "versions": {"scikit-learn": sklearn.__version__, "xgboost": xgboost.__version__, "numpy": np.__version__,
                        "scipy": scipy.__version__}}
    print(f"{len(seeds)} repeat(s) x {k} folds on seeds {seeds[0]}..{seeds[-1]}; scikit-learn {sklearn.__version__}, "
          f"xgboost {xgboost.__version__}")
    print(f"{'model':<32} {'accuracy (± repeat std, worst)':<32} {'auc (± repeat std, worst)':<30} "
          f"{'Δacc':>8} {'p':>7} {'Δauc':>8} {'p':>7}  verdict")
    c = out["cartpulse"]
    c["oracle_accuracy"] = float(np.mean([r["oracle_accuracy"] for r in ours_rows]))
    print(f"{'cartpulse':<32} {c['accuracy']:.4f} ± {c['accuracy_repeat_std']:.4f} ({c['worst_accuracy']:.4f})"
          f"{'':<6} {c['auc']:.4f} ± {c['auc_repeat_std']:.4f} ({c['worst_auc']:.4f})")
    for v in variants:
        rows = per_fold[v]
        sm = summary(rows)
        d_acc = [a["accuracy"] - b["accuracy"] for a, b in zip(ours_rows, rows)]
        d_auc = [a["auc"] - b["auc"] for a, b in zip(ours_rows, rows)]
        ma, ta, pa = nadeau_bengio(d_acc, n_test, n_train)
        mu, tu, pu = nadeau_bengio(d_auc, n_test, n_train)
        beats_acc = ma > 0 and pa < 0.05
        beats_auc = mu > 0 and pu < 0.05
        verdict = "beats on both" if beats_acc and beats_auc else (
            "beats on accuracy" if beats_acc else "beats on AUC" if beats_auc else "no significant win")
        label = f"{v[0]} ({v[1]})"
        print(f"{label:<32} {sm['accuracy']:.4f} ± {sm['accuracy_repeat_std']:.4f} ({sm['worst_accuracy']:.4f})"
              f"{'':<6} {sm['auc']:.4f} ± {sm['auc_repeat_std']:.4f} ({sm['worst_auc']:.4f})    "
              f"{ma:+.4f} {pa:7.4f} {mu:+.4f} {pu:7.4f}  {verdict}")
        counts = {}
        for lab in chosen[v]:
            counts[lab] = counts.get(lab, 0) + 1
        need_acc, need_auc = needed_gain(d_acc, n_test, n_train), needed_gain(d_auc, n_test, n_train)
        out["peers"][label] = {**sm, "diff_accuracy": ma, "t_accuracy": ta, "p_accuracy": pa, "diff_auc": mu,
                               "needed_gain_accuracy": need_acc, "needed_gain_auc": need_auc,
                               "t_auc": tu, "p_auc": pu, "beats_accuracy": bool(beats_acc),
                               "beats_auc": bool(beats_auc), "chosen": counts,
                               "per_fold_diff_accuracy": d_acc, "per_fold_diff_auc": d_auc,
                               "seconds": float(sum(r["seconds"] for r in rows))}
    print(f"cartpulse with the best threshold of each held-out fold chosen on its own labels (an upper bound on "
          f"any threshold rule, not a figure): accuracy {c['oracle_accuracy']:.4f}")
    for label, v in out["peers"].items():
        print(f"smallest mean gain over {label} the corrected test would call significant at the observed spread: "
              f"accuracy {v['needed_gain_accuracy']:+.4f}, AUC {v['needed_gain_auc']:+.4f}")
    best = max(out["peers"].items(), key=lambda kv: (kv[1]["accuracy"], kv[1]["auc"])) if out["peers"] else None
    if best:
        out["best_peer"] = best[0]
        out["beats_best_peer"] = best[1]["beats_accuracy"] and best[1]["beats_auc"]
        best_auc = max(out["peers"].items(), key=lambda kv: kv[1]["auc"])
        out["best_auc_peer"] = best_auc[0]
        out["beats_best_auc_peer_on_auc"] = best_auc[1]["beats_auc"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
