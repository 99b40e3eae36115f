"""Can a blend that includes EASE beat EASE by 2% on ML-100k? A probe, not a model.

Scores every component (our tuned Item-CF, User-CF, SVD, plus EASE and RP3beta) on the
quality benchmark's validation split, searches blend weights on it under three per-user
normalisations (max, z-score over unseen items, reciprocal rank), and reports the best
weights' NDCG@10 on test next to each component alone. Same protocol as quality.py.

    python trainer/bench/blend_probe.py --ml100k ../shared/datasets/ml-100k/u.data
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import EASE, TEST_SEED, VAL_SEED, ml100k

from recsys_core.metrics import ndcg_at_k
from recsys_core.models.item_cf import ItemCF, ItemCFConfig
from recsys_core.models.svd import SVD, SVDConfig
from recsys_core.models.user_cf import UserCF, UserCFConfig
from recsys_core.splits import random_holdout, relevant_items

K = 10
GRID = (0.0, 0.25, 0.5, 1.0, 2.0)


class RP3Beta(EASE):
    """Item-item random walk P_iu P_ui, divided by popularity^beta (Paudel et al.)."""

    name = "rp3beta"

    def fit(self, train):
        self.n_users, self.n_items = train.n_users, train.n_items
        x = train.to_csr().astype(np.float64)
        x.data[:] = 1.0
        deg_u = np.maximum(np.asarray(x.sum(1)).ravel(), 1)
        deg_i = np.maximum(np.asarray(x.sum(0)).ravel(), 1)
        w = np.asarray(((sp.diags(1 / deg_i) @ x.T) @ (sp.diags(1 / deg_u) @ x)).todense())
        w /= deg_i[None, :] ** self.config_["beta"]
        np.fill_diagonal(w, 0.0)
        self.b_ = w.astype(np.float32)
        return self


def components():
    # The configurations quality.py's tuning chose (docs/quality.md).
    return {
        "svd": SVD(SVDConfig(n_factors=100, regularization=30, alpha=2)),
        "ease": EASE(lam=500),
        "user_cf": UserCF(UserCFConfig(k_neighbors=100, shrink=10)),
        "item_cf": ItemCF(
            ItemCFConfig(weighting="bm25", measure="dot", k_neighbors=400, bm25_k1=0.6, bm25_b=0.5)
        ),
        "rp3beta": RP3Beta(beta=0.5),
    }


def scores(fit, held):
    rel = relevant_items(held)
    users = np.flatnonzero([len(r) > 0 for r in rel])
    hist = fit.to_csr()[users]
    out = {
        n: np.asarray(m.fit(fit).score(users, hist), np.float64) for n, m in components().items()
    }
    return out, hist, [rel[u] for u in users]


def ndcg(s, hist, rel):
    s = s.copy()
    s[hist.nonzero()] = -np.inf
    top = np.argpartition(-s, K, axis=1)[:, :K]
    order = np.argsort(-np.take_along_axis(s, top, 1), 1)
    return ndcg_at_k(np.take_along_axis(top, order, 1), rel, K)


def normalise(s, hist, kind):
    seen = np.zeros(s.shape, bool)
    seen[hist.nonzero()] = True
    if kind == "max":
        return s / np.maximum(np.abs(s).max(1, keepdims=True), 1e-12)
    if kind == "z":
        m = np.ma.array(s, mask=seen)
        return (s - m.mean(1).data[:, None]) / np.maximum(m.std(1).data[:, None], 1e-12)
    s = np.where(seen, -np.inf, s)  # reciprocal rank, as in RRF
    return 1.0 / (np.argsort(np.argsort(-s, 1), 1) + 20.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ml100k", type=Path, required=True, help="MovieLens 100k u.data")
    args = ap.parse_args()
    inter, _ = ml100k(args.ml100k)
    train, test = random_holdout(inter, 0.2, seed=TEST_SEED)
    fit_part, val_part = random_holdout(train, 0.2, seed=VAL_SEED)
    val, test_ = scores(fit_part, val_part), scores(train, test)
    names = list(val[0])
    print("| model | val NDCG@10 | test NDCG@10 |\n|:---|---:|---:|")
    for n in names:
        v, t = ndcg(val[0][n], *val[1:]), ndcg(test_[0][n], *test_[1:])
        print(f"| {n} | {v:.4f} | {t:.4f} |")
    print("\n| blend (norm) | weights (svd = 1) | val NDCG@10 | test NDCG@10 |")
    print("|:---|:---|---:|---:|")
    for kind in ("max", "z", "rank"):
        v = {n: normalise(val[0][n], val[1], kind) for n in names}
        t = {n: normalise(test_[0][n], test_[1], kind) for n in names}
        best, weights = -1.0, None
        for w in itertools.product(GRID, repeat=len(names) - 1):
            w = (1.0, *w)
            q = ndcg(sum(wi * v[n] for wi, n in zip(w, names, strict=True)), *val[1:])
            if q > best:
                best, weights = q, w
        q = ndcg(sum(wi * t[n] for wi, n in zip(weights, names, strict=True)), *test_[1:])
        ws = ", ".join(f"{n}={w:g}" for n, w in zip(names, weights, strict=True))
        print(f"| {kind} | {ws} | {best:.4f} | {q:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
