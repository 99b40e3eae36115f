"""One loaded model version, immutable once built: what a request needs, prepared at load time
so the request path does no per-item Python work beyond its own k results."""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys_core.artifacts import ArtifactError, load_version, store_cursor
from recsys_core.calibration import Calibration, reference_score
from recsys_core.models import Hybrid, Popularity, Recommender
from recsys_server.config import DEFAULT_VERBS, Experiment, Variant
from recsys_server.explained import Explained
from recsys_server.rankings import RankingCache

REFERENCE_USERS = 256
"""Training users sampled at load time to measure each model's reference score."""
DEFAULT_ORDER = ("hybrid", "item_cf", "svd", "user_cf", "popularity")
"""The default model when the configured one is missing: the first of these present, else
the first model of the version."""


def variant_key(experiment: str, variant: str) -> str:
    return f"{experiment}/{variant}"


@dataclass(eq=False)
class Snapshot:
    version: str
    path: Path
    manifest: dict[str, Any]
    models: dict[str, Recommender]
    """name -> model, as loaded (the hybrid shares the other models as its components)."""
    variant_models: dict[str, Recommender]
    """``experiment/variant`` -> model (a hybrid with the variant's weights, or the named one)."""
    user_ids: np.ndarray
    item_ids: list[str]
    user_index: dict[str, int]
    item_index: dict[str, int]
    titles: list[str]
    categories: list[tuple[str, ...]]
    history: sp.csr_matrix
    """Training histories (users x items), the base of every known user's scoring history."""
    trained_at: datetime
    default_model: str
    cold_threshold: int
    store_seq: int
    """The data store's cursor: the version was trained on the stored events up to this seq;
    the server replays the later ones as live history."""
    caches: dict[int, RankingCache] = field(default_factory=dict)
    """id(model) -> the stored rankings of a hybrid route (default or variant)."""
    references: dict[str, float] = field(default_factory=dict)
    """Route key (model name or variant key, "popularity", "cold_start") -> reference score."""
    calibrations: dict[str, Calibration] = field(default_factory=dict)
    """Model name -> P(hit | score / reference) fitted at training time; absent in versions
    published before it (the relative rule then applies, `relative`)."""
    live_rows: dict[str, tuple] = field(default_factory=dict)
    """User id -> (their live events mapping, the 1-row history built from it, event kinds):
    rebuilt only when a recorded event replaces the mapping (`scoring.user_history`)."""
    verbs: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_VERBS))
    """Event type -> the verb explanations use (`ServerConfig.verbs`)."""
    explained: Explained = field(default_factory=Explained)
    """Known users' hybrid explanations made for their current row, serialised."""
    rows: dict[int, sp.csr_matrix] = field(default_factory=dict)
    """Known user -> their training row as a 1-row CSR, built on first use: building a scipy
    matrix costs about 0.1 ms, a large share of a request. Never modified in place."""
    experiments: tuple[Experiment, ...] = ()
    """The experiments ``variant_models`` were made for (`with_experiments` changes them)."""
    retired: tuple[Recommender, ...] = ()
    """Variant models a configuration reload removed, kept alive while this version serves:
    ``explained`` keeps explanations by route model id, which a new model must never reuse."""

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @functools.cached_property
    def empty_row(self) -> sp.csr_matrix:
        """The 1-row history of a user with none (shared; never modified in place)."""
        return sp.csr_matrix((1, self.n_items), dtype=np.float32)

    def user_row(self, user: int) -> sp.csr_matrix:
        row = self.rows.get(user)
        if row is None:
            h = self.history
            a, b = h.indptr[user], h.indptr[user + 1]
            row = sp.csr_matrix(
                (h.data[a:b], h.indices[a:b], np.array([0, b - a])), shape=(1, self.n_items)
            )
            self.rows[user] = row  # a benign race: two threads may both build it
        return row

    def title(self, item: int) -> str:
        return self.titles[item] or self.item_ids[item]

    def rank(self, model: Recommender, user: int, row: sp.csr_matrix, k: int, allow, deny):
        """Top-k for one user: ``model.recommend_one`` (through the route's stored rankings
        when it has them)."""
        cache = self.caches.get(id(model))
        if cache is not None:
            return cache.recommend_one(user, row, k, allow, deny)
        return model.recommend_one(user, row, k, allow, deny)

    def reference(self, key: str) -> float:
        return self.references.get(key, 1.0)

    def confidences(self, name: str, key: str, scores: list[float]) -> list[float]:
        """Confidence of each score of a list model ``name`` answered on route ``key``: its
        calibrated P(hit) when the version has a calibration for it, else the relative rule.
        The calibration's feature divides by the reference of the model that answered (a
        cold-start answer is the hybrid's blend: the hybrid's reference)."""
        cal = self.calibrations.get(name)
        if cal is None:
            ref = self.reference(key)
            return [relative(s, ref) for s in scores]
        ref = self.reference(name if key == "cold_start" else key)
        return [cal.confidence(s, ref) for s in scores]


def relative(score: float, reference: float) -> float:
    """score / reference (> 0, `measure_references`) clipped to [0, 1], 0 for NaN: the rule
    for SimilarItems and for versions without a calibration. Plain floats: for the k items of
    a response that costs less than the numpy calls."""
    c = score / reference
    return 0.0 if c != c else min(max(c, 0.0), 1.0)


def _parse_time(value: Any) -> datetime:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return datetime.fromtimestamp(0, UTC)


def build(
    path: Path,
    experiments: tuple[Experiment, ...],
    default_model: str,
    verbs: dict[str, str] | None = None,
) -> Snapshot:
    """Loads and validates one version directory (raises `ArtifactError`), sets up the
    hybrid routes' stored rankings and measures the confidence references. Runs in a worker
    thread. ``verbs``: explanation verbs (default `DEFAULT_VERBS`)."""
    loaded = load_version(path)
    if not loaded.models:
        raise ArtifactError("empty", f"{path}: the version holds no models")
    models = dict(loaded.models)
    n_users, n_items = len(loaded.user_ids), len(loaded.item_ids)
    history = loaded.history
    if history is None:
        user_cf = models.get("user_cf")
        history = getattr(user_cf, "user_items_", None)
    if history is None:
        history = sp.csr_matrix((n_users, n_items), dtype=np.float32)
    history = sp.csr_matrix(history, dtype=np.float32)
    history.sum_duplicates()
    history.sort_indices()

    item_ids = loaded.item_ids.tolist()
    titles = [""] * n_items
    categories: list[tuple[str, ...]] = [()] * n_items
    if loaded.catalog is not None:
        pos = loaded.catalog.index
        cat_titles = loaded.catalog.titles.tolist()
        for i, item in enumerate(item_ids):
            p = pos.get(item)
            if p is not None:
                titles[i] = cat_titles[p]
                categories[i] = loaded.catalog.categories[p]

    variant_models: dict[str, Recommender] = {}
    for exp in experiments:
        for v in exp.variants:
            base = variant_model(models, v)
            if base is not None:  # else routed to the default model while this version lacks it
                variant_models[variant_key(exp.name, v.name)] = base

    params = loaded.manifest.get("params")
    hybrid = models.get("hybrid")
    threshold = hybrid.config.cold_start_threshold if isinstance(hybrid, Hybrid) else 5
    if default_model not in models:
        default_model = next((n for n in DEFAULT_ORDER if n in models), next(iter(models)))
    snap = Snapshot(
        version=loaded.version,
        path=loaded.path,
        manifest=loaded.manifest,
        models=models,
        variant_models=variant_models,
        user_ids=loaded.user_ids,
        item_ids=item_ids,
        user_index={u: i for i, u in enumerate(loaded.user_ids.tolist())},
        item_index={it: i for i, it in enumerate(item_ids)},
        titles=titles,
        categories=categories,
        history=history,
        trained_at=_parse_time(loaded.manifest.get("trained_at")),
        default_model=default_model,
        cold_threshold=int(threshold),
        store_seq=store_cursor(params if isinstance(params, dict) else {}),
        calibrations=dict(loaded.calibrations),
        verbs=dict(DEFAULT_VERBS if verbs is None else verbs),
        experiments=tuple(experiments),
    )
    for m in [*models.values(), *variant_models.values()]:
        if isinstance(m, Hybrid):
            snap.caches[id(m)] = RankingCache(m)
    snap.references.update(measure_references(snap))
    return snap


def variant_model(models: dict[str, Recommender], v: Variant) -> Recommender | None:
    """The model a variant serves: the named one, a hybrid with the variant's weights; None
    when the version lacks it."""
    base = models.get(v.model)
    if base is not None and v.hybrid_weights and isinstance(base, Hybrid):
        base = base.with_weights(v.hybrid_weights)
    return base


def with_experiments(snap: Snapshot, experiments: tuple[Experiment, ...]) -> Snapshot:
    """The same version serving other experiments (a configuration reload). A variant whose
    model and weights did not change keeps its model object, so its stored rankings,
    explanations and reference stay; new variant routes are measured (a worker thread)."""
    before = {
        variant_key(e.name, v.name): (v.model, v.hybrid_weights)
        for e in snap.experiments
        for v in e.variants
    }
    routes: dict[str, Recommender] = {}
    for exp in experiments:
        for v in exp.variants:
            key = variant_key(exp.name, v.name)
            kept = snap.variant_models.get(key)
            if kept is not None and before.get(key) == (v.model, v.hybrid_weights):
                routes[key] = kept
            elif (m := variant_model(snap.models, v)) is not None:
                routes[key] = m
    caches = {}
    keep = max((c.keep for c in snap.caches.values()), default=0)
    for m in [*snap.models.values(), *routes.values()]:
        if isinstance(m, Hybrid):
            cache = snap.caches.get(id(m))
            if cache is None:  # a new route: filled by requests, not ahead
                cache = RankingCache(m)
                cache.keep = keep
            caches[id(m)] = cache
    kept_ids = {id(m) for m in routes.values()}
    dropped = tuple(m for m in snap.variant_models.values() if id(m) not in kept_ids)
    new = dataclasses.replace(
        snap,
        variant_models=routes,
        experiments=tuple(experiments),
        retired=snap.retired + dropped,
        caches=caches,
        references={k: v for k, v in snap.references.items() if k not in snap.variant_models},
    )
    fresh = {k: m for k, m in routes.items() if snap.variant_models.get(k) is not m}
    kept_refs = {k: snap.references[k] for k in routes if k not in fresh}
    new.references.update(kept_refs | measure_references(new, fresh))
    return new


def measure_references(
    snap: Snapshot, routes: dict[str, Recommender] | None = None
) -> dict[str, float]:
    """Each route's reference score: the 95th percentile of the top-1 score over a sample of
    training users with at least ``cold_threshold`` interactions (see docs/serving.md).
    ``routes``: only these (default: every route, and SimilarItems')."""
    counts = np.diff(snap.history.indptr)
    eligible = np.flatnonzero(counts >= max(snap.cold_threshold, 1))
    if len(eligible) == 0:
        eligible = np.flatnonzero(counts > 0)
    rng = np.random.default_rng(0)
    users = np.sort(rng.choice(eligible, min(REFERENCE_USERS, len(eligible)), replace=False))
    rows = snap.history[users]
    only = routes is not None
    refs: dict[str, float] = {} if only else {"cold_start": 1.0}
    if routes is None:
        routes = dict(snap.models) | snap.variant_models
    for key, model in routes.items():
        if isinstance(model, Popularity):
            top = float(model.scores_.max()) if model.scores_.size else 0.0
        elif len(users) == 0:
            top = 0.0
        else:
            top = reference_score(model.recommend(users, rows, 1).scores)
        refs[key] = top if top > 0 and math.isfinite(top) else 1.0
    if only:
        return refs
    item_cf = snap.models.get("item_cf")
    sim = getattr(item_cf, "similarity_", None)
    if sim is not None and sim.nnz:
        # SimilarItems: the 95th percentile of every item's best neighbour similarity.
        sim = sp.csr_matrix(sim)
        rows = np.flatnonzero(np.diff(sim.indptr) > 0)
        best = np.maximum.reduceat(sim.data, sim.indptr[rows]).astype(np.float64)
        refs["similar:item_cf"] = reference_score(best)
    refs["similar:svd"] = 1.0  # cosine similarity, already at most 1
    return refs
