"""Medium-sized inputs: the code paths small examples never reach (several 16-row blocks and
both accumulation modes in similarity, parallel chunks of the dense scan, rayon batches),
still checked against the oracle."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from _core_support import (
    EXACT_KINDS,
    IMPLS,
    MIXED_SIGN_EXACT_KINDS,
    NONNEG_KINDS,
    VALUES,
    Csr,
    check_explanations,
    check_ranked,
    check_similarity,
    csr_st,
    oracle_dense,
    oracle_similarity,
    oracle_sparse,
    random_csr,
    recommend_dense,
    recommend_dense_batch,
    recommend_sparse,
    recommend_sparse_batch,
    similarity,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MEDIUM = settings(
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _from_scipy(m) -> Csr:
    m = sp.csr_matrix(m)
    return Csr(
        m.indptr.astype(np.int32), m.indices.astype(np.int32), m.data.astype(np.float32), m.shape
    )


@pytest.mark.parametrize("impl", IMPLS)
@MEDIUM
@given(data=st.data())
def test_medium_similarity(impl, data):
    weighting = data.draw(st.sampled_from(["none", "tfidf", "bm25"]), label="weighting")
    measure = data.draw(st.sampled_from(["cosine", "dot"]), label="measure")
    kinds = NONNEG_KINDS if weighting != "none" else [*MIXED_SIGN_EXACT_KINDS, *NONNEG_KINDS]
    kind = data.draw(st.sampled_from(kinds), label="kind")
    # Few columns: rows co-occur with most others (dense accumulation, block pruning); many
    # columns: few co-occurrences (sparse accumulation).
    n_cols = data.draw(st.sampled_from([2, 4, 40, 120]), label="n_cols")
    x = data.draw(
        csr_st(VALUES[kind], n_rows=data.draw(st.integers(17, 70)), n_cols=n_cols, max_row_nnz=4),
        label="X",
    )
    k = data.draw(st.integers(0, 12), label="k")
    shrink = data.draw(st.sampled_from([0.0, 2.0]), label="shrink") if measure == "cosine" else 0
    include_self = data.draw(st.booleans(), label="include_self")
    kw = dict(shrink=shrink, weighting=weighting, measure=measure, include_self=include_self)
    result = similarity(impl, x.scipy(), k, **kw)
    oracle = oracle_similarity(x, k1=1.2, b=0.75, **kw)
    exact = weighting == "none" and measure == "dot" and kind in EXACT_KINDS
    check_similarity(result, oracle, k, exact=exact)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    ("weighting", "measure"), [("none", "dot"), ("none", "cosine"), ("bm25", "cosine")]
)
def test_larger_similarity(impl, weighting, measure):
    rng = np.random.default_rng(7)
    x = sp.random(700, 250, density=0.03, format="csr", random_state=rng, dtype=np.float64)
    x.data = rng.integers(1, 4, size=x.nnz).astype(np.float32)
    x = x.astype(np.float32)
    c = _from_scipy(x)
    for k in (1, 5, 40):
        kw = dict(shrink=0.0, weighting=weighting, measure=measure, include_self=False)
        result = similarity(impl, x, k, **kw)
        oracle = oracle_similarity(c, k1=1.2, b=0.75, **kw)
        check_similarity(result, oracle, k, exact=weighting == "none" and measure == "dot")


def test_similarity_threads_agree():
    from _core_support import core

    rc = core()
    rng = np.random.default_rng(3)
    x = sp.random(900, 200, density=0.05, format="csr", random_state=rng, dtype=np.float32)
    for kw in (dict(measure="dot"), dict(weighting="tfidf", shrink=1.0)):
        a = rc.similarity_topk(x, 10, num_threads=1, **kw)
        b = rc.similarity_topk(x, 10, num_threads=3, **kw)
        for f in ("indptr", "indices", "data"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


@pytest.mark.parametrize("impl", IMPLS)
@MEDIUM
@given(
    seed=st.integers(0, 2**32 - 1),
    n_items=st.integers(40, 250),
    kind=st.sampled_from(["small_int", "sixteenths", "float"]),
    filters=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
    k=st.integers(0, 50),
    explain=st.integers(0, 4),
)
def test_medium_sparse_recommend(impl, seed, n_items, kind, filters, k, explain):
    rng = np.random.default_rng(seed)
    nb = random_csr(rng, kind, n_items, n_items, 12)
    hist = rng.integers(0, n_items, size=rng.integers(0, 16)).tolist()
    weights = None
    if filters[0]:
        weights = (rng.integers(-4, 9, size=len(hist)) / 4).tolist()

    def idx(flag):
        return rng.integers(0, n_items, size=rng.integers(0, 60)).tolist() if flag else None

    exclude, allow, deny = idx(filters[1]), idx(filters[2]), idx(filters[3])
    exclude_history = bool(rng.integers(0, 2))

    def arr(x):
        return None if x is None else np.array(x, dtype=np.int64)

    items, scores, expl = recommend_sparse(
        impl,
        nb.scipy(),
        np.array(hist, dtype=np.int64),
        None if weights is None else np.array(weights),
        k,
        exclude=arr(exclude),
        allow=arr(allow),
        deny=arr(deny),
        exclude_history=exclude_history,
        explain=explain,
    )
    oracle = oracle_sparse(
        nb,
        hist,
        weights,
        exclude=exclude,
        allow=allow,
        deny=deny,
        exclude_history=exclude_history,
    )
    check_ranked(items, scores, oracle.ranked, k, exact=kind in EXACT_KINDS)
    if explain:
        check_explanations(expl, items, oracle, explain, exact=kind in EXACT_KINDS)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", ["small_int", "float"])
def test_many_users_sparse_batch(impl, kind):
    rng = np.random.default_rng(11)
    n_items, n_users = 300, 120
    nb = sp.random(n_items, n_items, density=0.03, format="csr", random_state=rng)
    vals = rng.integers(-2, 3, size=nb.nnz) if kind == "small_int" else rng.normal(size=nb.nnz)
    nb.data = vals.astype(np.float32)
    nb = nb.astype(np.float32)
    hist = sp.random(n_users, n_items, density=0.02, format="csr", random_state=rng)
    hist.data = rng.integers(1, 5, size=hist.nnz) / 4
    hist = hist.astype(np.float32)
    exclude = sp.random(n_users, n_items, density=0.05, format="csr", random_state=rng)
    deny = rng.integers(0, n_items, size=20)
    explain = 0 if impl == "reference" else 2
    nbc, hc, exc = _from_scipy(nb), _from_scipy(hist), _from_scipy(exclude)
    for k in (1, 20):
        kw = dict(exclude=exclude, deny=deny, exclude_history=True)
        if impl == "core":
            kw["num_threads"] = 2
        users = recommend_sparse_batch(impl, nb, hist, k, explain=explain, **kw)
        for u, (items, scores, expl) in enumerate(users):
            entries = hc.row_entries(u)
            oracle = oracle_sparse(
                nbc,
                [h for h, _ in entries],
                [w for _, w in entries],
                exclude=[j for j, _ in exc.row_entries(u)],
                allow=None,
                deny=deny.tolist(),
                exclude_history=True,
            )
            check_ranked(items, scores, oracle.ranked, k, exact=kind == "small_int")
            if explain:
                check_explanations(expl, items, oracle, explain, exact=kind == "small_int")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("num_threads", [1, 2, None])
def test_dense_parallel_scan(impl, num_threads):
    """40k x 64 crosses the size above which one user's scan is split across threads; small
    integer factors make exact ties everywhere, which the chunk merge must keep in order."""
    rng = np.random.default_rng(5)
    factors = rng.integers(-1, 2, size=(40_000, 64)).astype(np.float32)
    user = rng.integers(-1, 2, size=64).astype(np.float32)
    exclude = rng.integers(0, 40_000, size=50)
    deny = rng.integers(0, 40_000, size=50)
    for k in (1, 10, 300):
        kw = dict(exclude=exclude, deny=deny)
        if impl == "core":
            kw["num_threads"] = num_threads
        items, scores = recommend_dense(impl, factors, user, k, **kw)
        oracle = oracle_dense(factors, user, exclude=exclude.tolist(), allow=None, deny=deny)
        check_ranked(items, scores, oracle, k, exact=True)
    # Float factors: rounding differs between chunkings only within tolerance.
    factors = rng.standard_normal((40_000, 64)).astype(np.float32)
    items, scores = recommend_dense(impl, factors, user, 25, **kw)
    oracle = oracle_dense(factors, user, exclude=exclude.tolist(), allow=None, deny=deny)
    check_ranked(items, scores, oracle, 25, exact=False)


@pytest.mark.parametrize("impl", IMPLS)
def test_dense_batch_many_users(impl):
    rng = np.random.default_rng(9)
    factors = rng.integers(-2, 3, size=(2000, 16)).astype(np.float32)
    users = rng.integers(-2, 3, size=(60, 16)).astype(np.float32)
    exclude = sp.random(60, 2000, density=0.01, format="csr", random_state=rng)
    allow = rng.integers(0, 2000, size=500)
    exc = _from_scipy(exclude)
    kw = dict(exclude=exclude, allow=allow)
    if impl == "core":
        kw["num_threads"] = 2
    for k in (3, 50):
        results = recommend_dense_batch(impl, factors, users, k, **kw)
        for u, (items, scores) in enumerate(results):
            ex = [j for j, _ in exc.row_entries(u)]
            oracle = oracle_dense(factors, users[u], exclude=ex, allow=allow.tolist(), deny=None)
            check_ranked(items, scores, oracle, k, exact=True, what=f"u{u}")
