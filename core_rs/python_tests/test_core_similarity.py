"""similarity_topk (core and reference) against the brute-force oracle."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from _core_support import (
    EXACT_KINDS,
    IMPLS,
    MIXED_SIGN_EXACT_KINDS,
    NONNEG_KINDS,
    SETTINGS,
    VALUES,
    Csr,
    check_similarity,
    csr_st,
    oracle_similarity,
    similarity,
)
from hypothesis import given
from hypothesis import strategies as st

BM25_PARAMS = [(1.2, 0.75), (0.5, 0.0), (2.0, 1.0)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("measure", ["cosine", "dot"])
@pytest.mark.parametrize("weighting", ["none", "tfidf", "bm25"])
@SETTINGS
@given(data=st.data())
def test_similarity_matches_oracle(impl, weighting, measure, data):
    # Weighting is only meaningful for non-negative weights (the BM25 length normalisation
    # divides by the mean row sum); explicit zeros are included (they count in no document
    # frequency). Without weighting, signed values are exercised too. Signed
    # values use exact kinds so that "the dot product is non-zero" has one answer in float32.
    kinds = NONNEG_KINDS if weighting != "none" else [*MIXED_SIGN_EXACT_KINDS, *NONNEG_KINDS]
    kind = data.draw(st.sampled_from(kinds), label="kind")
    x = data.draw(csr_st(VALUES[kind]), label="X")
    n = x.n_rows
    k = data.draw(st.integers(0, n + 2), label="k")
    shrink = data.draw(st.sampled_from([0.0, 0.5, 10.0]), label="shrink")
    if measure == "dot":
        shrink = 0.0
    include_self = data.draw(st.booleans(), label="include_self")
    k1, b = data.draw(st.sampled_from(BM25_PARAMS), label="bm25")
    pop_beta = data.draw(st.sampled_from([0.0, 0.0, 0.5, -0.3]), label="pop_beta")
    kw = dict(
        shrink=shrink,
        weighting=weighting,
        bm25_k1=k1,
        bm25_b=b,
        measure=measure,
        include_self=include_self,
    )
    if pop_beta:
        kw["pop_beta"] = pop_beta
    result = similarity(impl, x.scipy(), k, **kw)
    oracle = oracle_similarity(
        x,
        shrink=shrink,
        weighting=weighting,
        k1=k1,
        b=b,
        measure=measure,
        include_self=include_self,
        pop_beta=pop_beta,
    )
    exact = weighting == "none" and measure == "dot" and kind in EXACT_KINDS and not pop_beta
    check_similarity(result, oracle, k, exact=exact)


# Inputs Hypothesis found (issue 16): X = [[], [1], [1]] with one column held by N - 1 = 2 rows,
# so BM25's idf = ln 3 - ln(1 + 2) is exactly 0 and no row has a neighbour. The scipy reference
# used log1p and returned row 1 -> [(2, 3.4e-32)].
FOUND_BM25 = Csr(
    np.array([0, 0, 1, 2], dtype=np.int32),
    np.array([0, 0], dtype=np.int32),
    np.array([1.0, 1.0], dtype=np.float32),
    (3, 1),
)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("measure", ["dot", "cosine"])
def test_bm25_zero_idf_regression(impl, measure):
    kw = dict(weighting="bm25", bm25_k1=1.2, bm25_b=0.75, measure=measure, include_self=False)
    r = similarity(impl, FOUND_BM25.scipy(), 1, shrink=0.0, **kw)
    oracle = oracle_similarity(
        FOUND_BM25,
        shrink=0.0,
        weighting="bm25",
        k1=1.2,
        b=0.75,
        measure=measure,
        include_self=False,
    )
    assert r.nnz == 0, r.toarray()
    check_similarity(r, oracle, 1, exact=False)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("measure", ["dot", "cosine"])
@pytest.mark.parametrize("n_rows", [4, 5, 17, 100, 1001])
@pytest.mark.parametrize("k1_b", BM25_PARAMS)
def test_bm25_column_in_all_but_one_row_has_no_weight(impl, measure, n_rows, k1_b):
    """The input class of the regression: a column held by N - 1 rows weighs exactly 0 in
    BM25 whatever the values, so it links no rows; a second column in two rows still does."""
    rng = np.random.default_rng(n_rows)
    dense = np.zeros((n_rows, 2), dtype=np.float32)
    dense[1:, 0] = rng.integers(1, 5, n_rows - 1)
    dense[[0, 2], 1] = 1.0
    k1, b = k1_b
    r = similarity(
        impl,
        sp.csr_matrix(dense),
        n_rows,
        weighting="bm25",
        bm25_k1=k1,
        bm25_b=b,
        measure=measure,
    )
    assert r.nnz == 2, r.toarray()
    assert sorted(zip(*r.nonzero(), strict=True)) == [(0, 2), (2, 0)]


@pytest.mark.parametrize("impl", IMPLS)
@SETTINGS
@given(
    x=csr_st(st.integers(1, 2).map(float), max_rows=10, max_cols=4),
    k=st.integers(0, 4),
    include_self=st.booleans(),
)
def test_similarity_exact_ties_in_index_order(impl, x, k, include_self):
    """Few columns and weights in {1, 2}: many rows tie exactly, and measure="dot" is exact in
    float32, so the kept neighbours must be exactly the oracle's, lower index first."""
    result = similarity(impl, x.scipy(), k, measure="dot", include_self=include_self)
    oracle = oracle_similarity(
        x,
        shrink=0.0,
        weighting="none",
        k1=1.2,
        b=0.75,
        measure="dot",
        include_self=include_self,
    )
    check_similarity(result, oracle, k, exact=True)


@pytest.mark.parametrize("impl", IMPLS)
@SETTINGS
@given(
    x=csr_st(VALUES["nonneg_int"], max_rows=6, max_cols=6),
    k=st.integers(0, 7),
    weighting=st.sampled_from(["none", "tfidf", "bm25"]),
    measure=st.sampled_from(["cosine", "dot"]),
)
def test_similarity_accepts_any_sparse_format(impl, x, k, weighting, measure):
    """Same result, bit for bit, whatever the input format (CSC takes its own path)."""
    kw = dict(weighting=weighting, measure=measure)
    expected = similarity(impl, x.scipy(), k, **kw)
    m = x.scipy()
    for other in (m.tocoo(), m.tocsc(), sp.csr_array(m), m.todok(), sp.csc_array(m)):
        got = similarity(impl, other, k, **kw)
        assert got.shape == expected.shape
        np.testing.assert_array_equal(got.indptr, expected.indptr)
        np.testing.assert_array_equal(got.indices, expected.indices)
        np.testing.assert_array_equal(got.data, expected.data)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("weighting", ["none", "tfidf", "bm25"])
@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (4, 0), (4, 6)])
def test_similarity_empty(impl, weighting, shape):
    x = sp.csr_matrix(shape, dtype=np.float32)
    for k in (0, 1, 10):
        for measure in ("cosine", "dot"):
            r = similarity(impl, x, k, weighting=weighting, measure=measure, include_self=True)
            assert r.shape == (shape[0], shape[0])
            assert r.nnz == 0
            assert r.dtype == np.float32


@pytest.mark.parametrize("impl", IMPLS)
def test_similarity_k_zero_gives_empty_matrix(impl):
    x = sp.random(8, 6, density=0.5, format="csr", dtype=np.float32, random_state=1)
    r = similarity(impl, x, 0)
    assert r.shape == (8, 8) and r.nnz == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_similarity_small_example(impl):
    # Rows 0 and 1 share column 0; row 2 shares column 1 with row 1; row 3 is empty.
    x = sp.csr_matrix(np.array([[1, 0, 0], [1, 1, 0], [0, 2, 0], [0, 0, 0]], dtype=np.float32))
    r = similarity(impl, x, 5, measure="dot").toarray()
    np.testing.assert_array_equal(
        r, np.array([[0, 1, 0, 0], [1, 0, 2, 0], [0, 2, 0, 0], [0, 0, 0, 0]], dtype=np.float32)
    )
    r = similarity(impl, x, 5, measure="dot", include_self=True).toarray()
    assert np.diag(r).tolist() == [1, 2, 4, 0]
    c = similarity(impl, x, 1, shrink=1.0).toarray()
    # Row 1: cos to row 0 is 1 / (sqrt 2 + 1), to row 2 is 2 / (2 sqrt 2 + 1): row 2 wins.
    assert np.flatnonzero(c[1]).tolist() == [2]
    np.testing.assert_allclose(c[1, 2], 2 / (2 * np.sqrt(2) + 1), rtol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_similarity_duplicates_are_summed_before_weighting(impl):
    """A row with column 0 stored twice is the same row as with it stored once, summed: the
    document frequency counts the row once and the value is the sum."""
    dup = Csr(
        np.array([0, 3, 4, 5], dtype=np.int32),
        np.array([1, 0, 0, 0, 1], dtype=np.int32),
        np.array([1.0, 1.0, 2.0, 1.0, 1.0], dtype=np.float32),
        (3, 3),
    )
    canon = sp.csr_matrix(
        np.array([[3, 1, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32),
    )
    for weighting in ("none", "tfidf", "bm25"):
        a = similarity(impl, dup.scipy(), 3, weighting=weighting).toarray()
        b = similarity(impl, canon, 3, weighting=weighting).toarray()
        np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=weighting)


@pytest.mark.parametrize("impl", IMPLS)
def test_similarity_cancelling_dot_is_not_a_candidate(impl):
    # Rows 0 and 1 have dot 1*1 + 1*(-1) = 0: not neighbours even with k large.
    x = sp.csr_matrix(np.array([[1, 1, 0], [1, -1, 0], [0, 1, 1]], dtype=np.float32))
    r = similarity(impl, x, 10, measure="dot").toarray()
    assert r[0, 1] == 0 and r[1, 0] == 0
    assert r[0, 2] == 1 and r[1, 2] == -1
    # Negative similarities are kept as candidates, ranked last.
    r1 = similarity(impl, x, 1, measure="dot").toarray()
    assert np.flatnonzero(r1[2]).tolist() == [0]


def test_only_rows_equal_the_full_results_rows():
    import recsys_core as rc

    x = sp.random(120, 40, density=0.08, random_state=3, format="csr", dtype=np.float32)
    only = np.array([0, 7, 7, 119])
    for weighting, beta in (("none", 0.0), ("tfidf", 0.0), ("bm25", 0.0), ("bm25", 0.7)):
        kw = dict(weighting=weighting, shrink=1.0, pop_beta=beta)
        full = rc.similarity_topk(x, 6, **kw)
        for src in (x, x.tocsc()):
            got = rc.similarity_topk(src, 6, only_rows=only, **kw)
            assert got.shape == full.shape
            for r in range(120):
                if r in only:
                    assert np.array_equal(got[r].indices, full[r].indices)
                    assert np.array_equal(got[r].data, full[r].data)
                else:
                    assert got[r].nnz == 0
    for bad in ([120], [-1], [0.5]):
        with pytest.raises(rc.InvalidArgumentError):
            rc.similarity_topk(x, 6, only_rows=np.array(bad))
    with pytest.raises(rc.InvalidArgumentError):
        rc.similarity_topk(x, 6, only_rows=[1], rows=(0, 2))
