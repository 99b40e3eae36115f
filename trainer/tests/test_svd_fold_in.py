"""SVD fold-in of live histories: a training row folds in to one more half-step, a known
user's vector follows their new events (answer, explanation, hybrid part), old artifacts.
The Rust row solve itself: core_rs/python_tests/test_core_als_solve_row.py."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from test_model_contract import synthetic

import recsys_core as rc
from recsys_core.data import Interactions
from recsys_core.models import SVD, Hybrid, HybridConfig, SVDConfig
from recsys_core.models.base import single_row


@pytest.fixture(scope="module")
def data() -> Interactions:
    return synthetic()


@pytest.fixture(scope="module")
def svd(data) -> SVD:
    return SVD(SVDConfig(n_factors=16, iterations=6)).fit(data)


def test_unchanged_training_row_folds_in_to_one_more_half_step(svd, data):
    """Solving a training row against the final item factors is one more user half-step
    (run to convergence); the stored vector answers while the row is unchanged."""
    h = data.to_csr()
    users = np.arange(40)
    c = svd.config
    half = svd.user_factors_[users].copy()
    rc.als_half_step(
        h[users], half, svd.item_factors_, alpha=c.alpha, reg=c.regularization, cg_steps=50
    )
    np.testing.assert_allclose(svd.fold_in(h[users]), half, rtol=1e-3, atol=1e-4)
    # the training row itself keeps the trained vector (what offline evaluation scored)
    for u in users[:5]:
        np.testing.assert_array_equal(svd._vector(int(u), h[u]), svd.user_factors_[u])
    assert svd.trained_rows(users, h[users]).all()


def test_known_user_vector_follows_new_events(svd, data):
    h = data.to_csr()
    u = 7
    row = h[u]
    new = sp.csr_matrix(row + single_row([1, 2, 3], [5.0, 5.0, 5.0], data.n_items))
    v = svd._vector(u, new)
    assert not np.allclose(v, svd.user_factors_[u])
    np.testing.assert_allclose(v, svd.fold_in(new)[0], rtol=1e-5, atol=1e-6)
    # one more weight on an item already in the row counts as new too
    bumped = row.copy()
    bumped.data = bumped.data.copy()
    bumped.data[0] += 1.0
    assert not svd.trained_rows(np.array([u]), bumped)[0]
    # the batch path agrees with the single-user one
    batch = svd.user_vectors(np.array([u, u + 1]), sp.vstack([new, h[u + 1]]).tocsr())
    np.testing.assert_allclose(batch[0], v, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(batch[1], svd.user_factors_[u + 1])
    # the answer and its explanation use the folded vector
    rec = svd.recommend_one(u, new, 10)
    assert rec.items.tolist() != svd.recommend_one(u, row, 10).items.tolist()
    np.testing.assert_allclose(rec.scores, (svd.item_factors_[rec.items] @ v), rtol=1e-4)
    ex = svd.explain(u, new, rec.items[:1])[0].fields
    contrib = v * svd.item_factors_[rec.items[0]]
    assert ex["factors"] == np.argsort(-contrib)[:3].tolist()


def test_unknown_user_session_is_folded_in_the_same_way(svd, data):
    row = single_row([4, 9, 11], None, data.n_items)
    np.testing.assert_allclose(svd._vector(-1, row), svd._vector(3, row), rtol=1e-6)
    assert not svd._vector(-1, single_row([], None, data.n_items)).any()


def test_old_artifacts_without_checksums_keep_trained_vectors(svd, data, tmp_path):
    svd.save(tmp_path)
    arrays = dict(np.load(tmp_path / "svd.npz"))
    assert {"row_nnz", "row_checksum"} <= arrays.keys()
    assert SVD.load(tmp_path).trained_rows(np.arange(3), data.to_csr()[:3]).all()
    np.savez(tmp_path / "svd.npz", user_factors=arrays["user_factors"],
             item_factors=arrays["item_factors"])  # fmt: skip
    old = SVD.load(tmp_path)
    assert old.row_nnz_ is None
    new = sp.csr_matrix(data.to_csr()[7] + single_row([1, 2], [5.0, 5.0], data.n_items))
    np.testing.assert_array_equal(old._vector(7, new), svd.user_factors_[7])
    np.testing.assert_allclose(old._vector(-1, new), svd._vector(-1, new), rtol=1e-6)


def test_hybrid_blend_part_uses_the_folded_vector(svd, data):
    h = data.to_csr()
    hybrid = Hybrid(HybridConfig(weights={"svd": 1.0}, tune=False), components={"svd": svd},
                    fit_components=False)  # fmt: skip
    hybrid.n_users, hybrid.n_items = data.n_users, data.n_items
    u = 7
    new = sp.csr_matrix(h[u] + single_row([1, 2, 3], [5.0, 5.0, 5.0], data.n_items))
    _, vec, _ = svd.blend_part(u, new, 1.0)
    np.testing.assert_allclose(vec, svd.fold_in(new)[0], rtol=1e-5, atol=1e-6)
    got = hybrid.recommend_one(u, new, 10).items.tolist()
    assert got == svd.recommend_one(u, new, 10).items.tolist()
    assert got != hybrid.recommend_one(u, h[u], 10).items.tolist()
