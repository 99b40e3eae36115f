"""The server's Prometheus metrics, read over HTTP: request rate, latency quantiles, served lists.

A small parser of the text format (only what the dashboard reads), so the dashboard needs no
Prometheus client library.
"""

from __future__ import annotations

import math
import re
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

_LINE = re.compile(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse(text: str) -> list[Sample]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.fullmatch(line.strip())
        if m is None:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out.append(Sample(m.group(1), dict(_LABEL.findall(m.group(2) or "")), value))
    return out


@dataclass
class Snapshot:
    """One scrape, reduced to what the dashboard shows."""

    at: float
    requests: dict[str, float] = field(default_factory=dict)
    """Recommender RPCs by method (every status)."""
    errors: float = 0.0
    """RPCs that did not end OK."""
    buckets: dict[float, float] = field(default_factory=dict)
    """Cumulative latency histogram over all methods: upper bound (s) -> count."""
    served: dict[tuple[str, str], float] = field(default_factory=dict)
    """Lists served by (model, tier)."""
    started: float | None = None
    """When the counters were created (about the server's start), Unix seconds."""
    version: str = ""
    recorded: float = 0.0
    inflight: float = 0.0

    @property
    def total(self) -> float:
        return sum(self.requests.values())


def snapshot(text: str, at: float | None = None) -> Snapshot:
    snap = Snapshot(at=time.time() if at is None else at)
    buckets: dict[float, float] = defaultdict(float)
    requests: dict[str, float] = defaultdict(float)
    served: dict[tuple[str, str], float] = defaultdict(float)
    created = []
    for s in parse(text):
        if s.name == "recsys_requests_total":
            requests[s.labels.get("method", "")] += s.value
            if s.labels.get("code") != "OK":
                snap.errors += s.value
        elif s.name == "recsys_requests_created":
            created.append(s.value)
        elif s.name == "recsys_request_duration_seconds_bucket":
            le = s.labels.get("le", "+Inf")
            buckets[math.inf if le == "+Inf" else float(le)] += s.value
        elif s.name == "recsys_recommendations_total":
            served[(s.labels.get("model", ""), s.labels.get("tier", ""))] += s.value
        elif s.name == "recsys_model_info" and s.value == 1:
            snap.version = s.labels.get("version", "")
        elif s.name == "recsys_interactions_recorded_total":
            snap.recorded = s.value
        elif s.name == "recsys_inflight_requests":
            snap.inflight = s.value
    snap.buckets, snap.requests, snap.served = dict(buckets), dict(requests), dict(served)
    snap.started = min(created) if created else None
    return snap


def scrape(url: str, timeout: float = 2.0) -> Snapshot:
    """Raises OSError (URLError included) when the endpoint cannot be read."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return snapshot(r.read().decode("utf-8", "replace"))


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """The q-quantile (seconds) of a cumulative histogram, interpolated within a bucket like
    Prometheus' histogram_quantile; None without observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for b in bounds:
        count = buckets[b]
        if count >= rank:
            if math.isinf(b):  # beyond the last finite bound: report that bound
                return lower
            inside = count - below
            return lower + (b - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = b, count
    return lower


@dataclass(frozen=True)
class Traffic:
    """Request rate and latency over a window (between two scrapes, or since the start)."""

    rate: float | None
    """Recommender RPCs per second."""
    error_rate: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    window: float
    """Seconds the numbers cover."""
    since_start: bool
    """True when measured from the server's start (no earlier scrape to compare with)."""


def traffic(current: Snapshot, previous: Snapshot | None = None) -> Traffic:
    if previous is not None and current.at - previous.at >= 0.5 and current.total >= previous.total:
        window = current.at - previous.at
        buckets = {b: v - previous.buckets.get(b, 0.0) for b, v in current.buckets.items()}
        done, errors = current.total - previous.total, current.errors - previous.errors
        since_start = False
    else:
        window = current.at - current.started if current.started else 0.0
        buckets, done, errors = current.buckets, current.total, current.errors
        since_start = True
    rate = done / window if window > 0 else None
    error_rate = errors / window if window > 0 else None
    if not since_start and buckets and max(buckets.values()) <= 0:
        buckets = current.buckets  # no request in the window: latency since the start
    ms = {q: quantile(buckets, q) for q in (0.5, 0.95, 0.99)}
    return Traffic(
        rate=rate,
        error_rate=error_rate,
        p50=ms[0.5],
        p95=ms[0.95],
        p99=ms[0.99],
        window=window,
        since_start=since_start,
    )
