import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys_core.data import Interactions
from recsys_core.splits import (
    filter_min_interactions,
    leave_last_n,
    random_holdout,
    relevant_items,
    temporal_split,
)


def make(users, items, timestamps=None, n_users=None, n_items=None) -> Interactions:
    users = np.asarray(users, dtype=np.int32)
    items = np.asarray(items, dtype=np.int32)
    n_users = n_users or (int(users.max()) + 1 if len(users) else 1)
    n_items = n_items or (int(items.max()) + 1 if len(items) else 1)
    if timestamps is None:
        timestamps = np.arange(len(users))
    return Interactions(
        user_idx=users,
        item_idx=items,
        weight=np.ones(len(users)),
        timestamp=np.asarray(timestamps),
        user_ids=np.array([f"u{i}" for i in range(n_users)]),
        item_ids=np.array([f"i{i}" for i in range(n_items)]),
    )


def random_log(seed: int, n: int = 3_000, n_users: int = 60, n_items: int = 80) -> Interactions:
    rng = np.random.default_rng(seed)
    users = (rng.random(n) ** 2 * n_users).astype(int)  # uneven activity
    items = rng.integers(n_items, size=n)
    # Row ids as (unique) timestamps identify rows across the split.
    return make(users, items, rng.permutation(n), n_users=n_users, n_items=n_items)


logs = st.builds(
    random_log,
    seed=st.integers(0, 10_000),
    n=st.integers(0, 400),
    n_users=st.integers(1, 20),
    n_items=st.integers(1, 30),
)


def row_ids(inter: Interactions) -> set[int]:
    return set(inter.timestamp.tolist())


def pairs(inter: Interactions) -> set[tuple[int, int]]:
    return set(zip(inter.user_idx.tolist(), inter.item_idx.tolist(), strict=True))


def assert_partition(inter: Interactions, train: Interactions, test: Interactions) -> None:
    assert row_ids(train).isdisjoint(row_ids(test))
    assert row_ids(train) | row_ids(test) == row_ids(inter)
    assert len(train) + len(test) == len(inter)
    assert train.user_ids is inter.user_ids and test.item_ids is inter.item_ids


@settings(max_examples=60, deadline=None)
@given(logs, st.floats(0.05, 0.95), st.integers(1, 8), st.integers(0, 100))
def test_random_holdout_properties(inter, fraction, min_inter, seed):
    train, test = random_holdout(inter, fraction, min_interactions=min_inter, seed=seed)
    assert_partition(inter, train, test)
    assert pairs(train).isdisjoint(pairs(test))  # whole (user, item) pairs move together
    for u in range(inter.n_users):
        n = len({i for uu, i in pairs(inter) if uu == u})
        held = len({i for uu, i in pairs(test) if uu == u})
        if n >= max(min_inter, 2):
            assert held == min(max(math.floor(fraction * n + 0.5), 1), n - 1)
        else:
            assert held == 0


def test_random_holdout_fraction_on_a_plain_log():
    # 10 users x 10 distinct items each: exactly 2 test items per user at fraction 0.2.
    users = np.repeat(np.arange(10), 10)
    items = np.tile(np.arange(10), 10)
    train, test = random_holdout(make(users, items), 0.2, min_interactions=5, seed=3)
    assert np.bincount(test.user_idx, minlength=10).tolist() == [2] * 10
    assert np.bincount(train.user_idx, minlength=10).tolist() == [8] * 10


def test_random_holdout_keeps_small_users_in_train():
    inter = make([0] * 10 + [1] * 3, [*range(10), 0, 1, 2])
    train, test = random_holdout(inter, 0.5, min_interactions=5)
    assert set(test.user_idx.tolist()) == {0}
    assert (train.user_idx == 1).sum() == 3


def test_random_holdout_is_seeded_and_ignores_row_order():
    inter = random_log(0)
    _, a = random_holdout(inter, 0.3, seed=11)
    _, b = random_holdout(inter, 0.3, seed=11)
    _, c = random_holdout(inter, 0.3, seed=12)
    assert row_ids(a) == row_ids(b)
    assert row_ids(a) != row_ids(c)
    shuffled = inter.take(np.random.default_rng(5).permutation(len(inter)))
    _, d = random_holdout(shuffled, 0.3, seed=11)
    assert row_ids(d) == row_ids(a)


@settings(max_examples=60, deadline=None)
@given(logs, st.floats(0.05, 0.95))
def test_temporal_split_properties(inter, fraction):
    train, test = temporal_split(inter, fraction)
    assert_partition(inter, train, test)
    if len(train) and len(test):
        assert train.timestamp.max() < test.timestamp.min()
    if len(inter) >= 20:  # unique timestamps: the test share is close to the fraction
        assert abs(len(test) / len(inter) - fraction) <= 1 / len(inter) + 1e-9


def test_temporal_split_explicit_cutoff_and_ties():
    inter = make([0, 0, 1, 1, 2], [0, 1, 0, 1, 0], [10, 20, 20, 30, 40])
    train, test = temporal_split(inter, cutoff=20)
    assert train.timestamp.tolist() == [10]
    assert sorted(test.timestamp.tolist()) == [20, 20, 30, 40]


@settings(max_examples=60, deadline=None)
@given(logs, st.integers(1, 4))
def test_leave_last_n_properties(inter, n):
    train, test = leave_last_n(inter, n)
    assert_partition(inter, train, test)
    assert pairs(train).isdisjoint(pairs(test))
    for u in range(inter.n_users):
        rows = inter.user_idx == u
        first = {}
        for i, t in zip(inter.item_idx[rows].tolist(), inter.timestamp[rows].tolist(), strict=True):
            first[i] = min(t, first.get(i, t))
        held = {i for uu, i in pairs(test) if uu == u}
        expected = min(n, len(first) - 1) if len(first) >= 2 else 0
        assert len(held) == expected
        if held and len(held) < len(first):
            # Every held-out item was reached after every kept one.
            kept = set(first) - held
            assert min(first[i] for i in held) > max(first[i] for i in kept)


def test_leave_last_one_by_time_not_row_order():
    inter = make([0, 0, 0, 1, 1], [5, 6, 7, 1, 2], [30, 10, 20, 5, 1])
    _, test = leave_last_n(inter, 1)
    assert sorted(pairs(test)) == [(0, 5), (1, 1)]


def test_leave_last_n_moves_all_rows_of_a_pair():
    inter = make([0, 0, 0, 0], [1, 2, 2, 1], [1, 5, 6, 7])
    _, test = leave_last_n(inter, 1)
    assert sorted(test.timestamp.tolist()) == [5, 6]  # item 2 first reached at 5 > 1


def test_filter_min_interactions_is_a_k_core_with_compact_ids():
    # u0 has 3 rows, u1 2 rows, u2 3 rows on item 9 alone.
    users = [0, 0, 0, 1, 1, 2, 2, 2]
    items = [0, 1, 2, 0, 1, 9, 9, 9]
    inter = make(users, items, n_users=4, n_items=10)
    out = filter_min_interactions(inter, min_user=3)
    assert out.user_ids.tolist() == ["u0", "u2"]
    assert out.item_ids.tolist() == ["i0", "i1", "i2", "i9"]
    assert len(out) == 6
    # With items needing 2 rows, i2 drops, then u0 falls to 2 rows and drops too.
    core = filter_min_interactions(inter, min_user=3, min_item=2)
    assert core.user_ids.tolist() == ["u2"] and core.item_ids.tolist() == ["i9"]


@settings(max_examples=40, deadline=None)
@given(logs, st.integers(1, 10), st.integers(1, 5))
def test_filter_min_interactions_properties(inter, min_user, min_item):
    out = filter_min_interactions(inter, min_user, min_item)
    if len(out):
        assert np.bincount(out.user_idx).min() >= min_user
        assert np.bincount(out.item_idx).min() >= min_item
    assert len(np.unique(out.user_idx)) == out.n_users
    assert len(np.unique(out.item_idx)) == out.n_items
    # External ids of kept rows are unchanged.
    kept = set(zip(out.user_ids[out.user_idx].tolist(), out.timestamp.tolist(), strict=True))
    original = set(
        zip(inter.user_ids[inter.user_idx].tolist(), inter.timestamp.tolist(), strict=True)
    )
    assert kept <= original


def test_relevant_items_with_exclusion():
    train = make([0, 1], [1, 2], n_users=3, n_items=4)
    test = make([0, 0, 0, 1], [1, 3, 3, 0], n_users=3, n_items=4)
    assert [r.tolist() for r in relevant_items(test)] == [[1, 3], [0], []]
    assert [r.tolist() for r in relevant_items(test, exclude=train)] == [[3], [0], []]


def test_bad_arguments():
    inter = random_log(1)
    with pytest.raises(ValueError):
        random_holdout(inter, 1.5)
    with pytest.raises(ValueError):
        temporal_split(inter, 0.0)
    with pytest.raises(ValueError):
        leave_last_n(inter, 0)
