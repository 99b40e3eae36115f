"""Typed errors and dtype conversion of the recsys_core Python API."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from _core_support import core


@pytest.fixture(scope="module")
def rc():
    return core()


def _csr(dense, dtype=np.float32):
    return sp.csr_matrix(np.asarray(dense, dtype=dtype))


SQ = np.array([[0, 1, 2, 0], [1, 0, 0, 3], [0, 0, 0, 1], [2, 0, 1, 0]], dtype=np.float32)
FACTORS = np.arange(24, dtype=np.float32).reshape(6, 4) % 5 - 2


def test_hierarchy(rc):
    for name in ("InvalidMatrixError", "NonFiniteError", "InvalidArgumentError"):
        cls = getattr(rc, name)
        assert issubclass(cls, rc.CoreError)
    assert issubclass(rc.CoreError, ValueError)


# ---------------------------------------------------------------------------------------------
# Non-finite values
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_matrix_values(rc, bad):
    m = _csr(SQ)  # canonical, 7 stored entries
    m.data[5] = bad
    with pytest.raises(rc.NonFiniteError, match="5"):
        rc.similarity_topk(m, 3)
    with pytest.raises(rc.NonFiniteError, match="5"):
        rc.SparseScorer(m)
    scorer = rc.SparseScorer(_csr(SQ))
    with pytest.raises(rc.NonFiniteError, match="5"):
        scorer.recommend_batch(m, 3)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_vectors(rc, bad):
    scorer = rc.SparseScorer(_csr(SQ))
    w = np.array([1, 1, 1, 1], dtype=np.float32)
    w[2] = bad
    with pytest.raises(rc.NonFiniteError, match="2"):
        scorer.recommend(np.array([0, 1, 2, 3]), w, 3)
    f = FACTORS.copy()
    f[3, 1] = bad
    with pytest.raises(rc.NonFiniteError):
        rc.DenseScorer(f)
    dense = rc.DenseScorer(FACTORS)
    u = np.ones(4, dtype=np.float32)
    u[3] = bad
    with pytest.raises(rc.NonFiniteError, match="3"):
        dense.recommend(u, 3)
    us = np.ones((3, 4), dtype=np.float32)
    us[1, 2] = bad
    with pytest.raises(rc.NonFiniteError):
        dense.recommend_batch(us, 3)


def test_float64_overflowing_float32_is_rejected(rc):
    m = _csr(SQ, dtype=np.float64)
    m.data[0] = 1e300
    with pytest.raises(rc.CoreError):
        rc.similarity_topk(m, 3)
    with pytest.raises(rc.CoreError):
        rc.DenseScorer(np.full((2, 2), 1e300))


# ---------------------------------------------------------------------------------------------
# Structural problems
# ---------------------------------------------------------------------------------------------


def _broken(kind):
    m = _csr(SQ)
    if kind == "index_too_large":
        m.indices[3] = 4
    elif kind == "index_negative":
        m.indices[3] = -1
    elif kind == "indptr_decreasing":
        m.indptr[2] = 1
    elif kind == "indptr_too_short":
        m.indptr = m.indptr[:-1].copy()
    elif kind == "indptr_end":
        m.indptr[-1] = 6
    elif kind == "indptr_start":
        m.indptr[0] = 1
    elif kind == "data_length":
        m.data = m.data[:-1].copy()
    return m


BROKEN = [
    "index_too_large",
    "index_negative",
    "indptr_decreasing",
    "indptr_too_short",
    "indptr_end",
    "indptr_start",
    "data_length",
]


@pytest.mark.parametrize("kind", BROKEN)
def test_invalid_matrix(rc, kind):
    with pytest.raises(rc.InvalidMatrixError):
        rc.similarity_topk(_broken(kind), 3)
    with pytest.raises(rc.InvalidMatrixError):
        rc.SparseScorer(_broken(kind))
    with pytest.raises(rc.InvalidMatrixError):
        rc.SparseScorer(_csr(SQ)).recommend_batch(_broken(kind), 3)


def test_index_out_of_int32_range(rc):
    m = _csr(SQ)
    m.indices = m.indices.astype(np.int64)
    m.indices[0] = 2**40
    with pytest.raises(rc.CoreError):
        rc.similarity_topk(m, 3)


# ---------------------------------------------------------------------------------------------
# Invalid arguments
# ---------------------------------------------------------------------------------------------


def test_bad_k(rc):
    sparse = rc.SparseScorer(_csr(SQ))
    dense = rc.DenseScorer(FACTORS)
    for call in (
        lambda: rc.similarity_topk(_csr(SQ), -1),
        lambda: sparse.recommend([0], None, -1),
        lambda: sparse.recommend_batch(_csr(SQ), -1),
        lambda: sparse.recommend([0], None, 3, explain=-1),
        lambda: dense.recommend(np.ones(4, np.float32), -1),
        lambda: dense.recommend_batch(np.ones((2, 4), np.float32), -1),
        lambda: rc.similarity_topk(_csr(SQ), 2.5),
        lambda: dense.recommend(np.ones(4, np.float32), "3"),
    ):
        with pytest.raises(rc.InvalidArgumentError):
            call()


def test_huge_k_keeps_all_or_is_a_typed_error(rc):
    """k > n keeps all: a k beyond any integer type must not escape as OverflowError."""
    sparse = rc.SparseScorer(_csr(SQ))
    dense = rc.DenseScorer(FACTORS)
    calls = {
        "similarity_topk": lambda k: rc.similarity_topk(_csr(SQ), k).nnz,
        "SparseScorer.recommend": lambda k: len(sparse.recommend([0], None, k).items),
        "SparseScorer.recommend explain": lambda k: len(
            sparse.recommend([0], None, 3, explain=k).explanations.sources
        ),
        "SparseScorer.recommend_batch": lambda k: len(sparse.recommend_batch(_csr(SQ), k).items),
        "DenseScorer.recommend": lambda k: len(dense.recommend(np.ones(4, np.float32), k).items),
        "DenseScorer.recommend_batch": lambda k: len(
            dense.recommend_batch(np.ones((2, 4), np.float32), k).items
        ),
    }
    failures = []
    for name, call in calls.items():
        expected = call(1000)
        for k in (2**31, 2**63, 2**80):
            try:
                got = call(k)
            except rc.InvalidArgumentError:
                continue
            except Exception as exc:
                failures.append(f"{name}(k={k}): {type(exc).__name__}: {exc}")
                continue
            if got != expected:
                failures.append(f"{name}(k={k}) gave {got} results, k=1000 gave {expected}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("num_threads", [0, -1])
def test_bad_num_threads(rc, num_threads):
    with pytest.raises(rc.InvalidArgumentError):
        rc.similarity_topk(_csr(SQ), 2, num_threads=num_threads)
    with pytest.raises(rc.InvalidArgumentError):
        rc.SparseScorer(_csr(SQ)).recommend_batch(_csr(SQ), 2, num_threads=num_threads)
    with pytest.raises(rc.InvalidArgumentError):
        rc.DenseScorer(FACTORS).recommend_batch(np.ones((2, 4)), 2, num_threads=num_threads)


def test_unknown_options(rc):
    with pytest.raises(rc.InvalidArgumentError, match="idf"):
        rc.similarity_topk(_csr(SQ), 3, weighting="idf")
    with pytest.raises(rc.InvalidArgumentError, match="jaccard"):
        rc.similarity_topk(_csr(SQ), 3, measure="jaccard")


def test_not_a_sparse_matrix(rc):
    with pytest.raises(rc.InvalidArgumentError):
        rc.similarity_topk(SQ, 3)
    with pytest.raises(rc.InvalidArgumentError):
        rc.SparseScorer(SQ)


def test_dimension_mismatches(rc):
    dense = rc.DenseScorer(FACTORS)
    with pytest.raises(rc.InvalidArgumentError):
        dense.recommend(np.ones(3, np.float32), 3)
    with pytest.raises(rc.InvalidArgumentError):
        dense.recommend_batch(np.ones((2, 5), np.float32), 3)
    with pytest.raises(rc.InvalidArgumentError):
        dense.recommend_batch(np.ones((2, 4), np.float32), 3, exclude=sp.csr_matrix((3, 6)))
    with pytest.raises(rc.InvalidArgumentError):
        dense.recommend_batch(np.ones((2, 4), np.float32), 3, exclude=sp.csr_matrix((2, 5)))
    with pytest.raises(rc.InvalidArgumentError):
        rc.DenseScorer(np.ones(4, np.float32))
    sparse = rc.SparseScorer(_csr(SQ))
    with pytest.raises(rc.InvalidArgumentError):
        sparse.recommend_batch(sp.csr_matrix((2, 5), dtype=np.float32), 3)
    with pytest.raises(rc.InvalidArgumentError):
        sparse.recommend_batch(_csr(SQ), 3, exclude=sp.csr_matrix((3, 4)))
    # Weights that do not match the history: some CoreError (the contract does not say which).
    with pytest.raises(rc.CoreError):
        sparse.recommend(np.array([0, 1]), np.ones(3, np.float32), 3)


def test_exclude_history_needs_square_model(rc):
    rect = rc.SparseScorer(_csr(SQ[:3]))  # 3 sources x 4 items
    with pytest.raises(rc.InvalidArgumentError):
        rect.recommend([0], None, 3)
    with pytest.raises(rc.InvalidArgumentError):
        rect.recommend([], None, 3, exclude_history=True)
    with pytest.raises(rc.InvalidArgumentError):
        rect.recommend_batch(_csr(SQ[:, :3]), 3)
    assert len(rect.recommend([0], None, 3, exclude_history=False).items) == 3
    b = rect.recommend_batch(_csr(SQ[:, :3]), 3, exclude_history=False)
    assert len(b.indptr) == 5 and len(b.items) == 12


@pytest.mark.parametrize("which", ["allow", "deny", "exclude"])
@pytest.mark.parametrize("bad", [4, -1, 1000])
def test_filter_index_out_of_range(rc, which, bad):
    sparse = rc.SparseScorer(_csr(SQ))
    lst = np.array([0, bad])
    with pytest.raises(rc.InvalidArgumentError):
        sparse.recommend([0], None, 3, **{which: lst})
    dense = rc.DenseScorer(FACTORS[:4])
    with pytest.raises(rc.InvalidArgumentError):
        dense.recommend(np.ones(4, np.float32), 3, **{which: lst})
    if which != "exclude":
        with pytest.raises(rc.InvalidArgumentError):
            sparse.recommend_batch(_csr(SQ), 3, **{which: lst})
        with pytest.raises(rc.InvalidArgumentError):
            dense.recommend_batch(np.ones((2, 4), np.float32), 3, **{which: lst})


def test_exclude_csr_index_out_of_range(rc):
    ex = sp.csr_matrix(np.eye(4, dtype=np.float32))
    ex.indices[2] = 7
    with pytest.raises(rc.CoreError):
        rc.SparseScorer(_csr(SQ)).recommend_batch(_csr(SQ), 3, exclude=ex)
    with pytest.raises(rc.CoreError):
        rc.DenseScorer(FACTORS[:4]).recommend_batch(np.ones((4, 4), np.float32), 3, exclude=ex)


@pytest.mark.parametrize("bad", [4, -1])
def test_history_index_out_of_range(rc, bad):
    # The contract lists "list index out of range" under InvalidArgumentError.
    with pytest.raises(rc.InvalidArgumentError):
        rc.SparseScorer(_csr(SQ)).recommend(np.array([0, bad]), None, 3)


# ---------------------------------------------------------------------------------------------
# Dtype conversion: lossless inputs are converted, the rest rejected
# ---------------------------------------------------------------------------------------------


def _same(a, b):
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            assert x is None and y is None
        else:
            np.testing.assert_array_equal(x, y)


def _recs(r):
    e = r.explanations
    return (r.items, r.scores, *(e if e is not None else (None, None, None)))


def test_int64_indices_and_float64_data_are_converted(rc):
    base = _csr(SQ)
    m = _csr(SQ, dtype=np.float64)
    m.indices = m.indices.astype(np.int64)
    m.indptr = m.indptr.astype(np.int64)
    assert m.indices.dtype == np.int64 and m.data.dtype == np.float64
    for measure in ("cosine", "dot"):
        a = rc.similarity_topk(base, 2, measure=measure, weighting="bm25")
        b = rc.similarity_topk(m, 2, measure=measure, weighting="bm25")
        _same((a.indptr, a.indices, a.data), (b.indptr, b.indices, b.data))
    s1, s2 = rc.SparseScorer(base), rc.SparseScorer(m)
    hist = np.array([0, 3, 0], dtype=np.int32)
    w = np.array([1.0, 0.5, 2.0], dtype=np.float32)
    expected = _recs(s1.recommend(hist, w, 3, explain=2))
    _same(_recs(s2.recommend(hist.astype(np.int64), w.astype(np.float64), 3, explain=2)), expected)
    _same(_recs(s1.recommend(hist.tolist(), w.tolist(), 3, explain=2)), expected)
    _same(_recs(s1.recommend(hist.astype(np.uint16), w, 3, explain=2)), expected)
    ba = s1.recommend_batch(base, 3, exclude=base)
    bb = s2.recommend_batch(m, 3, exclude=m)
    _same((ba.indptr, ba.items, ba.scores), (bb.indptr, bb.items, bb.scores))


def test_non_contiguous_inputs_are_converted(rc):
    s = rc.SparseScorer(_csr(SQ))
    hist = np.array([0, 9, 3, 9, 0, 9], dtype=np.int64)[::2]
    w = np.array([1.0, 0, 0.5, 0, 2.0, 0], dtype=np.float32)[::2]
    assert not hist.flags.c_contiguous and not w.flags.c_contiguous
    deny = np.array([1, 7, 1])[::2]
    expected = _recs(
        s.recommend(
            np.ascontiguousarray(hist), np.ascontiguousarray(w), 3, explain=2, deny=np.array([1])
        )
    )
    _same(_recs(s.recommend(hist, w, 3, explain=2, deny=deny)), expected)

    m = _csr(SQ)
    m.data = np.repeat(m.data, 2)[::2]
    assert not m.data.flags.c_contiguous
    a = rc.similarity_topk(_csr(SQ), 2)
    b = rc.similarity_topk(m, 2)
    _same((a.indptr, a.indices, a.data), (b.indptr, b.indices, b.data))

    f = np.asfortranarray(FACTORS)
    strided = np.repeat(FACTORS, 2, axis=1)[:, ::2]
    d = rc.DenseScorer(FACTORS)
    u = np.array([1, 9, -2, 9, 0.5, 9, 3, 9], dtype=np.float32)[::2]
    expected = _recs(d.recommend(np.ascontiguousarray(u), 4))
    for factors in (f, strided, FACTORS.astype(np.float64)):
        _same(_recs(rc.DenseScorer(factors).recommend(u, 4)), expected)
    us = np.asfortranarray(np.stack([u, -u, u * 2]))
    b1 = d.recommend_batch(np.ascontiguousarray(us), 2)
    b2 = rc.DenseScorer(f).recommend_batch(us, 2)
    _same((b1.indptr, b1.items, b1.scores), (b2.indptr, b2.items, b2.scores))


def test_fractional_float_indices_are_rejected(rc):
    s = rc.SparseScorer(_csr(SQ))
    with pytest.raises(rc.InvalidArgumentError):
        s.recommend(np.array([0.5, 1.0]), None, 3)
    with pytest.raises(rc.InvalidArgumentError):
        s.recommend([0], None, 3, allow=np.array([1.5]))
    with pytest.raises(rc.InvalidArgumentError):
        s.recommend([0], None, 3, deny=np.array([np.nan]))
    with pytest.raises(rc.InvalidArgumentError):
        rc.DenseScorer(FACTORS).recommend(np.ones(4, np.float32), 3, exclude=np.array([0.25]))
    m = _csr(SQ)
    m.indices = m.indices.astype(np.float64) + 0.5
    with pytest.raises(rc.InvalidArgumentError):
        rc.similarity_topk(m, 3)


def test_bool_indices_are_rejected(rc):
    s = rc.SparseScorer(_csr(SQ))
    with pytest.raises(rc.InvalidArgumentError):
        s.recommend(np.array([True, False]), None, 3)
    with pytest.raises(rc.InvalidArgumentError):
        s.recommend([0], None, 3, deny=np.array([True]))


def test_complex_and_object_inputs_are_rejected(rc):
    s = rc.SparseScorer(_csr(SQ))
    with pytest.raises(rc.InvalidArgumentError):
        rc.similarity_topk(_csr(SQ, dtype=np.complex64), 3)
    with pytest.raises(rc.InvalidArgumentError):
        rc.SparseScorer(_csr(SQ, dtype=np.complex128))
    with pytest.raises(rc.InvalidArgumentError):
        s.recommend([0, 1], np.array([1, 1], dtype=np.complex64), 3)
    with pytest.raises(rc.InvalidArgumentError):
        s.recommend(np.array([0, 1], dtype=object), None, 3)
    with pytest.raises(rc.InvalidArgumentError):
        s.recommend([0, 1], np.array([1.0, 1.0], dtype=object), 3)
    with pytest.raises(rc.InvalidArgumentError):
        s.recommend([0], None, 3, allow=np.array([1, 2], dtype=object))
    with pytest.raises(rc.InvalidArgumentError):
        rc.DenseScorer(FACTORS.astype(np.complex64))
    with pytest.raises(rc.InvalidArgumentError):
        rc.DenseScorer(FACTORS.astype(object))
    d = rc.DenseScorer(FACTORS)
    with pytest.raises(rc.InvalidArgumentError):
        d.recommend(np.ones(4, dtype=np.complex128), 3)
    with pytest.raises(rc.InvalidArgumentError):
        d.recommend(np.ones(4, dtype=object), 3)
    with pytest.raises(rc.InvalidArgumentError):
        d.recommend_batch(np.ones((2, 4), dtype=np.complex64), 3)


def test_compressed_scorer_errors_name_the_argument(rc):
    s = rc.CompressedScorer.build(FACTORS)
    u = np.ones(4, np.float32)
    with pytest.raises(rc.InvalidArgumentError, match="deny_mask"):
        s.recommend(u, 2, deny_mask=np.zeros(5, bool))
    with pytest.raises(rc.InvalidArgumentError, match="deny_mask"):
        rc.DenseScorer(FACTORS).recommend(u, 2, deny_mask=[0, 1])
    with pytest.raises(rc.InvalidArgumentError, match="checksum"):
        blob = bytearray(s.to_bytes())
        blob[-1] ^= 1
        rc.CompressedScorer.from_bytes(bytes(blob), FACTORS)
