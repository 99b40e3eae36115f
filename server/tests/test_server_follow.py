"""The store follower inside one server (in-process, real PostgreSQL): another writer's
transaction that holds a lower seq and commits late, across a model version swap; the store
going down and coming back; and SQLite, where nobody follows."""

from __future__ import annotations

import asyncio
import time

import psycopg
from srv_support import (  # noqa: F401 (fixtures)
    Client,
    artifacts_copy,
    event,
    metric,
    republish,
    scrape,
    serving,
    trained,
    wait_until,
)

from recsys_core import artifacts
from recsys_core.datastore import open_store
from recsys_core.events import Event
from recsys_proto.v1 import recommender_pb2 as pb

POPULARITY = pb.FALLBACK_TIER_POPULARITY
INSERT = (
    "INSERT INTO events (event_id, user_id, item_id, event_type, ts, stored_at) "
    "VALUES (%s, %s, %s, 'purchase', %s, %s)"
)


def item_ids(root) -> list[str]:
    loaded = artifacts.load_version(root / artifacts.latest_version(root))
    return [str(i) for i in loaded.item_ids]


def personal(c: Client, user: str) -> bool:
    return c.Recommend(pb.RecommendRequest(user_id=user, k=5)).fallback_tier != POPULARITY


def followed(srv) -> float:
    return metric(scrape(srv.metrics_url), "recsys_follower_events_folded_total") or 0.0


def test_a_late_commit_with_a_lower_seq_is_folded_across_a_version_swap(
    artifacts_copy,  # noqa: F811
    tmp_path,
    postgres_dsn,
):
    items = item_ids(artifacts_copy)
    with serving(artifacts_copy, tmp_path, store=postgres_dsn, follow_seconds=0.2) as srv:
        c = Client(srv.address)
        try:
            now = time.time()
            with psycopg.connect(postgres_dsn) as slow, psycopg.connect(postgres_dsn) as fast:
                # Another replica's transaction draws a seq and stays open ...
                slow.execute(INSERT, ("late", "late-user", items[0], now, now))
                # ... while a later one commits.
                fast.execute(INSERT, ("early", "early-user", items[1], now, now))
                fast.commit()
                wait_until(lambda: personal(c, "early-user"), "the committed event is folded")
                assert not personal(c, "late-user")

                # A new version swaps in while the lower seq is still missing: its rebuilt
                # history keeps the seq as a gap.
                republish(artifacts_copy)
                assert srv.reload().changed
                assert personal(c, "early-user")  # replayed by the rebuild
                assert not personal(c, "late-user")
                slow.commit()
            wait_until(lambda: personal(c, "late-user"), "the late commit is folded")
            live = srv.running.core.versions.state.live
            assert live.cursor.gaps == {}
            # each once: the rebuild replayed "early", the follower folded "late" after it
            assert live.events == 2
        finally:
            c.close()


def test_the_follower_waits_out_a_store_outage_and_catches_up(
    trained,  # noqa: F811
    tmp_path,
    postgres_server,
    postgres_dsn,
):
    items = item_ids(trained)
    with serving(trained, tmp_path, store=postgres_dsn, follow_seconds=0.2) as srv:
        c = Client(srv.address)
        try:
            postgres_server.stop()
            wait_until(
                lambda: (metric(scrape(srv.metrics_url), "recsys_follower_lag_seconds") or 0) > 0,
                "the follower reports that it is behind",
            )
            # Recommend never waits for the follower or the store.
            assert c.Recommend(pb.RecommendRequest(user_id="u-1", k=5)).items
            postgres_server.start()

            async def other_replica() -> None:
                with open_store(postgres_dsn) as store:
                    await store.append([Event("back-1", "back-user", items[2], "purchase", 1.0)])

            asyncio.run(other_replica())
            wait_until(lambda: personal(c, "back-user"), "folded after the outage")
            assert followed(srv) == 1
            wait_until(
                lambda: metric(scrape(srv.metrics_url), "recsys_follower_lag_seconds") == 0,
                "caught up",
            )
        finally:
            c.close()


def test_sqlite_has_no_follower(trained, tmp_path):  # noqa: F811
    with serving(trained, tmp_path) as srv:
        assert srv.running.follower is None
        assert not srv.running.core.versions.following
