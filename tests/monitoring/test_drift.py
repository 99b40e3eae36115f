"""`recsys_server.drift` on its own: the window's shares, coverage and popularity profile."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.sparse as sp
from prometheus_client import CollectorRegistry, generate_latest

from recsys_server.drift import DriftCollector, DriftTracker, Profile
from recsys_server.router import COLD_START, PERSONALIZED, POPULARITY, TIERS


@dataclass
class Item:
    item_id: str


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


ITEMS = [f"i{n}" for n in range(6)]
INDEX = {item: n for n, item in enumerate(ITEMS)}
# Training interactions per item: i2 x3, i0 x2, i4 x1, the rest none (users x items).
HISTORY = sp.csr_matrix(
    np.array(
        [
            [1, 0, 1, 0, 1, 0],
            [1, 0, 1, 0, 0, 0],
            [0, 0, 1, 0, 0, 0],
        ],
        np.float32,
    )
)
# Popularity ranks: i2 0, i0 1, i4 2, then ties by index: i1 3, i3 4, i5 5.
RANK = {"i2": 0, "i0": 1, "i4": 2, "i1": 3, "i3": 4, "i5": 5}


def log_rank(item: str) -> float:
    return math.log1p(RANK[item]) / math.log(len(ITEMS))


def items(*ids: str) -> list[Item]:
    return [Item(i) for i in ids]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tracker(clock: Clock) -> DriftTracker:
    t = DriftTracker(TIERS, window_seconds=100, buckets=10, clock=clock)
    t.set_catalog(INDEX, HISTORY)
    return t


def test_profile_ranks_by_training_interactions() -> None:
    p = Profile(INDEX, HISTORY)
    for item, n in INDEX.items():
        assert p.log_rank[n] == pytest.approx(log_rank(item))
    assert p.log_rank[INDEX["i2"]] == 0.0 and p.log_rank[INDEX["i5"]] == pytest.approx(1.0)
    # Mean over the 6 training interactions: 3 on i2, 2 on i0, 1 on i4.
    expected = (3 * log_rank("i2") + 2 * log_rank("i0") + log_rank("i4")) / 6
    assert p.training_mean == pytest.approx(expected)


def test_tier_share_coverage_and_served_profile(tracker: DriftTracker) -> None:
    for _ in range(3):
        tracker.served(COLD_START, items("i0", "i1"))
    for _ in range(5):
        tracker.served(PERSONALIZED, items("i2", "i3", "i4"))
    tracker.served(POPULARITY, items("i2", "unknown-item"))  # unknown ids are ignored
    s = tracker.stats()
    assert s.lists == 9
    assert s.tier_share == {
        PERSONALIZED: pytest.approx(5 / 9),
        COLD_START: pytest.approx(3 / 9),
        POPULARITY: pytest.approx(1 / 9),
    }
    assert s.coverage == pytest.approx(5 / 6)  # i0..i4 served, i5 never
    served = (
        3 * (log_rank("i0") + log_rank("i1"))
        + 5 * (log_rank("i2") + log_rank("i3") + log_rank("i4"))
        + log_rank("i2")
    ) / (3 * 2 + 5 * 3 + 1)
    assert s.served_log_rank == pytest.approx(served)
    assert s.training_log_rank == pytest.approx(Profile(INDEX, HISTORY).training_mean)
    assert s.n_items == 6


def test_window_slides(tracker: DriftTracker, clock: Clock) -> None:
    tracker.served(COLD_START, items("i5"))
    clock.t += 50
    tracker.served(PERSONALIZED, items("i0"))
    assert tracker.stats().lists == 2
    clock.t += 55  # the first list is now more than 100 s old
    s = tracker.stats()
    assert s.lists == 1 and s.tier_share[PERSONALIZED] == 1.0
    assert s.coverage == pytest.approx(1 / 6)
    assert s.served_log_rank == pytest.approx(log_rank("i0"))
    clock.t += 100
    s = tracker.stats()
    assert s.lists == 0 and s.coverage == 0.0
    assert math.isnan(s.served_log_rank) and math.isnan(s.tier_share[COLD_START])


def test_a_new_catalog_restarts_the_window(tracker: DriftTracker) -> None:
    tracker.served(PERSONALIZED, items("i0", "i1"))
    assert tracker.stats().lists == 1
    index = {"i0": 0, "x": 1}
    tracker.set_catalog(index, sp.csr_matrix(np.array([[0, 1]], np.float32)))
    tracker.served(PERSONALIZED, items("i0"))
    s = tracker.stats()
    assert s.lists == 1 and s.n_items == 2 and s.coverage == 0.5
    assert s.served_log_rank == pytest.approx(1.0)  # i0 is now the less popular of two


def test_follows_a_snapshot_source(clock: Clock) -> None:
    @dataclass
    class Snap:
        item_index: dict
        history: sp.csr_matrix

    current: list[Snap | None] = [None]
    t = DriftTracker(TIERS, window_seconds=100, buckets=10, clock=clock)
    t.follow(lambda: current[0])
    t.served(PERSONALIZED, items("i0"))  # no catalog yet: dropped
    assert math.isnan(t.stats().coverage)
    current[0] = Snap(INDEX, HISTORY)
    t.served(PERSONALIZED, items("i0", "i2"))
    assert t.stats().coverage == pytest.approx(2 / 6)


def test_a_new_version_is_noticed_at_the_next_window_step(clock: Clock) -> None:
    @dataclass
    class Snap:
        item_index: dict
        history: sp.csr_matrix

    current = [Snap(INDEX, HISTORY)]
    t = DriftTracker(TIERS, window_seconds=100, buckets=10, clock=clock)
    t.follow(lambda: current[0])
    t.served(PERSONALIZED, items("i0"))
    current[0] = Snap({"x": 0, "y": 1}, sp.csr_matrix(np.array([[1, 0]], np.float32)))
    t.served(PERSONALIZED, items("x"))  # same step, no scrape: still counted on the old one
    clock.t += 10  # next step: the new catalog, a new window
    t.served(PERSONALIZED, items("x"))
    s = t.stats()
    assert s.n_items == 2 and s.lists == 1 and s.coverage == 0.5


def test_request_path_only_counts(clock: Clock) -> None:
    """A list served costs counting only: the catalog (the served snapshot) is read once per
    window step, by the first list of the step, never again for the lists after it. What that
    costs in microseconds is for a benchmark, not asserted here."""

    @dataclass
    class Snap:
        item_index: dict
        history: sp.csr_matrix

    snap, reads = Snap(INDEX, HISTORY), []
    t = DriftTracker(TIERS, window_seconds=100, buckets=10, clock=clock)
    t.follow(lambda: reads.append(clock.t) or snap)
    lst = items("i0", "i1", "i2", "i3", "i4", "i5", "i0", "i1", "i2", "zz")
    n = 20_000
    for _ in range(n):
        t.served(PERSONALIZED, lst)
    assert reads == [1000.0]
    clock.t += 10  # the next step
    for _ in range(n):
        t.served(PERSONALIZED, lst)
    assert reads == [1000.0, 1010.0]
    assert t.stats().lists == 2 * n


def test_collector_exports_the_window(tracker: DriftTracker) -> None:
    tracker.served(COLD_START, items("i0"))
    tracker.served(PERSONALIZED, items("i1"))
    reg = CollectorRegistry()
    reg.register(DriftCollector(tracker))
    text = generate_latest(reg).decode()
    assert 'recsys_tier_share{tier="cold_start"} 0.5' in text
    assert 'recsys_tier_share{tier="popularity"} 0.0' in text
    assert "recsys_catalog_coverage 0.3333" in text
    assert "recsys_drift_window_lists 2.0" in text
    assert "recsys_served_popularity_log_rank " in text
    assert "recsys_training_popularity_log_rank " in text
