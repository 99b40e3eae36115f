"""blend_topk (the hybrid's one-call request path) against a plain numpy blend."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

rc = pytest.importorskip("recsys_core")


def _normalised(v: np.ndarray) -> np.ndarray:
    peak = np.abs(v).max() if v.size else 0.0
    return v / peak if peak > 0 else v


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n_items=st.integers(1, 40),
    k=st.integers(0, 45),
    weights=st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0]), min_size=3, max_size=3),
    n_exclude=st.integers(0, 5),
)
def test_blend_matches_numpy(seed, n_items, k, weights, n_exclude):
    rng = np.random.default_rng(seed)
    nbrs = sp.random(
        n_items, n_items, density=0.2, format="csr", random_state=rng, dtype=np.float32
    )
    nbrs.data = np.round(nbrs.data * 8) / 8  # multiples of 1/8: float32 sums are exact
    factors = (rng.integers(-4, 5, size=(n_items, 3)) / 4).astype(np.float32)
    fixed = rng.integers(0, 6, size=n_items).astype(np.float32)
    hist = rng.choice(n_items, size=min(3, n_items), replace=False).astype(np.int32)
    hw = np.ones(len(hist), np.float32)
    user = np.array([1.0, -0.5, 0.25], np.float32)
    exclude = rng.choice(n_items, size=min(n_exclude, n_items), replace=False)

    got = rc.blend_topk(
        [
            (rc.SparseScorer(nbrs), hist, hw, weights[0]),
            (rc.DenseScorer(factors), user, weights[1]),
            (fixed, weights[2]),
        ],
        n_items,
        k,
        exclude=exclude,
    )

    parts = [
        _normalised(np.asarray(nbrs[hist].sum(axis=0)).ravel().astype(np.float64)),
        _normalised(factors.astype(np.float64) @ user.astype(np.float64)),
        _normalised(fixed.astype(np.float64)),
    ]
    blend = sum(w * p for w, p in zip(weights, parts, strict=True))
    eligible = np.setdiff1d(np.arange(n_items), exclude)
    assert len(got.items) == min(k, len(eligible))
    assert not np.isin(got.items, exclude).any()
    np.testing.assert_allclose(got.scores, blend[got.items], rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(got.scores) <= 1e-6)
    # The k-th best score of the reference is reached: nothing left out beats what was kept.
    if len(got.items):
        left_out = np.setdiff1d(eligible, got.items)
        if left_out.size:
            assert blend[left_out].max() <= got.scores.min() + 1e-5
    for p, part in enumerate(parts):
        np.testing.assert_allclose(got.part_scores[p], part[got.items], rtol=1e-5, atol=1e-6)


def test_blend_rejects_bad_input():
    with pytest.raises(rc.CoreError):
        rc.blend_topk([(np.array([1.0, np.nan], np.float32), 1.0)], 2, 1)
    with pytest.raises(rc.CoreError):
        rc.blend_topk([(np.ones(3, np.float32), 1.0)], 2, 1)
    with pytest.raises(rc.CoreError):
        rc.blend_topk([(np.ones(2, np.float32), 1.0)], 2, 1, exclude=[7])
    scorer = rc.SparseScorer(sp.csr_matrix(np.eye(2, dtype=np.float32)))
    with pytest.raises(rc.CoreError):
        rc.blend_topk([(scorer, [5], None, 1.0)], 2, 1)
