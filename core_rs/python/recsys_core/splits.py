"""Train/test splits of `Interactions`. Both halves keep the input's id maps.

`random_holdout` and `leave_last_n` hold out whole (user, item) pairs: every row of a held-out
pair goes to test. Otherwise a log with repeats (view, click, purchase of one item) would put
the same item on both sides, and a recommender that skips already-seen items could never hit
it. `temporal_split` cuts rows by time, so an item can appear on both sides (repeat
consumption); `relevant_items` can exclude train items when building the relevant sets.
"""

from __future__ import annotations

import numpy as np

from recsys_core.data import Interactions


def _pairs(inter: Interactions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (user, item) pairs sorted by user then item: (pair_user, pair_of_row, n_pairs
    per user)."""
    key = inter.user_idx.astype(np.int64) * max(inter.n_items, 1) + inter.item_idx
    uniq, pair_of_row = np.unique(key, return_inverse=True)
    pair_user = (uniq // max(inter.n_items, 1)).astype(np.int64)
    per_user = np.bincount(pair_user, minlength=inter.n_users)
    return pair_user, pair_of_row.ravel(), per_user


def _rank_within_user(pair_user: np.ndarray, *keys: np.ndarray) -> np.ndarray:
    """Each pair's 0-based rank among its user's pairs, ordered ascending by ``keys`` (as in
    `np.lexsort`: the last key is the primary one)."""
    order = np.lexsort((*keys, pair_user))
    sorted_user = pair_user[order]
    starts = np.searchsorted(sorted_user, sorted_user, side="left")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - starts
    return rank


def random_holdout(
    inter: Interactions,
    test_fraction: float = 0.2,
    *,
    min_interactions: int = 5,
    seed: int = 42,
) -> tuple[Interactions, Interactions]:
    """Per user, a random ``test_fraction`` of their distinct items goes to test.

    A user with n distinct items holds out ``clip(floor(test_fraction * n + 0.5), 1, n - 1)``
    of them when ``n >= min_interactions``; users with fewer stay wholly in train. All rows of a
    held-out (user, item) pair go to test. Reproducible for a given seed and independent of the
    row order.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be in (0, 1)")
    pair_user, pair_of_row, per_user = _pairs(inter)
    n_test = np.clip(np.floor(test_fraction * per_user + 0.5), 1, np.maximum(per_user - 1, 0))
    n_test = np.where(per_user >= max(min_interactions, 2), n_test, 0).astype(np.int64)
    keys = np.random.default_rng(seed).random(len(pair_user))
    rank = _rank_within_user(pair_user, keys)
    test_pair = rank < n_test[pair_user]
    test_row = test_pair[pair_of_row]
    return inter.take(~test_row), inter.take(test_row)


def leave_last_n(
    inter: Interactions, n: int = 1, *, min_interactions: int = 2
) -> tuple[Interactions, Interactions]:
    """Per user, the ``n`` items they reached last go to test.

    Items are ordered by the user's first interaction with them (ties: higher item index is
    later); a user with m distinct items holds out ``min(n, m - 1)`` when
    ``m >= min_interactions``, else stays wholly in train. All rows of a held-out pair go to
    test.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    pair_user, pair_of_row, per_user = _pairs(inter)
    first_ts = np.full(len(pair_user), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_ts, pair_of_row, inter.timestamp)
    # Rank by time descending; among equal times the higher item ranks first.
    rank = _rank_within_user(pair_user, -np.arange(len(pair_user)), -first_ts)
    n_test = np.where(per_user >= max(min_interactions, 2), np.minimum(n, per_user - 1), 0)
    test_pair = rank < n_test[pair_user]
    test_row = test_pair[pair_of_row]
    return inter.take(~test_row), inter.take(test_row)


def temporal_split(
    inter: Interactions,
    test_fraction: float = 0.2,
    *,
    cutoff: int | None = None,
) -> tuple[Interactions, Interactions]:
    """Global time cutoff: rows with ``timestamp < cutoff`` train, the rest test.

    Without ``cutoff`` it is the ``1 - test_fraction`` quantile of the timestamps (an observed
    value, method "higher"), so roughly ``test_fraction`` of rows land in test (ties at the
    cutoff all go to test).
    """
    if cutoff is None:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError("test_fraction must be in (0, 1)")
        if len(inter) == 0:
            return inter, inter
        cutoff = int(np.quantile(inter.timestamp, 1.0 - test_fraction, method="higher"))
    test_row = inter.timestamp >= cutoff
    return inter.take(~test_row), inter.take(test_row)


def filter_min_interactions(
    inter: Interactions, min_user: int = 5, min_item: int = 1
) -> Interactions:
    """Keep users with >= ``min_user`` rows and items with >= ``min_item`` rows, repeating
    until both hold (a k-core), then drop unused ids so indices stay dense.

    Unlike the splits, the result has new (smaller) id maps.
    """
    keep = np.ones(len(inter), dtype=bool)
    while True:
        users = np.bincount(inter.user_idx[keep], minlength=inter.n_users)
        items = np.bincount(inter.item_idx[keep], minlength=inter.n_items)
        ok = (users[inter.user_idx] >= min_user) & (items[inter.item_idx] >= min_item) & keep
        if np.array_equal(ok, keep):
            break
        keep = ok
    kept = inter.take(keep)
    used_users = np.unique(kept.user_idx)
    used_items = np.unique(kept.item_idx)
    user_map = np.full(inter.n_users, -1, dtype=np.int32)
    user_map[used_users] = np.arange(len(used_users), dtype=np.int32)
    item_map = np.full(inter.n_items, -1, dtype=np.int32)
    item_map[used_items] = np.arange(len(used_items), dtype=np.int32)
    return Interactions(
        user_idx=user_map[kept.user_idx],
        item_idx=item_map[kept.item_idx],
        weight=kept.weight,
        timestamp=kept.timestamp,
        user_ids=inter.user_ids[used_users],
        item_ids=inter.item_ids[used_items],
        event=kept.event,
        catalog=inter.catalog,
    )


def relevant_items(test: Interactions, exclude: Interactions | None = None) -> list[np.ndarray]:
    """Per user index, the sorted distinct items in ``test`` (minus those of ``exclude``, e.g.
    the train split, for "new items only" evaluation). Users with none get an empty array."""
    n_items = max(test.n_items, 1)
    key = np.unique(test.user_idx.astype(np.int64) * n_items + test.item_idx)
    if exclude is not None:
        seen = np.unique(exclude.user_idx.astype(np.int64) * n_items + exclude.item_idx)
        key = np.setdiff1d(key, seen, assume_unique=True)
    users = key // n_items
    bounds = np.searchsorted(users, np.arange(test.n_users + 1))
    items = (key % n_items).astype(np.int64)
    return [items[bounds[u] : bounds[u + 1]] for u in range(test.n_users)]
