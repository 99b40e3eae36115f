"""Can a better blend or a learned re-ranker beat the best tuned peer by 2% NDCG@10? A probe,
not a model.

For each data set: the components `cli.fit_models` would ship (self-tuned, fitted on the whole
training part), the current Hybrid, and three challengers, all chosen on the tuner's
validation split of the training part only (`cli.tune_models`' prefit: the validation users,
their fit-part histories, their held-out items and each component's best trial model):

(a) linear blends with a finer weight grid under three per-user normalisations: peak (the
    Hybrid's), z-score over the user's unseen items, reciprocal rank 1 / (10 + rank);
(b) two-stage: candidates = union of each component's top N unseen items; per candidate each
    component's raw, peak- and z-normalised score and log rank within that component's top N
    (missing: log(2N)), log item popularity share and log history length; re-ranked by a
    LightGBM LGBMRanker (lambdarank, early stopping on a fifth of the validation users) or by
    a logistic regression on the same features (L2 chosen on the same fifth). Features at
    training time come from the validation models, at test time from the final models.

Protocol as quality.py: users with >= 5 interactions, random_holdout(0.2, seed=42), top 10
excluding training items, binary gains. Ratios are to the best tuned peer's test NDCG@10
(measured by quality.py's protocol, given below).

    python trainer/bench/ltr_probe.py [--sets ml100k,steam,synthetic] [--n-cand 50]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import scipy.optimize as so
import scipy.sparse as sp

import recsys_core as rc
from recsys_core.data import from_frame
from recsys_core.metrics import ndcg_at_k, ranking_metrics
from recsys_core.splits import filter_min_interactions, random_holdout
from recsys_trainer import cli, config
from recsys_trainer.evaluate import accuracy, evaluation_users
from recsys_trainer.tuning import Validation

K = 10
SEED = 42
DATA = Path("/work/shared/datasets")
SETS = {
    "ml100k": DATA / "ml-100k" / "u.data",
    "steam": DATA / "steam-200k-play" / "steam-200k-play.csv",
    "synthetic": None,
}
PEER = {  # best tuned peer's test NDCG@10 on this protocol
    "ml100k": ("EASE", 0.4523),
    "steam": ("EASE", 0.2932),
    "synthetic": ("implicit ALS", 0.1471),
}
GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0)
NORMS = ("peak", "z", "rank")
BATCH = 1000


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load(name: str):
    if SETS[name] is None:
        from recsys_trainer.synthetic import generate

        df, _ = generate()
        inter = from_frame(df)
    else:
        inter = cli.load_data(SETS[name], config.load())
    return filter_min_interactions(inter, 5)


# -- per-user normalisations ----------------------------------------------------------------


def normalise(s: np.ndarray, seen: np.ndarray, kind: str) -> np.ndarray:
    """``s`` (users x items) normalised per row; ``seen`` a boolean mask of history items."""
    s = s.astype(np.float32, copy=False)
    if kind == "peak":  # as Hybrid: by the largest |score| over all items
        peak = np.abs(s).max(axis=1, keepdims=True)
        peak[peak == 0] = 1.0
        return s / peak
    unseen = ~seen
    n = np.maximum(unseen.sum(axis=1, keepdims=True), 1)
    if kind == "z":
        mean = np.where(unseen, s, 0).sum(axis=1, keepdims=True) / n
        var = np.where(unseen, (s - mean) ** 2, 0).sum(axis=1, keepdims=True) / n
        sd = np.sqrt(var)
        sd[sd == 0] = 1.0
        return (s - mean) / sd
    if kind == "rank":  # 1 / (10 + rank among unseen items), rank 0 = best
        order = np.argsort(-np.where(seen, -np.inf, s), axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(s.shape[1])[None, :], axis=1)
        return (1.0 / (10.0 + rank)).astype(np.float32)
    raise ValueError(kind)


def topk(scores: np.ndarray, history: sp.csr_matrix, k: int = K) -> np.ndarray:
    top = rc.select_topk(np.ascontiguousarray(scores, np.float32), k, exclude=history)
    out = np.full((scores.shape[0], k), -1, np.int64)
    indptr = np.asarray(top.indptr)
    items = np.asarray(top.items)
    for r in range(scores.shape[0]):
        got = items[indptr[r] : indptr[r + 1]][:k]
        out[r, : len(got)] = got
    return out


# -- (a) linear blends ----------------------------------------------------------------------


def search_blend(parts: dict[str, np.ndarray], history, rel, start: dict[str, float]):
    names = sorted(parts)

    def quality(w):
        if not any(w[n] > 0 for n in names):
            return 0.0
        blend = sum(w[n] * parts[n] for n in names if w[n] > 0)
        return ndcg_at_k(topk(blend, history), rel, K)

    w = {n: float(start.get(n, 0.0)) for n in names}
    best = quality(w)
    for _ in range(3):
        before = best
        for n in names:
            for g in GRID:
                trial = w | {n: g}
                q = quality(trial)
                if q > best + 1e-9:
                    best, w = q, trial
        if best <= before + 1e-9:
            break
    return w, best


# -- (b) candidates and features ------------------------------------------------------------


def candidates_and_features(raw: dict[str, np.ndarray], history, pop_log, n_cand):
    """Per user: candidate items (union of each component's top ``n_cand`` unseen) and their
    feature matrix. ``raw``: component -> (users x items) scores for these users."""
    names = sorted(raw)
    seen = history.toarray() > 0
    hist_len = np.log1p(np.diff(history.indptr))
    peak = {n: normalise(raw[n], seen, "peak") for n in names}
    z = {n: normalise(raw[n], seen, "z") for n in names}
    tops = {}
    for n in names:
        s = np.where(seen, -np.inf, raw[n])
        part = np.argpartition(-s, n_cand, axis=1)[:, :n_cand]
        order = np.argsort(-np.take_along_axis(s, part, 1), axis=1, kind="stable")
        tops[n] = np.take_along_axis(part, order, 1)
    cands, feats = [], []
    miss = np.log(2.0 * n_cand)
    for r in range(history.shape[0]):
        c = np.unique(np.concatenate([tops[n][r] for n in names]))
        cols = []
        for n in names:
            rank = np.full(raw[n].shape[1], miss, np.float32)
            rank[tops[n][r]] = np.log1p(np.arange(n_cand))
            cols += [raw[n][r, c], peak[n][r, c], z[n][r, c], rank[c]]
        cols += [pop_log[c], np.full(len(c), hist_len[r], np.float32)]
        cands.append(c)
        feats.append(np.column_stack(cols).astype(np.float32))
    return cands, feats


def feature_names(names):
    out = []
    for n in sorted(names):
        out += [f"{n}_raw", f"{n}_peak", f"{n}_z", f"{n}_logrank"]
    return [*out, "log_pop_share", "log_hist_len"]


def rerank(cands, feats, predict) -> np.ndarray:
    out = np.full((len(cands), K), -1, np.int64)
    for r, (c, f) in enumerate(zip(cands, feats, strict=True)):
        if len(c) == 0:
            continue
        p = predict(f)
        top = c[np.argsort(-p, kind="stable")[:K]]
        out[r, : len(top)] = top
    return out


class Logistic:
    """L2-regularised logistic regression on standardised features (scipy L-BFGS)."""

    def __init__(self, l2: float) -> None:
        self.l2 = l2

    def fit(self, x: np.ndarray, y: np.ndarray) -> Logistic:
        self.mu, self.sd = x.mean(0), x.std(0)
        self.sd[self.sd == 0] = 1.0
        xs = np.column_stack([(x - self.mu) / self.sd, np.ones(len(x))]).astype(np.float64)
        ys = y.astype(np.float64)
        lam = self.l2

        def f(w):
            z = xs @ w
            loss = np.logaddexp(0, z).sum() - ys @ z + 0.5 * lam * (w[:-1] @ w[:-1])
            g = xs.T @ (1 / (1 + np.exp(-z)) - ys)
            g[:-1] += lam * w[:-1]
            return loss, g

        self.w = so.minimize(f, np.zeros(xs.shape[1]), jac=True, method="L-BFGS-B").x
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mu) / self.sd) @ self.w[:-1] + self.w[-1]


def labels(cands, rel):
    return [np.isin(c, r).astype(np.int32) for c, r in zip(cands, rel, strict=True)]


# -- one data set ---------------------------------------------------------------------------


def run(name: str, n_cand: int, lat_users: int) -> list[tuple]:
    inter = load(name)
    train, test = random_holdout(inter, 0.2, seed=SEED)
    say(f"{name}: {inter.n_users} users, {inter.n_items} items, {len(inter)} interactions")
    peer_name, peer = PEER[name]
    rows: list[tuple] = []  # (label, ndcg, recall, added train s, note)

    t0 = time.perf_counter()
    cfg, records, prefit = cli.tune_models(train, config.load(), cli.ALL)
    tune_s = time.perf_counter() - t0
    models = cli.build_models(cfg, cli.ALL, records, prefit, train)
    fit_s = {}
    for n, m in models.items():
        t0 = time.perf_counter()
        m.fit(train)
        fit_s[n] = time.perf_counter() - t0
    say(f"{name}: tuned in {tune_s:.1f}s, fitted {fit_s}")
    hybrid = models.pop("hybrid")
    comps = {n: m for n, m in models.items() if n in prefit[3]}
    for n, m in comps.items():
        a = accuracy(m, train, test, K)
        rows.append((n, a["ndcg@10"], a["recall@10"], fit_s[n], "component"))
    a = accuracy(hybrid, train, test, K)
    hyb_row = ["hybrid (current)", a["ndcg@10"], a["recall@10"], fit_s["hybrid"], ""]
    rows.append(hyb_row)
    # the same weights without the cold-start fallback (popularity + item-CF below 5 items)
    warm = hybrid.with_weights({})
    warm.config = dataclasses.replace(hybrid.config, cold_start_threshold=0)
    a = accuracy(warm, train, test, K)
    n_cold = int((np.diff(train.to_csr().indptr) < hybrid.config.cold_start_threshold).sum())
    note = f"{n_cold} users have < {hybrid.config.cold_start_threshold} training items"
    rows.append(("hybrid, no cold-start fallback", a["ndcg@10"], a["recall@10"], 0.0, note))

    # -- validation side: val users, fit-part histories, held-out items, val-fit models -----
    vusers, vhist, vrel, vmodels = prefit
    vhist = sp.csr_matrix(vhist)
    t0 = time.perf_counter()
    # the fit part is not returned: the same seeded split the tuner made, for item counts
    fit_part = Validation(train, cfg.tuning).fit_part
    assert np.array_equal(Validation(train, cfg.tuning).users, vusers)
    vfit_pop = np.bincount(fit_part.item_idx, minlength=train.n_items)
    vraw = {n: np.asarray(m.score(vusers, vhist), np.float32) for n, m in vmodels.items()}
    vseen = vhist.toarray() > 0
    val_score_s = time.perf_counter() - t0

    # the fifth of the validation users the rankers stop on; every method is also scored on
    # it (the blends' weights saw these users, the rankers only stopped on them)
    stop = np.random.default_rng(SEED).random(len(vusers)) < 0.2
    stop_idx = np.flatnonzero(stop)
    stop_rel = [vrel[i] for i in stop_idx]

    def stop_ndcg(parts, w):
        blend = sum(w[n] * parts[n][stop_idx] for n in parts if w.get(n, 0) > 0)
        return ndcg_at_k(topk(np.asarray(blend, np.float32), vhist[stop_idx]), stop_rel, K)

    hyb_stop = stop_ndcg({n: normalise(s, vseen, "peak") for n, s in vraw.items()}, hybrid.weights_)

    hyb_row[4] = (
        f"val {hybrid.validation_ndcg_:.4f}, val(stop) {hyb_stop:.4f}; {_w(hybrid.weights_)}"
    )
    rows[rows.index(hyb_row)] = tuple(hyb_row)

    # (a) blends
    a_results = {}
    for kind in NORMS:
        t0 = time.perf_counter()
        parts = {n: normalise(s, vseen, kind) for n, s in vraw.items()}
        start = dict(hybrid.weights_) if kind == "peak" else {n: 1.0 for n in parts}
        w, vq = search_blend(parts, vhist, vrel, start)
        a_results[kind] = (w, vq, time.perf_counter() - t0 + val_score_s, stop_ndcg(parts, w))
        say(f"{name}: (a) {kind}: val ndcg {vq:.4f} weights {_w(w)}")
    del parts

    # (b) training data from the validation models
    t0 = time.perf_counter()
    vcands, vfeats = candidates_and_features(
        vraw, vhist, np.log((vfit_pop + 1) / len(fit_part)).astype(np.float32), n_cand
    )
    vlab = labels(vcands, vrel)
    feat_s = time.perf_counter() - t0 + val_score_s
    del vraw
    cover = np.mean([lab.sum() / len(r) for lab, r in zip(vlab, vrel, strict=True)])
    keep = np.array([lab.any() for lab in vlab])  # users without a positive teach nothing

    def stack(mask):
        idx = np.flatnonzero(mask & keep)
        return (
            np.vstack([vfeats[i] for i in idx]),
            np.concatenate([vlab[i] for i in idx]),
            [len(vcands[i]) for i in idx],
        )

    xtr, ytr, gtr = stack(~stop)
    xes, yes, ges = stack(stop)
    names = feature_names(vmodels)
    norm_cols = [i for i, f in enumerate(names) if not f.endswith("_raw")]

    def val_ndcg(predict):
        recs = rerank([vcands[i] for i in stop_idx], [vfeats[i] for i in stop_idx], predict)
        return ndcg_at_k(recs, stop_rel, K)

    def train_lgb(cols):
        t0 = time.perf_counter()
        params = {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [K],
            "learning_rate": 0.05,
            "num_leaves": 15,
            "min_data_in_leaf": 50,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "feature_fraction": 0.8,
            "lambda_l2": 1.0,
            "seed": SEED,
            "deterministic": True,
            "num_threads": 2,
            "verbose": -1,
        }
        fn = [names[i] for i in cols]
        dtr = lgb.Dataset(xtr[:, cols], ytr, group=gtr, feature_name=fn)
        des = lgb.Dataset(xes[:, cols], yes, group=ges, reference=dtr)
        booster = lgb.train(
            params,
            dtr,
            num_boost_round=1000,
            valid_sets=[des],
            callbacks=[lgb.early_stopping(50, verbose=False)],
        )
        it = booster.best_iteration

        def predict(f, threads=2):
            return booster.predict(f[:, cols], num_iteration=it, num_threads=threads)

        seconds = time.perf_counter() - t0 + feat_s
        q = val_ndcg(predict)
        gain = booster.feature_importance("gain")
        top = ", ".join(fn[i] for i in np.argsort(-gain)[:3])
        return predict, seconds, q, f"val(stop) {q:.4f}, {it} trees; top gain: {top}"

    rankers = {
        f"(b) LightGBM N={n_cand}": train_lgb(list(range(len(names)))),
        f"(b) LightGBM N={n_cand}, no raw scores": train_lgb(norm_cols),
    }
    t0 = time.perf_counter()
    lin_best = None
    for l2 in (0.1, 10.0, 1000.0):
        lm = Logistic(l2).fit(xtr, ytr)
        q = val_ndcg(lm.predict)
        if lin_best is None or q > lin_best[1]:
            lin_best = (lm, q, l2)
    lin, lin_val, lin_l2 = lin_best
    rankers[f"(b) logistic N={n_cand}"] = (
        lambda f, threads=1: lin.predict(f),
        time.perf_counter() - t0 + feat_s,
        lin_val,
        f"val(stop) {lin_val:.4f}, l2={lin_l2:g}",
    )
    for label, r in rankers.items():
        say(f"{name}: {label}: {r[3]}")
    say(f"{name}: candidates hold {cover:.3f} of val held-out items")

    # -- test side: the final models ---------------------------------------------------------
    users, rel = evaluation_users(train, test)
    hist_all = train.to_csr()
    pop_log = np.log((np.bincount(train.item_idx, minlength=train.n_items) + 1) / len(train))
    pop_log = pop_log.astype(np.float32)
    recs = {k: [] for k in [f"a_{kind}" for kind in NORMS] + list(rankers)}
    cover_t = []
    for lo in range(0, len(users), BATCH):
        bu = users[lo : lo + BATCH]
        bh = hist_all[bu]
        raw = {n: np.asarray(m.score(bu, bh), np.float32) for n, m in comps.items()}
        seen = bh.toarray() > 0
        for kind in NORMS:
            w = a_results[kind][0]
            blend = sum(w[n] * normalise(raw[n], seen, kind) for n in raw if w.get(n, 0) > 0)
            recs[f"a_{kind}"].append(topk(np.asarray(blend, np.float32), bh))
        cands, feats = candidates_and_features(raw, bh, pop_log, n_cand)
        brel = rel[lo : lo + BATCH]
        cover_t += [np.isin(r, c).mean() for c, r in zip(cands, brel, strict=True)]
        for label, r in rankers.items():
            recs[label].append(rerank(cands, feats, r[0]))
    test_m = {k: ranking_metrics(np.vstack(v), rel, K) for k, v in recs.items()}
    best_a = max(NORMS, key=lambda kind: a_results[kind][1])
    for kind in NORMS:
        w, vq, s, sq = a_results[kind]
        mark = " <- chosen on val" if kind == best_a else ""
        m = test_m[f"a_{kind}"]
        note = f"val {vq:.4f}, val(stop) {sq:.4f}; {_w(w)}{mark}"
        rows.append((f"(a) blend, {kind}", m["ndcg@10"], m["recall@10"], s, note))
    for label, r in rankers.items():
        m = test_m[label]
        rows.append((label, m["ndcg@10"], m["recall@10"], r[1], r[3]))

    # -- single-user cost of (b) and of the current hybrid -----------------------------------
    lat = np.sort(np.random.default_rng(0).choice(users, min(lat_users, len(users)), False))
    times = {label: [] for label in rankers} | {"hybrid": []}
    for u in lat:
        row = hist_all[u : u + 1]
        ua = np.array([u])
        for label, r in rankers.items():
            t0 = time.perf_counter()
            raw = {n: np.asarray(m.score(ua, row), np.float32) for n, m in comps.items()}
            c, f = candidates_and_features(raw, row, pop_log, n_cand)
            rerank(c, f, lambda x, r=r: r[0](x, threads=1))
            times[label].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        hybrid.recommend(ua, row, K, exclude_seen=True)
        times["hybrid"].append(time.perf_counter() - t0)
    ms = {k: 1e3 * float(np.median(v[1:] if len(v) > 1 else v)) for k, v in times.items()}
    ncand = np.mean([len(c) for c in vcands])
    rows = [(*r, ms.get(r[0])) for r in rows]
    rows = [(*r[:5], ms["hybrid"]) if r[0] == "hybrid (current)" else r for r in rows]
    extra = (
        f"Candidates: mean {ncand:.0f} per user (val); they hold {cover:.3f} (val) / "
        f"{np.mean(cover_t):.3f} (test) of the held-out items. ms/user: p50 of one user at a "
        f"time over {len(lat)} test users: for (b) the components' scores + top N + features "
        "+ predict (1 thread), for the hybrid its `recommend`. Tuning (shared by all, not in "
        f"the added times): {tune_s:.1f}s."
    )
    return rows, peer_name, peer, extra


def _w(w: dict[str, float]) -> str:
    return " ".join(f"{n}={v:g}" for n, v in sorted(w.items()) if v > 0)


def table(name, rows, peer_name, peer, extra) -> str:
    out = [
        f"\n## {name} (best peer {peer_name} {peer:.4f}; target >= {1.02 * peer:.4f})\n",
        "| model | NDCG@10 | x peer | Recall@10 | added train (s) | ms/user | notes |",
        "|:--|--:|--:|--:|--:|--:|:--|",
    ]
    for label, nd, rc_, s, note, ms in rows:
        lat = "" if ms is None else f"{ms:.2f}"
        out.append(
            f"| {label} | {nd:.4f} | {nd / peer:.3f} | {rc_:.4f} | {s:.1f} | {lat} | {note} |"
        )
    out.append("")
    out.append(extra)
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sets", default="ml100k,steam,synthetic")
    ap.add_argument("--n-cand", type=int, default=50)
    ap.add_argument("--latency-users", type=int, default=100)
    a = ap.parse_args()
    outs = []
    for name in a.sets.split(","):
        rows, pn, p, extra = run(name, a.n_cand, a.latency_users)
        outs.append(table(name, rows, pn, p, extra))
        print(outs[-1], flush=True)
    print("\n".join(outs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
