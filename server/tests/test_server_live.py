"""Live histories: folding recorded events, replaying the data store after the version's
cursor, rebuilding on a version swap; and a data store that goes down and comes back."""

from __future__ import annotations

import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2
from srv_support import (  # noqa: F401 (fixtures)
    Client,
    artifacts_copy,
    code_of,
    event,
    metric,
    republish,
    scrape,
    serving,
    store_url,
    trained,
    wait_until,
)

from recsys_core import artifacts
from recsys_core.datastore import redact
from recsys_core.events import Event
from recsys_proto.v1 import recommender_pb2 as pb
from recsys_server import model_versions
from recsys_server.live import LiveHistory
from recsys_server.metrics import LOAD_FAILURES
from recsys_server.store_watch import STORE_SERVICE

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def items(trained):  # noqa: F811
    """Six item ids the trained version knows."""
    return [
        str(i)
        for i in artifacts.load_version(trained / artifacts.latest_version(trained)).item_ids[10:16]
    ]


def tier_and_ids(c: Client, user: str, **kw):
    r = c.Recommend(pb.RecommendRequest(user_id=user, k=300, **kw))
    return r.fallback_tier, [i.item_id for i in r.items]


def test_replay_after_the_cursor_and_rebuild_on_swap(
    artifacts_copy,  # noqa: F811
    tmp_path,
    items,
    store_url,  # noqa: F811
):
    ITEMS = items
    events = [event(f"rp-{n}", "rp-user", it, "purchase") for n, it in enumerate(ITEMS)]
    with serving(artifacts_copy, tmp_path, store=store_url) as srv:
        c = Client(srv.address)
        assert c.RecordInteractions(pb.RecordInteractionsRequest(events=events)).recorded == 6
        tier, ids = tier_and_ids(c, "rp-user")
        assert tier == pb.FALLBACK_TIER_PERSONALIZED and not set(ids) & set(ITEMS)
        c.close()

    # Restart: all six events are replayed from the store.
    with serving(artifacts_copy, tmp_path, store=store_url) as srv:
        c = Client(srv.address)
        tier, ids = tier_and_ids(c, "rp-user")
        assert tier == pb.FALLBACK_TIER_PERSONALIZED and not set(ids) & set(ITEMS)
        # A version trained on the store up to seq 3 (one call stored seq 1-6 in order): only
        # the rest is live history.
        params = {"store_seq": 3}
        new = republish(artifacts_copy, params=params).name
        r = c.ReloadModels(pb.ReloadModelsRequest())
        assert r.changed and r.version == new
        tier, ids = tier_and_ids(c, "rp-user")
        assert tier == pb.FALLBACK_TIER_COLD_START
        assert not set(ids) & set(ITEMS[3:])
        assert set(ITEMS[:3]) <= set(ids)  # in the (pretend) training data, not live
        c.close()

    # And on a cold start with that version.
    with serving(artifacts_copy, tmp_path, store=store_url) as srv:
        assert srv.running.core.versions.state.live.get("rp-user").keys() == {
            srv.running.core.versions.snapshot.item_index[i] for i in ITEMS[3:]
        }


def test_events_recorded_while_a_version_loads_are_kept_once(
    artifacts_copy,  # noqa: F811
    tmp_path,
    monkeypatch,
    items,
):
    """An event recorded while a version loads is in its live history once: one recorded
    before the store is read is in the read (and the capture), one recorded after it only in
    the capture."""
    loading, early_done = threading.Event(), threading.Event()
    gate, recorded = threading.Event(), threading.Event()
    real = LiveHistory.from_store

    def slow_from_store(*a, **kw):
        loading.set()  # the version is loading: recorded events are captured
        early_done.wait(30)  # one recorded now is both captured and read below
        result = real(*a, **kw)
        gate.set()  # the store has been read; events recorded now must come from the capture
        recorded.wait(30)  # the load goes on only once the event below was recorded
        return result

    with serving(artifacts_copy, tmp_path) as srv:
        c = Client(srv.address)
        monkeypatch.setattr(model_versions.LiveHistory, "from_store", staticmethod(slow_from_store))
        republish(artifacts_copy)
        before = event("cap-0", "cap-user", items[0], "view")
        assert c.RecordInteractions(pb.RecordInteractionsRequest(events=[before])).recorded == 1
        done: list = []
        t = threading.Thread(target=lambda: done.append(c.ReloadModels(pb.ReloadModelsRequest())))
        t.start()
        assert loading.wait(20)
        early = event("cap-2", "cap-user", items[2], "view")
        try:
            r = c.RecordInteractions(pb.RecordInteractionsRequest(events=[early]))
        finally:
            early_done.set()
        assert r.recorded == 1
        assert gate.wait(20)
        during = event("cap-1", "cap-user", items[1], "click")
        try:
            r = c.RecordInteractions(pb.RecordInteractionsRequest(events=[during]))
        finally:
            recorded.set()
        assert r.recorded == 1
        t.join(30)
        assert not t.is_alive()
        assert done and done[0].changed
        state = srv.running.core.versions.state
        live = state.live.get("cap-user")
        idx = state.snapshot.item_index
        assert {i: v.weight for i, v in live.items()} == {
            idx[items[0]]: 1.0,
            idx[items[1]]: 2.0,
            idx[items[2]]: 1.0,
        }
        c.close()


def test_store_down_refuses_writes_serves_reads_and_recovers(
    artifacts_copy,  # noqa: F811
    tmp_path,
    items,
    postgres_server,
    postgres_dsn,
):
    """PostgreSQL stopped under a running server: a write is UNAVAILABLE naming the store (no
    OK without a commit), Recommend keeps answering from memory, health and the metric report
    the store down, a new version waits (not refused); once it is back the watcher's ping
    brings health back, the retried write is stored and the version loads."""
    with serving(artifacts_copy, tmp_path, store=postgres_dsn) as srv:
        c = Client(srv.address)
        try:
            assert c.status(STORE_SERVICE) == SERVING
            req = pb.RecordInteractionsRequest(events=[event("f-1", "fail-user", items[2])])
            postgres_server.stop("fast")
            code, msg = code_of(c.RecordInteractions, req)
            assert code == grpc.StatusCode.UNAVAILABLE
            assert msg.startswith("data store write failed: " + redact(postgres_dsn)), msg
            tier, ids = tier_and_ids(c, "fail-user")
            assert tier == pb.FALLBACK_TIER_POPULARITY and ids  # nothing folded in, still served
            wait_until(lambda: c.status(STORE_SERVICE) == NOT_SERVING, "store health down")
            assert c.status() == SERVING  # the recommender stays in rotation
            text = scrape(srv.metrics_url)
            assert metric(text, "recsys_store_up") == 0
            assert metric(text, "recsys_store_commit_errors_total") == 1
            assert metric(text, "recsys_interactions_recorded_total") == 0
            assert (
                metric(
                    text, "recsys_requests_total", method="RecordInteractions", code="UNAVAILABLE"
                )
                == 1
            )
            old = srv.running.core.versions.snapshot.version
            new = republish(artifacts_copy).name
            r = c.ReloadModels(pb.ReloadModelsRequest())
            assert (r.changed, r.version) == (False, old)
            assert "data store is unavailable" in r.message, r.message
            postgres_server.start()
            wait_until(lambda: c.status(STORE_SERVICE) == SERVING, "store health back", 120)
            assert metric(scrape(srv.metrics_url), "recsys_store_up") == 1
            # The client retries: the server was down before the call, so nothing was stored.
            r = c.RecordInteractions(req)
            assert (r.recorded, r.duplicates) == (1, 0)
            assert tier_and_ids(c, "fail-user")[0] == pb.FALLBACK_TIER_COLD_START
            r = c.ReloadModels(pb.ReloadModelsRequest())
            assert (r.changed, r.version) == (True, new)
            text = scrape(srv.metrics_url)
            refused = [
                metric(text, "recsys_model_load_failures_total", reason=x) for x in LOAD_FAILURES
            ]
            assert refused == [0] * len(LOAD_FAILURES)  # it waited, it was not refused
        finally:
            postgres_server.start()
            c.close()


def test_live_history_weights_and_unknown_items():
    live = LiveHistory({"a": 0, "b": 1})
    n = live.fold(
        [
            Event("1", "u", "a", "view", 1.0),
            Event("2", "u", "a", "purchase", 2.0),
            Event("3", "u", "b", "rating", 3.0, 4.5),
            Event("4", "u", "zzz", "purchase", 4.0),
            Event("5", "v", "b", "add_to_cart", 5.0),
        ]
    )
    assert n == 4
    u = live.get("u")
    assert {i: (x.weight, x.event_type) for i, x in u.items()} == {
        0: (9.0, "purchase"),
        1: (4.5, "rating"),
    }
    assert live.get("v")[1].weight == 4.0
    assert live.get("nobody") is None
    # Copy-on-write: a mapping handed out earlier does not change under its reader.
    live.fold([Event("6", "u", "b", "view", 6.0)])
    assert u[1].weight == 4.5 and live.get("u")[1].weight == 5.5
