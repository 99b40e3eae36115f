"""Shared support for the recsys_core tests: a brute-force oracle, input strategies, checks.

The oracle is written independently of both the Rust core and ``recsys_core.reference``: dense
``float64`` matrices built entry by entry, scores summed with ``math.fsum`` in plain loops, and
rankings made with ``sorted``. It is only meant for the small inputs hypothesis generates.
"""

from __future__ import annotations

import importlib.util
import math
import pathlib
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

HERE = pathlib.Path(__file__).resolve().parent
REFERENCE_PATH = HERE.parent / "python" / "recsys_core" / "reference.py"

# Moderate settings so the whole suite stays well under a minute.
SETTINGS = settings(
    deadline=None,
    max_examples=120,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

RTOL = 1e-4
ATOL = 1e-5  # relative to the magnitude (sum of |terms|) of the value compared


def load_reference():
    """reference.py loaded from the source tree by path: it needs no native build."""
    spec = importlib.util.spec_from_file_location("_recsys_core_reference", REFERENCE_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REF = load_reference()


def core():
    """The built `recsys_core` package, or skip the test."""
    try:
        import recsys_core
    except ImportError as exc:  # not built yet
        pytest.skip(f"recsys_core is not importable: {exc}")
    if not hasattr(recsys_core, "SparseScorer"):
        pytest.skip("recsys_core has no SparseScorer yet")
    return recsys_core


IMPLS = ["reference", "core"]


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


@dataclass
class Csr:
    """Raw CSR arrays, possibly with unsorted and repeated indices within a row."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    shape: tuple[int, int]

    def scipy(self, cls=sp.csr_matrix, dtype=np.float32):
        """A scipy matrix over copies of the arrays; scipy keeps their order and repeats."""
        m = cls(
            (self.data.astype(dtype), self.indices.copy(), self.indptr.copy()), shape=self.shape
        )
        assert m.nnz == len(self.data)
        return m

    @property
    def n_rows(self) -> int:
        return self.shape[0]

    def row_entries(self, r: int) -> list[tuple[int, float]]:
        a, b = int(self.indptr[r]), int(self.indptr[r + 1])
        return [(int(self.indices[p]), float(self.data[p])) for p in range(a, b)]


# Value kinds. The "exact" kinds keep every float32 sum and product in the kernels exact
# (small integers, or multiples of 1/16 in [-4, 4]), so results must match the oracle bit for
# bit, ties included. "float" kinds exercise rounding; they stay away from 0 so that float32
# products never underflow.
_FLOAT_MAG = st.floats(0.0009765625, 4.0, width=32)  # [2**-10, 4]
VALUES = {
    "small_int": st.integers(-2, 2).map(float),  # zeros, cancellation, lots of ties
    "pos_int": st.integers(1, 3).map(float),
    "nonneg_int": st.integers(0, 2).map(float),  # explicit zeros in weighted matrices
    "sixteenths": st.integers(-64, 64).map(lambda v: v / 16),
    "pos_float": _FLOAT_MAG,
    "float": st.tuples(_FLOAT_MAG, st.booleans()).map(lambda t: -t[0] if t[1] else t[0]),
}
EXACT_KINDS = {"small_int", "pos_int", "nonneg_int", "sixteenths"}
NONNEG_KINDS = ["nonneg_int", "pos_int", "pos_float"]
MIXED_SIGN_EXACT_KINDS = ["small_int", "sixteenths"]


@st.composite
def csr_st(draw, values, n_rows=None, n_cols=None, max_rows=8, max_cols=8, max_row_nnz=6):
    """A CSR matrix whose rows hold entries in random order with repeats (empty rows too)."""
    if n_rows is None:
        n_rows = draw(st.integers(0, max_rows))
    if n_cols is None:
        n_cols = draw(st.integers(0, max_cols))
    indptr, indices, data = [0], [], []
    for _ in range(n_rows):
        entries = []
        if n_cols:
            entries = draw(
                st.lists(st.tuples(st.integers(0, n_cols - 1), values), max_size=max_row_nnz)
            )
        for c, v in entries:
            indices.append(c)
            data.append(v)
        indptr.append(len(indices))
    return Csr(
        np.array(indptr, dtype=np.int32),
        np.array(indices, dtype=np.int32),
        np.array(data, dtype=np.float32),
        (n_rows, n_cols),
    )


def random_csr(rng: np.random.Generator, kind: str, n_rows: int, n_cols: int, max_row_nnz: int):
    """A numpy-generated CSR (faster than hypothesis for medium sizes) in the value `kind`,
    with unsorted and repeated indices within rows."""
    counts = rng.integers(0, max_row_nnz + 1, size=n_rows) if n_cols else np.zeros(n_rows, int)
    nnz = int(counts.sum())
    indices = rng.integers(0, max(n_cols, 1), size=nnz)
    if kind == "small_int":
        data = rng.integers(-2, 3, size=nnz).astype(float)
    elif kind == "pos_int":
        data = rng.integers(1, 4, size=nnz).astype(float)
    elif kind == "nonneg_int":
        data = rng.integers(0, 3, size=nnz).astype(float)
    elif kind == "sixteenths":
        data = rng.integers(-64, 65, size=nnz) / 16
    else:
        data = rng.uniform(2**-10, 4, size=nnz)
        if kind == "float":
            data *= rng.choice([-1.0, 1.0], size=nnz)
    indptr = np.zeros(n_rows + 1, dtype=np.int32)
    indptr[1:] = np.cumsum(counts)
    return Csr(indptr, indices.astype(np.int32), data.astype(np.float32), (n_rows, n_cols))


def index_list_st(n, max_size=6):
    """An index list into [0, n) with repeats, unsorted."""
    if n == 0:
        return st.just([])
    return st.lists(st.integers(0, n - 1), max_size=max_size)


def optional_index_list_st(n, max_size=6):
    return st.none() | index_list_st(n, max_size)


# ---------------------------------------------------------------------------------------------
# Brute-force oracle
# ---------------------------------------------------------------------------------------------


def to_dense(c: Csr) -> np.ndarray:
    """The matrix as dense float64, repeated entries summed, built entry by entry."""
    n, m = c.shape
    dense = np.zeros((n, m))
    for r in range(n):
        for col, v in c.row_entries(r):
            dense[r, col] += v
    return dense


def oracle_weights(c: Csr, weighting: str, k1: float, b: float) -> np.ndarray:
    """The weighted matrix. `df` counts rows whose (summed) entry in the column is non-zero."""
    dense = to_dense(c)
    if weighting == "none" or dense.shape[0] == 0:
        return dense
    n, m = dense.shape
    df = [sum(1 for r in range(n) if dense[r, col] != 0) for col in range(m)]
    lengths = [math.fsum(dense[r]) for r in range(n)]
    avg = math.fsum(lengths) / n
    out = np.zeros((n, m))
    for r in range(n):
        for col in range(m):
            w = dense[r, col]
            if w == 0:
                continue
            if weighting == "tfidf":
                out[r, col] = w * math.log(n / df[col])
            else:
                tf = w * (k1 + 1) / (k1 * ((1 - b) + b * lengths[r] / avg) + w)
                out[r, col] = tf * (math.log(n) - math.log(1 + df[col]))
    return out


@dataclass
class Ranked:
    """A candidate set: exact scores and the magnitude (sum of |terms|) each was summed from."""

    scores: dict[int, float]
    mags: dict[int, float]

    def ranking(self) -> list[int]:
        return sorted(self.scores, key=lambda j: (-self.scores[j], j))


def oracle_similarity(
    c: Csr, *, shrink, weighting, k1, b, measure, include_self, pop_beta=0.0
) -> list[Ranked]:
    """Dense all-pairs products (float64; exact for the exact value kinds). With `pop_beta`,
    candidate j's score times n_j ** -pop_beta (n_j: row j's non-zero entries before
    weighting, at least 1)."""
    scale = np.maximum((to_dense(c) != 0).sum(axis=1), 1).astype(np.float64) ** -pop_beta
    w = oracle_weights(c, weighting, k1, b)
    n = w.shape[0]
    dots = w @ w.T
    mags = np.abs(w) @ np.abs(w).T
    norms = np.sqrt((w * w).sum(axis=1))
    rows = []
    for i in range(n):
        scores, row_mags = {}, {}
        for j in np.flatnonzero(dots[i]):
            j = int(j)
            if j == i and not include_self:
                continue
            if measure == "cosine":
                denom = norms[i] * norms[j] + shrink
                scores[j], row_mags[j] = dots[i, j] / denom, mags[i, j] / abs(denom)
            else:
                scores[j], row_mags[j] = float(dots[i, j]), float(mags[i, j])
            if pop_beta != 0.0:
                scores[j], row_mags[j] = scores[j] * scale[j], row_mags[j] * scale[j]
        rows.append(Ranked(scores, row_mags))
    return rows


def _int_set(x) -> set[int]:
    return set() if x is None else {int(v) for v in x}


def eligible_items(n_items, *, exclude, allow, deny, history=()):
    items = set(range(n_items)) if allow is None else _int_set(allow)
    return sorted(items - _int_set(exclude) - _int_set(deny) - _int_set(history))


@dataclass
class SparseOracle:
    ranked: Ranked
    terms: np.ndarray  # sources x items: summed history weight * neighbour value

    def contributions(self, j: int) -> dict[int, float]:
        """Source -> non-zero contribution to item j."""
        return {int(h): float(self.terms[h, j]) for h in np.flatnonzero(self.terms[:, j])}


def oracle_sparse(nb: Csr, hist, weights, *, exclude, allow, deny, exclude_history):
    dense = to_dense(nb)
    n_sources, n_items = dense.shape
    hv = np.zeros(n_sources)
    for pos, h in enumerate(hist):
        hv[h] += 1.0 if weights is None else weights[pos]
    terms = hv[:, None] * dense
    totals, mags = terms.sum(axis=0), np.abs(terms).sum(axis=0)
    elig = eligible_items(
        n_items,
        exclude=exclude,
        allow=allow,
        deny=deny,
        history=hist if exclude_history else (),
    )
    ranked = Ranked({j: float(totals[j]) for j in elig}, {j: float(mags[j]) for j in elig})
    return SparseOracle(ranked, terms)


def oracle_dense(factors: np.ndarray, user: np.ndarray, *, exclude, allow, deny) -> Ranked:
    f, u = factors.astype(np.float64), user.astype(np.float64)
    totals, mags = f @ u, np.abs(f) @ np.abs(u)
    elig = eligible_items(factors.shape[0], exclude=exclude, allow=allow, deny=deny)
    return Ranked({j: float(totals[j]) for j in elig}, {j: float(mags[j]) for j in elig})


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


def check_ranked(items, scores, oracle: Ranked, k: int, *, exact: bool, what: str = "") -> None:
    """`items`/`scores` must be the top `k` of `oracle` in ranking order.

    Exact mode (inputs whose float32 arithmetic is exact): the list equals the oracle's ranking
    and the scores its float32 values. Otherwise, near-ties may legitimately reorder: each
    returned score matches the oracle's score of that item, the returned list is in ranking
    order by its own scores, and the returned set is a top-k set within tolerance.
    """
    items = [int(i) for i in np.asarray(items)]
    got = [float(s) for s in np.asarray(scores)]
    cand, mags = oracle.scores, oracle.mags
    m = min(k, len(cand))
    expected = oracle.ranking()[:m]

    def ctx():
        ranking = [(j, cand[j]) for j in oracle.ranking()]
        return f"{what}: got {list(zip(items, got, strict=True))}, expected top {m} of {ranking}"

    def tol(j):
        return ATOL * mags[j] + RTOL * abs(cand[j])

    assert len(items) == m, ctx()
    assert len(set(items)) == m, ctx()
    for j, s in zip(items, got, strict=True):
        assert j in cand, f"item {j} is not eligible/candidate; " + ctx()
        assert abs(s - cand[j]) <= tol(j), f"score of {j}: {s} vs {cand[j]}; " + ctx()
    for p in range(m - 1):
        assert got[p] >= got[p + 1], f"not sorted by score at {p}; " + ctx()
        if got[p] == got[p + 1]:
            assert items[p] < items[p + 1], f"equal scores not in index order at {p}; " + ctx()
    if exact:
        assert items == expected, ctx()
        assert got == [float(np.float32(cand[j])) for j in expected], ctx()
        return
    if m == 0:
        return
    last = expected[-1]
    for j in items:
        assert cand[j] >= cand[last] - tol(j) - tol(last), f"{j} is not in a top-{k}; " + ctx()
    if m < len(cand):
        floor = min(cand[j] + tol(j) for j in items)
        for j in set(cand) - set(items):
            assert cand[j] <= floor + tol(j), f"{j} was left out; " + ctx()


def check_similarity(result, oracle_rows: list[Ranked], k: int, *, exact: bool) -> None:
    n = len(oracle_rows)
    assert sp.issparse(result) and result.format == "csr"
    assert result.shape == (n, n)
    assert result.dtype == np.float32
    indptr, indices, data = result.indptr, result.indices, result.data
    assert len(indptr) == n + 1 and indptr[0] == 0 and indptr[-1] == len(indices) == len(data)
    for i in range(n):
        a, b = int(indptr[i]), int(indptr[i + 1])
        cols, vals = indices[a:b], data[a:b]
        assert np.all(np.diff(cols) > 0), f"row {i} indices not sorted/unique: {cols}"
        assert np.all(vals != 0), f"row {i} has explicit zeros"
        order = sorted(range(b - a), key=lambda p: (-vals[p], cols[p]))
        check_ranked(cols[order], vals[order], oracle_rows[i], k, exact=exact, what=f"row {i}")


def check_explanations(expl, items, oracle: SparseOracle, n: int, *, exact: bool) -> None:
    indptr, sources, contributions = expl
    assert indptr.dtype == np.int64 and sources.dtype == np.int32
    assert contributions.dtype == np.float32
    assert len(indptr) == len(items) + 1 and indptr[0] == 0
    assert indptr[-1] == len(sources) == len(contributions)
    for p, j in enumerate(items):
        a, b = int(indptr[p]), int(indptr[p + 1])
        contrib = oracle.contributions(int(j))
        mags = {h: abs(c) for h, c in contrib.items()}
        check_ranked(
            sources[a:b],
            contributions[a:b],
            Ranked(contrib, mags),
            n,
            exact=exact,
            what=f"explanation of item {j}",
        )


# ---------------------------------------------------------------------------------------------
# Uniform adapters over the two implementations
# ---------------------------------------------------------------------------------------------


def similarity(impl, x, k, **kw):
    if impl == "reference":
        return REF.similarity_topk(x, k, **kw)
    return core().similarity_topk(x, k, **kw)


def _core_recs(r):
    assert r.items.dtype == np.int32 and r.scores.dtype == np.float32
    assert r.items.shape == r.scores.shape
    e = r.explanations
    return r.items, r.scores, None if e is None else (e.indptr, e.sources, e.contributions)


def recommend_sparse(impl, nb, hist, weights, k, **kw):
    if impl == "reference":
        return REF.recommend_sparse(nb, hist, weights, k, **kw)
    return _core_recs(core().SparseScorer(nb).recommend(hist, weights, k, **kw))


def _split(indptr, items, scores, n_users):
    assert indptr.dtype == np.int64 and len(indptr) == n_users + 1 and indptr[0] == 0
    assert items.dtype == np.int32 and scores.dtype == np.float32
    assert indptr[-1] == len(items) == len(scores)
    return [
        (items[indptr[u] : indptr[u + 1]], scores[indptr[u] : indptr[u + 1]])
        for u in range(n_users)
    ]


def _core_batch(b, n_users, explain):
    users = _split(b.indptr, b.items, b.scores, n_users)
    out = []
    for u, (items, scores) in enumerate(users):
        r = b[u]
        np.testing.assert_array_equal(r.items, items)
        np.testing.assert_array_equal(r.scores, scores)
        expl = None
        if explain:
            a, z = int(b.indptr[u]), int(b.indptr[u + 1])
            ei = b.explain_indptr
            assert ei.dtype == np.int64 and len(ei) == len(b.items) + 1 and ei[0] == 0
            assert ei[-1] == len(b.explain_sources) == len(b.explain_contributions)
            expl = (
                ei[a : z + 1] - ei[a],
                b.explain_sources[ei[a] : ei[z]],
                b.explain_contributions[ei[a] : ei[z]],
            )
            got = _core_recs(r)[2]
            for x, y in zip(got, expl, strict=True):
                np.testing.assert_array_equal(x, y)
        else:
            assert r.explanations is None
        out.append((items, scores, expl))
    return out


def recommend_sparse_batch(impl, nb, hist: sp.csr_matrix, k, *, explain=0, **kw):
    n_users = hist.shape[0]
    if impl == "reference":
        assert explain == 0
        indptr, items, scores = REF.recommend_sparse_batch(nb, hist, k, **kw)
        return [(i, s, None) for i, s in _split(indptr, items, scores, n_users)]
    b = core().SparseScorer(nb).recommend_batch(hist, k, explain=explain, **kw)
    return _core_batch(b, n_users, explain)


def recommend_dense(impl, factors, user, k, **kw):
    if impl == "reference":
        return REF.recommend_dense(factors, user, k, **kw)
    items, scores, expl = _core_recs(core().DenseScorer(factors).recommend(user, k, **kw))
    assert expl is None
    return items, scores


def recommend_dense_batch(impl, factors, users, k, **kw):
    n_users = users.shape[0]
    if impl == "reference":
        indptr, items, scores = REF.recommend_dense_batch(factors, users, k, **kw)
        return _split(indptr, items, scores, n_users)
    b = core().DenseScorer(factors).recommend_batch(users, k, **kw)
    return [(i, s) for i, s, _ in _core_batch(b, n_users, 0)]
