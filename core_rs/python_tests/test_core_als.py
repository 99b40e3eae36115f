"""The weighted-ALS half-step against each row's normal equations solved exactly (float64),
with one regularisation for every row and with the frequency-scaled one
(``reg * max(n_u, 1) ** reg_exponent``)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from _core_support import core


@pytest.fixture(scope="module")
def rc():
    return core()


def exact_half_step(ui: sp.csr_matrix, y: np.ndarray, alpha, reg, reg_exponent) -> np.ndarray:
    """Row u solves (YᵀY + reg_u I + Σ_i alpha w_ui y_i y_iᵀ) x_u = Σ_i (1 + alpha w_ui) y_i,
    reg_u = reg * max(n_u, 1)^reg_exponent, n_u the row's stored entries; dense float64."""
    y = y.astype(np.float64)
    f = y.shape[1]
    yty = y.T @ y
    out = np.zeros((ui.shape[0], f))
    for u in range(ui.shape[0]):
        cols = ui.indices[ui.indptr[u] : ui.indptr[u + 1]]
        w = ui.data[ui.indptr[u] : ui.indptr[u + 1]].astype(np.float64)
        reg_u = reg * max(len(cols), 1) ** reg_exponent
        yc = y[cols]
        a = yty + reg_u * np.eye(f) + (yc.T * (alpha * w)) @ yc
        out[u] = np.linalg.solve(a, (1 + alpha * w) @ yc)
    return out


def _case(seed: int, n_rows=40, n_cols=30, f=5, density=0.25):
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_rows, n_cols)) < density) * rng.integers(1, 6, (n_rows, n_cols))
    dense[0] = 0  # an empty row
    dense[1, 1:] = 0  # a row of at most one entry
    dense[1, 0] = 2
    ui = sp.csr_matrix(dense.astype(np.float32))
    y = rng.standard_normal((n_cols, f)).astype(np.float32)
    x = (rng.standard_normal((n_rows, f)) * 0.1).astype(np.float32)
    return ui, x, y


@pytest.mark.parametrize("reg_exponent", [0.0, 0.5, 1.0])
@pytest.mark.parametrize(("alpha", "reg"), [(2.0, 0.5), (10.0, 3.0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_half_step_solves_the_normal_equations(rc, seed, alpha, reg, reg_exponent):
    ui, x, y = _case(seed)
    assert np.diff(ui.indptr).max() > 1
    want = exact_half_step(ui, y, alpha, reg, reg_exponent)
    # CG on f unknowns converges in f steps in exact arithmetic; a few more for float32
    rc.als_half_step(
        ui, x, y, alpha=alpha, reg=reg, cg_steps=3 * y.shape[1], reg_exponent=reg_exponent
    )
    np.testing.assert_allclose(x, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())


def test_exponent_zero_is_the_scalar_regularisation_bit_for_bit(rc):
    ui, x0, y = _case(2, n_rows=200, n_cols=100, f=16, density=0.1)
    plain, zero = x0.copy(), x0.copy()
    rc.als_half_step(ui, plain, y, alpha=4.0, reg=10.0, cg_steps=3)
    rc.als_half_step(ui, zero, y, alpha=4.0, reg=10.0, cg_steps=3, reg_exponent=0.0)
    assert np.array_equal(plain, zero)


def test_scaling_only_changes_rows_with_more_than_one_entry(rc):
    ui, x0, y = _case(3, n_rows=100, n_cols=60, f=8, density=0.05)
    counts = np.diff(ui.indptr)
    assert (counts <= 1).any() and (counts > 1).any()
    flat, scaled = x0.copy(), x0.copy()
    rc.als_half_step(ui, flat, y, alpha=2.0, reg=5.0, cg_steps=3)
    rc.als_half_step(ui, scaled, y, alpha=2.0, reg=5.0, cg_steps=3, reg_exponent=1.0)
    assert np.array_equal(flat[counts <= 1], scaled[counts <= 1])
    assert not np.allclose(flat[counts > 1], scaled[counts > 1])
    # a stronger penalty shrinks: with reg_u = 5 n_u every busy row's solution is smaller
    big = counts > 1
    assert np.all(np.linalg.norm(scaled[big], axis=1) < np.linalg.norm(flat[big], axis=1))


@pytest.mark.parametrize("bad", [-0.5, 1.5, np.nan, np.inf])
def test_reg_exponent_out_of_range_is_refused(rc, bad):
    ui, x, y = _case(4)
    before = x.copy()
    with pytest.raises(rc.InvalidArgumentError, match="reg_exponent"):
        rc.als_half_step(ui, x, y, alpha=1.0, reg=1.0, reg_exponent=bad)
    assert np.array_equal(x, before)
