"""The client SDK (clients/recsys_client) against this server: the two agree on the API."""

from __future__ import annotations

import pytest
from srv_support import serving, trained  # noqa: F401 (fixture)

recsys_client = pytest.importorskip("recsys_client")


def test_sdk_round_trip(trained, tmp_path):  # noqa: F811
    from recsys_client import Interaction, NotFound, RecsysClient

    with (
        serving(trained, tmp_path, write_token="w") as srv,
        RecsysClient(srv.address, token="w", timeout=30) as c,
    ):
        assert c.health() == "SERVING"
        models = c.list_models()
        assert models.default_model == "hybrid" and models.get("svd") is not None
        r = c.recommend("sdk-user", k=4, explain=True)
        assert r.fallback_tier == "popularity" and len(r.items) == 4
        assert r.items[0].explanation.kind == "trending"
        items = r.item_ids if hasattr(r, "item_ids") else [i.item_id for i in r.items]
        events = [Interaction.create("sdk-user", it, "purchase") for it in items[:2]]
        assert c.record_interactions(events).recorded == 2
        assert c.record_interactions(events).duplicates == 2
        r = c.recommend("sdk-user", k=4, explain=True)
        assert r.fallback_tier == "cold_start" and r.model == "hybrid"
        assert not set(items[:2]) & {i.item_id for i in r.items}
        sim = c.similar_items(items[0], 3)
        assert sim.model == "item_cf" and len(sim.items) == 3
        with pytest.raises(NotFound):
            c.recommend("sdk-user", k=3, model="nope")
        batch = c.recommend_batch(["a", "b"], k=2)
        assert [b.user_id for b in batch] == ["a", "b"]
