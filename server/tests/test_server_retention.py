"""A server started after `recsys-train refresh` archived part of the data store: the newest
version has folded the archived events in (the user is known, their items count as seen), and
the events after its cursor, still in the hot table, are replayed as live history."""

from __future__ import annotations

import asyncio
import time

import polars as pl
from srv_support import Client, serving, store_url  # noqa: F401 (fixture)

from recsys_core import artifacts
from recsys_core.datastore import open_store
from recsys_core.events import Event
from recsys_proto.v1 import recommender_pb2 as pb
from recsys_trainer import cli

DAY = 86400.0


def record(url: str, events: list[Event], stored_at: float) -> None:
    with open_store(url, clock=lambda: stored_at) as store:
        asyncio.run(store.append(events))


def purchases(prefix: str, user: str, items: list[str]) -> list[Event]:
    return [Event(f"{prefix}{n}", user, it, "purchase", 1.7e9 + n) for n, it in enumerate(items)]


def test_server_after_retention_knows_archived_events_and_replays_live_ones(
    tmp_path,
    store_url,  # noqa: F811
):
    data = tmp_path / "data" / "interactions.tsv"
    gen = ["generate", "--out", str(data), "--users", "300", "--items", "120"]
    assert cli.main([*gen, "--interactions", "6000", "--seed", "7"]) == 0
    items = sorted(pl.read_csv(data, separator="\t")["item"].unique().to_list())
    old_items, live_items = items[:6], items[10:16]
    now = time.time()
    record(store_url, purchases("old", "archived-user", old_items), now - 10 * DAY)  # seq 1-6

    out = tmp_path / "artifacts"
    refresh = ["refresh", "--interactions", str(data), "--store", store_url, "--out", str(out)]
    assert cli.main([*refresh, "--models", "hybrid", "--no-tune"]) == 0
    (archived,) = (tmp_path / "events-archive").glob("*.parquet")
    assert archived.name == "events-000000000001-000000000006.parquet"
    record(store_url, purchases("live", "live-user", live_items), now)  # seq 7-12, after it
    with open_store(store_url) as store:
        assert store.min_seq() == 7 and store.count() == 6  # the hot table: live events only

    with serving(out, tmp_path, store=store_url) as srv:
        state = srv.running.core.versions.state
        snap = state.snapshot
        assert snap.version == artifacts.latest_version(out) and snap.store_seq == 6
        assert (state.live.seen, state.live.events) == (6, 6)  # seq 7-12 replayed, nothing else
        assert state.live.get("live-user").keys() == {snap.item_index[i] for i in live_items}
        assert state.live.get("archived-user") is None
        user = snap.user_index["archived-user"]  # trained on the archived events
        assert set(snap.history[user].indices) == {snap.item_index[i] for i in old_items}

        c = Client(srv.address)
        try:
            for who, seen in (("archived-user", old_items), ("live-user", live_items)):
                r = c.Recommend(pb.RecommendRequest(user_id=who, k=20))
                assert r.fallback_tier == pb.FALLBACK_TIER_PERSONALIZED, who
                got = [i.item_id for i in r.items]
                assert len(got) == 20 and not set(got) & set(seen), who
        finally:
            c.close()
