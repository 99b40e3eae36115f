"""Side-by-side offline quality of recsys-engine's recommenders and well-known peers.

    python trainer/bench/quality.py --ml100k PATH/u.data [--out docs/quality.md] [--quick]

MovieLens 100k protocol: every rating is a positive (weight 1); users with >= 5 interactions;
a seeded per-user 80/20 holdout (``random_holdout(inter, 0.2, seed=42)``); top 10, training
items excluded. Every model, ours and the peers, is tuned on a validation split carved from the
training part only (``random_holdout(train, 0.2, seed=7)``) by NDCG@10 over a small grid, then
refitted on the whole training part with the best parameters and evaluated once on test.

Peers: implicit's CosineRecommender, BM25Recommender and AlternatingLeastSquares (benchmark-only
dependency, never imported by recsys_trainer), a plain cosine user-KNN, EASE and popularity by
count (numpy/scipy, below).

Then the same comparison, untuned (defaults), of our models and popularity by count on the
default synthetic data set (``recsys_trainer.synthetic.generate()``).

``--quick`` is a smoke run: at most 3 configurations per model and a synthetic set a tenth of
the size; ``--max-configs N`` caps the grids without shrinking the data. The output is a
Markdown report (``--out``); ``--report-dir`` also writes each comparison's
report.json/report.md/report.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import math
import os
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

TRAINER = Path(__file__).resolve().parents[1]
REPO = TRAINER.parent
if str(TRAINER) not in sys.path:
    sys.path.insert(0, str(TRAINER))

import recsys_core as rc  # noqa: E402
from recsys_trainer.catalog import load_catalog  # noqa: E402
from recsys_trainer.data import Interactions, from_frame, load_interactions  # noqa: E402
from recsys_trainer.evaluate import Report, accuracy, compare  # noqa: E402
from recsys_trainer.models import (  # noqa: E402
    SVD,
    Hybrid,
    HybridConfig,
    ItemCF,
    ItemCFConfig,
    Popularity,
    PopularityConfig,
    Recommender,
    SVDConfig,
    UserCF,
    UserCFConfig,
)
from recsys_trainer.splits import filter_min_interactions, random_holdout  # noqa: E402

K = 10
TEST_SEED = 42
VAL_SEED = 7
GRID_SEED = 0
T0 = time.perf_counter()
LOAD_AT_START = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Peers, behind the same interface as our models (fit / recommend) so `compare` runs them.


class Peer(Recommender):
    """A benchmark-only model: fit, score or recommend, params; nothing persisted."""

    name = "peer"

    def __init__(self, **params: Any) -> None:
        self.config_ = dict(params)

    def params(self) -> dict[str, Any]:
        return dict(self.config_)

    def explain(self, user, history, items):
        raise NotImplementedError

    def _arrays(self):
        raise NotImplementedError

    def _restore(self, arrays):
        raise NotImplementedError

    @classmethod
    def from_params(cls, params):
        return cls(**params)


class CountPopularity(Peer):
    """Items ranked by their number of interactions (rows) in train."""

    name = "pop_count"

    def fit(self, train: Interactions):
        self.n_users, self.n_items = train.n_users, train.n_items
        self.counts_ = np.bincount(train.item_idx, minlength=train.n_items).astype(np.float32)
        return self

    def score(self, users, history):
        return np.broadcast_to(self.counts_, (len(users), self.n_items)).copy()


class CosineUserKNN(Peer):
    """sim = normalised X @ X.T, each row's top k kept (self excluded), scores = sim @ X."""

    name = "user_knn"

    def fit(self, train: Interactions):
        self.n_users, self.n_items = train.n_users, train.n_items
        x = train.to_csr().astype(np.float64)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        xn = sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)) @ x
        sim = np.asarray((xn @ xn.T).todense())
        np.fill_diagonal(sim, 0.0)
        k = min(int(self.config_["k"]), self.n_users - 1)
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        rows = np.repeat(np.arange(self.n_users), k)
        vals = sim[rows, top.ravel()]
        self.sim_ = sp.csr_matrix(
            (vals, (rows, top.ravel())), shape=(self.n_users, self.n_users), dtype=np.float32
        )
        self.sim_.eliminate_zeros()
        self.x_ = sp.csr_matrix(x, dtype=np.float32)
        return self

    def score(self, users, history):
        return np.asarray((self.sim_[np.asarray(users)] @ self.x_).toarray(), dtype=np.float32)


class EASE(Peer):
    """Steck's EASE: B = I - P / diag(P), P = (X^T X + lambda I)^-1; scores = X B."""

    name = "ease"

    def fit(self, train: Interactions):
        self.n_users, self.n_items = train.n_users, train.n_items
        x = train.to_csr().astype(np.float64)
        g = np.asarray((x.T @ x).todense())
        g[np.diag_indices_from(g)] += float(self.config_["lam"])
        p = np.linalg.inv(g)
        b = p / (-np.diag(p))[None, :]
        np.fill_diagonal(b, 0.0)
        self.b_ = b.astype(np.float32)
        return self

    def score(self, users, history):
        return np.asarray(sp.csr_matrix(history, dtype=np.float32) @ self.b_, dtype=np.float32)


class ImplicitPeer(Peer):
    """A model of the `implicit` package (0.7 API): fit(user_items), recommend(userids,
    user_items[userids], N, filter_already_liked_items)."""

    def __init__(self, kind: str, **params: Any) -> None:
        super().__init__(**params)
        self.kind = kind
        self.name = f"implicit_{kind}"

    def params(self):
        return dict(self.config_)

    def _make(self):
        if self.kind == "cosine":
            from implicit.nearest_neighbours import CosineRecommender

            return CosineRecommender(K=self.config_["K"], num_threads=2)
        if self.kind == "bm25":
            from implicit.nearest_neighbours import BM25Recommender

            c = self.config_
            return BM25Recommender(K=c["K"], K1=c["K1"], B=c["B"], num_threads=2)
        if self.kind == "als":
            from implicit.cpu.als import AlternatingLeastSquares

            c = self.config_
            return AlternatingLeastSquares(
                factors=c["factors"],
                regularization=c["regularization"],
                alpha=c["alpha"],
                iterations=c.get("iterations", 15),
                num_threads=2,
                random_state=42,
            )
        raise ValueError(self.kind)

    def fit(self, train: Interactions):
        from threadpoolctl import threadpool_limits

        self.n_users, self.n_items = train.n_users, train.n_items
        self.model = self._make()
        # implicit asks for single-threaded BLAS; its k-NN models convert their own COO.
        with threadpool_limits(1, "blas"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Method expects CSR input")
            self.model.fit(train.to_csr(), show_progress=False)
        return self

    def score(self, users, history):
        raise NotImplementedError

    def recommend(self, users, history, k=10, *, exclude_seen=True, allow=None, deny=None):
        ids, scores = self.model.recommend(
            np.asarray(users, dtype=np.int32),
            sp.csr_matrix(history, dtype=np.float32),
            N=k,
            filter_already_liked_items=exclude_seen,
        )
        ids, scores = np.atleast_2d(ids), np.atleast_2d(scores)
        valid = (ids >= 0) & np.isfinite(scores)
        indptr = np.concatenate([[0], np.cumsum(valid.sum(axis=1))]).astype(np.int64)
        return rc.BatchRecommendations(
            indptr, ids[valid].astype(np.int32), scores[valid].astype(np.float32)
        )


# ---------------------------------------------------------------------------------------------
# Grids


@dataclass
class Entry:
    """One model of the comparison: how to build it from a parameter dict, the grid."""

    label: str
    family: str  # "ours" or "peer"
    build: Callable[[dict[str, Any]], Recommender]
    grid: list[dict[str, Any]]
    chosen: dict[str, Any] = field(default_factory=dict)
    val_ndcg: float = math.nan
    trials: list[tuple[dict[str, Any], float, float]] = field(default_factory=list)


def sample(grid: list[dict[str, Any]], n: int, seed: int, first: dict | None = None) -> list:
    """``first`` (e.g. the model's defaults) then up to n - 1 other configurations drawn
    without replacement (all of them when the grid is small)."""
    rest = [g for g in grid if g != first]
    picks = [first] if first is not None else []
    m = max(n - len(picks), 0)
    if len(rest) <= m:
        return picks + rest
    idx = np.sort(np.random.default_rng(seed).choice(len(rest), m, replace=False))
    return picks + [rest[i] for i in idx]


def product(**axes: list) -> list[dict[str, Any]]:
    keys = list(axes)
    return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*axes.values())]


def itemcf_grid() -> list[dict[str, Any]]:
    ks, shrinks = [50, 100, 200, 400], [0.0, 10.0]
    grid = product(
        weighting=["bm25"],
        measure=["dot"],
        k_neighbors=ks,
        shrink=shrinks,
        bm25_k1=[0.6, 1.2],
        bm25_b=[0.5, 0.75, 0.9],
    )
    for w in ("tfidf", "none"):
        grid += product(weighting=[w], measure=["cosine"], k_neighbors=ks, shrink=shrinks)
    return grid


def mf_grid() -> list[dict[str, Any]]:
    return product(
        n_factors=[32, 64, 100, 128], regularization=[0.01, 0.1, 1.0, 10.0], alpha=[1.0, 5.0, 20.0]
    )


def entries(budget: int | None) -> list[Entry]:
    def n(default: int) -> int:
        return default if budget is None else min(default, budget)

    itemcf_default = {
        key: getattr(ItemCFConfig(), key)
        for key in ("weighting", "measure", "k_neighbors", "shrink", "bm25_k1", "bm25_b")
    }
    svd_default = {
        key: getattr(SVDConfig(), key) for key in ("n_factors", "regularization", "alpha")
    }
    # The same 16 factorisation configurations (ours' defaults first) for SVD and implicit ALS.
    mf = sample(mf_grid(), n(16), GRID_SEED, first=svd_default)
    als = [
        {"factors": c["n_factors"], "regularization": c["regularization"], "alpha": c["alpha"]}
        for c in mf
    ]

    def itemcf(p: dict) -> Recommender:
        c = dict(p)
        if c["weighting"] != "bm25":  # k1/b only matter for bm25
            c.pop("bm25_k1", None)
            c.pop("bm25_b", None)
        return ItemCF(ItemCFConfig(**c))

    return [
        Entry(
            "popularity",
            "ours",
            lambda p: Popularity(PopularityConfig(**p)),
            sample(product(half_life_days=[7.0, 30.0, 90.0, 365.0, math.inf]), n(5), GRID_SEED),
        ),
        Entry(
            "user_cf",
            "ours",
            lambda p: UserCF(UserCFConfig(**p)),
            sample(product(k_neighbors=[25, 50, 100, 200], shrink=[0.0, 10.0]), n(8), GRID_SEED),
        ),
        Entry(
            "item_cf",
            "ours",
            itemcf,
            sample(itemcf_grid(), n(64), GRID_SEED, first=itemcf_default),
        ),
        Entry(
            "svd",
            "ours",
            lambda p: SVD(SVDConfig(iterations=15, **p)),
            mf,
        ),
        Entry("pop_count", "peer", lambda p: CountPopularity(), [{}]),
        Entry(
            "user_knn",
            "peer",
            lambda p: CosineUserKNN(**p),
            sample(product(k=[25, 50, 100, 200]), n(4), GRID_SEED, first={"k": 100}),
        ),
        Entry(
            "implicit_cosine",
            "peer",
            lambda p: ImplicitPeer("cosine", **p),
            sample(product(K=[10, 20, 50, 100, 200, 400]), n(6), GRID_SEED, first={"K": 20}),
        ),
        Entry(
            "implicit_bm25",
            "peer",
            lambda p: ImplicitPeer("bm25", **p),
            sample(
                product(K=[20, 50, 100, 200, 400], K1=[0.6, 1.2], B=[0.5, 0.75, 0.9]),
                n(30),
                GRID_SEED,
                first={"K": 20, "K1": 1.2, "B": 0.75},
            ),
        ),
        Entry(
            "implicit_als",
            "peer",
            lambda p: ImplicitPeer("als", **p),
            als,
        ),
        Entry(
            "ease",
            "peer",
            lambda p: EASE(**p),
            sample(product(lam=[100.0, 250.0, 500.0, 1000.0]), n(4), GRID_SEED),
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Tuning and evaluation


def tune(entry: Entry, fit_part: Interactions, val_part: Interactions) -> None:
    best = -math.inf
    for params in entry.grid:
        t0 = time.perf_counter()
        model = entry.build(params).fit(fit_part)
        secs = time.perf_counter() - t0
        ndcg = accuracy(model, fit_part, val_part, K)[f"ndcg@{K}"]
        entry.trials.append((params, ndcg, secs))
        say(f"  {entry.label} {fmt_params(params)}: val ndcg@{K}={ndcg:.4f} ({secs:.2f}s)")
        if ndcg > best:
            best, entry.chosen = ndcg, params
    entry.val_ndcg = best


def fmt_params(p: dict[str, Any]) -> str:
    def v(x: Any) -> str:
        if isinstance(x, float):
            return "inf" if math.isinf(x) else f"{x:g}"
        return str(x)

    return ", ".join(f"{k}={v(x)}" for k, x in p.items()) or "–"


def ml100k(path: Path) -> tuple[Interactions, Any]:
    raw = load_interactions(path, format="ml-100k")
    inter = Interactions(
        user_idx=raw.user_idx,
        item_idx=raw.item_idx,
        weight=np.ones(len(raw), np.float32),  # every rating is a positive
        timestamp=raw.timestamp,
        user_ids=raw.user_ids,
        item_ids=raw.item_ids,
    )
    inter = filter_min_interactions(inter, min_user=5, min_item=1)
    item_file = path.with_name("u.item")
    feats = None
    if item_file.exists():
        feats = load_catalog(item_file).category_matrix(inter.item_ids)
    return inter, feats


def hybrid_with(by_label: dict[str, Entry]) -> Hybrid:
    def cfg(label: str, cls, **extra):
        return cls(**(by_label[label].chosen | extra))

    ic = dict(by_label["item_cf"].chosen)
    if ic.get("weighting") != "bm25":
        ic.pop("bm25_k1", None)
        ic.pop("bm25_b", None)
    return Hybrid(
        HybridConfig(),
        components=Hybrid.default_components(
            item_cf=ItemCFConfig(**ic),
            user_cf=cfg("user_cf", UserCFConfig),
            svd=cfg("svd", SVDConfig, iterations=15),
            popularity=cfg("popularity", PopularityConfig),
        ),
    )


def run_ml100k(path: Path, budget: int | None, report_dir: Path | None):
    inter, feats = ml100k(path)
    train, test = random_holdout(inter, 0.2, seed=TEST_SEED)
    fit_part, val_part = random_holdout(train, 0.2, seed=VAL_SEED)
    say(
        f"ML-100k: {inter.n_users} users, {inter.n_items} items, {len(inter)} ratings; "
        f"train {len(train)}, test {len(test)}; validation fit {len(fit_part)}, val {len(val_part)}"
    )
    ents = entries(budget)
    for e in ents:
        say(f"tuning {e.label} ({len(e.grid)} configurations)")
        tune(e, fit_part, val_part)
    by_label = {e.label: e for e in ents}

    # Hybrid: its own weight tuning (inside fit, on a split of whatever it is fitted on) over
    # the tuned components. Its validation score is measured the same way as the others'.
    say("hybrid: validation fit")
    hyb_val = hybrid_with(by_label).fit(fit_part)
    hyb_val_ndcg = accuracy(hyb_val, fit_part, val_part, K)[f"ndcg@{K}"]
    say(f"  hybrid: val ndcg@{K}={hyb_val_ndcg:.4f} weights={hyb_val.weights_}")

    ours = ["popularity", "user_cf", "item_cf", "svd"]
    peers = ["pop_count", "user_knn", "implicit_cosine", "implicit_bm25", "implicit_als", "ease"]
    models: dict[str, Recommender] = {}
    for label in ours:
        models[label] = by_label[label].build(by_label[label].chosen)
    models["hybrid"] = hybrid_with(by_label)
    for label in peers:
        models[label] = by_label[label].build(by_label[label].chosen)
    say("final: refit on the whole training part, evaluate on test")
    report = compare(
        models,
        train,
        test,
        k=K,
        item_features=feats,
        dataset="MovieLens 100k (every rating a positive)",
        split=f"random_holdout(0.2, seed={TEST_SEED}), users >= 5 interactions",
        progress=say,
    )
    hybrid_weights = report.params["hybrid"].get("tuned_weights", {})
    chosen = {e.label: fmt_params(e.chosen) for e in ents}
    chosen["hybrid"] = "weights " + fmt_params(hybrid_weights)
    val = {e.label: f"{e.val_ndcg:.4f}" for e in ents} | {"hybrid": f"{hyb_val_ndcg:.4f}"}
    if report_dir is not None:
        report.write(report_dir / "ml100k")
    return report, ents, chosen, val


def run_synthetic(quick: bool, report_dir: Path | None) -> Report:
    from recsys_trainer.synthetic import generate

    if quick:
        df, catalog = generate(n_users=2_000, n_items=1_000, n_interactions=50_000)
        name = "synthetic (quick: 2k users x 1k items x 50k events)"
    else:
        df, catalog = generate()
        name = "synthetic defaults (10k users x 5k items x 500k events)"
    inter = filter_min_interactions(from_frame(df), min_user=5, min_item=1)
    train, test = random_holdout(inter, 0.2, seed=TEST_SEED)
    say(f"synthetic: {inter.n_users} users, {inter.n_items} items, {len(inter)} events")
    models: dict[str, Recommender] = {
        "popularity": Popularity(),
        "user_cf": UserCF(),
        "item_cf": ItemCF(),
        "svd": SVD(),
        "hybrid": Hybrid(),
        "pop_count": CountPopularity(),
    }
    report = compare(
        models,
        train,
        test,
        k=K,
        item_features=catalog.category_matrix(inter.item_ids),
        dataset=name + ", event weights",
        split=f"random_holdout(0.2, seed={TEST_SEED}), users >= 5 events",
        progress=say,
    )
    if report_dir is not None:
        report.write(report_dir / "synthetic")
    return report


# ---------------------------------------------------------------------------------------------
# Targets and the Markdown report


# The peers the issue names (implicit's three and count popularity) plus the plain user-KNN the
# User-CF target needs. EASE is run too, as the reference level the issue quotes, and reported
# in its own row (`REFERENCE`), outside the pass/fail targets.
PEERS = ("pop_count", "user_knn", "implicit_cosine", "implicit_bm25", "implicit_als")
REFERENCE = "ease"


def targets(report: Report) -> list[tuple[str, str, float, float, bool]]:
    """(target, compared with, ours, bar, pass) on NDCG@10."""
    v = {m: report.value(m, "ndcg") for m in report.models}
    knn = max(("implicit_cosine", "implicit_bm25"), key=lambda m: v[m])
    best_peer = max(PEERS, key=lambda m: v[m])
    rows = [
        ("Item-CF ≥ best peer item-KNN", knn, v["item_cf"], v[knn]),
        ("User-CF ≥ plain cosine user-KNN", "user_knn", v["user_cf"], v["user_knn"]),
        ("SVD ≥ implicit ALS", "implicit_als", v["svd"], v["implicit_als"]),
        ("Hybrid ≥ 1.02 × best peer", best_peer, v["hybrid"], 1.02 * v[best_peer]),
        (
            "Popularity ≥ 0.97 × count popularity",
            "pop_count",
            v["popularity"],
            0.97 * v["pop_count"],
        ),
    ]
    return [(t, ref, ours, bar, ours >= bar) for t, ref, ours, bar in rows]


def synthetic_checks(report: Report) -> list[tuple[str, bool]]:
    v = {m: report.value(m, "ndcg") for m in report.models}
    pop = max(v["popularity"], v["pop_count"])
    out = [
        (f"{m} ≥ 1.10 × best popularity ({v[m]:.4f} vs {1.1 * pop:.4f})", v[m] >= 1.1 * pop)
        for m in ("user_cf", "item_cf", "svd", "hybrid")
    ]
    best_other = max((m for m in v if m != "hybrid"), key=lambda m: v[m])
    out.append(
        (
            f"hybrid best ({v['hybrid']:.4f} vs {best_other} {v[best_other]:.4f})",
            v["hybrid"] >= v[best_other],
        )
    )
    return out


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    import implicit
    import scipy

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    return (
        f"{cpu}, {os.cpu_count()} cores{mem}; 1-min load average {LOAD_AT_START:.1f} at the "
        f"start, {load:.1f} at the end (times are wall clock: compare them only between runs "
        "on an idle machine); "
        f"{platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"implicit {implicit.__version__}"
    )


MAIN_COLUMNS = ["ndcg", "precision", "recall", "map", "hit_rate", "coverage", "train_time_s"]
SIDE_COLUMNS = ["diversity", "novelty", "latency_p50_ms", "latency_p99_ms"]


def render(
    command: str,
    quick: bool,
    budget: int | None,
    ml: tuple[Report, list[Entry], dict, dict] | None,
    syn: Report | None,
) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Recommendation quality",
        "",
        "Generated by `trainer/bench/quality.py`; do not edit by hand, rerun it.",
        "",
        f"- **Command**: `{command}`",
        f"- **Date**: {now}",
        f"- **Machine**: {machine()}",
    ]
    if budget is not None and not quick:
        out.append(f"- **Capped grids** (`--max-configs {budget}`): not the full protocol.")
    if quick:
        out.append(
            "- **QUICK RUN** (`--quick`): at most 3 configurations per model, small synthetic set."
        )
    if ml is not None:
        report, ents, chosen, val = ml
        p = report.protocol
        out += [
            "",
            "## MovieLens 100k",
            "",
            "### Protocol",
            "",
            "- Every rating is a positive (weight 1); users with >= 5 interactions "
            f"({p['n_users']} users, {p['n_items']} items).",
            f"- Split: per-user random 80/20 holdout of each user's items, "
            f"`random_holdout(inter, 0.2, seed={TEST_SEED})`: {p['n_train_interactions']} train, "
            f"{p['n_test_interactions']} test interactions, {p['n_users_evaluated']} users "
            f"evaluated (data fingerprint `{p['fingerprint']}`).",
            f"- Top {K}, training items excluded; relevant = the user's test items. "
            "NDCG/MAP with binary gains (`recsys_trainer.metrics`).",
            f"- Tuning, for every model (ours and peers): a validation split carved from the "
            f"training part only, `random_holdout(train, 0.2, seed={VAL_SEED})`; each grid "
            f"configuration is fitted on its 80% and scored by NDCG@{K} on its 20%; the best is "
            "refitted on the whole training part and evaluated once on test. Every grid includes "
            "the model's default configuration. The k-NN grids are small enough to run whole "
            "(Item-CF: weighting×measure {bm25+dot, tfidf+cosine, none+cosine} × k {50, 100, "
            "200, 400} × shrink {0, 10} × (bm25 only) k1 {0.6, 1.2} × b {0.5, 0.75, 0.9}: 64; "
            "BM25: K {20, 50, 100, 200, 400} × K1 {0.6, 1.2} × B {0.5, 0.75, 0.9}: 30); SVD and "
            "implicit ALS get the same 16 configurations (the SVD default plus 15 drawn, seeded, "
            "from factors {32, 64, 100, 128} × regularization {0.01, 0.1, 1, 10} × alpha "
            "{1, 5, 20}; 15 iterations). All trials are listed at the end.",
            "- Hybrid: `Hybrid(HybridConfig(), components=Hybrid.default_components(...))` with "
            "the tuned Item-CF, User-CF, SVD and Popularity configurations; its blend weights "
            "come from its own internal tuning inside `fit` (coordinate ascent on a split of "
            "the data it is fitted on).",
            "- Peers: implicit "
            "`CosineRecommender`, `BM25Recommender`, `AlternatingLeastSquares` (0.7 API, "
            "2 threads; confidence alpha·r there vs 1 + alpha·r in ours); `user_knn` = plain "
            "cosine user-KNN (numpy/scipy: sim = normalised X Xᵀ, top k per row without self, "
            "scores = sim X); `ease` = EASE (B = I − P/diag(P), P = (XᵀX + λI)⁻¹); "
            "`pop_count` = popularity by interaction count.",
            f"- Diversity (ILD) uses the MovieLens genres; novelty = mean −log2 of the item's "
            "share of training interactions; train time is wall clock of `fit` on the whole "
            "training part (Hybrid's includes its weight tuning); latency = one `recommend` call "
            f"per user ({p['latency']}).",
            "",
            "### Results (test)",
            "",
            report.markdown_table(
                MAIN_COLUMNS,
                extra={"val NDCG@10": val, "chosen params": chosen},
            ),
            "",
            "Best value per column in **bold** (lowest for times).",
            "",
            "### Targets (NDCG@10 on test)",
            "",
            "| Target | Ours | Bar | Compared with | Result |",
            "|:---|---:|---:|:---|:---|",
        ]
        for t, ref, ours, bar, ok in targets(report):
            out.append(
                f"| {t} | {ours:.4f} | {bar:.4f} | {ref} ({report.value(ref, 'ndcg'):.4f}) | "
                f"{'PASS' if ok else '**FAIL**'} |"
            )
        hyb, ref = report.value("hybrid", "ndcg"), report.value(REFERENCE, "ndcg")
        out += [
            "",
            f"Reference, not a target: the issue quotes EASE at about 0.43 on this protocol; "
            f"ours, with λ tuned like every model, reaches {ref:.4f}, and the Hybrid is "
            f"{hyb / ref:.3f} × that (1.02 × would be {1.02 * ref:.4f}). Blends that include EASE "
            "itself do not get there: `trainer/bench/blend_probe.py` (results in "
            "docs/trainer.md, *Hybrid and EASE*) finds every blend within 0.002 of EASE on test.",
        ]
        out += [
            "",
            "### Beyond accuracy and serving cost (test)",
            "",
            report.markdown_table(SIDE_COLUMNS),
            "",
            "### Tuning trials (validation NDCG@10, best first)",
            "",
        ]
        for e in ents:
            rows = sorted(e.trials, key=lambda t: -t[1])
            out += [
                f"<details><summary>{e.label}: {len(rows)} configurations</summary>",
                "",
                "| params | val NDCG@10 | fit (s) |",
                "|:---|---:|---:|",
            ]
            out += [f"| {fmt_params(pr)} | {nd:.4f} | {s:.2f} |" for pr, nd, s in rows]
            out += ["", "</details>", ""]
    if syn is not None:
        p = syn.protocol
        out += [
            "",
            "## Synthetic data (defaults, untuned)",
            "",
            f"`recsys_trainer.synthetic.generate()` ({p['dataset']}), weights from the event "
            "types (view 1, click 2, cart 4, purchase 8); users with >= 5 events; "
            f"`random_holdout(inter, 0.2, seed={TEST_SEED})`; {p['n_users_evaluated']} users "
            f"evaluated (fingerprint `{p['fingerprint']}`); every model with its default "
            "configuration (Hybrid tunes its weights inside `fit`). ILD uses the catalog "
            "categories.",
            "",
            syn.markdown_table(MAIN_COLUMNS + SIDE_COLUMNS),
            "",
            "Checks (NDCG@10): "
            + "; ".join(f"{t}: {'PASS' if ok else '**FAIL**'}" for t, ok in synthetic_checks(syn)),
        ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ml100k", type=Path, help="MovieLens 100k u.data")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "quality.md")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny grids, small synthetic")
    ap.add_argument("--no-synthetic", action="store_true", help="skip the synthetic comparison")
    ap.add_argument("--report-dir", type=Path, help="also write report.json/md/png here")
    ap.add_argument(
        "--max-configs", type=int, help="cap every grid (the default config plus a seeded draw)"
    )
    args = ap.parse_args(argv)
    if args.ml100k is None and args.no_synthetic:
        ap.error("nothing to do: give --ml100k or drop --no-synthetic")
    script = Path(__file__).resolve()
    if script.is_relative_to(Path.cwd()):
        script = script.relative_to(Path.cwd())
    command = shlex.join(["python", str(script), *argv])
    budget = 3 if args.quick else args.max_configs
    ml = run_ml100k(args.ml100k, budget, args.report_dir) if args.ml100k else None
    syn = None if args.no_synthetic else run_synthetic(args.quick, args.report_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(command, args.quick, budget, ml, syn))
    say(f"wrote {args.out}")
    if ml is not None:
        for t, _ref, ours, bar, ok in targets(ml[0]):
            print(f"{'PASS' if ok else 'FAIL'}  {t}: {ours:.4f} vs {bar:.4f}")
    if syn is not None:
        for t, ok in synthetic_checks(syn):
            print(f"{'PASS' if ok else 'FAIL'}  synthetic: {t}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
