"""DenseScorer (core) and recommend_dense* (reference) against the brute-force oracle, and
stream_read."""

from __future__ import annotations

import numpy as np
import pytest
from _core_support import (
    EXACT_KINDS,
    IMPLS,
    SETTINGS,
    VALUES,
    check_ranked,
    core,
    csr_st,
    optional_index_list_st,
    oracle_dense,
    recommend_dense,
    recommend_dense_batch,
)
from hypothesis import given
from hypothesis import strategies as st

import recsys_core

DENSE_KINDS = ["small_int", "sixteenths", "float"]


def matrix_st(kind, n_rows, dim):
    return st.lists(
        st.lists(VALUES[kind], min_size=dim, max_size=dim), min_size=n_rows, max_size=n_rows
    ).map(lambda rows: np.array(rows, dtype=np.float32).reshape(n_rows, dim))


@st.composite
def dense_case(draw, max_items=9, max_dim=5):
    n_items = draw(st.integers(0, max_items), label="n_items")
    dim = draw(st.integers(1, max_dim), label="dim")  # dim 0: test_dense_zero_dim
    kind = draw(st.sampled_from(DENSE_KINDS), label="kind")
    factors = draw(matrix_st(kind, n_items, dim), label="factors")
    filters = dict(
        allow=draw(optional_index_list_st(n_items), label="allow"),
        deny=draw(optional_index_list_st(n_items), label="deny"),
    )
    k = draw(st.integers(0, n_items + 2), label="k")
    return kind, factors, filters, k


def _arr(x):
    return None if x is None else np.array(x, dtype=np.int32)


@pytest.mark.parametrize("impl", IMPLS)
@SETTINGS
@given(case=dense_case(), data=st.data())
def test_dense_recommend_matches_oracle(impl, case, data):
    kind, factors, filters, k = case
    n_items, dim = factors.shape
    user = data.draw(matrix_st(kind, 1, dim), label="user")[0]
    exclude = data.draw(optional_index_list_st(n_items), label="exclude")
    items, scores = recommend_dense(
        impl,
        factors,
        user,
        k,
        exclude=_arr(exclude),
        allow=_arr(filters["allow"]),
        deny=_arr(filters["deny"]),
    )
    oracle = oracle_dense(factors, user, exclude=exclude, **filters)
    check_ranked(items, scores, oracle, k, exact=kind in EXACT_KINDS)


@pytest.mark.parametrize("impl", IMPLS)
@SETTINGS
@given(case=dense_case(), data=st.data())
def test_dense_recommend_batch_matches_oracle(impl, case, data):
    kind, factors, filters, k = case
    n_items, dim = factors.shape
    n_users = data.draw(st.integers(0, 5), label="n_users")
    users = data.draw(matrix_st(kind, n_users, dim), label="users")
    exclude = data.draw(
        st.none() | csr_st(st.just(1.0), n_rows=n_users, n_cols=n_items, max_row_nnz=3),
        label="exclude",
    )
    kw = dict(
        exclude=None if exclude is None else exclude.scipy(),
        allow=_arr(filters["allow"]),
        deny=_arr(filters["deny"]),
    )
    if impl == "core":
        kw["num_threads"] = data.draw(st.sampled_from([None, 1, 2]), label="num_threads")
    results = recommend_dense_batch(impl, factors, users, k, **kw)
    assert len(results) == n_users
    for u, (items, scores) in enumerate(results):
        ex = None if exclude is None else [j for j, _ in exclude.row_entries(u)]
        oracle = oracle_dense(factors, users[u], exclude=ex, **filters)
        check_ranked(items, scores, oracle, k, exact=kind in EXACT_KINDS, what=f"u{u}")


@SETTINGS
@given(case=dense_case(), data=st.data())
def test_dense_batch_equals_single_calls(case, data):
    rc = core()
    kind, factors, filters, k = case
    n_users = data.draw(st.integers(0, 4), label="n_users")
    users = data.draw(matrix_st(kind, n_users, factors.shape[1]), label="users")
    scorer = rc.DenseScorer(factors)
    b = scorer.recommend_batch(
        users, k, allow=_arr(filters["allow"]), deny=_arr(filters["deny"]), num_threads=2
    )
    assert len(b.indptr) == n_users + 1
    for u in range(n_users):
        r = scorer.recommend(users[u], k, allow=_arr(filters["allow"]), deny=_arr(filters["deny"]))
        np.testing.assert_array_equal(b[u].items, r.items)
        np.testing.assert_array_equal(b[u].scores, r.scores)


@pytest.mark.parametrize("impl", IMPLS)
def test_dense_ties_zero_dim_and_filters(impl):
    factors = np.array([[1, 0], [0, 1], [1, 0], [-1, 0], [1, 0]], dtype=np.float32)
    user = np.array([2, 0], dtype=np.float32)
    items, scores = recommend_dense(impl, factors, user, 10)
    assert items.tolist() == [0, 2, 4, 1, 3]
    assert scores.tolist() == [2, 2, 2, 0, -2]
    items, _ = recommend_dense(impl, factors, user, 2, exclude=np.array([0]))
    assert items.tolist() == [2, 4]
    items, _ = recommend_dense(impl, factors, user, 10, allow=np.array([3, 1]), deny=[1])
    assert items.tolist() == [3]
    items, _ = recommend_dense(impl, np.zeros((0, 3), np.float32), np.zeros(3, np.float32), 3)
    assert len(items) == 0


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n_items", [0, 4])
def test_dense_zero_dim(impl, n_items):
    """dim 0: every score is an empty sum, 0, so the lowest eligible indices win."""
    factors = np.zeros((n_items, 0), np.float32)
    items, scores = recommend_dense(impl, factors, np.zeros(0, np.float32), 3, deny=[0][:n_items])
    assert items.tolist() == [1, 2, 3][:n_items] and scores.tolist() == [0, 0, 0][:n_items]
    results = recommend_dense_batch(impl, factors, np.zeros((2, 0), np.float32), 2)
    assert [i.tolist() for i, _ in results] == [[0, 1][:n_items]] * 2


@pytest.mark.parametrize("impl", IMPLS)
def test_dense_k_zero(impl):
    factors = np.ones((4, 2), dtype=np.float32)
    items, scores = recommend_dense(impl, factors, np.ones(2, np.float32), 0)
    assert len(items) == 0 and len(scores) == 0
    results = recommend_dense_batch(impl, factors, np.ones((3, 2), np.float32), 0)
    assert [len(i) for i, _ in results] == [0, 0, 0]


# ---------------------------------------------------------------------------------------------
# stream_read
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0,), (1,), (1000,), (0, 4), (3, 5), (4097, 64)])
@pytest.mark.parametrize("num_threads", [None, 1, 2, 3])
def test_stream_read_sums_the_array(shape, num_threads):
    rc = core()
    a = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    got = rc.stream_read(a, num_threads=num_threads)
    assert isinstance(got, float)
    expected = float(np.sum(a, dtype=np.float64))
    assert abs(got - expected) <= 1e-5 * float(np.abs(a).sum()) + 1e-6


def test_stream_read_exact_on_integers():
    rc = core()
    a = np.arange(1000 * 16, dtype=np.float32).reshape(1000, 16) % 7
    assert rc.stream_read(a) == float(a.sum(dtype=np.float64))
    assert rc.stream_read(a, num_threads=2) == float(a.sum(dtype=np.float64))


def test_half_exact_factors_are_held_in_half_precision_with_the_same_scores():
    rng = np.random.default_rng(5)
    f = recsys_core.half_exact(rng.standard_normal((300, 37)) * 0.3)
    assert np.array_equal(f.astype(np.float16).astype(np.float32), f)
    half = recsys_core.DenseScorer(f)
    assert half.half_precision
    # One value half precision cannot hold keeps the matrix in f32; the other values are the
    # same, so the top items of users far from that item agree with the f16 matrix's.
    g = f.copy()
    g[-1, 0] += np.float32(1e-4)
    full = recsys_core.DenseScorer(g)
    assert not full.half_precision
    for _ in range(20):
        u = rng.standard_normal(37).astype(np.float32)
        a = half.recommend(u, 10, exclude=[299])
        b = full.recommend(u, 10, exclude=[299])
        assert a.items.tolist() == b.items.tolist()
        assert a.scores.tolist() == b.scores.tolist()  # bit for bit
        want = f[a.items].astype(np.float64) @ u.astype(np.float64)
        np.testing.assert_allclose(a.scores, want, rtol=1e-5, atol=1e-5)
    big = np.array([[1e6, 0.5]], np.float32)  # beyond f16's range: kept as it is
    assert recsys_core.half_exact(big)[0, 0] == np.float32(1e6)
    assert not recsys_core.DenseScorer(recsys_core.half_exact(big)).half_precision
