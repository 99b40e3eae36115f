"""Live histories: folding recorded events, replaying the log after the trained prefix,
rebuilding on a version swap, and failed log writes."""

from __future__ import annotations

import errno
import threading

import grpc
import pytest
from srv_support import (  # noqa: F401 (fixtures)
    Client,
    artifacts_copy,
    code_of,
    event,
    metric,
    republish,
    scrape,
    serving,
    trained,
)

from recsys_core import artifacts
from recsys_core.eventlog import Event
from recsys_proto.v1 import recommender_pb2 as pb
from recsys_server import model_versions
from recsys_server.interaction_log import InteractionLog
from recsys_server.live import LiveHistory


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


def test_replay_skips_the_trained_prefix_and_rebuilds_on_swap(
    artifacts_copy,  # noqa: F811
    tmp_path,
    items,
):
    ITEMS = items
    events = [event(f"rp-{n}", "rp-user", it, "purchase") for n, it in enumerate(ITEMS)]
    with serving(artifacts_copy, tmp_path) as srv:
        c = Client(srv.address)
        assert c.RecordInteractions(pb.RecordInteractionsRequest(events=events)).recorded == 6
        tier, ids = tier_and_ids(c, "rp-user")
        assert tier == pb.FALLBACK_TIER_PERSONALIZED and not set(ids) & set(ITEMS)
        c.close()

    # Restart: all six events are replayed from the log.
    with serving(artifacts_copy, tmp_path) as srv:
        c = Client(srv.address)
        tier, ids = tier_and_ids(c, "rp-user")
        assert tier == pb.FALLBACK_TIER_PERSONALIZED and not set(ids) & set(ITEMS)
        # A version trained on the first three log records: only the rest is live history.
        params = {"event_log_records": 3}
        new = republish(artifacts_copy, params=params).name
        r = c.ReloadModels(pb.ReloadModelsRequest())
        assert r.changed and r.version == new
        tier, ids = tier_and_ids(c, "rp-user")
        assert tier == pb.FALLBACK_TIER_COLD_START
        assert not set(ids) & set(ITEMS[3:])
        assert set(ITEMS[:3]) <= set(ids)  # in the (pretend) training data, not live
        c.close()

    # And on a cold start with that version.
    with serving(artifacts_copy, tmp_path) as srv:
        assert srv.running.core.versions.state.live.get("rp-user").keys() == {
            srv.running.core.versions.snapshot.item_index[i] for i in ITEMS[3:]
        }


def test_events_recorded_while_a_version_loads_are_kept_once(
    artifacts_copy,  # noqa: F811
    tmp_path,
    monkeypatch,
    items,
):
    gate = threading.Event()
    recorded = threading.Event()
    real = LiveHistory.from_log

    def slow_from_log(*a, **kw):
        result = real(*a, **kw)
        gate.set()  # the log has been read; events recorded now must come from the capture
        recorded.wait(30)  # the load goes on only once the event below was recorded
        return result

    with serving(artifacts_copy, tmp_path) as srv:
        c = Client(srv.address)
        monkeypatch.setattr(model_versions.LiveHistory, "from_log", staticmethod(slow_from_log))
        republish(artifacts_copy)
        before = event("cap-0", "cap-user", items[0], "view")
        assert c.RecordInteractions(pb.RecordInteractionsRequest(events=[before])).recorded == 1
        done: list = []
        t = threading.Thread(target=lambda: done.append(c.ReloadModels(pb.ReloadModelsRequest())))
        t.start()
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
        assert {i: v.weight for i, v in live.items()} == {idx[items[0]]: 1.0, idx[items[1]]: 2.0}
        c.close()


def _failing_write(code: int):
    def write(fd, data):
        raise OSError(code, "simulated")

    return write


@pytest.mark.parametrize(
    ("err", "status"),
    [
        (errno.ENOSPC, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errno.EIO, grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_log_write_failure_is_never_ok(trained, tmp_path, err, status, items):  # noqa: F811
    with serving(trained, tmp_path) as srv:
        core = srv.running.core
        good = core.log
        bad = InteractionLog(tmp_path / "bad-log", _write=_failing_write(err))
        core.log = bad
        c = Client(srv.address)
        try:
            req = pb.RecordInteractionsRequest(events=[event("f-1", "fail-user", items[2])])
            code, msg = code_of(c.RecordInteractions, req)
            assert code == status
            assert msg.startswith("interaction log write failed: ")
            tier, _ = tier_and_ids(c, "fail-user")
            assert tier == pb.FALLBACK_TIER_POPULARITY  # nothing folded in
            text = scrape(srv.metrics_url)
            assert metric(text, "recsys_interaction_log_errors_total") == 1
            assert metric(text, "recsys_interactions_recorded_total") == 0
            assert (
                metric(text, "recsys_requests_total", method="RecordInteractions", code=status.name)
                == 1
            )
            # The client retries once the disk is fine: the same events go through.
            core.log = good
            assert c.RecordInteractions(req).recorded == 1
            assert tier_and_ids(c, "fail-user")[0] == pb.FALLBACK_TIER_COLD_START
        finally:
            core.log = good
            srv.run(bad.close())
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
