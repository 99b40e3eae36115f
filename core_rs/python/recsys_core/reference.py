"""Plain numpy/scipy reference implementations of the `recsys_core` kernels.

These follow the contract in ``docs/core.md`` exactly, the way a competent user would write them
with vectorised numpy/scipy, computing in ``float64``. They serve two purposes: the property tests
compare the Rust core against them (and both against a brute-force oracle), and the benchmark
uses them as the "what you would write without the core" baseline.

This module imports nothing from the native extension, so it works without a build.

Conventions shared with the core:

* CSR inputs may hold unsorted and repeated indices; repeated entries are summed.
* Ranking order: higher score first, equal scores broken by the lower index.
* Every eligible item takes part in a top-K, including items the user never reaches (score 0),
  so a result holds exactly ``min(k, #eligible)`` items.
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp

__all__ = [
    "recommend_dense",
    "recommend_dense_batch",
    "recommend_sparse",
    "recommend_sparse_batch",
    "similarity_topk",
]

# Upper bounds on what one row block materialises: entries of a sparse product (similarity),
# and dense scores (recommendation batches).
_BLOCK_PRODUCT_ENTRIES = 1 << 22
_BLOCK_DENSE_ENTRIES = 1 << 22

_WEIGHTINGS = ("none", "tfidf", "bm25")
_MEASURES = ("cosine", "dot")


# --------------------------------------------------------------------------------------------
# Input helpers
# --------------------------------------------------------------------------------------------


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"k must be an integer, got {k!r}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return int(k)


def _canonical_csr(m, name: str) -> sp.csr_matrix:
    """A float64 CSR copy of `m` with sorted, summed (unique) indices; explicit zeros kept."""
    out = sp.csr_matrix(m, dtype=np.float64, copy=True)
    out.sum_duplicates()
    if not np.all(np.isfinite(out.data)):
        pos = int(np.flatnonzero(~np.isfinite(out.data))[0])
        raise ValueError(f"{name} has a non-finite value at stored position {pos}")
    return out


def _index_list(idx, n: int, name: str) -> np.ndarray:
    """An index array (None -> empty) checked to lie in [0, n)."""
    if idx is None:
        return np.zeros(0, dtype=np.int64)
    a = np.asarray(idx)
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {a.dtype}")
    a = a.astype(np.int64, copy=False).ravel()
    if a.min() < 0 or a.max() >= n:
        raise ValueError(f"{name} has an index outside [0, {n})")
    return a


def _shared_mask(n_items: int, allow, deny) -> np.ndarray:
    """The eligibility mask shared by every user of a call: allow-list and deny-list."""
    allow_idx = None if allow is None else _index_list(allow, n_items, "allow")
    deny_idx = _index_list(deny, n_items, "deny")
    if allow_idx is None:
        mask = np.ones(n_items, dtype=bool)
    else:
        mask = np.zeros(n_items, dtype=bool)
        mask[allow_idx] = True
    mask[deny_idx] = False
    return mask


def _row_blocks(n_rows: int, row_cost: int) -> list[tuple[int, int]]:
    """Splits [0, n_rows) into blocks of about `_BLOCK_DENSE_ENTRIES / row_cost` rows."""
    step = max(1, _BLOCK_DENSE_ENTRIES // max(1, row_cost))
    return [(r, min(n_rows, r + step)) for r in range(0, n_rows, step)]


def _structure(m: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) of every stored entry, explicit zeros included."""
    return np.repeat(np.arange(m.shape[0]), np.diff(m.indptr)), m.indices


# --------------------------------------------------------------------------------------------
# Top-k selection
# --------------------------------------------------------------------------------------------


def _topk_dense_rows(
    scores: np.ndarray, mask: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of the dense `scores` (b x n), the best `k` items among `mask`, ranking order.

    Returns `(counts, items, scores)` with the rows' results concatenated. Ties at the k-th
    score are resolved by the lower index without sorting whole rows: everything strictly above
    the k-th score is kept, then the first (lowest-index) items equal to it fill the rest.
    """
    b, n = scores.shape
    counts = np.minimum(mask.sum(axis=1), k).astype(np.int64)
    if b == 0 or n == 0 or k == 0:
        return counts, np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float64)
    kk = min(k, n)
    masked = np.where(mask, scores, -np.inf)
    # The kk-th largest masked score per row (-inf when a row has fewer eligible items).
    kth = -np.partition(-masked, kk - 1, axis=1)[:, kk - 1]
    above = mask & (masked > kth[:, None])
    at = mask & (masked == kth[:, None])
    need = counts - above.sum(axis=1)
    selected = above | (at & (np.cumsum(at, axis=1) <= need[:, None]))
    rows, cols = np.nonzero(selected)
    vals = scores[rows, cols]
    order = np.lexsort((cols, -vals, rows))
    return counts, cols[order].astype(np.int32), vals[order]


def _topk_sparse_row(cols: np.ndarray, vals: np.ndarray, k: int) -> np.ndarray:
    """Positions of the best `k` entries of one sparse row (`cols` in any order, unique), ties
    broken by the lower column, returned in ascending column order."""
    n = len(vals)
    if n <= k:
        sel = np.arange(n)
    else:
        kth = np.partition(vals, n - k)[n - k]
        above = np.flatnonzero(vals > kth)
        at = np.flatnonzero(vals == kth)
        need = k - len(above)  # >= 1: the k-th score itself is among the best k
        if len(at) > need:
            at = at[np.argpartition(cols[at], need - 1)[:need]]
        sel = np.concatenate([above, at])
    return sel[np.argsort(cols[sel])]


# --------------------------------------------------------------------------------------------
# Similarity
# --------------------------------------------------------------------------------------------


def _apply_weighting(x: sp.csr_matrix, weighting: str, k1: float, b: float) -> sp.csr_matrix:
    """Applies tf-idf or BM25 weighting to canonical `x` without explicit zeros (in place)."""
    if weighting == "none" or x.nnz == 0:
        return x
    n_rows = x.shape[0]
    # Document frequency: rows holding a non-zero entry in each column (`x` is canonical and
    # has no explicit zeros, so this counts each row once).
    df = np.bincount(x.indices, minlength=x.shape[1]).astype(np.float64)
    col_df = df[x.indices]
    if weighting == "tfidf":
        x.data *= np.log(n_rows / col_df)
        return x
    row_len = np.asarray(x.sum(axis=1)).ravel()
    avg = row_len.mean()
    length_norm = (1.0 - b) + b * row_len / avg
    rows = np.repeat(np.arange(n_rows), np.diff(x.indptr))
    # ln(N / (1 + df)): exactly 0 for a column held by N - 1 rows, as in the Rust kernel's
    # ln N - ln(1 + df). A difference of two logs taken by different routines (np.log1p, or
    # numpy's scalar and SIMD paths) can differ by an ulp on some CPUs and surface a 1e-32
    # "neighbour" (issue 16).
    idf = np.log(n_rows / (1.0 + col_df))
    x.data = x.data * (k1 + 1.0) / (k1 * length_norm[rows] + x.data) * idf
    return x


def similarity_topk(
    X,
    k,
    *,
    shrink=0.0,
    weighting="none",
    bm25_k1=1.2,
    bm25_b=0.75,
    measure="cosine",
    include_self=False,
    pop_beta=0.0,
) -> sp.csr_matrix:
    """Row-row similarity of `X` keeping each row's top `k` neighbours (see docs/core.md).

    Returns an ``n_rows x n_rows`` float32 CSR matrix with sorted indices and no explicit zeros.
    Candidates of row ``i`` are the rows with a non-zero dot product with ``i`` (``i`` itself
    only with `include_self`). The sparse product is formed in row blocks whose size bounds the
    number of product entries held at once.
    """
    k = _check_k(k)
    if weighting not in _WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}")
    if measure not in _MEASURES:
        raise ValueError(f"unknown measure {measure!r}")
    x = _canonical_csr(X, "X")
    # Entries that are (or sum to) zero take no part: not in `df`, norms or dot products.
    x.eliminate_zeros()
    pop_beta = float(pop_beta)
    if not np.isfinite(pop_beta):
        raise ValueError(f"pop_beta must be finite, got {pop_beta}")
    # each row's factor as a candidate: its non-zero entries before weighting, ** -pop_beta
    scale = np.maximum(np.diff(x.indptr), 1).astype(np.float64) ** -pop_beta
    x = _apply_weighting(x, weighting, float(bm25_k1), float(bm25_b))
    n = x.shape[0]
    empty = sp.csr_matrix((n, n), dtype=np.float32)
    if k == 0 or n == 0 or x.nnz == 0:
        return empty

    xt = x.T.tocsr()
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())

    # Work per row: an upper bound on its product entries (sum of its columns' frequencies).
    rows_of_entries = np.repeat(np.arange(n), np.diff(x.indptr))
    col_len = np.diff(xt.indptr)
    work = np.minimum(np.bincount(rows_of_entries, weights=col_len[x.indices], minlength=n), n)
    block_of_row = (np.cumsum(work) - work) // _BLOCK_PRODUCT_ENTRIES
    bounds = [0, *np.flatnonzero(np.diff(block_of_row)) + 1, n]

    out_indptr = np.zeros(n + 1, dtype=np.int64)
    out_indices: list[np.ndarray] = []
    out_data: list[np.ndarray] = []
    for r0, r1 in itertools.pairwise(bounds):
        if r0 == r1:
            continue
        # scipy's product holds each (row, column) once, in no particular column order.
        prod = (x[r0:r1] @ xt).tocsr()
        rows = np.repeat(np.arange(r0, r1), np.diff(prod.indptr))
        cols = prod.indices
        vals = prod.data
        keep = vals != 0
        if not include_self:
            keep &= cols != rows
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
        if measure == "cosine":
            vals = vals / (norms[rows] * norms[cols] + shrink)
        if pop_beta != 0.0:
            vals = vals * scale[cols]
        starts = np.searchsorted(rows, np.arange(r0, r1 + 1))
        for i in range(r0, r1):
            a, b = starts[i - r0], starts[i - r0 + 1]
            if a == b:
                continue
            pos = _topk_sparse_row(cols[a:b], vals[a:b], k)
            out_indices.append(cols[a:b][pos].astype(np.int32))
            out_data.append(vals[a:b][pos].astype(np.float32))
            out_indptr[i + 1] = len(pos)

    indices = np.concatenate(out_indices) if out_indices else np.zeros(0, dtype=np.int32)
    data = np.concatenate(out_data) if out_data else np.zeros(0, dtype=np.float32)
    result = sp.csr_matrix((data, indices, np.cumsum(out_indptr)), shape=(n, n))
    result.has_sorted_indices = True
    result.eliminate_zeros()  # float32 underflow only
    return result


# --------------------------------------------------------------------------------------------
# Sparse scoring (item-KNN / user-KNN)
# --------------------------------------------------------------------------------------------


def _explain(
    nb: sp.csr_matrix, sources: np.ndarray, weights: np.ndarray, items: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of `items`, its `n` largest non-zero contributions ``w_h * nb[h, j]``."""
    m = len(items)
    indptr = np.zeros(m + 1, dtype=np.int64)
    if n == 0 or m == 0 or len(sources) == 0:
        return indptr, np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
    contrib = sp.diags(weights) @ nb[sources][:, items]
    contrib = contrib.tocoo()
    nonzero = contrib.data != 0
    src = sources[contrib.row[nonzero]]
    pos = contrib.col[nonzero]
    val = contrib.data[nonzero]
    order = np.lexsort((src, -val, pos))
    src, pos, val = src[order], pos[order], val[order]
    group_start = np.searchsorted(pos, np.arange(m))
    rank = np.arange(len(pos)) - group_start[pos]
    keep = rank < n
    counts = np.bincount(pos[keep], minlength=m)
    indptr[1:] = np.cumsum(counts)
    return indptr, src[keep].astype(np.int32), val[keep].astype(np.float32)


def recommend_sparse(
    neighbours,
    history_items,
    history_weights=None,
    k=10,
    *,
    exclude=None,
    allow=None,
    deny=None,
    exclude_history=True,
    explain=0,
):
    """One user's top-`k` items scored ``sum_h w_h * neighbours[h, j]``.

    Returns ``(items int32, scores float32, explanations)``; explanations is None unless
    `explain` > 0, else ``(indptr int64, sources int32, contributions float32)``.
    """
    k = _check_k(k)
    explain = _check_k(explain)
    nb = _canonical_csr(neighbours, "neighbours")
    n_sources, n_items = nb.shape
    hist = _index_list(history_items, n_sources, "history_items")
    if history_weights is None:
        w = np.ones(len(hist))
    else:
        w = np.asarray(history_weights, dtype=np.float64).ravel()
        if len(w) != len(hist):
            raise ValueError("history_weights and history_items differ in length")
        if not np.all(np.isfinite(w)):
            raise ValueError("history_weights has a non-finite value")
    if exclude_history and n_sources != n_items:
        raise ValueError("exclude_history needs a square neighbours matrix")

    # Repeated history entries are summed.
    sources, inverse = np.unique(hist, return_inverse=True)
    weights = np.bincount(inverse, weights=w, minlength=len(sources))
    scores = nb[sources].T @ weights if len(sources) else np.zeros(n_items)

    mask = _shared_mask(n_items, allow, deny)
    mask[_index_list(exclude, n_items, "exclude")] = False
    if exclude_history:
        mask[sources] = False
    _, items, top = _topk_dense_rows(scores[None, :], mask[None, :], k)
    explanations = None
    if explain:
        explanations = _explain(nb, sources, weights, items, explain)
    return items, top.astype(np.float32), explanations


def _exclude_csr(exclude, n_users: int, n_items: int) -> sp.csr_matrix | None:
    if exclude is None:
        return None
    ex = sp.csr_matrix(exclude)
    if ex.shape != (n_users, n_items):
        raise ValueError(f"exclude has shape {ex.shape}, expected {(n_users, n_items)}")
    return ex


def _batch_result(parts, n_users):
    counts = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(counts)
    items = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, dtype=np.int32)
    scores = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0)
    return indptr, items.astype(np.int32), scores.astype(np.float32)


def recommend_sparse_batch(
    neighbours,
    history_csr,
    k,
    *,
    exclude=None,
    allow=None,
    deny=None,
    exclude_history=True,
):
    """Every user's (row of `history_csr`) top-`k`, vectorised over users in row blocks.

    Returns ragged ``(indptr int64[n_users+1], items int32, scores float32)``.
    """
    k = _check_k(k)
    nb = _canonical_csr(neighbours, "neighbours")
    n_sources, n_items = nb.shape
    hist = _canonical_csr(history_csr, "history")
    n_users = hist.shape[0]
    if hist.shape[1] != n_sources:
        raise ValueError(f"history has {hist.shape[1]} columns, neighbours {n_sources} rows")
    if exclude_history and n_sources != n_items:
        raise ValueError("exclude_history needs a square neighbours matrix")
    ex = _exclude_csr(exclude, n_users, n_items)
    shared = _shared_mask(n_items, allow, deny)

    parts = []
    for u0, u1 in _row_blocks(n_users, n_items):
        h = hist[u0:u1]
        scores = (h @ nb).toarray()
        mask = np.repeat(shared[None, :], u1 - u0, axis=0)
        if ex is not None:
            mask[_structure(ex[u0:u1])] = False
        if exclude_history:
            mask[_structure(h)] = False
        parts.append(_topk_dense_rows(scores, mask, k))
    return _batch_result(parts, n_users)


# --------------------------------------------------------------------------------------------
# Dense scoring (matrix factorisation)
# --------------------------------------------------------------------------------------------


def _factors64(factors) -> np.ndarray:
    f = np.asarray(factors, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"factors must be 2-D, got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError("factors has a non-finite value")
    return f


def recommend_dense(factors, user_vector, k, *, exclude=None, allow=None, deny=None):
    """One user's top-`k` items scored ``user_vector . factors[j]``: ``(items, scores)``."""
    k = _check_k(k)
    f = _factors64(factors)
    u = np.asarray(user_vector, dtype=np.float64).ravel()
    if u.shape != (f.shape[1],):
        raise ValueError(f"user_vector has {u.size} entries, factors {f.shape[1]} columns")
    mask = _shared_mask(f.shape[0], allow, deny)
    mask[_index_list(exclude, f.shape[0], "exclude")] = False
    _, items, scores = _topk_dense_rows((f @ u)[None, :], mask[None, :], k)
    return items, scores.astype(np.float32)


def recommend_dense_batch(factors, user_vectors, k, *, exclude=None, allow=None, deny=None):
    """Every user's (row of `user_vectors`) top-`k`, in row blocks of dense scores.

    Returns ragged ``(indptr int64[n_users+1], items int32, scores float32)``.
    """
    k = _check_k(k)
    f = _factors64(factors)
    n_items, dim = f.shape
    u = np.asarray(user_vectors, dtype=np.float64)
    if u.ndim != 2 or u.shape[1] != dim:
        raise ValueError(f"user_vectors has shape {u.shape}, expected (n_users, {dim})")
    n_users = u.shape[0]
    ex = _exclude_csr(exclude, n_users, n_items)
    shared = _shared_mask(n_items, allow, deny)
    parts = []
    for u0, u1 in _row_blocks(n_users, n_items):
        scores = u[u0:u1] @ f.T
        mask = np.repeat(shared[None, :], u1 - u0, axis=0)
        if ex is not None:
            mask[_structure(ex[u0:u1])] = False
        parts.append(_topk_dense_rows(scores, mask, k))
    return _batch_result(parts, n_users)
