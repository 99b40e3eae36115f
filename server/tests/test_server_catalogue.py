"""The live catalogue over a real server: UpsertItems, SetItemAvailability, GetItem,
ListItems, GetUserHistory; an unavailable item gone from every answer of every model (and
after a restart); validation that names the field and stores nothing."""

from __future__ import annotations

import grpc
import pytest
from srv_support import (  # noqa: F401 (fixtures)
    Client,
    artifacts_copy,
    code_of,
    event,
    serving,
    store_url,
    trained,
)

from recsys_core import artifacts
from recsys_core.datastore import open_store
from recsys_proto.v1 import recommender_pb2 as pb
from recsys_server import catalogue, new_items

K = 10


@pytest.fixture(scope="module")
def loaded(trained):  # noqa: F811
    return artifacts.load_version(trained / artifacts.latest_version(trained))


def item(item_id, title="A title", cats=("Drama",), attrs=None, available=None) -> pb.Item:
    m = pb.Item(item_id=item_id, title=title, categories=list(cats), attributes=attrs or {})
    if available is not None:
        m.available = available
    return m


def ids_of(r) -> list[str]:
    return [i.item_id for i in r.items]


def test_upsert_get_list_paging_and_idempotence(artifacts_copy, tmp_path, loaded):  # noqa: F811
    known = str(loaded.item_ids[0])
    with serving(artifacts_copy, tmp_path) as srv:
        c = Client(srv.address)
        r = c.UpsertItems(
            pb.UpsertItemsRequest(
                items=[item("new-1", "New one", ("Sci-Fi",), {"brand": "acme"}), item(known, "T")]
            )
        )
        assert (r.changed, r.unchanged) == (2, 0)
        again = c.UpsertItems(
            pb.UpsertItemsRequest(items=[item("new-1", "New one", ("Sci-Fi",), {"brand": "acme"})])
        )
        assert (again.changed, again.unchanged) == (0, 1)

        got = c.GetItem(pb.GetItemRequest(item_id="new-1")).item
        assert (got.title, list(got.categories), dict(got.attributes)) == (
            "New one",
            ["Sci-Fi"],
            {"brand": "acme"},
        )
        assert got.available and not got.in_model and got.HasField("updated_at")
        k = c.GetItem(pb.GetItemRequest(item_id=known)).item
        assert k.in_model and k.title == "T"
        other = str(loaded.item_ids[1])  # in the version only: its trained catalogue entry
        o = c.GetItem(pb.GetItemRequest(item_id=other)).item
        assert o.in_model and o.available and not o.HasField("updated_at")
        assert o.title == str(loaded.catalog.title(other))
        code, details = code_of(c.GetItem, pb.GetItemRequest(item_id="nope"))
        assert code == grpc.StatusCode.NOT_FOUND and "nope" in details

        # Paging: every item once, in id order, whatever the page size.
        every = sorted({*loaded.item_ids.tolist(), "new-1"})
        seen, token, pages = [], "", 0
        while True:
            page = c.ListItems(pb.ListItemsRequest(page_size=37, page_token=token))
            seen += ids_of(page)
            pages += 1
            token = page.next_page_token
            if not token:
                break
        assert seen == every and pages == -(-len(every) // 37)
        code, details = code_of(c.ListItems, pb.ListItemsRequest(page_token="garbage"))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("page_token")

        c.SetItemAvailability(pb.SetItemAvailabilityRequest(item_ids=[known], available=False))
        off = c.ListItems(pb.ListItemsRequest(page_size=1000, available=False))
        assert ids_of(off) == [known] and not off.next_page_token
        on = c.ListItems(pb.ListItemsRequest(page_size=1000, available=True))
        assert known not in ids_of(on) and len(on.items) == len(every) - 1
        # Availability is kept by an upsert that does not give it, and toggles are idempotent.
        c.UpsertItems(pb.UpsertItemsRequest(items=[item(known, "T2")]))
        assert not c.GetItem(pb.GetItemRequest(item_id=known)).item.available
        r = c.SetItemAvailability(pb.SetItemAvailabilityRequest(item_ids=[known], available=False))
        assert (r.changed, r.unchanged) == (0, 1)
        c.close()


def _all_answers(c: Client, models, users, similar_of, unknown_user, short_user):
    """Every answer the catalogue must filter: each model for each user, the fallback tiers,
    a batch, and similar items from each model that has them."""
    out = []
    for m in models:
        for u in users:
            out.append((f"{m}/{u}", c.Recommend(pb.RecommendRequest(user_id=u, k=K, model=m))))
    for u in [*users, unknown_user, short_user]:
        out.append((f"default/{u}", c.Recommend(pb.RecommendRequest(user_id=u, k=K))))
    batch = c.RecommendBatch(
        pb.RecommendBatchRequest(
            requests=[pb.RecommendRequest(user_id=u, k=K, model=m) for m in models for u in users]
        )
    )
    out += [(f"batch/{n}", r) for n, r in enumerate(batch.responses)]
    for m in ("item_cf", "svd"):
        if m in models:
            out.append(
                (
                    f"similar/{m}",
                    c.SimilarItems(pb.SimilarItemsRequest(item_id=similar_of, k=K, model=m)),
                )
            )
    return out


def test_unavailable_items_vanish_everywhere_and_stay_gone_after_a_restart(
    artifacts_copy,  # noqa: F811
    tmp_path,
    loaded,
    store_url,  # noqa: F811
):
    users = [str(u) for u in loaded.user_ids[:3]]
    models = sorted(loaded.models)
    short_user = "short-history-user"
    similar_of = str(loaded.item_ids[0])
    with serving(artifacts_copy, tmp_path, store=store_url) as srv:
        c = Client(srv.address)
        c.RecordInteractions(
            pb.RecordInteractionsRequest(events=[event("sh-1", short_user, similar_of, "purchase")])
        )
        before = _all_answers(c, models, users, similar_of, "nobody-at-all", short_user)
        tiers = {r.fallback_tier for _, r in before if hasattr(r, "fallback_tier")}
        assert {
            pb.FALLBACK_TIER_POPULARITY,
            pb.FALLBACK_TIER_COLD_START,
            pb.FALLBACK_TIER_PERSONALIZED,
        } <= tiers
        # Deny the top item of every answer (and the similar-items item itself stays asked).
        deny = sorted({ids_of(r)[0] for _, r in before} - {similar_of})
        assert len(deny) >= 3
        r = c.SetItemAvailability(pb.SetItemAvailabilityRequest(item_ids=deny, available=False))
        assert r.changed == len(deny)
        after = _all_answers(c, models, users, similar_of, "nobody-at-all", short_user)
        for name, a in after:
            assert not set(ids_of(a)) & set(deny), name
            assert len(a.items) == K, name
        c.close()

    with serving(artifacts_copy, tmp_path, store=store_url) as srv:
        c = Client(srv.address)
        for name, a in _all_answers(c, models, users, similar_of, "nobody-at-all", short_user):
            assert not set(ids_of(a)) & set(deny), f"after restart: {name}"
            assert len(a.items) == K, name
        # Available again: back in the answers.
        c.SetItemAvailability(pb.SetItemAvailabilityRequest(item_ids=deny, available=True))
        again = _all_answers(c, models, users, similar_of, "nobody-at-all", short_user)
        assert [ids_of(a) for _, a in again] == [ids_of(b) for _, b in before]
        c.close()
    with open_store(store_url) as s:
        assert {r.item_id for r in s.read_items()} == set(deny)


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([item("")], "items[0].item_id"),
        ([item("a"), item("b", title="x" * (catalogue.MAX_TITLE + 1))], "items[1].title"),
        ([item(f"i{n}") for n in range(catalogue.MAX_ITEMS + 1)], "items"),
        ([item("a"), item("b"), item("c"), item("d", attrs={"k": "v\x00"})], "items[3].attributes"),
        ([item("a", attrs={"bad key": "v"})], "items[0].attributes"),
        ([item("a"), item("b"), item("a")], "items[2].item_id"),
        ([item("a", cats=("ok", ""))], "items[0].categories[1]"),
        ([], "items"),
    ],
)
def test_invalid_upserts_name_the_field_and_store_nothing(
    artifacts_copy,  # noqa: F811
    tmp_path,
    items,
    field,
):
    with serving(artifacts_copy, tmp_path) as srv:
        c = Client(srv.address)
        code, details = code_of(c.UpsertItems, pb.UpsertItemsRequest(items=items))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details.startswith(field), details
        url = srv.config.store_url
        c.close()
    with open_store(url) as s:
        assert s.read_items() == []


def test_availability_errors_and_write_token(artifacts_copy, tmp_path, loaded):  # noqa: F811
    known = str(loaded.item_ids[0])
    with serving(artifacts_copy, tmp_path, write_token="w-secret") as srv:
        c, w = Client(srv.address), Client(srv.address, token="w-secret")
        code, _ = code_of(c.UpsertItems, pb.UpsertItemsRequest(items=[item("x")]))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        code, _ = code_of(
            c.SetItemAvailability, pb.SetItemAvailabilityRequest(item_ids=[known], available=False)
        )
        assert code == grpc.StatusCode.UNAUTHENTICATED
        code, details = code_of(
            w.SetItemAvailability,
            pb.SetItemAvailabilityRequest(item_ids=[known, "ghost"], available=False),
        )
        assert code == grpc.StatusCode.NOT_FOUND and details.startswith("item_ids[1]")
        code, details = code_of(
            w.SetItemAvailability,
            pb.SetItemAvailabilityRequest(item_ids=[known, known], available=False),
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("item_ids[1]")
        assert c.GetItem(pb.GetItemRequest(item_id=known)).item.available  # nothing applied
        c.close()
        w.close()


def test_user_history_has_training_items_and_live_events(artifacts_copy, tmp_path, loaded):  # noqa: F811
    user = str(loaded.user_ids[0])
    items = [str(i) for i in loaded.item_ids[20:23]]
    with serving(artifacts_copy, tmp_path) as srv:
        c = Client(srv.address)
        c.RecordInteractions(
            pb.RecordInteractionsRequest(
                events=[
                    event("h-1", user, items[0], "view", ts=1_700_000_000),
                    event("h-2", user, items[1], "purchase", ts=1_700_000_100),
                    event("h-3", user, items[2], "rating", rating=4.0, ts=1_700_000_200),
                ]
            )
        )
        h = c.GetUserHistory(pb.GetUserHistoryRequest(user_id=user))
        row = loaded.history[loaded.user_ids.tolist().index(user)]
        assert len(h.training_items) == row.nnz > 0
        weights = [t.weight for t in h.training_items]
        assert weights == sorted(weights, reverse=True)
        assert [(e.event_id, e.event_type, e.timestamp.seconds, e.trained) for e in h.events] == [
            ("h-3", "rating", 1_700_000_200, False),
            ("h-2", "purchase", 1_700_000_100, False),
            ("h-1", "view", 1_700_000_000, False),
        ]
        assert h.events[0].rating == 4.0 and h.events[0].title
        assert len(c.GetUserHistory(pb.GetUserHistoryRequest(user_id=user, limit=2)).events) == 2
        code, _ = code_of(c.GetUserHistory, pb.GetUserHistoryRequest(user_id="nobody"))
        assert code == grpc.StatusCode.NOT_FOUND
        code, details = code_of(
            c.GetUserHistory, pb.GetUserHistoryRequest(user_id=user, limit=5000)
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("limit")
        c.close()


def main_categories(loaded, user: str) -> tuple[str, ...]:
    """The user's two most frequent training categories."""
    row = loaded.history[loaded.user_ids.tolist().index(user)]
    counts: dict[str, int] = {}
    for i in row.indices.tolist():
        for c in loaded.catalog.categories_of(str(loaded.item_ids[i])):
            counts[c] = counts.get(c, 0) + 1
    return tuple(sorted(counts, key=lambda c: (-counts[c], c))[:2])


def test_a_new_item_reaches_matching_users_at_once_and_says_it_is_new(
    artifacts_copy,  # noqa: F811
    tmp_path,
    loaded,
):
    """The real content model: an item upserted with the categories of a user's history is in
    that user's default (hybrid) top 20 on the next call, at the reserved slot, explained as
    new; one sharing nothing is not; SimilarItems answers it by content; exclusions and
    availability apply to it like to any item."""
    assert "content" in loaded.models, "the fixture's version must have a content model"
    user = str(loaded.user_ids[0])
    cats = main_categories(loaded, user)
    with serving(artifacts_copy, tmp_path) as srv:
        c = Client(srv.address)
        req = pb.RecommendRequest(user_id=user, k=20, explain=True)
        before = ids_of(c.Recommend(req))
        c.UpsertItems(
            pb.UpsertItemsRequest(
                items=[
                    item("fresh-match", "Zyxwv Fresh", cats),
                    item("fresh-other", "Qqqq Other", ("Nothing-anyone-likes",)),
                ]
            )
        )
        r = c.Recommend(req)
        got = ids_of(r)
        at = new_items.NEW_ITEM_RANK - 1
        assert got == [*before[:at], "fresh-match", *before[at:19]]
        e = r.items[at].explanation
        assert e.new_item and e.text.endswith("(new to you: just added)")
        assert set(e.content.categories) & set(cats), e.content
        assert e.text.startswith("Matches your interest in ")
        assert len(e.text) <= 120
        assert r.items[at].title == "Zyxwv Fresh" and tuple(r.items[at].categories) == cats
        assert not any(i.explanation.new_item for i in r.items if i.item_id != "fresh-match")
        # the content model itself ranks it on its own score
        own = ids_of(c.Recommend(pb.RecommendRequest(user_id=user, k=20, model="content")))
        assert "fresh-match" in own and "fresh-other" not in own
        # models without content do not return it
        svd = ids_of(c.Recommend(pb.RecommendRequest(user_id=user, k=20, model="svd")))
        assert "fresh-match" not in svd
        # its neighbours by content: items sharing its categories
        sim = c.SimilarItems(pb.SimilarItemsRequest(item_id="fresh-match", k=5))
        assert sim.model == "content" and len(sim.items) == 5
        assert all(set(i.categories) & set(cats) for i in sim.items)
        code, _ = code_of(
            c.SimilarItems, pb.SimilarItemsRequest(item_id="fresh-match", k=5, model="svd")
        )
        assert code == grpc.StatusCode.NOT_FOUND
        excluded = c.Recommend(
            pb.RecommendRequest(user_id=user, k=20, exclude_item_ids=["fresh-match"])
        )
        assert ids_of(excluded) == before
        c.SetItemAvailability(
            pb.SetItemAvailabilityRequest(item_ids=["fresh-match"], available=False)
        )
        assert ids_of(c.Recommend(req)) == before
        code, _ = code_of(c.SimilarItems, pb.SimilarItemsRequest(item_id="fresh-match", k=5))
        assert code == grpc.StatusCode.NOT_FOUND
        c.close()


def test_similar_refills_when_the_first_fetch_is_all_denied():
    import numpy as np

    import recsys_core as rc
    from recsys_server.scoring import similar_allowed

    class Ordered:  # neighbours 0, 1, 2, ... with falling scores
        def __init__(self):
            self.asked: list[int] = []

        def similar_items(self, item, k):
            self.asked.append(k)
            items = np.arange(min(k, 200), dtype=np.int32)
            return rc.Recommendations(items, (1.0 - items / 1000).astype(np.float32))

    m = Ordered()
    deny = np.arange(0, 100, 2, dtype=np.int32)[:50]  # every even item below 100: 50 denied
    got, _ = similar_allowed(m, 0, 10, deny, 200)
    assert got.tolist() == list(range(1, 21, 2))  # the 10 best odd ones
    deny = np.arange(50, dtype=np.int32)  # the whole first fetch (40) is denied
    got, _ = similar_allowed(m, 0, 10, deny, 200)
    assert got.tolist() == list(range(50, 60)) and m.asked[-2:] == [40, 60]
