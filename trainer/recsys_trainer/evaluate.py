"""Side-by-side offline evaluation of recommenders on one train/test split.

`compare` fits every model on the same training log, asks each for the top k of every user who
has held-out items (training items excluded), and scores the lists with the metrics of
``recsys_core.metrics``:

* accuracy: Precision, Recall, NDCG, MAP and HitRate at k against the user's test items that
  are not already in train (for `random_holdout` and `leave_last_n` that is all of them);
* beyond accuracy: catalog coverage, intra-list diversity (1 - cosine of item features when
  given, e.g. a catalog's category matrix, else of the items' columns in the training matrix,
  a similarity that does not depend on any model) and novelty (self-information of the items
  under training popularity);
* cost: fit time (wall clock, seconds) and the latency of one ``recommend`` call for a single
  user (history = that user's training row), p50 and p99 in milliseconds over a seeded sample
  of evaluated users, after one warm-up call.

The result is a `Report`: metrics per model plus a description of the protocol, written as
JSON, a Markdown table and a PNG chart (matplotlib, imported only when drawing).
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys_core.data import Interactions
from recsys_core.metrics import (
    catalog_coverage,
    intra_list_diversity,
    novelty,
    ranking_metrics,
)
from recsys_core.models.base import Recommender
from recsys_core.splits import relevant_items

ACCURACY = ("precision", "recall", "ndcg", "map", "hit_rate")
BEYOND = ("coverage", "diversity", "novelty")
COST = ("train_time_s", "latency_p50_ms", "latency_p99_ms")
LOWER_IS_BETTER = frozenset(COST)

# Column headers of the Markdown table, by metric stem.
LABELS = {
    "ndcg": "NDCG",
    "precision": "P",
    "recall": "R",
    "map": "MAP",
    "hit_rate": "HR",
    "coverage": "Coverage",
    "diversity": "ILD",
    "novelty": "Novelty",
    "train_time_s": "Train (s)",
    "latency_p50_ms": "p50 (ms)",
    "latency_p99_ms": "p99 (ms)",
}
TABLE_ORDER = ("ndcg", "precision", "recall", "map", "hit_rate", *BEYOND, *COST)


def metric_key(stem: str, k: int) -> str:
    """``"ndcg"`` -> ``"ndcg@10"``; cost metrics carry no k."""
    return stem if stem in COST else f"{stem}@{k}"


# ---------------------------------------------------------------------------------------------
# Running models


def top_k(
    model: Recommender,
    history: sp.csr_matrix,
    users: np.ndarray,
    k: int,
    *,
    batch_size: int | None = None,
) -> np.ndarray:
    """(len(users), k) int64 top-k lists, best first, padded with -1; ``history`` holds every
    user's row (users x items), its rows are passed to ``recommend`` and excluded."""
    users = np.asarray(users, dtype=np.int64)
    history = sp.csr_matrix(history)
    out = np.full((len(users), k), -1, dtype=np.int64)
    # Bounds the dense score rows a model may build for one batch (~64 MiB of float32).
    step = batch_size or max(64, (1 << 24) // max(history.shape[1], 1))
    for lo in range(0, len(users), step):
        batch = users[lo : lo + step]
        recs = model.recommend(batch, history[batch], k, exclude_seen=True)
        indptr = np.asarray(recs.indptr, dtype=np.int64)
        counts = np.diff(indptr)
        rows = np.repeat(np.arange(len(batch)), counts)
        cols = np.arange(len(recs.items)) - indptr[rows]
        keep = cols < k
        out[lo + rows[keep], cols[keep]] = np.asarray(recs.items, dtype=np.int64)[keep]
    return out


def evaluation_users(train: Interactions, test: Interactions) -> tuple[np.ndarray, list]:
    """(users with at least one test item not in train, their relevant item arrays)."""
    relevant = relevant_items(test, exclude=train)
    users = np.flatnonzero([len(r) > 0 for r in relevant])
    return users, [relevant[u] for u in users]


def accuracy(
    model: Recommender, train: Interactions, test: Interactions, k: int = 10
) -> dict[str, float]:
    """Accuracy metrics at k of a model already fitted on ``train`` (e.g. for tuning)."""
    users, relevant = evaluation_users(train, test)
    recs = top_k(model, train.to_csr(), users, k)
    return ranking_metrics(recs, relevant, k)


def single_user_latency(
    model: Recommender, history: sp.csr_matrix, users: np.ndarray, k: int
) -> np.ndarray:
    """Milliseconds of one ``recommend`` call per user (single-user batch), after a warm-up."""
    rows = [history[int(u) : int(u) + 1] for u in users]
    ids = [np.array([u], dtype=np.int64) for u in users]
    if len(rows):
        model.recommend(ids[0], rows[0], k, exclude_seen=True)
    times = np.empty(len(rows))
    for n, (u, row) in enumerate(zip(ids, rows, strict=True)):
        t0 = time.perf_counter()
        model.recommend(u, row, k, exclude_seen=True)
        times[n] = (time.perf_counter() - t0) * 1e3
    return times


def fingerprint(*parts: Interactions) -> str:
    """Short hash of the logs' contents (users, items, weights, timestamps, id maps),
    independent of row order."""
    h = hashlib.sha256()
    for inter in parts:
        order = np.lexsort((inter.timestamp, inter.weight, inter.item_idx, inter.user_idx))
        for a in (inter.user_idx, inter.item_idx, inter.weight, inter.timestamp):
            h.update(np.ascontiguousarray(a[order]).tobytes())
        h.update("\x1f".join(inter.user_ids.tolist()).encode())
        h.update("\x1e".join(inter.item_ids.tolist()).encode())
    return h.hexdigest()[:16]


def compare(
    models: dict[str, Recommender],
    train: Interactions,
    test: Interactions,
    *,
    k: int = 10,
    item_features: np.ndarray | sp.spmatrix | None = None,
    latency_users: int = 200,
    dataset: str | None = None,
    split: str | None = None,
    seed: int = 0,
    progress=None,
    engine=None,
) -> Report:
    """Fit each model on ``train``, evaluate on ``test`` (see the module docstring).

    ``item_features``: n_items x d matrix (e.g. ``catalog.category_matrix(train.item_ids)``)
    for intra-list diversity. ``dataset`` and ``split`` are recorded in the protocol;
    ``seed`` draws the latency sample; ``progress(message)`` is called as models run.
    ``engine`` (``recsys_trainer.engine``): where the top-k lists are computed, by blocks of
    users; the metrics are computed here from the lists put back together, so every engine
    gives the same numbers.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    if train.n_items != test.n_items or train.n_users != test.n_users:
        raise ValueError("train and test must share their id maps")
    say = progress or (lambda _msg: None)
    history = train.to_csr()
    users, relevant = evaluation_users(train, test)
    popularity = np.bincount(train.item_idx, minlength=train.n_items)
    if item_features is not None:
        features = sp.csr_matrix(item_features)
        if features.shape[0] != train.n_items:
            raise ValueError(f"item_features has {features.shape[0]} rows, need {train.n_items}")
        diversity_basis = "cosine of the given item features"
    else:
        features = history.T.tocsr()
        diversity_basis = "cosine of item columns of the training matrix"
    rng = np.random.default_rng(seed)
    n_lat = min(latency_users, len(users))
    lat_users = np.sort(rng.choice(users, n_lat, replace=False)) if n_lat else users[:0]

    results: dict[str, dict[str, float]] = {}
    params: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        say(f"{name}: fit")
        t0 = time.perf_counter()
        model.fit(train)
        train_time = time.perf_counter() - t0
        say(f"{name}: fit {train_time:.2f}s, recommend {len(users)} users")
        recs = engine.top_k(model, history, users, k) if engine else top_k(model, history, users, k)
        row = ranking_metrics(recs, relevant, k)
        row[metric_key("coverage", k)] = catalog_coverage(recs, train.n_items, k)
        row[metric_key("diversity", k)] = intra_list_diversity(recs, k, features=features)
        row[metric_key("novelty", k)] = novelty(recs, popularity, k)
        row["train_time_s"] = train_time
        lat = single_user_latency(model, history, lat_users, k)
        row["latency_p50_ms"] = float(np.percentile(lat, 50)) if len(lat) else math.nan
        row["latency_p99_ms"] = float(np.percentile(lat, 99)) if len(lat) else math.nan
        results[name] = {key: float(v) for key, v in row.items()}
        params[name] = _jsonable(model.params()) if hasattr(model, "params") else {}
        say(f"{name}: ndcg@{k}={row[f'ndcg@{k}']:.4f}")

    protocol = {
        "dataset": dataset or "unnamed",
        "fingerprint": fingerprint(train, test),
        "split": split or "given train/test",
        "k": k,
        "exclude_seen": True,
        "relevant": "test items not in the user's training items",
        "n_users": train.n_users,
        "n_items": train.n_items,
        "n_train_interactions": len(train),
        "n_test_interactions": len(test),
        "n_users_evaluated": len(users),
        "diversity": diversity_basis,
        "novelty": "mean -log2(train popularity share) of recommended items",
        "latency": f"single-user recommend calls, {n_lat} sampled users (seed {seed})",
        "python": platform.python_version(),
    }
    return Report(metrics=results, protocol=protocol, params=params)


def _jsonable(value: Any) -> Any:
    """Converts numpy scalars/arrays and tuples so json can write them; inf/nan become
    strings ("inf", "-inf", "nan") so the JSON stays standard."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


# ---------------------------------------------------------------------------------------------
# The report


@dataclass
class Report:
    """``metrics[model][metric]`` (keys like ``"ndcg@10"``, ``"train_time_s"``), ``protocol``
    (how the numbers were made) and ``params`` (each model's parameters after fitting)."""

    metrics: dict[str, dict[str, float]]
    protocol: dict[str, Any] = field(default_factory=dict)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.protocol.get("k", 10))

    @property
    def models(self) -> list[str]:
        return list(self.metrics)

    def value(self, model: str, stem: str) -> float:
        return self.metrics[model].get(metric_key(stem, self.k), math.nan)

    def best(self, stem: str) -> str | None:
        """The model with the best value of a metric (lowest for costs), None if none is finite."""
        vals = {m: self.value(m, stem) for m in self.metrics}
        vals = {m: v for m, v in vals.items() if math.isfinite(v)}
        if not vals:
            return None
        pick = min if stem in LOWER_IS_BETTER else max
        return pick(vals, key=lambda m: vals[m])

    # -- JSON ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": _jsonable(self.protocol),
            "metrics": {
                m: {key: (v if math.isfinite(v) else None) for key, v in row.items()}
                for m, row in self.metrics.items()
            },
            "params": _jsonable(self.params),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        metrics = {
            m: {key: (math.nan if v is None else float(v)) for key, v in row.items()}
            for m, row in d["metrics"].items()
        }
        return cls(
            metrics=metrics, protocol=dict(d.get("protocol", {})), params=d.get("params", {})
        )

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> Report:
        return cls.from_dict(json.loads(Path(path).read_text()))

    # -- Markdown ------------------------------------------------------------------------------

    def columns(self) -> list[str]:
        """Metric stems present in the report, in table order."""
        present = {key.split("@")[0] for row in self.metrics.values() for key in row}
        return [s for s in TABLE_ORDER if s in present]

    @staticmethod
    def format_value(stem: str, v: float) -> str:
        if not math.isfinite(v):
            return "–"
        if stem in ("novelty",):
            return f"{v:.2f}"
        if stem in ("coverage", "diversity"):
            return f"{v:.3f}"
        if stem == "train_time_s":
            return f"{v:.2f}" if v >= 0.1 else f"{v:.3f}"
        if stem in ("latency_p50_ms", "latency_p99_ms"):
            return f"{v:.2f}" if v >= 1 else f"{v:.3f}"
        return f"{v:.4f}"

    def markdown_table(
        self, columns: list[str] | None = None, extra: dict[str, dict[str, str]] | None = None
    ) -> str:
        """A Markdown table, one row per model, the best value of each column in bold.
        ``extra[column][model]`` adds text columns at the right (e.g. chosen parameters)."""
        cols = columns or self.columns()
        extra = extra or {}
        header = ["Model"] + [LABELS.get(s, s) + ("" if s in COST else f"@{self.k}") for s in cols]
        header += list(extra)
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join([":---"] + ["---:"] * len(cols) + [":---"] * len(extra)) + "|",
        ]
        best_text = {}
        for s in cols:
            b = self.best(s)
            best_text[s] = None if b is None else self.format_value(s, self.value(b, s))
        for m in self.metrics:
            cells = [m]
            for s in cols:
                text = self.format_value(s, self.value(m, s))
                cells.append(f"**{text}**" if text == best_text[s] else text)
            cells += [extra[c].get(m, "") for c in extra]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def protocol_lines(self) -> str:
        return "\n".join(f"- **{key}**: {v}" for key, v in self.protocol.items())

    def to_markdown(self, path: str | Path) -> Path:
        path = Path(path)
        title = f"# Offline evaluation: {self.protocol.get('dataset', 'unnamed')}"
        text = (
            f"{title}\n\n{self.markdown_table()}\n\nBest value per column in **bold** "
            "(lowest for times).\n\n## Protocol\n\n"
            f"{self.protocol_lines()}\n"
        )
        path.write_text(text)
        return path

    # -- PNG -----------------------------------------------------------------------------------

    def to_png(self, path: str | Path) -> Path:
        """Grouped bars of the accuracy metrics per model, and a train-time panel."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        path = Path(path)
        k = self.k
        models = self.models
        stems = [
            s for s in ("precision", "recall", "ndcg", "map", "hit_rate") if s in self.columns()
        ]
        fig = Figure(figsize=(12, 5.2), dpi=110, facecolor="white", layout="constrained")
        FigureCanvasAgg(fig)
        grid = fig.add_gridspec(1, 2, width_ratios=(3, 1.3))
        ax = fig.add_subplot(grid[0, 0])
        colors = [
            "#1f4e79", "#c0504d", "#4f8a3c", "#8064a2", "#d98c1f", "#2e8b8b",
            "#7f7f7f", "#b5651d", "#5b9bd5", "#9c2f6d", "#3d3d3d", "#a5a52a",
        ]  # fmt: skip
        n = max(len(models), 1)
        width = 0.8 / n
        x = np.arange(len(stems))
        for i, m in enumerate(models):
            vals = [self.value(m, s) for s in stems]
            vals = [v if math.isfinite(v) else 0.0 for v in vals]
            ax.bar(
                x - 0.4 + width * (i + 0.5),
                vals,
                width,
                label=m,
                color=colors[i % len(colors)],
                edgecolor="white",
                linewidth=0.5,
            )
        ax.set_xticks(x, [f"{LABELS[s]}@{k}" for s in stems])
        ax.set_ylabel("score (higher is better)")
        ax.set_title(f"Accuracy at {k}: {self.protocol.get('dataset', '')}", loc="left")
        ax.grid(axis="y", color="#d0d0d0", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.legend(ncols=min(n, 4), fontsize=8, frameon=False, loc="upper left")
        top = max(
            [self.value(m, s) for m in models for s in stems if math.isfinite(self.value(m, s))]
            or [1.0]
        )
        ax.set_ylim(0, top * 1.25 if top > 0 else 1.0)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)

        ax2 = fig.add_subplot(grid[0, 1])
        times = [self.metrics[m].get("train_time_s", math.nan) for m in models]
        times = [t if math.isfinite(t) else 0.0 for t in times]
        y = np.arange(len(models))
        ax2.barh(y, times, color=[colors[i % len(colors)] for i in range(len(models))])
        ax2.set_yticks(y, models)
        ax2.invert_yaxis()
        ax2.set_xlabel("seconds (lower is better)")
        ax2.set_title("Train time", loc="left")
        ax2.grid(axis="x", color="#d0d0d0", linewidth=0.6)
        ax2.set_axisbelow(True)
        for yy, t in zip(y, times, strict=True):
            ax2.annotate(f" {t:.2f}s", (t, yy), va="center", fontsize=8, color="#222222")
        ax2.set_xlim(0, (max(times) if times and max(times) > 0 else 1.0) * 1.3)
        for side in ("top", "right"):
            ax2.spines[side].set_visible(False)
        fig.savefig(path, format="png", facecolor="white")
        return path

    def write(self, directory: str | Path) -> list[Path]:
        """report.json, report.md and report.png in ``directory`` (created if needed)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        return [
            self.to_json(d / "report.json"),
            self.to_markdown(d / "report.md"),
            self.to_png(d / "report.png"),
        ]
