"""Side-by-side offline quality: recsys-engine's default training vs tuned open-source peers.

    python trainer/bench/quality.py [--ml100k PATH/u.data] [--steam PATH/steam-200k-play.csv]
        [--peers-cache FILE] [--ours-only] [--out docs/quality.md] [--quick]

Data sets: MovieLens 100k and the Steam play log when their paths are given (never copied into
the repository), and always the default synthetic set (``recsys_trainer.synthetic.generate()``).
Each is read the way ``recsys-train train`` reads it (``load_interactions`` with no flags:
MovieLens ratings and Steam hours are the weights), then users with >= 5 interactions are kept.

Protocol: a seeded per-user 80/20 holdout (``random_holdout(inter, 0.2, seed=42)``); top 10,
training items excluded; binary gains (every held-out item is relevant).

Ours: exactly what ``recsys-train train`` fits, ``cli.fit_models(train, config.load(), ALL)``,
timed whole (its own tuning included); no per-data-set settings.

Peers: implicit's AlternatingLeastSquares, BayesianPersonalizedRanking, CosineRecommender and
BM25Recommender (benchmark-only dependency, never imported by recsys_trainer), EASE, a plain
cosine user-KNN and popularity by count. Each is tuned by NDCG@10 on a validation split carved
from the training part only (``random_holdout(train, 0.2, seed=7)``), its grid including the
weight transform it is fed (raw, log1p or binary), then refitted on the whole training part.

Tuned peers are cached (``--peers-cache``, a JSON file keyed by the data's fingerprint, the
grids, the protocol and the peers' code), so rerunning to re-measure our rows costs only our
fits; ``--ours-only`` refuses to tune and fails when a data set's peers are not cached.
``--quick`` is a smoke run (3 configurations per peer, a small synthetic set).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import inspect
import itertools
import json
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

import sections  # noqa: E402

import recsys_core as rc  # noqa: E402
from recsys_core.catalog import load_catalog  # noqa: E402
from recsys_core.data import Interactions, from_frame, load_interactions  # noqa: E402
from recsys_core.models import Recommender  # noqa: E402
from recsys_core.splits import filter_min_interactions, random_holdout  # noqa: E402
from recsys_trainer import cli  # noqa: E402
from recsys_trainer import config as config_mod  # noqa: E402
from recsys_trainer.evaluate import Report, accuracy, compare, fingerprint  # noqa: E402

K = 10
MIN_USER = 5
TEST_SEED = 42
VAL_SEED = 7
GRID_SEED = 0
THREADS = 2
DEFAULT_CACHE = Path("/tmp/recsys-quality-peers.json")
T0 = time.perf_counter()
LOAD_AT_START = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan

OURS = ("popularity", "user_cf", "item_cf", "svd", "hybrid")
PEERS = (
    "pop_count",
    "user_knn",
    "implicit_cosine",
    "implicit_bm25",
    "implicit_als",
    "implicit_bpr",
    "ease",
)
# (family, our model, the peers it is measured against, bar on ours / best peer)
FAMILIES = (
    ("Popularity", "popularity", ("pop_count",), 1.00),
    ("User-CF", "user_cf", ("user_knn",), 1.00),
    ("Item-CF", "item_cf", ("implicit_cosine", "implicit_bm25"), 1.00),
    ("SVD", "svd", ("implicit_als", "implicit_bpr"), 1.00),
    ("Hybrid", "hybrid", PEERS, 1.02),
)


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Peers, behind the interface `compare` and `accuracy` use (fit, recommend, params).

WEIGHTS = ("raw", "log1p", "binary")


def transform(x: sp.csr_matrix, how: str) -> sp.csr_matrix:
    """The user x item matrix a peer is fed: raw weights (ratings, hours), log1p or binary."""
    x = sp.csr_matrix(x, dtype=np.float32, copy=True)
    x.eliminate_zeros()
    if how == "log1p":
        x.data = np.log1p(x.data)
    elif how == "binary":
        x.data[:] = 1.0
    elif how != "raw":
        raise ValueError(how)
    return x


class Peer(Recommender):
    """A benchmark-only model: fit on the (transformed) training matrix, score histories
    transformed the same way; nothing persisted."""

    name = "peer"

    def __init__(self, **params: Any) -> None:
        self.config_ = dict(params)

    def params(self) -> dict[str, Any]:
        return dict(self.config_)

    def matrix(self, x: sp.spmatrix) -> sp.csr_matrix:
        return transform(x, self.config_.get("weights", "raw"))

    def fit(self, train: Interactions):
        self.n_users, self.n_items = train.n_users, train.n_items
        self.fit_matrix(self.matrix(train.to_csr()))
        return self

    def fit_matrix(self, x: sp.csr_matrix) -> None:
        raise NotImplementedError

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

    def fit_matrix(self, x: sp.csr_matrix) -> None:
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        xn = sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)) @ x
        xt = sp.csr_matrix(xn.T)
        k = min(int(self.config_["k"]), self.n_users - 1)
        rows, cols, vals = [], [], []
        # Blocks of rows, so the dense similarity never holds more than ~16M floats.
        step = max(1, (1 << 24) // max(self.n_users, 1))
        for lo in range(0, self.n_users, step):
            hi = min(lo + step, self.n_users)
            sim = np.asarray((xn[lo:hi] @ xt).todense())
            sim[np.arange(hi - lo), np.arange(lo, hi)] = 0.0
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            r = np.repeat(np.arange(hi - lo), k)
            rows.append(r + lo)
            cols.append(top.ravel())
            vals.append(sim[r, top.ravel()])
        self.sim_ = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(self.n_users, self.n_users),
            dtype=np.float32,
        )
        self.sim_.eliminate_zeros()
        self.x_ = x

    def score(self, users, history):
        # Neighbours' training rows: the user's own history only enters through `sim_`.
        return np.asarray((self.sim_[np.asarray(users)] @ self.x_).toarray(), dtype=np.float32)


class EASE(Peer):
    """Steck's EASE: B = I - P / diag(P), P = (X^T X + lambda I)^-1; scores = X B."""

    name = "ease"

    def fit_matrix(self, x: sp.csr_matrix) -> None:
        g = np.asarray((x.T @ x).todense(), dtype=np.float64)
        g[np.diag_indices_from(g)] += float(self.config_["lam"])
        p = np.linalg.inv(g)
        b = p / (-np.diag(p))[None, :]
        np.fill_diagonal(b, 0.0)
        self.b_ = b.astype(np.float32)

    def score(self, users, history):
        return np.asarray(self.matrix(history) @ self.b_, dtype=np.float32)


class ImplicitPeer(Peer):
    """A model of the `implicit` package (0.7 API): fit(user_items), recommend(userids,
    user_items[userids], N, filter_already_liked_items)."""

    def __init__(self, kind: str, **params: Any) -> None:
        super().__init__(**params)
        self.kind = kind
        self.name = f"implicit_{kind}"

    def _make(self):
        c = self.config_
        if self.kind == "cosine":
            from implicit.nearest_neighbours import CosineRecommender

            return CosineRecommender(K=c["K"], num_threads=THREADS)
        if self.kind == "bm25":
            from implicit.nearest_neighbours import BM25Recommender

            return BM25Recommender(K=c["K"], K1=c["K1"], B=c["B"], num_threads=THREADS)
        if self.kind == "als":
            from implicit.cpu.als import AlternatingLeastSquares

            return AlternatingLeastSquares(
                factors=c["factors"],
                regularization=c["regularization"],
                alpha=c["alpha"],
                iterations=c["iterations"],
                num_threads=THREADS,
                random_state=42,
            )
        if self.kind == "bpr":
            from implicit.cpu.bpr import BayesianPersonalizedRanking

            return BayesianPersonalizedRanking(
                factors=c["factors"],
                learning_rate=c["learning_rate"],
                regularization=c["regularization"],
                iterations=c["iterations"],
                num_threads=THREADS,
                random_state=42,
            )
        raise ValueError(self.kind)

    def fit_matrix(self, x: sp.csr_matrix) -> None:
        from threadpoolctl import threadpool_limits

        self.model = self._make()
        # implicit asks for single-threaded BLAS; its k-NN models convert their own COO.
        with threadpool_limits(1, "blas"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Method expects CSR input")
            self.model.fit(x, show_progress=False)

    def score(self, users, history):
        raise NotImplementedError

    def recommend(self, users, history, k=10, *, exclude_seen=True, allow=None, deny=None):
        # The k-NN models score history @ similarity, so the history gets the same transform.
        ids, scores = self.model.recommend(
            np.asarray(users, dtype=np.int32),
            self.matrix(history),
            N=k,
            filter_already_liked_items=exclude_seen,
        )
        ids, scores = np.atleast_2d(ids), np.atleast_2d(scores)
        valid = (ids >= 0) & np.isfinite(scores)
        indptr = np.concatenate([[0], np.cumsum(valid.sum(axis=1))]).astype(np.int64)
        return rc.BatchRecommendations(
            indptr, ids[valid].astype(np.int32), scores[valid].astype(np.float32)
        )


class Fitted:
    """One of our models, already fitted by `cli.fit_models`: `compare` evaluates it as is."""

    def __init__(self, model: Recommender) -> None:
        self.model = model

    def fit(self, train: Interactions):
        return self

    def recommend(self, *args, **kwargs):
        return self.model.recommend(*args, **kwargs)

    def params(self) -> dict[str, Any]:
        return self.model.params()


# ---------------------------------------------------------------------------------------------
# Peer grids: small, each with the peer's usual defaults first; the weight transform is an axis.


@dataclass
class Entry:
    """One peer: how to build it from a parameter dict, its grid, what tuning found."""

    label: str
    build: Callable[[dict[str, Any]], Recommender]
    grid: list[dict[str, Any]]
    chosen: dict[str, Any] = field(default_factory=dict)
    val_ndcg: float = math.nan
    trials: list[tuple[dict[str, Any], float, float]] = field(default_factory=list)


def product(**axes: list) -> list[dict[str, Any]]:
    keys = list(axes)
    return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*axes.values())]


def sample(grid: list[dict[str, Any]], n: int, first: dict | None = None) -> list:
    """``first`` then up to n - 1 other configurations drawn, seeded, without replacement
    (all of them when the grid is small)."""
    rest = [g for g in grid if g != first]
    picks = [first] if first is not None else []
    m = max(n - len(picks), 0)
    if len(rest) <= m:
        return picks + rest
    idx = np.sort(np.random.default_rng(GRID_SEED).choice(len(rest), m, replace=False))
    return picks + [rest[i] for i in idx]


def entries(budget: int | None) -> list[Entry]:
    def n(default: int) -> int:
        return default if budget is None else min(default, budget)

    w = list(WEIGHTS)
    return [
        Entry("pop_count", lambda p: CountPopularity(), [{}]),
        Entry(
            "user_knn",
            lambda p: CosineUserKNN(**p),
            sample(
                product(k=[25, 50, 100, 200, 400], weights=w), n(15), {"k": 100, "weights": "raw"}
            ),
        ),
        Entry(
            "implicit_cosine",
            lambda p: ImplicitPeer("cosine", **p),
            sample(
                product(K=[10, 20, 50, 100, 200, 400, 800, 1600], weights=w),
                n(24),
                {"K": 20, "weights": "raw"},
            ),
        ),
        Entry(
            "implicit_bm25",
            lambda p: ImplicitPeer("bm25", **p),
            sample(
                product(
                    K=[20, 50, 100, 200, 400, 800, 1600],
                    K1=[0.6, 1.2],
                    B=[0.5, 0.75, 0.9],
                    weights=w,
                ),
                n(36),
                {"K": 20, "K1": 1.2, "B": 0.75, "weights": "raw"},
            ),
        ),
        Entry(
            "implicit_als",
            lambda p: ImplicitPeer("als", **p),
            sample(
                product(
                    factors=[16, 32, 64, 128],
                    regularization=[0.01, 0.1, 1.0, 10.0, 100.0],
                    alpha=[1.0, 5.0, 20.0],
                    iterations=[15],
                    weights=w,
                ),
                n(24),
                {"factors": 100, "regularization": 0.01, "alpha": 1.0, "iterations": 15}
                | {"weights": "raw"},
            ),
        ),
        # BPR samples positives and ignores the weights: no transform axis.
        Entry(
            "implicit_bpr",
            lambda p: ImplicitPeer("bpr", **p),
            sample(
                product(
                    factors=[16, 32, 64, 128],
                    learning_rate=[0.003, 0.01, 0.03, 0.1],
                    regularization=[0.001, 0.01, 0.1],
                    iterations=[25, 50, 100, 200],
                ),
                n(16),
                {"factors": 100, "learning_rate": 0.01, "regularization": 0.01, "iterations": 100},
            ),
        ),
        Entry(
            "ease",
            lambda p: EASE(**p),
            sample(product(lam=[50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0], weights=w), n(18)),
        ),
    ]


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


# ---------------------------------------------------------------------------------------------
# Data sets


@dataclass
class Dataset:
    key: str  # "ml100k", "steam", "synthetic"
    title: str
    weights: str  # what the weights are, for the report
    inter: Interactions
    features: Any  # item features for ILD, or None (then the training matrix's columns)


def load_ml100k(path: Path) -> Dataset:
    inter = filter_min_interactions(load_interactions(path), min_user=MIN_USER, min_item=1)
    item_file = path.with_name("u.item")
    feats = None
    if item_file.exists():
        feats = load_catalog(item_file).category_matrix(inter.item_ids)
    return Dataset("ml100k", "MovieLens 100k", "the 1-5 ratings", inter, feats)


def load_steam(path: Path) -> Dataset:
    inter = filter_min_interactions(load_interactions(path), min_user=MIN_USER, min_item=1)
    # The loader strips ids: two titles that differ only by a trailing space become one game.
    weights = (
        "hours played (0.1 to thousands); the file's 3,600 titles load as 3,598 games (ids "
        "are stripped of spaces) and its 601 repeated (user, game) rows add up"
    )
    return Dataset("steam", "Steam play log (steam-200k-play)", weights, inter, None)


def synthetic_set(quick: bool):
    """(title, interactions of users with >= MIN_USER, catalogue) of the synthetic set."""
    from recsys_trainer.synthetic import generate

    if quick:
        df, catalog = generate(n_users=2_000, n_items=1_000, n_interactions=50_000)
        title = "Synthetic (quick: 2k users x 1k items x 50k events)"
    else:
        df, catalog = generate()
        title = "Synthetic (defaults: 10k users x 5k items x 500k events)"
    inter = filter_min_interactions(from_frame(df), min_user=MIN_USER, min_item=1)
    return title, inter, catalog


def load_synthetic(quick: bool) -> Dataset:
    title, inter, catalog = synthetic_set(quick)
    return Dataset(
        "synthetic",
        title,
        "event-type weights (view 1, click 2, cart 4, purchase 8)",
        inter,
        catalog.category_matrix(inter.item_ids),
    )


SHARED = Path("/work/shared/datasets")


def add_shared_set_args(ap: argparse.ArgumentParser) -> None:
    """``--ml100k`` and ``--steam`` for a bench that defaults to the shared data sets."""
    ap.add_argument("--ml100k", type=Path, default=SHARED / "ml-100k" / "u.data")
    ap.add_argument(
        "--steam", type=Path, default=SHARED / "steam-200k-play" / "steam-200k-play.csv"
    )


def shared_sets(a: argparse.Namespace) -> list[Dataset]:
    """The data sets ``add_shared_set_args``' paths name that exist (a note for each one that
    does not), then the default synthetic set."""
    sets = []
    for name, path, load in (("ML-100k", a.ml100k, load_ml100k), ("Steam", a.steam, load_steam)):
        if path.exists():
            sets.append(load(path))
        else:
            print(f"skipping {name}: {path} not found")
    sets.append(load_synthetic(False))
    return sets


# ---------------------------------------------------------------------------------------------
# Peer cache


def peers_code_hash() -> str:
    """Changes whenever the peers' code changes, so a stale cache entry is never used."""
    import implicit

    parts = [inspect.getsource(o) for o in (transform, Peer, CountPopularity, CosineUserKNN)]
    parts += [inspect.getsource(o) for o in (EASE, ImplicitPeer, tune)]
    return hashlib.sha256(("\n".join(parts) + implicit.__version__).encode()).hexdigest()[:16]


def cache_key(train: Interactions, test: Interactions, ents: list[Entry]) -> str:
    spec = {
        "data": fingerprint(train, test),
        "grids": {e.label: e.grid for e in ents},
        "protocol": {"k": K, "min_user": MIN_USER, "test_seed": TEST_SEED, "val_seed": VAL_SEED},
        "code": peers_code_hash(),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def read_cache(path: Path | None) -> dict[str, Any]:
    if path is None or not path.exists():
        return {}
    return json.loads(path.read_text())


def write_cache(path: Path | None, cache: dict[str, Any]) -> None:
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(cache, indent=1) + "\n")
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------
# One data set: peers (tuned or cached), ours (default training), one merged report


@dataclass
class Result:
    data: Dataset
    report: Report
    peers: dict[str, Any]  # the cache entry: chosen, val, trials, tune_seconds, created
    ours_seconds: float
    cached: bool


def run_peers(ds: Dataset, train, test, ents: list[Entry]) -> dict[str, Any]:
    fit_part, val_part = random_holdout(train, 0.2, seed=VAL_SEED)
    say(f"{ds.title}: tuning peers on {len(fit_part)} rows, validating on {len(val_part)}")
    t0 = time.perf_counter()
    for e in ents:
        say(f"tuning {e.label} ({len(e.grid)} configurations)")
        tune(e, fit_part, val_part)
    tune_seconds = time.perf_counter() - t0
    say(f"{ds.title}: peers refitted on the whole training part, evaluated on test")
    report = compare(
        {e.label: e.build(e.chosen) for e in ents},
        train,
        test,
        k=K,
        item_features=ds.features,
        progress=say,
    )
    return {
        "dataset": ds.title,
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "tune_seconds": tune_seconds,
        "n_fit": len(fit_part),
        "n_val": len(val_part),
        "chosen": {e.label: e.chosen for e in ents},
        "val": {e.label: e.val_ndcg for e in ents},
        "trials": {e.label: e.trials for e in ents},
        "report": report.to_dict(),
    }


def run_dataset(
    ds: Dataset, budget: int | None, cache_path: Path | None, ours_only: bool
) -> Result:
    inter = ds.inter
    train, test = random_holdout(inter, 0.2, seed=TEST_SEED)
    say(
        f"{ds.title}: {inter.n_users} users, {inter.n_items} items, {len(inter)} rows; "
        f"train {len(train)}, test {len(test)}"
    )
    ents = entries(budget)
    key = cache_key(train, test, ents)
    cache = read_cache(cache_path)
    cached = key in cache
    if cached:
        say(f"{ds.title}: peers from the cache {cache_path} (tuned {cache[key]['created']})")
    elif ours_only:
        raise SystemExit(
            f"--ours-only: no cached peers for {ds.title} in {cache_path} (key {key}); "
            "run once without --ours-only"
        )
    else:
        cache[key] = run_peers(ds, train, test, ents)
        write_cache(cache_path, read_cache(cache_path) | {key: cache[key]})
    peers = cache[key]

    # Ours: what `recsys-train train` runs, default configuration, timed whole.
    say(f"{ds.title}: our default training (cli.fit_models)")
    cfg = config_mod.load()
    t0 = time.perf_counter()
    models = cli.fit_models(train, cfg, cli.ALL)
    ours_seconds = time.perf_counter() - t0
    ours = compare(
        {name: Fitted(models[name]) for name in OURS},
        train,
        test,
        k=K,
        item_features=ds.features,
        dataset=ds.title,
        split=f"random_holdout(0.2, seed={TEST_SEED}), users >= {MIN_USER} interactions",
        progress=say,
    )
    for name in OURS:  # fitted together above; the total is reported instead
        ours.metrics[name]["train_time_s"] = math.nan
    theirs = Report.from_dict(peers["report"])
    report = Report(
        metrics=ours.metrics | theirs.metrics,
        protocol=ours.protocol,
        params=ours.params | theirs.params,
    )
    return Result(ds, report, peers, ours_seconds, cached)


def ratios(report: Report) -> list[dict[str, Any]]:
    """Per family: ours vs the best peer of the family on NDCG@10 (Recall@10 beside it)."""
    rows = []
    for family, ours, peers, bar in FAMILIES:
        best = max(peers, key=lambda m: report.value(m, "ndcg"))
        ratio = report.value(ours, "ndcg") / report.value(best, "ndcg")
        rows.append(
            {
                "family": family,
                "ours": ours,
                "peer": best,
                "ndcg": (report.value(ours, "ndcg"), report.value(best, "ndcg")),
                "recall": (report.value(ours, "recall"), report.value(best, "recall")),
                "ratio": ratio,
                "bar": bar,
                "pass": ratio >= bar,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# The Markdown report


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


MAIN_COLUMNS = ["ndcg", "recall", "precision", "map", "hit_rate", "coverage", "train_time_s"]
SIDE_COLUMNS = ["diversity", "novelty", "latency_p50_ms", "latency_p99_ms"]


def ratio_table(report: Report) -> list[str]:
    out = [
        "| Family | Ours | NDCG@10 | R@10 | Best tuned peer | NDCG@10 | R@10 | Ratio | Bar "
        "| Result |",
        "|:---|:---|---:|---:|:---|---:|---:|---:|---:|:---|",
    ]
    for r in ratios(report):
        out.append(
            f"| {r['family']} | {r['ours']} | {r['ndcg'][0]:.4f} | {r['recall'][0]:.4f} | "
            f"{r['peer']} | {r['ndcg'][1]:.4f} | {r['recall'][1]:.4f} | {r['ratio']:.3f} | "
            f"{r['bar']:.2f} | {'PASS' if r['pass'] else '**MISS**'} |"
        )
    return out


def dataset_section(res: Result) -> list[str]:
    ds, report, peers = res.data, res.report, res.peers
    p = report.protocol
    chosen = {m: fmt_params(c) for m, c in peers["chosen"].items()}
    val = {m: f"{v:.4f}" for m, v in peers["val"].items()}
    hybrid_weights = report.params.get("hybrid", {}).get("tuned_weights", {})
    if hybrid_weights:
        chosen["hybrid"] = "weights " + fmt_params(hybrid_weights)
    source = f"cached from the run of {peers['created']}" if res.cached else "tuned in this run"
    out = [
        "",
        f"## {ds.title}",
        "",
        f"{p['n_users']} users, {p['n_items']} items (users with >= {MIN_USER} interactions); "
        f"weights: {ds.weights}. Split: {p['n_train_interactions']} train rows, "
        f"{p['n_test_interactions']} test rows, {p['n_users_evaluated']} users evaluated; "
        f"peers tuned on {peers['n_fit']} rows, validated on {peers['n_val']} "
        f"(data fingerprint `{p['fingerprint']}`). ILD: {p['diversity']}.",
        "",
        "### Ours / best tuned peer of the family (NDCG@10 on test)",
        "",
        *ratio_table(report),
        "",
        f"- **Our training time**: {res.ours_seconds:.1f} s for all five models "
        "(`cli.fit_models` with the default configuration, tuning included; the Hybrid "
        "reuses the four fitted components and tunes its weights).",
        f"- **Peer tuning time**: {peers['tune_seconds']:.0f} s for "
        f"{sum(len(t) for t in peers['trials'].values())} validation fits ({source}).",
        "",
        "### Results (test)",
        "",
        report.markdown_table(MAIN_COLUMNS, extra={"val NDCG@10": val, "chosen params": chosen}),
        "",
        "Best value per column in **bold** (lowest for times). Our rows' train time is the "
        "total above; the peers' is the refit of the chosen configuration.",
        "",
        "### Beyond accuracy and serving cost (test)",
        "",
        report.markdown_table(SIDE_COLUMNS),
        "",
        "### Peer tuning trials (validation NDCG@10, best first)",
        "",
    ]
    for label, trials in peers["trials"].items():
        rows = sorted(trials, key=lambda t: -t[1])
        out += [
            f"<details><summary>{label}: {len(rows)} configurations</summary>",
            "",
            "| params | val NDCG@10 | fit (s) |",
            "|:---|---:|---:|",
        ]
        out += [f"| {fmt_params(pr)} | {nd:.4f} | {s:.2f} |" for pr, nd, s in rows]
        out += ["", "</details>", ""]
    return out


def render(command: str, quick: bool, budget: int | None, results: list[Result]) -> str:
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
        out.append("- **QUICK RUN** (`--quick`): at most 3 configurations per peer.")
    out += [
        "",
        "## Summary: ours / best tuned peer (NDCG@10)",
        "",
        "| Family (bar) | " + " | ".join(r.data.title for r in results) + " |",
        "|:---|" + "---:|" * len(results),
    ]
    per = [ratios(r.report) for r in results]
    for i, (family, _ours, _peers, bar) in enumerate(FAMILIES):
        cells = [
            f"{rows[i]['ratio']:.3f} {'PASS' if rows[i]['pass'] else '**MISS**'}" for rows in per
        ]
        out.append(f"| {family} (≥ {bar:.2f}) | " + " | ".join(cells) + " |")
    out.append(
        "| Our training time, s | " + " | ".join(f"{r.ours_seconds:.1f}" for r in results) + " |"
    )
    out += [
        "",
        "## Protocol",
        "",
        "- Data: each set is read as `recsys-train train` reads it (`load_interactions` with no "
        "flags), then users with >= 5 interactions are kept. MovieLens 100k and the Steam play "
        "log are read from their paths, never committed; the synthetic set is "
        "`recsys_trainer.synthetic.generate()`.",
        f"- Split: per-user random 80/20 holdout of each user's distinct items, "
        f"`random_holdout(inter, 0.2, seed={TEST_SEED})`. Top {K}, training items excluded; "
        "relevant = the user's test items; NDCG/MAP with binary gains "
        "(`recsys_core.metrics`).",
        "- **Ours**: the default `recsys-train train` path, "
        "`cli.fit_models(train, config.load(), cli.ALL)`: no per-data-set settings, no tuning "
        "by this script. Whatever self-tuning the trainer does happens inside that call and "
        "is in the training time. Evaluated with the same code as the peers "
        "(`recsys_trainer.evaluate.compare`).",
        f"- **Peers**, each tuned by NDCG@{K} on a validation split carved from the training "
        f"part only (`random_holdout(train, 0.2, seed={VAL_SEED})`), then refitted on the "
        "whole training part and evaluated once on test. They are fed the raw weight matrix a "
        "user would give them (ratings, hours, event weights), and their grids include "
        "the transform of those weights (`raw`, `log1p` or `binary`) as a tuned option, as a "
        "tuned deployment would; BPR ignores weights, so its grid has no such axis. Grids "
        "(the usual defaults first, then a seeded draw): implicit `AlternatingLeastSquares` "
        "24 of factors {16, 32, 64, 128} × regularization {0.01, 0.1, 1, 10, 100} × alpha "
        "{1, 5, 20} × weights, 15 iterations; `BayesianPersonalizedRanking` 16 of factors "
        "{16, 32, 64, 128} × learning rate {0.003, 0.01, 0.03, 0.1} × regularization "
        "{0.001, 0.01, 0.1} × iterations {25, 50, 100, 200}; `CosineRecommender` K "
        "{10, 20, 50, 100, 200, 400, 800, 1600} × weights (all 24); `BM25Recommender` 36 of "
        "K {20, 50, 100, 200, 400, 800, 1600} × K1 {0.6, 1.2} × B {0.5, 0.75, 0.9} × weights; "
        "`ease` = EASE (B = I − P/diag(P), P = (XᵀX + λI)⁻¹) λ {50, 100, 250, 500, 1000, "
        "2000} × weights (all 18); `user_knn` = plain cosine user-KNN (sim = normalised X Xᵀ, "
        "top k per row without self, scores = sim X) k {25, 50, 100, 200, 400} × weights "
        "(all 15); `pop_count` = popularity by interaction count. "
        f"implicit 0.7 API with {THREADS} threads and single-threaded BLAS.",
        "- Families and bars (NDCG@10 on test): Popularity vs `pop_count`; User-CF vs "
        "`user_knn`; Item-CF vs the better of `implicit_cosine` and `implicit_bm25`; SVD vs "
        "the better of `implicit_als` and `implicit_bpr`; each ≥ 1.00 ×. Hybrid vs the best "
        "peer overall, EASE included, ≥ 1.02 ×.",
        "- Novelty = mean −log2 of the item's share of training interactions; latency = one "
        "`recommend` call per user (200 sampled users, seed 0).",
        "",
        "## Rerunning",
        "",
        "The tuned peers are cached in a JSON file outside the repository (default "
        f"`{DEFAULT_CACHE}`, `--peers-cache FILE` to change it), keyed by the data's "
        "fingerprint, the grids, the protocol and the peers' code. A rerun with the same "
        "data re-measures only our rows (a few seconds per data set); `--ours-only` never "
        "tunes and fails if a data set's peers are missing from the cache:",
        "",
        "```",
        "python trainer/bench/quality.py --ml100k /work/shared/datasets/ml-100k/u.data \\",
        "    --steam /work/shared/datasets/steam-200k-play/steam-200k-play.csv --ours-only",
        "```",
    ]
    for res in results:
        out += dataset_section(res)
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ml100k", type=Path, help="MovieLens 100k u.data")
    ap.add_argument("--steam", type=Path, help="steam-200k-play.csv")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "quality.md")
    ap.add_argument(
        "--peers-cache",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"tuned peers' results, JSON (default {DEFAULT_CACHE})",
    )
    ap.add_argument(
        "--ours-only", action="store_true", help="peers from the cache only; never tune them"
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny grids, small synthetic")
    ap.add_argument("--report-dir", type=Path, help="also write report.json/md/png here")
    ap.add_argument("--max-configs", type=int, help="cap every peer's grid")
    args = ap.parse_args(argv)
    script = Path(__file__).resolve()
    if script.is_relative_to(Path.cwd()):
        script = script.relative_to(Path.cwd())
    command = shlex.join(["python", str(script), *argv])
    budget = 3 if args.quick else args.max_configs

    loaders = []
    if args.ml100k:
        loaders.append(lambda: load_ml100k(args.ml100k))
    if args.steam:
        loaders.append(lambda: load_steam(args.steam))
    loaders.append(lambda: load_synthetic(args.quick))
    results = []
    for load in loaders:
        res = run_dataset(load(), budget, args.peers_cache, args.ours_only)
        results.append(res)
        if args.report_dir is not None:
            res.report.write(args.report_dir / res.data.key)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = render(command, args.quick, budget, results)
    old = args.out.read_text() if args.out.exists() else ""
    for block in sections.kept(old):  # the other benches' sections (sections.py) are kept
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    args.out.write_text(text)
    say(f"wrote {args.out}")
    for res in results:
        print(
            f"\n{res.data.title}: ours {res.ours_seconds:.1f} s to train (tuning included), "
            f"peers tuned in {res.peers['tune_seconds']:.0f} s"
            + (" (cached)" if res.cached else "")
        )
        print("\n".join(ratio_table(res.report)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
