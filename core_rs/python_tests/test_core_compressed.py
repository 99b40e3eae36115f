"""CompressedScorer: PQ4 fast-scan codes with exact rerank (exact k, filters, recall, bytes)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from _core_support import core


@pytest.fixture(scope="module")
def rc():
    return core()


def _factors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Clustered directions with long-tailed (popularity-scaled) norms, like ALS factors."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((32, dim)).astype(np.float32)
    label = rng.integers(0, 32, n)
    pop = (1.0 / np.arange(1, n + 1) ** 0.3)[rng.permutation(n)]
    x = centres[label] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return (x * (0.2 + 3.0 * pop[:, None])).astype(np.float32)


def _users(n: int, dim: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((32, dim)).astype(np.float32)
    return (centres[rng.integers(0, 32, n)] + 0.5 * rng.standard_normal((n, dim))).astype(
        np.float32
    )


N, DIM = 4000, 16
F = _factors(N, DIM)


@pytest.fixture(scope="module", params=[0, 12], ids=["flat", "ivf"])
def scorer(rc, request):
    return rc.CompressedScorer.build(F, seed=3, ivf_lists=request.param)


def _mask(open_items: int, seed: int) -> np.ndarray:
    mask = np.ones(N, dtype=bool)
    mask[np.random.default_rng(seed).choice(N, open_items, replace=False)] = False
    return mask


@pytest.mark.parametrize("open_items", [0, 1, 9, 10, 11, 40, 200, 2000, 3990, N])
def test_exact_k_under_every_mask_density(rc, scorer, open_items):
    k = 10
    mask = _mask(open_items, open_items)
    exclude = np.array([0, 1, 2, 3], np.int32)
    eligible = np.flatnonzero(~mask)
    eligible = eligible[~np.isin(eligible, exclude)]
    dense = rc.DenseScorer(F)
    for u in _users(5, DIM):
        r = scorer.recommend(u, k, exclude=exclude, deny_mask=mask)
        assert len(r.items) == min(k, len(eligible))
        assert not mask[r.items].any()
        assert not np.isin(r.items, exclude).any()
        assert len(set(r.items.tolist())) == len(r.items)
        # Scores are the exact inner products, best first.
        np.testing.assert_allclose(r.scores, F[r.items] @ u, rtol=1e-5, atol=1e-5)
        assert np.all(np.diff(r.scores) <= 0)
        e = dense.recommend(u, k, exclude=exclude, deny_mask=mask)
        assert len(e.items) == len(r.items)


def test_never_returns_denied_or_seen_in_batch(rc, scorer):
    mask = _mask(N // 2, 7)
    users = _users(6, DIM)
    seen = sp.random(6, N, density=0.01, format="csr", random_state=1)
    deny = np.array([5, 6, 7], np.int32)
    b = scorer.recommend_batch(users, 10, exclude=seen, deny=deny, deny_mask=mask)
    assert len(b) == 6
    for u in range(6):
        items = b[u].items
        assert len(items) == 10
        assert not mask[items].any()
        assert not np.isin(items, deny).any()
        assert not np.isin(items, seen[u].indices).any()
        one = scorer.recommend(users[u], 10, exclude=seen[u].indices, deny=deny, deny_mask=mask)
        np.testing.assert_array_equal(one.items, items)


@pytest.mark.parametrize("length", [3, 50, 1500])
def test_allow_lists(rc, scorer, length):
    allow = np.arange(0, N, N // length)[:length]
    r = scorer.recommend(_users(1, DIM)[0], 10, allow=allow, deny=allow[:1])
    assert len(r.items) == min(10, length - 1)
    assert np.isin(r.items, allow[1:]).all()


def test_recall_against_exact(rc):
    n, dim = 50_000, 64
    f = _factors(n, dim, seed=5)
    dense = rc.DenseScorer(f)
    half = np.random.default_rng(2).random(n) < 0.5
    most = np.random.default_rng(3).random(n) < 0.99
    for lists in (0, 40):
        s = rc.CompressedScorer.build(f, ivf_lists=lists)
        for mask in (None, half, most):
            hits = 0
            users = _users(40, dim, seed=9)
            for u in users:
                got = s.recommend(u, 10, deny_mask=mask).items
                want = dense.recommend(u, 10, deny_mask=mask).items
                hits += len(np.intersect1d(got, want))
            assert hits / (10 * len(users)) >= 0.95, (lists, hits)


def test_round_trip_and_determinism(rc, scorer):
    blob = scorer.to_bytes()
    again = rc.CompressedScorer.build(F, seed=3, ivf_lists=scorer.ivf_lists)
    assert again.to_bytes() == blob
    loaded = rc.CompressedScorer.from_bytes(blob, F)
    assert (loaded.n_items, loaded.dim, loaded.ivf_lists) == (N, DIM, scorer.ivf_lists)
    u = _users(1, DIM)[0]
    np.testing.assert_array_equal(loaded.recommend(u, 7).items, scorer.recommend(u, 7).items)
    other = rc.CompressedScorer.build(F, seed=4, ivf_lists=scorer.ivf_lists)
    assert other.to_bytes() != blob


def test_refusals(rc, scorer):
    blob = scorer.to_bytes()
    damaged = bytearray(blob)
    damaged[-5] ^= 0xFF
    with pytest.raises(rc.InvalidArgumentError, match="checksum"):
        rc.CompressedScorer.from_bytes(bytes(damaged), F)
    version = bytearray(blob)
    version[8] = 77
    with pytest.raises(rc.InvalidArgumentError, match="format version 77"):
        rc.CompressedScorer.from_bytes(bytes(version), F)
    with pytest.raises(rc.InvalidArgumentError, match="wrong shape"):
        rc.CompressedScorer.from_bytes(blob, F[:-1])
    changed = F.copy()
    changed[10, 3] += 0.5
    with pytest.raises(rc.InvalidArgumentError, match="other factors"):
        rc.CompressedScorer.from_bytes(blob, changed)
    with pytest.raises(rc.InvalidArgumentError, match="truncated"):
        rc.CompressedScorer.from_bytes(blob[:-3], F)
    with pytest.raises(rc.InvalidArgumentError, match="magic"):
        rc.CompressedScorer.from_bytes(b"nonsense", F)
    with pytest.raises(rc.InvalidArgumentError, match="blob"):
        rc.CompressedScorer.from_bytes("text", F)


def test_bad_arguments_name_the_argument(rc, scorer):
    u = _users(1, DIM)[0]
    cases = {
        "deny_mask": lambda: scorer.recommend(u, deny_mask=np.zeros(N, np.int8)),
        "deny_mask must have shape": lambda: scorer.recommend(u, deny_mask=np.zeros(3, bool)),
        "user_vector": lambda: scorer.recommend(u[:3]),
        "exclude": lambda: scorer.recommend(u, exclude=[N]),
        "allow": lambda: scorer.recommend(u, allow=[-1]),
        "k": lambda: scorer.recommend(u, k=-1),
        "rerank": lambda: scorer.recommend(u, rerank="many"),
        "num_threads": lambda: scorer.recommend(u, num_threads=0),
        "ivf_lists": lambda: rc.CompressedScorer.build(F, ivf_lists=N + 1),
        "seed": lambda: rc.CompressedScorer.build(F, seed=-1),
        "item_factors": lambda: rc.CompressedScorer.build(np.ones(4)),
    }
    for name, call in cases.items():
        with pytest.raises(rc.InvalidArgumentError, match=name):
            call()
    with pytest.raises(rc.NonFiniteError):
        rc.CompressedScorer.build(np.full((3, 2), np.nan, np.float32))


def test_small_and_empty_catalogues(rc):
    f = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    s = rc.CompressedScorer.build(f)
    r = s.recommend(np.array([1.0, 1.0], np.float32), 5)
    np.testing.assert_array_equal(r.items, [2, 0, 1])
    assert s.recommend(np.array([1.0, 1.0], np.float32), 0).items.size == 0
    assert rc.IVF_MIN_ITEMS >= 1_000_000
    dense = rc.DenseScorer(f)
    r = dense.recommend(np.ones(2, np.float32), 5, deny_mask=np.array([False, True, False]))
    np.testing.assert_array_equal(r.items, [2, 0])
