"""`recsys_core.als_solve_row` (SVD fold-in) against np.linalg.solve of the same weighted-ALS
normal equations, and its argument checks."""

from __future__ import annotations

import numpy as np
import pytest

import recsys_core as rc


def numpy_solve(y, cols, vals, alpha, reg, nu):
    y = y.astype(np.float64)
    yh = y[cols]
    aw = alpha * vals.astype(np.float64)
    a = y.T @ y + reg * max(len(cols), 1) ** nu * np.eye(y.shape[1]) + (yh.T * aw) @ yh
    return np.linalg.solve(a, (1 + aw) @ yh)


@pytest.mark.parametrize("nu", [0.0, 0.5, 1.0])
def test_rust_row_solve_matches_numpy(nu):
    rng = np.random.default_rng(3)
    y = rng.standard_normal((200, 24)).astype(np.float32) * 0.3
    yty = (y.astype(np.float64).T @ y).astype(np.float32)
    cols = rng.choice(200, 30, replace=False).astype(np.int32)
    vals = rng.uniform(0.5, 4.0, 30).astype(np.float32)
    got = rc.als_solve_row(cols, vals, y, yty, alpha=2.0, reg=1.5, reg_exponent=nu)
    want = numpy_solve(y, cols, vals, 2.0, 1.5, nu)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_rust_row_solve_rejects_bad_input():
    y = np.ones((4, 3), np.float32)
    yty = y.T @ y
    with pytest.raises(rc.InvalidArgumentError, match="out of range"):
        rc.als_solve_row([4], [1.0], y, yty, alpha=1.0, reg=1.0)
    with pytest.raises(rc.InvalidArgumentError, match="yty"):
        rc.als_solve_row([0], [1.0], y, yty[:2], alpha=1.0, reg=1.0)
    with pytest.raises(rc.NonFiniteError):
        rc.als_solve_row([0], [np.nan], y, yty, alpha=1.0, reg=1.0)
