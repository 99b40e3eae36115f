"""Impressions and recommendation ids end to end (issue 18): ids on every answer, impressions
in the store (surviving a restart, flushed at shutdown), events carrying the id they came from,
a full queue dropping and counting, outcomes counted live. A real server on a loopback port."""

from __future__ import annotations

import grpc
import pytest
from srv_support import (  # noqa: F401 (fixtures)
    Client,
    code_of,
    metric,
    scrape,
    serving,
    store_url,
    stored_events,
    trained,
)

from recsys_core.datastore import open_store
from recsys_core.events import Event
from recsys_proto.v1 import recommender_pb2 as pb
from recsys_server.config import Experiment, Variant

EXP = Experiment("imp", (Variant("control", "hybrid", 0.5), Variant("cf", "item_cf", 0.5)))


def interaction(eid, user, item, kind="click", rid="", position=0, ts=None):
    e = pb.Interaction(
        event_id=eid,
        user_id=user,
        item_id=item,
        event_type=kind,
        recommendation_id=rid,
        position=position,
    )
    if ts is not None:
        e.timestamp.FromSeconds(int(ts))
    return e


def flush(srv) -> None:
    assert srv.running.core.impressions.flush(timeout=60), "impressions not written"


def by_id(url: str, experiment: str) -> dict[str, dict]:
    with open_store(url) as store:
        return {r["recommendation_id"]: r for r in store.impressions(experiment).to_dicts()}


def test_ids_on_every_answer_and_impressions_in_the_store_after_a_restart(
    trained,  # noqa: F811
    tmp_path,
    store_url,  # noqa: F811
):
    users = [f"user-{n}" for n in range(8)]
    with serving(trained, tmp_path, store=store_url, experiments=(EXP,)) as srv:
        c = Client(srv.address)
        try:
            single = [c.Recommend(pb.RecommendRequest(user_id=u, k=5)) for u in users[:4]]
            batch = c.RecommendBatch(
                pb.RecommendBatchRequest(
                    requests=[pb.RecommendRequest(user_id=u, k=3) for u in users[4:]]
                )
            ).responses
            flush(srv)
            # The last ones stay queued (writer paused) until the shutdown stores them.
            srv.running.core.impressions.pause()
            at_stop = [c.Recommend(pb.RecommendRequest(user_id=u, k=2)) for u in users[:2]]
        finally:
            c.close()
    answers = [*single, *batch, *at_stop]
    ids = [a.recommendation_id for a in answers]
    assert all(len(i) == 32 for i in ids) and len(set(ids)) == len(ids)
    assert all(a.experiment == "imp" for a in answers)

    stored = by_id(store_url, "imp")  # read after the server stopped: in the store for good
    assert set(stored) == set(ids)
    for a in answers:
        row = stored[a.recommendation_id]
        assert (row["user_id"], row["experiment"], row["variant"]) == (a.user_id, "imp", a.variant)
        assert (row["model"], row["version"]) == (a.model, a.model_version)
        assert row["item_ids"] == [i.item_id for i in a.items]  # position = index + 1
        assert row["scores"] == pytest.approx([i.score for i in a.items], rel=1e-6)
        assert row["teams"] == []
        assert row["ts"] > 1.7e9

    # A new server on the same store still has them, and adds to them.
    with serving(trained, tmp_path, store=store_url, experiments=(EXP,)) as srv:
        c = Client(srv.address)
        try:
            again = c.Recommend(pb.RecommendRequest(user_id=users[0], k=2))
            flush(srv)
        finally:
            c.close()
    assert set(by_id(store_url, "imp")) == {*ids, again.recommendation_id}


def test_events_with_a_known_an_unknown_and_no_recommendation_id_are_recorded(
    trained,  # noqa: F811
    tmp_path,
    store_url,  # noqa: F811
):
    with serving(trained, tmp_path, store=store_url) as srv:
        c = Client(srv.address)
        try:
            a = c.Recommend(pb.RecommendRequest(user_id="alice", k=4))
            rid, items = a.recommendation_id, [i.item_id for i in a.items]
            got = c.RecordInteractions(
                pb.RecordInteractionsRequest(
                    events=[
                        interaction("e1", "alice", items[1], rid=rid, position=2, ts=2e9),
                        interaction(
                            "e2", "alice", items[0], "purchase", rid="not-stored-x", ts=2e9
                        ),
                        interaction("e3", "alice", items[2], "view", ts=2e9 + 1),
                    ]
                )
            )
            assert (got.recorded, got.duplicates) == (3, 0)
            bad = [
                (interaction("x", "alice", "i", rid="r" * 129), "events[1].recommendation_id"),
                (interaction("x", "alice", "i", rid="a\x00b"), "events[1].recommendation_id"),
                (interaction("x", "alice", "i", position=-1), "events[1].position"),
            ]
            for e, field in bad:
                ok = interaction("ok", "alice", items[0], rid=rid, position=1)
                code, details = code_of(
                    c.RecordInteractions, pb.RecordInteractionsRequest(events=[ok, e])
                )
                assert code == grpc.StatusCode.INVALID_ARGUMENT and field in details
            flush(srv)
        finally:
            c.close()
    assert stored_events(store_url) == [
        Event("e1", "alice", items[1], "click", 2e9, None, rid, 2),
        Event("e2", "alice", items[0], "purchase", 2e9, None, "not-stored-x"),
        Event("e3", "alice", items[2], "view", 2e9 + 1),
    ]
    with open_store(store_url) as store:
        assert store.impressions("")["recommendation_id"].to_list() == [rid]
        # alice's events from her first impression on, with their attribution fields.
        events = store.experiment_events("")
        assert events.select("event_id", "recommendation_id", "position").rows() == [
            ("e1", rid, 2),
            ("e2", "not-stored-x", None),
            ("e3", None, None),
        ]


def test_a_full_queue_drops_and_counts_without_failing_requests(trained, tmp_path):  # noqa: F811
    with serving(trained, tmp_path, impression_queue=1) as srv:
        recorder = srv.running.core.impressions
        recorder.pause()  # the writer takes nothing: the queue of 1 holds the first only
        c = Client(srv.address)
        try:
            answers = [c.Recommend(pb.RecommendRequest(user_id=f"u{n}", k=3)) for n in range(3)]
            assert all(a.recommendation_id and len(a.items) == 3 for a in answers)
            assert (len(recorder), recorder.dropped) == (1, 2)
            text = scrape(srv.metrics_url)
            assert metric(text, "recsys_impressions_dropped_total", reason="queue_full") == 2
            recorder.resume()
            flush(srv)
            assert (recorder.stored, recorder.dropped) == (1, 2)
            text = scrape(srv.metrics_url)
            assert metric(text, "recsys_impressions_total", experiment="none", variant="none") == 1
            stored = by_id(srv.config.store_url, "")
            assert list(stored) == [answers[0].recommendation_id]
        finally:
            c.close()


def test_outcomes_are_counted_live_per_variant(trained, tmp_path):  # noqa: F811
    with serving(trained, tmp_path, experiments=(EXP,)) as srv:
        c = Client(srv.address)
        try:
            text = scrape(srv.metrics_url)
            for variant in ("control", "cf"):  # every configured series exists from the start
                assert (
                    metric(text, "recsys_impressions_total", experiment="imp", variant=variant) == 0
                )
                labels = {"experiment": "imp", "variant": variant, "outcome": "click"}
                assert metric(text, "recsys_outcomes_total", **labels) == 0
            a = c.Recommend(pb.RecommendRequest(user_id="bob", k=4))
            items = [i.item_id for i in a.items]
            flush(srv)
            unshown = "not-" + items[0]
            c.RecordInteractions(
                pb.RecordInteractionsRequest(
                    events=[
                        interaction("c1", "bob", items[0], rid=a.recommendation_id, position=1),
                        interaction("p1", "bob", items[1], "purchase"),  # by window: shown
                        interaction("c2", "bob", unshown),  # never shown to bob: not credited
                        interaction("c3", "carol", items[0]),  # another user: not credited
                    ]
                )
            )
            text = scrape(srv.metrics_url)
        finally:
            c.close()

    def outcome(name: str) -> float | None:
        labels = {"experiment": "imp", "variant": a.variant, "outcome": name}
        return metric(text, "recsys_outcomes_total", **labels)

    assert (outcome("click"), outcome("conversion"), outcome("value")) == (1, 1, 1)
    assert metric(text, "recsys_impressions_total", experiment="imp", variant=a.variant) == 1
    other = "cf" if a.variant == "control" else "control"
    assert (
        metric(text, "recsys_outcomes_total", experiment="imp", variant=other, outcome="click") == 0
    )


def test_impression_queue_0_gives_no_ids_and_records_nothing(trained, tmp_path):  # noqa: F811
    with serving(trained, tmp_path, impression_queue=0) as srv:
        assert srv.running.core.impressions is None
        c = Client(srv.address)
        try:
            a = c.Recommend(pb.RecommendRequest(user_id="dave", k=2))
            b = c.RecommendBatch(
                pb.RecommendBatchRequest(requests=[pb.RecommendRequest(user_id="x", k=2)])
            )
        finally:
            c.close()
        assert a.recommendation_id == "" and b.responses[0].recommendation_id == ""
        assert by_id(srv.config.store_url, "") == {}


def test_the_sdk_returns_the_id_and_records_it_with_a_position(trained, tmp_path):  # noqa: F811
    from recsys_client import Interaction, RecsysClient
    from recsys_client.errors import InvalidArgument

    with serving(trained, tmp_path) as srv, RecsysClient(srv.address, timeout=30) as c:
        r = c.recommend("erin", k=3)
        batch = c.recommend_batch(["f", "g"], k=2)
        assert len({r.recommendation_id, *(b.recommendation_id for b in batch)}) == 3
        assert all(len(x.recommendation_id) == 32 for x in (r, *batch))
        e = Interaction.create(
            "erin", r.item_ids[2], "click", recommendation_id=r.recommendation_id, position=3
        )
        assert c.record_interactions([e]).recorded == 1
        with pytest.raises(InvalidArgument, match="position"):
            c.record_interactions([Interaction.create("erin", "i", "click", position=0)])
        flush(srv)
    (stored,) = stored_events(srv.config.store_url)
    assert (stored.recommendation_id, stored.position) == (r.recommendation_id, 3)
