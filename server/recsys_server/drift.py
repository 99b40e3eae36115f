"""Drift signals of what the server answers, over a sliding window, exported at scrape time.

* share of recommendation lists per fallback tier (cold-start share: ``tier="cold_start"``);
* popularity profile of the items served: the mean normalised log-popularity rank,
  ``ln(1 + rank) / ln(n_items)`` (rank 0 = the item with the most training interactions, so
  0 = most popular, 1 = least), next to the same mean over the training interactions;
* catalog coverage: distinct items served / items in the serving version.

The request path does a few plain-Python operations per served item (an id lookup, a byte
set, a float add: about 1.5 us for a list of 10) on the current window step; everything else
(summing the steps, coverage, the profile of a new version) happens when Prometheus scrapes.
Nothing is deferred to the request path: an earlier version batched lists and aggregated
them every few thousand requests, and that one 20-40 ms aggregation showed as the p99.

The window is the last `WINDOW_SECONDS` in `BUCKETS` steps (a list leaves it between
(BUCKETS-1) and BUCKETS steps after it was served). It restarts when the catalog changes (a new
model version: item indices and the training profile belong to one version); the change is
noticed at the next scrape or window step.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

WINDOW_SECONDS = 600.0
BUCKETS = 10
NAN = float("nan")


class Profile:
    """One catalog's training popularity: each item's normalised log-popularity rank and the
    mean of it over the training interactions (one per user-item pair)."""

    def __init__(self, item_index: Mapping[str, int], history: Any) -> None:
        n = len(item_index)
        self.item_index = item_index
        self.n_items = n
        indices = np.asarray(history.indices) if history is not None else np.zeros(0, int)
        counts = np.bincount(indices, minlength=n)[:n].astype(np.float64)
        order = np.argsort(-counts, kind="stable")  # ties: lower index ranks first
        rank = np.empty(n, np.float64)
        rank[order] = np.arange(n)
        self.log_rank = np.log1p(rank) / math.log(n) if n > 1 else np.zeros(n)
        self.log_rank_list: list[float] = self.log_rank.tolist()  # cheap scalar reads
        total = counts.sum()
        self.training_mean = float(counts @ self.log_rank / total) if total > 0 else NAN


@dataclass
class _Bucket:
    number: int
    profile: Profile
    seen: bytearray
    tiers: dict[str, int] = field(default_factory=dict)
    log_rank_sum: float = 0.0
    items: int = 0


@dataclass(frozen=True)
class WindowStats:
    lists: int
    """Recommendation lists served in the window."""
    tier_share: dict[str, float]
    coverage: float
    served_log_rank: float
    training_log_rank: float
    n_items: int


class DriftTracker:
    def __init__(
        self,
        tiers: Sequence[str],
        window_seconds: float = WINDOW_SECONDS,
        buckets: int = BUCKETS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tiers = tuple(tiers)
        self.step = window_seconds / buckets
        self.buckets = buckets
        self.clock = clock
        self._lock = threading.Lock()  # profile and window changes (not the counting)
        self._profile: Profile | None = None
        self._window: dict[int, _Bucket] = {}
        self._current: _Bucket | None = None
        self._source: Callable[[], Any] | None = None
        self._source_obj: Any = None

    # -- the request path ----------------------------------------------------------------------

    def served(self, tier: str, items: Sequence[Any]) -> None:
        """One recommendation list; ``items`` have an ``item_id`` (`scoring.Scored`). Called
        from one thread (the server's event loop); scrapes read concurrently, which at worst
        sees a list half counted."""
        b = self._current
        if b is None or b.number != int(self.clock() // self.step):
            b = self._roll()
            if b is None:
                return  # no catalog yet
        b.tiers[tier] = b.tiers.get(tier, 0) + 1
        index, seen, log_rank = b.profile.item_index, b.seen, b.profile.log_rank_list
        total, n = 0.0, 0
        for s in items:
            i = index.get(s.item_id)
            if i is not None:
                seen[i] = 1
                total += log_rank[i]
                n += 1
        b.log_rank_sum += total
        b.items += n

    def _roll(self) -> _Bucket | None:
        """The bucket of the current window step (a new one when the step or catalog changed)."""
        self._sync()
        with self._lock:
            p = self._profile
            if p is None:
                return None
            number = int(self.clock() // self.step)
            b = self._window.get(number)
            if b is None:
                b = self._window[number] = _Bucket(number, p, bytearray(p.n_items))
                for old in [k for k in self._window if k <= number - self.buckets]:
                    del self._window[old]
            self._current = b
            return b

    # -- the catalog -----------------------------------------------------------------------------

    def follow(self, snapshot: Callable[[], Any]) -> None:
        """Reads the catalog from ``snapshot()`` (a `Snapshot` or None) whenever it changes."""
        self._source = snapshot

    def set_catalog(self, item_index: Mapping[str, int], history: Any) -> None:
        """A new catalog (``item id -> index``, training users x items CSR): restarts the
        window."""
        profile = Profile(item_index, history)
        with self._lock:
            self._profile, self._window, self._current = profile, {}, None

    def _sync(self) -> None:
        if self._source is None:
            return
        snap = self._source()
        if snap is not self._source_obj and snap is not None:
            self._source_obj = snap
            self.set_catalog(snap.item_index, snap.history)

    # -- scrape time -----------------------------------------------------------------------------

    def stats(self) -> WindowStats:
        self._sync()
        oldest = int(self.clock() // self.step) - self.buckets + 1
        with self._lock:
            p = self._profile
            buckets = [b for k, b in self._window.items() if k >= oldest and b.profile is p]
        tiers = dict.fromkeys(self.tiers, 0)
        for bucket in buckets:
            for t, c in list(bucket.tiers.items()):
                tiers[t] = tiers.get(t, 0) + c
        lists = sum(tiers.values())
        share = {t: (c / lists if lists else NAN) for t, c in tiers.items()}
        if p is None:
            return WindowStats(lists, share, NAN, NAN, NAN, 0)
        items = sum(b.items for b in buckets)
        seen = np.zeros(p.n_items, bool)
        for bucket in buckets:
            seen |= np.frombuffer(bytes(bucket.seen), np.uint8).astype(bool)
        coverage = float(seen.sum()) / p.n_items if p.n_items else NAN
        served = sum(b.log_rank_sum for b in buckets) / items if items else NAN
        return WindowStats(lists, share, coverage, served, p.training_mean, p.n_items)


class DriftCollector(Collector):
    """Exports a `DriftTracker`'s window at scrape time."""

    def __init__(self, tracker: DriftTracker) -> None:
        self.tracker = tracker

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self.tracker.stats()
        window = f"over the last {self.tracker.step * self.tracker.buckets:g} s"
        share = GaugeMetricFamily(
            "recsys_tier_share",
            f"Share of recommendation lists answered by each fallback tier, {window}",
            labels=["tier"],
        )
        for tier, v in s.tier_share.items():
            share.add_metric([tier], v)
        yield share
        yield GaugeMetricFamily(
            "recsys_drift_window_lists",
            f"Recommendation lists in the drift window ({window})",
            value=s.lists,
        )
        yield GaugeMetricFamily(
            "recsys_catalog_coverage",
            f"Distinct items served / items in the serving version, {window}",
            value=s.coverage,
        )
        yield GaugeMetricFamily(
            "recsys_served_popularity_log_rank",
            "Mean normalised log-popularity rank ln(1+rank)/ln(n_items) of the items served "
            f"(0 = most popular), {window}",
            value=s.served_log_rank,
        )
        yield GaugeMetricFamily(
            "recsys_training_popularity_log_rank",
            "The same mean over the serving version's training interactions",
            value=s.training_log_rank,
        )
