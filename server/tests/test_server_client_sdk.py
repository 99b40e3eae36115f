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


def test_sdk_and_cli_catalogue(trained, tmp_path, capsys):  # noqa: F811
    import json

    from recsys_client import InvalidArgument, Item, NotFound, RecsysClient
    from recsys_client.cli import main

    with (
        serving(trained, tmp_path, write_token="w") as srv,
        RecsysClient(srv.address, token="w", timeout=30) as c,
    ):
        r = c.upsert_items([Item("sdk-item", "SDK item", ["Gadgets"], {"colour": "red"})])
        assert (r.changed, r.unchanged) == (1, 0)
        got = c.get_item("sdk-item")
        assert (got.title, got.categories, got.attributes) == (
            "SDK item",
            ["Gadgets"],
            {"colour": "red"},
        )
        assert got.available and not got.in_model and got.updated_at is not None
        top = c.recommend("sdk-user-2", k=3).items[0].item_id
        assert c.set_item_availability([top], False).changed == 1
        assert top not in [i.item_id for i in c.recommend("sdk-user-2", k=3).items]
        page = c.list_items(2)
        assert len(page.items) == 2 and page.next_page_token
        nxt = c.list_items(2, page.next_page_token)
        assert nxt.items[0].item_id > page.items[1].item_id
        assert [i.item_id for i in c.list_items(1000, available=False).items] == [top]
        with pytest.raises(NotFound):
            c.get_item("no-such-item")
        with pytest.raises(InvalidArgument):
            c.list_items(0)
        known = str(srv.running.core.state().snapshot.user_ids[0])
        h = c.user_history(known, 5)
        assert h.training_items and h.model_version

        base = ["--target", srv.address, "--token", "w"]
        assert main([*base, "upsert-item", "--item", "cli-item", "--title", "CLI",
                     "--categories", "A,B", "--attr", "k=v", "--unavailable"]) == 0  # fmt: skip
        assert "changed 1" in capsys.readouterr().out
        assert main([*base, "--json", "item", "--item", "cli-item"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert (shown["title"], shown["categories"], shown["attributes"], shown["available"]) == (
            "CLI",
            ["A", "B"],
            {"k": "v"},
            False,
        )
        assert main([*base, "set-availability", "--items", "cli-item", "--available"]) == 0
        assert "changed 1" in capsys.readouterr().out
        assert main([*base, "items", "--page-size", "3"]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[0].split() == [
            "item",
            "title",
            "categories",
            "available",
            "in_model",
        ]
        assert "next page: --page-token" in out
        assert main([*base, "history", "--user", known, "--limit", "3"]) == 0
        assert "training history:" in capsys.readouterr().out
