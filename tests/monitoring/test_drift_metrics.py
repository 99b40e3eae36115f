"""Drift and freshness gauges of a real server (in-process, loopback) after known traffic."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from srv_support import Client, event, metric, scrape, serving, trained  # noqa: F401 (fixture)

from recsys_core import artifacts
from recsys_proto.v1 import recommender_pb2 as pb

TIER = {
    pb.FALLBACK_TIER_PERSONALIZED: "personalized",
    pb.FALLBACK_TIER_COLD_START: "cold_start",
    pb.FALLBACK_TIER_POPULARITY: "popularity",
}


def settled(url: str, method: str, calls: float) -> str:
    """Scrapes until the server has counted ``calls`` OK calls of ``method`` (a call's metrics
    are recorded as it completes, a moment after the client has its answer)."""
    deadline = time.monotonic() + 5
    while True:
        text = scrape(url)
        done = metric(text, "recsys_requests_total", method=method, code="OK") == calls
        if done or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def test_gauges_match_the_traffic_served(trained, tmp_path):  # noqa: F811
    version = artifacts.load_version(trained / artifacts.latest_version(trained))
    item_ids = [str(i) for i in version.item_ids]
    assert version.history is not None
    counts = np.bincount(version.history.indices, minlength=len(item_ids))
    order = np.argsort(-counts, kind="stable")
    rank = np.empty(len(item_ids))
    rank[order] = np.arange(len(item_ids))
    log_rank = dict(zip(item_ids, np.log1p(rank) / math.log(len(item_ids)), strict=True))
    training = float(counts @ np.array([log_rank[i] for i in item_ids]) / counts.sum())

    with serving(trained, tmp_path) as srv:
        c = Client(srv.address)
        tiers: dict[str, int] = {}
        served: list[str] = []
        try:
            requests = [pb.RecommendRequest(user_id=f"u{n:03d}", k=5) for n in range(12)]
            requests += [
                pb.RecommendRequest(user_id=f"new-{n}", k=5, recent_item_ids=item_ids[n : n + 2])
                for n in range(7)
            ]
            requests += [pb.RecommendRequest(user_id="nobody", k=5)] * 3
            for r in requests:
                a = c.Recommend(r)
                tiers[TIER[a.fallback_tier]] = tiers.get(TIER[a.fallback_tier], 0) + 1
                served += [s.item_id for s in a.items]
            c.RecordInteractions(
                pb.RecordInteractionsRequest(
                    events=[event(f"d-{n}", "drift-user", item_ids[n]) for n in range(4)]
                )
            )
        finally:
            c.close()
        # The traffic is as meant (some known users have short histories: cold start too).
        assert tiers["cold_start"] >= 7 and tiers["popularity"] == 3 and tiers["personalized"]
        text = settled(srv.metrics_url, "Recommend", len(requests))

    n = len(requests)
    for tier in ("personalized", "cold_start", "popularity"):
        share = metric(text, "recsys_tier_share", tier=tier)
        assert share == pytest.approx(tiers.get(tier, 0) / n), tier
    assert metric(text, "recsys_drift_window_lists") == n
    coverage = metric(text, "recsys_catalog_coverage")
    assert coverage == pytest.approx(len(set(served)) / len(item_ids))
    assert metric(text, "recsys_served_popularity_log_rank") == pytest.approx(
        np.mean([log_rank[i] for i in served])
    )
    assert metric(text, "recsys_training_popularity_log_rank") == pytest.approx(training)
    # Freshness: the version was trained on the generated data alone (no event log records).
    assert metric(text, "recsys_model_loaded") == 1
    assert metric(text, "recsys_interactions_since_training") == 4
    trained_at = metric(text, "recsys_model_trained_timestamp_seconds")
    age = metric(text, "recsys_model_age_seconds")
    assert trained_at is not None and age is not None
    assert age == pytest.approx(time.time() - trained_at, abs=5)


def test_before_any_model_loads(tmp_path):
    (tmp_path / "empty").mkdir()
    with serving(tmp_path / "empty", tmp_path, wait=False) as srv:
        text = scrape(srv.metrics_url)
    assert metric(text, "recsys_model_loaded") == 0
    for name in ("recsys_model_age_seconds", "recsys_interactions_since_training"):
        value = metric(text, name)
        assert value is not None and math.isnan(value), name
    assert metric(text, "recsys_drift_window_lists") == 0
