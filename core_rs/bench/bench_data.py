"""Datasets for the core benchmark: MovieLens 100k and a seeded synthetic power-law matrix.

Nothing here is written to disk; the MovieLens file is read from the path given on the
command line and never copied.
"""

from __future__ import annotations

import os
import time

import numpy as np
import scipy.sparse as sp


def load_ml100k(path: str, values: str = "binary") -> sp.csr_matrix:
    """Users x items CSR (float32) from MovieLens 100k's ``u.data`` (user item rating ts).

    ``values="binary"`` stores 1.0 for every rating, ``"rating"`` the rating itself.
    Ids are 1-based in the file and become 0-based rows/columns.
    """
    raw = np.loadtxt(path, dtype=np.int64, delimiter="\t", usecols=(0, 1, 2))
    users = raw[:, 0] - 1
    items = raw[:, 1] - 1
    if values == "binary":
        data = np.ones(len(raw), dtype=np.float32)
    elif values == "rating":
        data = raw[:, 2].astype(np.float32)
    else:
        raise ValueError(f"unknown values={values!r}")
    shape = (int(users.max()) + 1, int(items.max()) + 1)
    m = sp.csr_matrix((data, (users, items)), shape=shape, dtype=np.float32)
    m.sum_duplicates()
    m.sort_indices()
    return m


def synthetic_power_law(
    n_users: int = 100_000,
    n_items: int = 20_000,
    nnz: int = 5_000_000,
    *,
    seed: int = 20240601,
    item_exponent: float = 0.9,
    user_sigma: float = 1.1,
    min_user: int = 2,
    max_user: int | None = None,
) -> sp.csr_matrix:
    """A seeded users x items implicit-feedback matrix with exactly ``nnz`` distinct entries.

    * Item popularity is Zipf-like: P(item of popularity rank r) ~ r^-item_exponent, and the
      ranks are shuffled over the item ids so popular items are not the low ids.
    * User activity is lognormal (sigma ``user_sigma``) scaled to ``nnz`` in total, clipped to
      ``[min_user, max_user]`` (default cap: 5% of the catalogue).
    * Pairs are drawn independently (user by activity, item by popularity), deduplicated, and
      topped up with fresh draws until exactly ``nnz`` distinct pairs exist (surplus new pairs
      are dropped at random). Everything is vectorised numpy; values are 1.0 (float32).
    """
    if nnz > n_users * n_items:
        raise ValueError("nnz larger than the matrix")
    rng = np.random.default_rng(seed)
    if max_user is None:
        max_user = max(min_user, n_items // 20)

    # item popularity
    ranks = np.arange(1, n_items + 1, dtype=np.float64)
    p_item = ranks**-item_exponent
    p_item /= p_item.sum()
    p_item = p_item[rng.permutation(n_items)]
    cdf_item = np.cumsum(p_item)
    cdf_item[-1] = 1.0

    # user activity (target counts)
    act = rng.lognormal(mean=0.0, sigma=user_sigma, size=n_users)
    act *= nnz / act.sum()
    act = np.clip(np.rint(act), min_user, max_user)
    p_user = act / act.sum()
    cdf_user = np.cumsum(p_user)
    cdf_user[-1] = 1.0

    def sorted_unique(k: np.ndarray) -> np.ndarray:
        # sort + neighbour compare: much faster than np.unique's hash path on int64 keys
        k = np.sort(k)
        keep = np.empty(len(k), dtype=bool)
        keep[:1] = True
        np.not_equal(k[1:], k[:-1], out=keep[1:])
        return k[keep]

    def draw_items(n: int) -> np.ndarray:
        return np.searchsorted(cdf_item, rng.random(n), side="right").astype(np.int64)

    # first pass: each user gets its target count (plus a margin for duplicates)
    counts = act.astype(np.int64)
    users = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    keys = sorted_unique(users * n_items + draw_items(len(users)))

    # top up: draw extra pairs (user by activity) until exactly nnz distinct pairs
    while len(keys) < nnz:
        deficit = nnz - len(keys)
        m = int(deficit * 1.3) + 1024
        u = np.searchsorted(cdf_user, rng.random(m), side="right").astype(np.int64)
        new = sorted_unique(u * n_items + draw_items(m))
        new = new[~np.isin(new, keys, assume_unique=True)]
        if len(new) > deficit:
            new = rng.choice(new, size=deficit, replace=False)
        keys = np.sort(np.concatenate([keys, new]))  # disjoint sets
    if len(keys) > nnz:  # first pass overshot: drop a random surplus
        keys = np.sort(rng.choice(keys, size=nnz, replace=False))

    rows = (keys // n_items).astype(np.int32)
    cols = (keys % n_items).astype(np.int32)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
    data = np.ones(nnz, dtype=np.float32)
    m = sp.csr_matrix((data, cols, indptr), shape=(n_users, n_items))
    m.has_sorted_indices = True
    return m


def describe(m: sp.csr_matrix) -> dict:
    """Shape, density and the long tail of a users x items matrix."""
    per_user = np.diff(m.indptr)
    per_item = np.bincount(m.indices, minlength=m.shape[1])
    return {
        "users": m.shape[0],
        "items": m.shape[1],
        "nnz": int(m.nnz),
        "density": m.nnz / (m.shape[0] * m.shape[1]),
        "user_activity_p50_p99_max": [
            int(np.percentile(per_user, 50)),
            int(np.percentile(per_user, 99)),
            int(per_user.max()),
        ],
        "item_popularity_p50_p99_max": [
            int(np.percentile(per_item, 50)),
            int(np.percentile(per_item, 99)),
            int(per_item.max()),
        ],
        "cooccurrence_work": int((per_user.astype(np.float64) ** 2).sum()),
    }


if __name__ == "__main__":  # quick look: python core_rs/bench/bench_data.py
    t = time.perf_counter()
    m = synthetic_power_law()
    print(f"generated in {time.perf_counter() - t:.2f}s", describe(m))
    ml = os.environ.get("ML100K", "/work/shared/datasets/ml-100k/u.data")
    if os.path.exists(ml):
        print(describe(load_ml100k(ml)))
