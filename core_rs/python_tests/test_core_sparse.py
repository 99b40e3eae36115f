"""SparseScorer.recommend / recommend_batch (core) and recommend_sparse* (reference) against
the brute-force oracle."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from _core_support import (
    EXACT_KINDS,
    IMPLS,
    SETTINGS,
    VALUES,
    Csr,
    check_explanations,
    check_ranked,
    core,
    csr_st,
    index_list_st,
    optional_index_list_st,
    oracle_sparse,
    recommend_sparse,
    recommend_sparse_batch,
)
from hypothesis import given
from hypothesis import strategies as st

import recsys_core as rc

NB_KINDS = ["small_int", "sixteenths", "pos_float", "float"]
# History weights are multiples of 1/4: their float32 sums are exact, so "non-zero
# contribution" has one answer; the neighbour values bring in the rounding.
WEIGHTS = st.integers(-8, 8).map(lambda v: v / 4)


@st.composite
def sparse_case(draw, max_items=8):
    """A neighbour matrix, one user's history and filters, and k/explain."""
    square = draw(st.booleans(), label="square")
    n_items = draw(st.integers(0, max_items), label="n_items")
    n_sources = n_items if square else draw(st.integers(0, max_items), label="n_sources")
    kind = draw(st.sampled_from(NB_KINDS), label="kind")
    nb = draw(csr_st(VALUES[kind], n_rows=n_sources, n_cols=n_items), label="neighbours")
    hist = draw(index_list_st(n_sources, max_size=7), label="history")
    weights = draw(st.none() | st.lists(WEIGHTS, min_size=len(hist), max_size=len(hist)))
    filters = dict(
        exclude=draw(optional_index_list_st(n_items), label="exclude"),
        allow=draw(optional_index_list_st(n_items), label="allow"),
        deny=draw(optional_index_list_st(n_items), label="deny"),
        exclude_history=square and draw(st.booleans(), label="exclude_history"),
    )
    k = draw(st.integers(0, n_items + 2), label="k")
    explain = draw(st.integers(0, 3), label="explain")
    return nb, kind, hist, weights, filters, k, explain


def _arr(x, dtype=np.int32):
    return None if x is None else np.array(x, dtype=dtype)


@pytest.mark.parametrize("impl", IMPLS)
@SETTINGS
@given(case=sparse_case())
def test_recommend_matches_oracle(impl, case):
    nb, kind, hist, weights, filters, k, explain = case
    items, scores, expl = recommend_sparse(
        impl,
        nb.scipy(),
        np.array(hist, dtype=np.int32),
        _arr(weights, np.float32),
        k,
        exclude=_arr(filters["exclude"]),
        allow=_arr(filters["allow"]),
        deny=_arr(filters["deny"]),
        exclude_history=filters["exclude_history"],
        explain=explain,
    )
    oracle = oracle_sparse(nb, hist, weights, **filters)
    exact = kind in EXACT_KINDS
    check_ranked(items, scores, oracle.ranked, k, exact=exact)
    if explain:
        check_explanations(expl, items, oracle, explain, exact=exact)
    else:
        assert expl is None


@st.composite
def batch_case(draw, max_items=7, max_users=5):
    square = draw(st.booleans(), label="square")
    n_items = draw(st.integers(0, max_items), label="n_items")
    n_sources = n_items if square else draw(st.integers(0, max_items), label="n_sources")
    n_users = draw(st.integers(0, max_users), label="n_users")
    kind = draw(st.sampled_from(NB_KINDS), label="kind")
    nb = draw(csr_st(VALUES[kind], n_rows=n_sources, n_cols=n_items), label="neighbours")
    hist = draw(csr_st(WEIGHTS, n_rows=n_users, n_cols=n_sources), label="history")
    exclude = draw(
        st.none() | csr_st(st.just(1.0), n_rows=n_users, n_cols=n_items, max_row_nnz=3),
        label="exclude",
    )
    allow = draw(optional_index_list_st(n_items), label="allow")
    deny = draw(optional_index_list_st(n_items), label="deny")
    exclude_history = square and draw(st.booleans(), label="exclude_history")
    k = draw(st.integers(0, n_items + 2), label="k")
    explain = draw(st.integers(0, 3), label="explain")
    return nb, kind, hist, exclude, allow, deny, exclude_history, k, explain


@pytest.mark.parametrize("impl", IMPLS)
@SETTINGS
@given(case=batch_case(), num_threads=st.sampled_from([None, 1, 2]))
def test_recommend_batch_matches_oracle(impl, case, num_threads):
    nb, kind, hist, exclude, allow, deny, exclude_history, k, explain = case
    kw = dict(
        exclude=None if exclude is None else exclude.scipy(),
        allow=_arr(allow),
        deny=_arr(deny),
        exclude_history=exclude_history,
    )
    if impl == "reference":
        explain = 0
    else:
        kw["num_threads"] = num_threads
    users = recommend_sparse_batch(impl, nb.scipy(), hist.scipy(), k, explain=explain, **kw)
    assert len(users) == hist.n_rows
    for u, (items, scores, expl) in enumerate(users):
        entries = hist.row_entries(u)
        oracle = oracle_sparse(
            nb,
            [h for h, _ in entries],
            [w for _, w in entries],
            exclude=None if exclude is None else [j for j, _ in exclude.row_entries(u)],
            allow=allow,
            deny=deny,
            exclude_history=exclude_history,
        )
        check_ranked(items, scores, oracle.ranked, k, exact=kind in EXACT_KINDS, what=f"u{u}")
        if explain:
            check_explanations(expl, items, oracle, explain, exact=kind in EXACT_KINDS)


@SETTINGS
@given(case=batch_case(max_users=4))
def test_recommend_batch_equals_single_calls(case):
    """The core's batch result for each user is bit-identical to its single-user call."""
    rc = core()
    nb, _, hist, exclude, allow, deny, exclude_history, k, explain = case
    scorer = rc.SparseScorer(nb.scipy())
    b = scorer.recommend_batch(
        hist.scipy(),
        k,
        exclude=None if exclude is None else exclude.scipy(),
        allow=_arr(allow),
        deny=_arr(deny),
        exclude_history=exclude_history,
        explain=explain,
    )
    for u in range(hist.n_rows):
        entries = hist.row_entries(u)
        r = scorer.recommend(
            np.array([h for h, _ in entries], dtype=np.int32),
            np.array([w for _, w in entries], dtype=np.float32),
            k,
            exclude=None if exclude is None else [j for j, _ in exclude.row_entries(u)],
            allow=_arr(allow),
            deny=_arr(deny),
            exclude_history=exclude_history,
            explain=explain,
        )
        np.testing.assert_array_equal(b[u].items, r.items)
        np.testing.assert_array_equal(b[u].scores, r.scores)
        if explain:
            for x, y in zip(b[u].explanations, r.explanations, strict=True):
                np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------------------------------------
# Hand-written examples of the contract's corner cases
# ---------------------------------------------------------------------------------------------

# 3 sources x 5 items: source 0 reaches items 1 (2.0) and 3 (-1.0); source 1 reaches item 1.
NB = sp.csr_matrix(
    (
        np.array([2.0, -1.0, 1.0], dtype=np.float32),
        np.array([1, 3, 1], dtype=np.int32),
        np.array([0, 2, 3, 3]),
    ),
    shape=(3, 5),
)


def _rec(impl, hist, weights=None, k=10, **kw):
    kw.setdefault("exclude_history", False)
    items, scores, expl = recommend_sparse(
        impl, NB, np.array(hist, dtype=np.int32), weights, k, **kw
    )
    return items.tolist(), scores.tolist(), expl


@pytest.mark.parametrize("impl", IMPLS)
def test_unreached_items_take_part_with_score_zero(impl):
    # Zeros rank above the negative score, in index order.
    assert _rec(impl, [0]) == ([1, 0, 2, 4, 3], [2.0, 0.0, 0.0, 0.0, -1.0], None)
    assert _rec(impl, [0], k=3)[0] == [1, 0, 2]
    # An empty history still returns min(k, #eligible) items, all zeros, lowest indices.
    assert _rec(impl, [], k=2) == ([0, 1], [0.0, 0.0], None)


@pytest.mark.parametrize("impl", IMPLS)
def test_allow_list_with_unreachable_items(impl):
    items, scores, _ = _rec(impl, [0], allow=np.array([4, 2, 3, 2], dtype=np.int32))
    assert items == [2, 4, 3] and scores == [0.0, 0.0, -1.0]
    # Allow, deny and exclude combine; an empty allow-list leaves nothing.
    items, _, _ = _rec(
        impl,
        [0],
        allow=np.array([1, 2, 3, 4]),
        deny=np.array([2]),
        exclude=np.array([1]),
    )
    assert items == [4, 3]
    assert _rec(impl, [0], allow=np.array([], dtype=np.int32))[0] == []


@pytest.mark.parametrize("impl", IMPLS)
def test_repeated_history_entries_are_summed(impl):
    items, scores, expl = _rec(
        impl, [0, 1, 0], np.array([1.0, 1.0, 0.5], dtype=np.float32), k=2, explain=5
    )
    # item 1: 1.5 * 2 + 1 * 1 = 4; item 3: 1.5 * -1 = -1.5 (ranked last, not kept with k=2).
    assert items == [1, 0] and scores == [4.0, 0.0]
    indptr, sources, contributions = expl
    assert indptr.tolist() == [0, 2, 2]
    assert sources.tolist() == [0, 1] and contributions.tolist() == [3.0, 1.0]


@pytest.mark.parametrize("impl", IMPLS)
def test_explain_orders_by_contribution_then_source(impl):
    nb = sp.csr_matrix(np.array([[1, 0], [2, 0], [1, 5], [-1, 0]], dtype=np.float32))
    items, scores, expl = recommend_sparse(
        impl, nb, np.array([3, 2, 1, 0]), None, 2, exclude_history=False, explain=3
    )
    assert items.tolist() == [1, 0] and scores.tolist() == [5.0, 3.0]
    indptr, sources, contributions = expl
    assert indptr.tolist() == [0, 1, 4]
    assert sources.tolist() == [2, 1, 0, 2]
    assert contributions.tolist() == [5.0, 2.0, 1.0, 1.0]


@pytest.mark.parametrize("impl", IMPLS)
def test_exclude_history_on_square_matrix(impl):
    nb = sp.csr_matrix(np.array([[0, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=np.float32))
    items, _, _ = recommend_sparse(impl, nb, np.array([0]), None, 5)
    assert items.tolist() == [1, 2]
    items, _, _ = recommend_sparse(impl, nb, np.array([0]), None, 5, exclude_history=False)
    assert items.tolist() == [1, 2, 0]


@pytest.mark.parametrize("impl", IMPLS)
def test_k_zero_and_k_above_n(impl):
    assert _rec(impl, [0], k=0)[0] == []
    assert len(_rec(impl, [0], k=1000)[0]) == 5


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_model(impl):
    for shape in [(0, 0), (0, 3), (3, 0)]:
        nb = sp.csr_matrix(shape, dtype=np.float32)
        items, scores, _ = recommend_sparse(
            impl, nb, np.array([], dtype=np.int32), None, 5, exclude_history=False
        )
        assert len(items) == min(5, shape[1]) and np.all(scores == 0)
        hist = sp.csr_matrix((2, shape[0]), dtype=np.float32)
        users = recommend_sparse_batch(impl, nb, hist, 5, exclude_history=False)
        assert [len(i) for i, _, _ in users] == [min(5, shape[1])] * 2


def test_user_knn_shape():
    """User-KNN: the user's neighbour row as history against the user-item matrix."""
    rc = core()
    user_items = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1]], np.float32))
    scorer = rc.SparseScorer(user_items)
    r = scorer.recommend(
        np.array([1, 2]),
        np.array([0.5, 0.25], dtype=np.float32),
        3,
        exclude=np.array([0, 1]),
        exclude_history=False,
        explain=2,
    )
    assert r.items.tolist() == [2, 3]
    assert r.scores.tolist() == [0.5, 0.25]
    assert r.explanations.sources.tolist() == [1, 2]


def test_batch_exclude_with_bool_data():
    """An exclude mask stored as a boolean CSR (the natural dtype of a mask) works."""
    rc = core()
    scorer = rc.SparseScorer(NB)
    hist = sp.csr_matrix(np.array([[1, 0, 0]], dtype=np.float32))
    exclude = sp.csr_matrix(np.array([[False, True, False, False, True]]))
    b = scorer.recommend_batch(hist, 10, exclude=exclude, exclude_history=False)
    assert b[0].items.tolist() == [0, 2, 3]


@SETTINGS
@given(case=batch_case(max_users=4), data=st.data())
def test_batch_num_threads_give_identical_results(case, data):
    rc = core()
    nb, _, hist, exclude, allow, deny, exclude_history, k, explain = case
    scorer = rc.SparseScorer(nb.scipy())
    kw = dict(
        exclude=None if exclude is None else exclude.scipy(),
        allow=_arr(allow),
        deny=_arr(deny),
        exclude_history=exclude_history,
        explain=explain,
    )
    a = scorer.recommend_batch(hist.scipy(), k, num_threads=1, **kw)
    b = scorer.recommend_batch(hist.scipy(), k, num_threads=data.draw(st.integers(2, 4)), **kw)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.items, y.items)
        np.testing.assert_array_equal(x.scores, y.scores)


def test_sparse_scorer_sums_duplicate_model_entries():
    rc = core()
    nb = Csr(
        np.array([0, 3], dtype=np.int32),
        np.array([2, 0, 2], dtype=np.int32),
        np.array([1.0, 4.0, 2.0], dtype=np.float32),
        (1, 3),
    )
    r = rc.SparseScorer(nb.scipy()).recommend([0], None, 3, exclude_history=False, explain=1)
    assert r.items.tolist() == [0, 2, 1]
    assert r.scores.tolist() == [4.0, 3.0, 0.0]
    assert r.explanations.contributions.tolist() == [4.0, 3.0]


# -- evidence: the history rows behind a few items' scores -------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_evidence_matches_a_dense_reference(seed):
    rng = np.random.default_rng(seed)
    n = 40
    m = sp.random(n, n, density=0.2, random_state=seed, format="csr", dtype=np.float32)
    m.data = rng.integers(1, 9, m.nnz).astype(np.float32) / 4  # exact float32 products
    hist = rng.choice(n, 12, replace=False).astype(np.int32)
    w = rng.integers(1, 5, len(hist)).astype(np.float32) / 2
    items = rng.choice(n, 7, replace=False).astype(np.int32)
    top = 3
    got = rc.SparseScorer(m).evidence(hist, w, items, top)
    dense = m.toarray()[hist][:, items]  # history x items
    contrib = w[:, None] * dense
    np.testing.assert_allclose(got["scores"], contrib.sum(axis=0), rtol=1e-6)
    for j in range(len(items)):
        order = [n for n in np.argsort(-contrib[:, j], kind="stable") if contrib[n, j] != 0]
        order = order[:top]
        want = hist[order].tolist() + [-1] * (top - len(order))
        assert got["sources"][j].tolist() == want
        np.testing.assert_array_equal(
            got["contributions"][j][: len(order)], contrib[order, j].astype(np.float32)
        )
        np.testing.assert_array_equal(got["similarities"][j][: len(order)], dense[order, j])
        assert not got["contributions"][j][len(order) :].any()


def test_evidence_names_a_bad_index():
    s = rc.SparseScorer(sp.identity(4, dtype=np.float32, format="csr"))
    with pytest.raises(rc.InvalidArgumentError, match="cols"):
        s.evidence([0], [1.0], [4], 2)
    with pytest.raises(rc.InvalidArgumentError, match="history_items"):
        s.evidence([5], [1.0], [0], 2)
