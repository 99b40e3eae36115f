"""Ranking and beyond-accuracy metrics over a batch of recommendation lists.

Conventions shared by every function:

* ``recs``: one list per user, best first, as a 2-D int array or a sequence of sequences of
  item indices; only the first ``k`` entries count, shorter lists are padded with -1 (no item).
  A repeated item counts once (its first position).
* ``relevant``: the held-out items of each user (any iterable of item indices), aligned with
  ``recs``.
* Accuracy metrics average over users with at least one relevant item and return NaN when
  there is none. With ``hits_u`` = number of relevant items in user u's top k,
  ``R_u`` = number of relevant items, ``rel_u(r)`` = 1 if the item at rank r (1-based) is
  relevant, the per-user formulas are given in each docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import scipy.sparse as sp

Recs = np.ndarray | Sequence[Sequence[int]]
Relevant = Sequence[Iterable[int]]
PerUser = Callable[[np.ndarray, np.ndarray, int], np.ndarray]  # (hits, n_relevant, k) -> scores


def as_matrix(recs: Recs, k: int) -> np.ndarray:
    """``recs`` as an (n_users, k) int64 array, truncated or padded with -1; repeats -> -1."""
    if k < 1:
        raise ValueError("k must be >= 1")
    if isinstance(recs, np.ndarray) and recs.ndim == 2:
        m = np.full((recs.shape[0], k), -1, dtype=np.int64)
        width = min(k, recs.shape[1])
        m[:, :width] = recs[:, :width]
    else:
        m = np.full((len(recs), k), -1, dtype=np.int64)
        for u, row in enumerate(recs):
            items = np.asarray(row, dtype=np.int64)[:k]
            m[u, : len(items)] = items
    m[m < 0] = -1
    # Blank out later repeats: a stable sort keeps the first occurrence first.
    order = np.argsort(m, axis=1, kind="stable")
    ranked = np.take_along_axis(m, order, axis=1)
    repeat = np.zeros_like(m, dtype=bool)
    np.put_along_axis(repeat, order[:, 1:], ranked[:, 1:] == ranked[:, :-1], axis=1)
    m[repeat] = -1
    return m


def hit_matrix(recs: Recs, relevant: Relevant, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(hits, n_relevant): ``hits[u, r]`` is True when the item at rank r+1 is relevant to u;
    ``n_relevant[u]`` is the number of distinct relevant items of u."""
    m = as_matrix(recs, k)
    if len(relevant) != len(m):
        raise ValueError(f"recs has {len(m)} users but relevant has {len(relevant)}")
    rel = [np.fromiter(r, dtype=np.int64) for r in relevant]
    lengths = np.fromiter((len(r) for r in rel), dtype=np.int64, count=len(rel))
    flat = np.concatenate(rel) if rel else np.zeros(0, dtype=np.int64)
    # Encode (user, item) as one integer so a single isin finds every hit.
    width = int(max(m.max(initial=-1), flat.max(initial=-1))) + 1
    owner = np.repeat(np.arange(len(rel), dtype=np.int64), lengths)
    rel_keys = np.unique(owner * width + flat)
    n_relevant = np.bincount(rel_keys // max(width, 1), minlength=len(m))[: len(m)]
    rec_keys = np.arange(len(m), dtype=np.int64)[:, None] * width + m
    hits = np.isin(rec_keys, rel_keys) & (m >= 0)
    return hits, n_relevant


def _mean_over_evaluable(values: np.ndarray, n_relevant: np.ndarray) -> float:
    mask = n_relevant > 0
    return float(values[mask].mean()) if mask.any() else float("nan")


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


# Per-user scores from a hit matrix; the public functions below average them.


def _precision(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    return hits.sum(axis=1) / k


def _recall(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    return hits.sum(axis=1) / np.maximum(n_rel, 1)


def _ndcg(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    disc = _discounts(k)
    ideal = np.cumsum(disc)[np.clip(np.minimum(n_rel, k) - 1, 0, k - 1)]
    return (hits @ disc) / ideal


def _ap(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    prec_at_r = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    return (prec_at_r * hits).sum(axis=1) / np.maximum(np.minimum(n_rel, k), 1)


def _hit(hits: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    return hits.any(axis=1).astype(np.float64)


def _mean_metric(per_user: PerUser, recs: Recs, relevant: Relevant, k: int) -> float:
    hits, n_rel = hit_matrix(recs, relevant, k)
    return _mean_over_evaluable(per_user(hits, n_rel, k), n_rel)


def precision_at_k(recs: Recs, relevant: Relevant, k: int) -> float:
    """Precision@k = hits_u / k (the denominator is k even when the list is shorter)."""
    return _mean_metric(_precision, recs, relevant, k)


def recall_at_k(recs: Recs, relevant: Relevant, k: int) -> float:
    """Recall@k = hits_u / R_u."""
    return _mean_metric(_recall, recs, relevant, k)


def ndcg_at_k(recs: Recs, relevant: Relevant, k: int) -> float:
    """NDCG@k = DCG / IDCG with binary gains:
    DCG = sum_{r=1..k} rel_u(r) / log2(r + 1), IDCG = sum_{r=1..min(k, R_u)} 1 / log2(r + 1)."""
    return _mean_metric(_ndcg, recs, relevant, k)


def map_at_k(recs: Recs, relevant: Relevant, k: int) -> float:
    """MAP@k = mean of AP@k, AP@k = sum_{r=1..k} P@r * rel_u(r) / min(k, R_u),
    where P@r = (relevant items in the top r) / r."""
    return _mean_metric(_ap, recs, relevant, k)


def hit_rate_at_k(recs: Recs, relevant: Relevant, k: int) -> float:
    """HitRate@k = 1 if hits_u > 0 else 0."""
    return _mean_metric(_hit, recs, relevant, k)


def ranking_metrics(recs: Recs, relevant: Relevant, k: int) -> dict[str, float]:
    """All accuracy metrics at k (as defined above), keyed like "ndcg@10"."""
    hits, n_rel = hit_matrix(recs, relevant, k)
    per_user: dict[str, PerUser] = {
        "precision": _precision,
        "recall": _recall,
        "ndcg": _ndcg,
        "map": _ap,
        "hit_rate": _hit,
    }
    return {
        f"{name}@{k}": _mean_over_evaluable(fn(hits, n_rel, k), n_rel)
        for name, fn in per_user.items()
    }


def catalog_coverage(recs: Recs, n_items: int, k: int) -> float:
    """Coverage@k = |distinct items in all top-k lists| / n_items."""
    m = as_matrix(recs, k)
    return len(np.unique(m[m >= 0])) / n_items


DENSE_PAIRS_MAX = 3000
"""``intra_list_diversity`` with ``features`` sums looked-up cosines when at most this many
distinct items are recommended (their dense cosine matrix: 72 MB at the limit)."""


def _normalized_rows(features: np.ndarray | sp.spmatrix | sp.sparray) -> sp.csr_matrix:
    f = sp.csr_matrix(features, dtype=np.float64)
    norms = np.sqrt(np.asarray(f.multiply(f).sum(axis=1)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(inv) @ f)


def intra_list_diversity(
    recs: Recs,
    k: int,
    *,
    features: np.ndarray | sp.spmatrix | sp.sparray | None = None,
    similarity: np.ndarray
    | sp.spmatrix
    | sp.sparray
    | Callable[[np.ndarray, np.ndarray], np.ndarray]
    | None = None,
) -> float:
    """ILD@k = mean over lists (with >= 2 items) of the mean over item pairs i < j of
    (1 - sim(i, j)).

    Give exactly one of ``features`` (n_items x d, e.g. a category matrix; sim = cosine, 0 for
    an all-zero vector) or ``similarity`` (an n_items x n_items matrix, or a vectorised
    function ``f(items_a, items_b) -> similarities``).
    """
    if (features is None) == (similarity is None):
        raise ValueError("give exactly one of features or similarity")
    m = as_matrix(recs, k)
    n_valid = (m >= 0).sum(axis=1)
    n_pairs = n_valid * (n_valid - 1) / 2
    if features is not None:
        f = _normalized_rows(features)
        items = np.unique(m[m >= 0])
        if len(items) <= DENSE_PAIRS_MAX:
            # the cosines among the items recommended at all, summed by pairs below: the sum
            # of each list's feature rows reads every row again for every list that holds it
            # (about 1 s a model on the Steam log, whose popular games have thousands of
            # players)
            sub = f[items]
            similarity = (sub @ sub.T).toarray()
            m = np.where(m >= 0, np.searchsorted(items, np.maximum(m, 0)), -1)
    if similarity is None:
        # sum_{i<j} cos(i, j) = (|sum_i f_i|^2 - sum_i |f_i|^2) / 2 for unit rows f_i.
        rows, cols = np.nonzero(m >= 0)
        picks = sp.csr_matrix(
            (np.ones(len(rows)), (rows, m[rows, cols])), shape=(len(m), f.shape[0])
        )
        summed = picks @ f
        sq_of_sum = np.asarray(summed.multiply(summed).sum(axis=1)).ravel()
        self_sq = picks @ np.asarray(f.multiply(f).sum(axis=1)).ravel()
        sim_sum = (sq_of_sum - self_sq) / 2
    else:
        if sp.issparse(similarity):
            similarity = sp.csr_matrix(similarity)
        a_pos, b_pos = np.triu_indices(k, 1)
        sim_sum = np.zeros(len(m))
        step = max(1, (1 << 22) // max(len(a_pos), 1))  # bounds the pairs held at once
        for lo in range(0, len(m), step):
            a, b = m[lo : lo + step, a_pos], m[lo : lo + step, b_pos]
            valid = (a >= 0) & (b >= 0)
            a_items, b_items = a[valid], b[valid]
            if callable(similarity):
                sims = np.asarray(similarity(a_items, b_items), dtype=np.float64)
            elif sp.issparse(similarity):
                sims = np.asarray(similarity[a_items, b_items]).ravel()
            else:
                sims = np.asarray(similarity)[a_items, b_items]
            np.add.at(sim_sum, lo + np.nonzero(valid)[0], sims)
    mask = n_pairs > 0
    if not mask.any():
        return float("nan")
    return float(np.mean(1.0 - sim_sum[mask] / n_pairs[mask]))


def novelty(recs: Recs, popularity: np.ndarray, k: int) -> float:
    """Novelty@k = mean over lists (with >= 1 item) of the mean over its items of
    -log2(p_i), p_i = max(c_i, 1) / sum_j c_j, where ``popularity`` holds the interaction
    counts c (e.g. ``np.bincount(train.item_idx, minlength=n_items)``); an item never seen
    counts as seen once."""
    counts = np.maximum(np.asarray(popularity, dtype=np.float64), 1.0)
    info = -np.log2(counts / np.asarray(popularity, dtype=np.float64).sum())
    m = as_matrix(recs, k)
    valid = m >= 0
    per_item = np.where(valid, info[np.where(valid, m, 0)], 0.0)
    n_valid = valid.sum(axis=1)
    mask = n_valid > 0
    if not mask.any():
        return float("nan")
    return float(np.mean(per_item.sum(axis=1)[mask] / n_valid[mask]))
