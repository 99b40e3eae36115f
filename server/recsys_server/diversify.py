"""Diversity on request: maximal marginal relevance (MMR) re-ranking of a model's candidates.

The caller ranks ``candidates(k)`` items with the model (allow/exclude honoured), then
`rerank` picks k of them greedily, each maximising

    (1 - λ) * relevance - λ * (largest similarity to an item already picked)

with relevance the model score scaled to [0, 1] over the candidates and λ the request's
``diversity``. λ = 0 keeps the model's order.

Item similarity comes from `similarity_source`, the one place that decides, for the server and
the trainer's bench alike:

1. ``svd``: cosine of the SVD model's item factors, when the version has an SVD;
2. ``item_cf``: the item-CF model's kept neighbour similarities, symmetrised (the larger of
   the two directions) and divided by the largest one (its default "dot" measure is
   unbounded); items that are not each other's neighbours have similarity 0;
3. ``categories``: Jaccard of the items' catalogue categories;
4. none of these (no catalogue categories either): similarity 0, so the model's order stays.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

MIN_CANDIDATES = 50


def candidates(k: int) -> int:
    """How many of the model's top items a re-ranked answer of k is drawn from."""
    return max(3 * k, MIN_CANDIDATES)


@dataclass(frozen=True, slots=True)
class Similarity:
    """``matrix(items)``: the len(items) x len(items) similarities of those items (what MMR
    reads); ``pairs(a, b)``: sim(a[n], b[n]) for each n, the same values in the vectorised
    form `recsys_core.metrics.intra_list_diversity` takes, so ILD measures what MMR used."""

    kind: str  # "svd" | "item_cf" | "categories" | "none"
    matrix: Callable[[np.ndarray], np.ndarray]
    pairs: Callable[[np.ndarray, np.ndarray], np.ndarray]


def similarity_source(
    models: Mapping[str, object], categories: Sequence[Sequence[str]]
) -> Similarity:
    """The item similarity diversity re-ranking uses (the rule is in the module docstring).
    ``models``: a version's fitted models by name; ``categories``: per item index. Prepares
    per-item arrays once (O(items)); build it once per version (`for_snapshot`)."""
    svd = models.get("svd")
    factors = getattr(svd, "item_factors_", None)
    if factors is not None and factors.size:
        f = np.asarray(factors, np.float32)
        norms = np.linalg.norm(f, axis=1, keepdims=True)
        unit = f / np.where(norms > 0, norms, np.float32(1))
        return Similarity(
            "svd",
            lambda items: (unit[items] @ unit[items].T).astype(np.float64),
            lambda a, b: np.einsum("ij,ij->i", unit[a], unit[b]).astype(np.float64),
        )
    sim = getattr(models.get("item_cf"), "similarity_", None)
    if sim is not None and sim.nnz:
        sim = sp.csr_matrix(sim, dtype=np.float64)
        scale = float(np.abs(sim.data).max()) or 1.0  # "dot" similarities are unbounded

        def cf_matrix(items: np.ndarray) -> np.ndarray:
            s = sim[items][:, items].toarray()
            s = np.maximum(s, s.T) / scale  # neighbours are kept top-k per row: asymmetric
            np.fill_diagonal(s, 1.0)
            return s

        def cf_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            ab = np.asarray(sim[a, b]).ravel()
            ba = np.asarray(sim[b, a]).ravel()
            return np.maximum(ab, ba) / scale

        return Similarity("item_cf", cf_matrix, cf_pairs)
    if any(categories):
        names: dict[str, int] = {}
        rows, cols = [], []
        for i, cs in enumerate(categories):
            for c in cs:
                rows.append(i)
                cols.append(names.setdefault(c, len(names)))
        m = sp.csr_matrix(
            (np.ones(len(rows)), (rows, cols)), shape=(len(categories), max(len(names), 1))
        )
        m.data[:] = 1.0  # an item listing a category twice
        sizes = np.asarray(m.sum(axis=1)).ravel()

        def jaccard(inter: np.ndarray, sa: np.ndarray, sb: np.ndarray) -> np.ndarray:
            union = sa + sb - inter
            return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)

        def cat_matrix(items: np.ndarray) -> np.ndarray:
            sub = m[items]
            s = jaccard((sub @ sub.T).toarray(), sizes[items][:, None], sizes[items][None, :])
            np.fill_diagonal(s, 1.0)
            return s

        def cat_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            inter = np.asarray(m[a].multiply(m[b]).sum(axis=1)).ravel()
            return jaccard(inter, sizes[a], sizes[b])

        return Similarity("categories", cat_matrix, cat_pairs)
    return Similarity(
        "none", lambda items: np.zeros((len(items), len(items))), lambda a, b: np.zeros(len(a))
    )


_BY_SNAPSHOT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def for_snapshot(snap) -> Similarity:
    """`similarity_source` of a loaded version, built on its first diversified request and
    kept while the version is (a benign race: two threads may both build it)."""
    got = _BY_SNAPSHOT.get(snap)
    if got is None:
        got = similarity_source(snap.models, snap.categories)
        _BY_SNAPSHOT[snap] = got
    return got


def mmr(relevance: np.ndarray, similarity: np.ndarray, k: int, lam: float) -> np.ndarray:
    """Positions (into the candidates) of k picks by MMR, in pick order. ``relevance`` in
    [0, 1]; ties go to the earlier candidate (np.argmax), so the answer is deterministic and
    λ = 0 returns the candidates sorted by relevance, stably."""
    n = len(relevance)
    k = min(k, n)
    picked = np.empty(k, np.int64)
    if k == 0:
        return picked
    gain = (1.0 - lam) * np.asarray(relevance, np.float64)
    closest = np.zeros(n)  # largest similarity to a picked item (0 before the first pick)
    free = np.ones(n, bool)
    for t in range(k):
        score = np.where(free, gain - lam * closest, -np.inf)
        j = int(np.argmax(score))
        picked[t] = j
        free[j] = False
        closest = similarity[j] if t == 0 else np.maximum(closest, similarity[j])
    return picked


def relevance(scores: np.ndarray) -> np.ndarray:
    """Model scores scaled to [0, 1] over the candidates (all 1 when they are equal;
    non-finite scores count as the lowest)."""
    s = np.asarray(scores, np.float64)
    finite = np.isfinite(s)
    if not finite.any():
        return np.ones(len(s))
    lo, hi = s[finite].min(), s[finite].max()
    s = np.where(finite, s, lo)
    return np.ones(len(s)) if hi <= lo else (s - lo) / (hi - lo)


def rerank(
    items: np.ndarray, scores: np.ndarray, k: int, lam: float, source: Similarity
) -> tuple[np.ndarray, np.ndarray]:
    """(items, scores) of the k MMR picks among the ranked candidates ``items``."""
    items = np.asarray(items)
    if lam <= 0 or len(items) == 0:
        return items[:k], np.asarray(scores)[:k]
    order = mmr(relevance(scores), source.matrix(items), k, lam)
    return items[order], np.asarray(scores)[order]


__all__ = [
    "Similarity",
    "candidates",
    "for_snapshot",
    "mmr",
    "relevance",
    "rerank",
    "similarity_source",
]
