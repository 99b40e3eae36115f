"""The Prometheus endpoint: every series initialised, bounded label values, no ids."""

from __future__ import annotations

import re
import time
from collections import Counter

import grpc
import pytest
from srv_support import Client, event, metric, scrape, serving, trained  # noqa: F401 (fixtures)

from recsys_core import artifacts
from recsys_core.models import MODELS
from recsys_proto.v1 import recommender_pb2 as pb
from recsys_server.metrics import (
    BUCKETS,
    CODES,
    CONFIG_RELOAD_RESULTS,
    DROP_REASONS,
    FOLLOW_BUCKETS,
    LOAD_FAILURES,
    METHODS,
    OUTCOMES,
    SHUTDOWN_OUTCOMES,
)
from recsys_server.router import COLD_START, PERSONALIZED, POPULARITY, TIERS

TIER_NAMES = {
    pb.FALLBACK_TIER_PERSONALIZED: PERSONALIZED,
    pb.FALLBACK_TIER_COLD_START: COLD_START,
    pb.FALLBACK_TIER_POPULARITY: POPULARITY,
}


@pytest.fixture(scope="module")
def scraped(trained, tmp_path_factory):  # noqa: F811
    with serving(trained, tmp_path_factory.mktemp("metrics")) as srv:
        c = Client(srv.address)
        served = Counter()
        try:
            for n in range(5):
                r = c.Recommend(pb.RecommendRequest(user_id=f"u{n:03d}", k=3, explain=True))
                served[r.model, TIER_NAMES[r.fallback_tier]] += 1
            r = c.Recommend(pb.RecommendRequest(user_id="metrics-nobody", k=3))
            served[r.model, TIER_NAMES[r.fallback_tier]] += 1
            c.RecordInteractions(
                pb.RecordInteractionsRequest(events=[event("m-1", "metrics-user", "i001")] * 2)
            )
            with pytest.raises(grpc.RpcError):
                c.SimilarItems(pb.SimilarItemsRequest(item_id="no-such", k=3))
        finally:
            c.close()
        # The server records a call's metrics as the call completes, which can be a moment
        # after the client has its answer: wait until the last call shows, then assert.
        deadline = time.monotonic() + 5
        while True:
            text = scrape(srv.metrics_url)
            done = (
                metric(text, "recsys_requests_total", method="SimilarItems", code="NOT_FOUND") == 1
                and metric(text, "recsys_inflight_requests") == 0
            )
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        yield text, artifacts.latest_version(trained), served


def test_series_exist_before_their_first_event(scraped):
    text, _, _ = scraped
    for m in METHODS:
        for code in CODES:
            assert metric(text, "recsys_requests_total", method=m, code=code) is not None
    for reason in LOAD_FAILURES:
        assert metric(text, "recsys_model_load_failures_total", reason=reason) == 0
    for model in MODELS:
        for tier in TIERS:
            assert (
                metric(text, "recsys_recommendations_total", model=model, variant="none", tier=tier)
                is not None
            )
    assert metric(text, "recsys_requests_total", method="ReloadModels", code="OK") == 0


def test_values_after_traffic(scraped):
    text, version, served = scraped
    assert metric(text, "recsys_requests_total", method="Recommend", code="OK") == 6
    assert metric(text, "recsys_requests_total", method="RecordInteractions", code="OK") == 1
    assert metric(text, "recsys_requests_total", method="SimilarItems", code="NOT_FOUND") == 1
    assert metric(text, "recsys_interactions_recorded_total") == 1  # the repeat is a duplicate
    assert metric(text, "recsys_interactions_recovered_total") == 0
    # One call of two copies of one event: one commit storing one event, no errors.
    assert metric(text, "recsys_store_up") == 1
    assert metric(text, "recsys_store_commits_total") == 1
    assert metric(text, "recsys_store_events_committed_total") == 1
    assert metric(text, "recsys_store_commit_errors_total") == 0
    assert served["popularity", "popularity"] >= 1
    for model in MODELS:
        for tier in TIERS:
            got = metric(
                text, "recsys_recommendations_total", model=model, variant="none", tier=tier
            )
            assert got == served[model, tier], (model, tier)
    assert metric(text, "recsys_model_info", version=version) == 1
    assert metric(text, "recsys_model_reloads_total") == 1
    assert metric(text, "recsys_inflight_requests") == 0
    buckets = {
        float(m)
        for m in re.findall(
            r'recsys_request_duration_seconds_bucket\{le="([^"]+)",method="Recommend"\}', text
        )
        if m != "+Inf"
    }
    assert buckets == set(BUCKETS)
    assert metric(text, "recsys_request_duration_seconds_count", method="Recommend") == 6


def test_label_values_are_bounded(scraped):
    text, version, _ = scraped
    allowed = {
        "method": set(METHODS),
        "code": set(CODES),
        "model": set(MODELS),
        "variant": {"none"},
        "tier": set(TIERS),
        "reason": {*LOAD_FAILURES, *DROP_REASONS},
        "version": {version},
        "le": {*(str(b) for b in (*BUCKETS, *FOLLOW_BUCKETS)), "+Inf"},
        "outcome": {*SHUTDOWN_OUTCOMES, *OUTCOMES},
        "experiment": {"none"},
        "result": set(CONFIG_RELOAD_RESULTS),
    }
    for line in text.splitlines():
        if line.startswith("#") or "{" not in line or not line.startswith("recsys_"):
            continue
        for key, value in re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]):
            assert value in allowed[key], line
    assert "metrics-user" not in text and "u001" not in text and "i001" not in text


def test_inflight_gauge_counts_the_calls_being_handled():
    """recsys_inflight_requests is read from the wrapper's count at scrape time: 1 while a
    call runs, 0 after it, also after a call that failed."""
    import asyncio

    from recsys_server.errors import InvalidArgument
    from recsys_server.interceptors import Observe
    from recsys_server.metrics import Metrics

    m = Metrics(())
    observe = Observe(m)
    seen = []

    async def ok(request, context):
        seen.append(m.registry.get_sample_value("recsys_inflight_requests"))
        return "answer"

    class Context:
        async def abort(self, code, message):
            raise grpc.aio.AbortError(code, message)

    async def bad(request, context):
        seen.append(m.registry.get_sample_value("recsys_inflight_requests"))
        raise InvalidArgument("k", "bad")

    assert asyncio.run(observe.wrap("Recommend", ok)(object(), Context())) == "answer"
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(observe.wrap("Recommend", bad)(object(), Context()))
    assert seen == [1.0, 1.0]
    assert m.registry.get_sample_value("recsys_inflight_requests") == 0
