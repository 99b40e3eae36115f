"""Every RPC against an in-process server on a free loopback port, through the generated stubs:
happy paths, explanations for every model, tiers, validation errors."""

from __future__ import annotations

import asyncio
import math
import re
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from srv_support import (  # noqa: F401 (fixture)
    Client,
    code_of,
    event,
    serving,
    stored_events,
    trained,
)

from recsys_core import artifacts
from recsys_core.models.registry import COMPONENTS, NAMES, REGISTRY, SIMILAR
from recsys_proto.v1 import recommender_pb2 as pb
from recsys_server.errors import DeadlineExceeded
from recsys_server.scoring import Query

MODELS = NAMES
KINDS = {name: spec.explanation for name, spec in REGISTRY.items()}
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def srv(trained, tmp_path_factory):  # noqa: F811
    with serving(trained, tmp_path_factory.mktemp("rpc")) as s:
        yield s


@pytest.fixture(scope="module")
def client(srv):
    c = Client(srv.address)
    yield c
    c.close()


@pytest.fixture(scope="module")
def loaded(trained):  # noqa: F811
    return artifacts.load_version(trained / artifacts.latest_version(trained))


@pytest.fixture(scope="module")
def users(loaded):
    """Known users with at least 10 training interactions."""
    counts = np.diff(loaded.history.indptr)
    return [str(loaded.user_ids[u]) for u in np.flatnonzero(counts >= 10)[:20]]


def history_ids(loaded, user_id: str) -> set[str]:
    u = loaded.user_ids.tolist().index(user_id)
    row = loaded.history[u]
    return {str(loaded.item_ids[i]) for i in row.indices}


def title_of(loaded, item_id: str) -> str:
    return loaded.catalog.title(item_id)


def rec(client, user, k=10, **kw) -> pb.RecommendResponse:
    return client.Recommend(pb.RecommendRequest(user_id=user, k=k, **kw))


# -- health, reflection, ListModels -------------------------------------------------------------


def test_health_serving_and_reflection_lists_services(client):
    assert client.status() == health_pb2.HealthCheckResponse.SERVING
    assert client.status("recsys.v1.Recommender") == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    replies = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    names = {s.name for r in replies for s in r.list_services_response.service}
    assert {"recsys.v1.Recommender", "grpc.health.v1.Health"} <= names


def test_list_models(client, loaded):
    r = client.ListModels(pb.ListModelsRequest())
    assert r.version == loaded.version
    assert r.default_model == "hybrid"
    assert sorted(m.name for m in r.models) == sorted(MODELS)
    for m in r.models:
        assert m.version == loaded.version
        assert m.trained_at.seconds > 0
        assert m.metrics["ndcg@10"] == pytest.approx(loaded.manifest["metrics"][m.name]["ndcg@10"])
    item_cf = next(m for m in r.models if m.name == "item_cf")
    assert item_cf.params["k_neighbors"] == str(
        loaded.manifest["models"]["item_cf"]["params"]["k_neighbors"]
    )
    hybrid = next(m for m in r.models if m.name == "hybrid")
    assert "tuned_weights.item_cf" in hybrid.params


# -- Recommend ---------------------------------------------------------------------------------


def test_recommend_known_user_default_route(client, loaded, users):
    user = users[0]
    r = rec(client, user)
    assert (r.user_id, r.model, r.model_version) == (user, "hybrid", loaded.version)
    assert r.fallback_tier == pb.FALLBACK_TIER_PERSONALIZED
    assert (r.experiment, r.variant) == ("", "")
    assert len(r.items) == 10
    ids = [i.item_id for i in r.items]
    assert len(set(ids)) == 10
    assert not set(ids) & history_ids(loaded, user), "seen items must be excluded"
    scores = [i.score for i in r.items]
    assert scores == sorted(scores, reverse=True)
    for i in r.items:
        assert i.title == title_of(loaded, i.item_id)
        assert list(i.categories) == list(loaded.catalog.categories_of(i.item_id))
        assert 0.0 <= i.confidence <= 1.0
        assert not i.HasField("explanation")


@pytest.mark.parametrize("model", MODELS)
def test_every_model_answers_with_confidence(client, users, model):
    for user in users[:5]:
        r = rec(client, user, model=model)
        assert r.model == model and r.fallback_tier == pb.FALLBACK_TIER_PERSONALIZED
        assert len(r.items) == 10
        conf = [i.confidence for i in r.items]
        assert all(0.0 <= c <= 1.0 for c in conf)
        assert conf == sorted(conf, reverse=True)  # a monotone map: same order as scores
        assert max(conf) > 0


def test_confidence_is_the_calibrated_hit_probability(client, loaded, users):
    """Recommend's confidence is the version's calibration of the model that answered at
    score / that model's reference (measured as the server does: snapshot.build)."""
    from recsys_server import snapshot

    snap = snapshot.build(loaded.path, (), "hybrid")
    assert set(snap.calibrations) >= {"hybrid", "svd", "popularity"}
    for model in ("svd", "hybrid", "item_cf"):
        cal, ref = snap.calibrations[model], snap.reference(model)
        for user in users[:3]:
            r = rec(client, user, model=model)
            want = [cal.confidence(i.score, ref) for i in r.items]
            assert [i.confidence for i in r.items] == pytest.approx(want, abs=1e-6)
            assert all(any(abs(i.confidence - p) < 1e-6 for p in cal.probs) for i in r.items)
    # an unknown user is answered by popularity: its table, not the hybrid's
    r = rec(client, "nobody-at-all")
    assert r.fallback_tier == pb.FALLBACK_TIER_POPULARITY
    cal, ref = snap.calibrations["popularity"], snap.reference("popularity")
    assert [i.confidence for i in r.items] == pytest.approx(
        [cal.confidence(i.score, ref) for i in r.items], abs=1e-6
    )


def test_version_without_calibration_keeps_the_relative_rule(tmp_path, trained):  # noqa: F811
    """A version published before calibration existed loads and answers with
    clip(score / reference, 0, 1)."""
    from srv_support import republish

    from recsys_server import snapshot

    root = tmp_path / "artifacts"
    import shutil

    shutil.copytree(trained, root)
    republish(root)  # publish() without calibrations: no "calibration" in the manifest
    loaded = artifacts.load_version(root / artifacts.latest_version(root))
    assert loaded.calibrations == {}
    snap = snapshot.build(loaded.path, (), "hybrid")
    (tmp_path / "srv").mkdir()
    with serving(root, tmp_path / "srv") as s:
        c = Client(s.address)
        try:
            user = str(loaded.user_ids[int(np.argmax(np.diff(loaded.history.indptr)))])
            r = rec(c, user, model="svd")
        finally:
            c.close()
    ref = snap.reference("svd")
    want = [min(max(i.score / ref, 0.0), 1.0) for i in r.items]
    assert [i.confidence for i in r.items] == pytest.approx(want, abs=1e-6)


def test_explanation_item_cf(client, loaded, users):
    for user in users[:5]:
        r = rec(client, user, model="item_cf", explain=True)
        seen = history_ids(loaded, user)
        top = r.items[0].explanation
        assert top.kind == "because_you_interacted"
        assert 1 <= len(top.items) <= 3
        for c in top.items:
            assert c.item_id in seen
            assert c.title == title_of(loaded, c.item_id)
            assert c.contribution > 0 and c.similarity > 0
        assert top.text.startswith("Because you chose ")  # training history
        assert top.items[0].title in top.text
        contributions = [c.contribution for c in top.items]
        assert contributions == sorted(contributions, reverse=True)


def test_explanation_user_cf(client, users):
    r = rec(client, users[0], model="user_cf", explain=True)
    for i in r.items:
        e = i.explanation
        assert e.kind == "similar_users"
        su = e.similar_users
        assert su.neighbours > 0 and 0 <= su.count <= su.neighbours
        if su.count:
            assert 0 < su.mean_similarity <= su.max_similarity <= 1.0 + 1e-6
            assert re.fullmatch(
                r"\d+ of \d+ users with similar taste chose this \(similarity \d\.\d\d\)", e.text
            ), e.text
            assert e.text.startswith(f"{su.count} of {su.neighbours} ")
    assert any(i.explanation.similar_users.count > 0 for i in r.items)


def test_explanation_svd(client, loaded, users):
    user = users[0]
    r = rec(client, user, model="svd", explain=True)
    n_factors = loaded.manifest["models"]["svd"]["params"]["n_factors"]
    for i in r.items:
        e = i.explanation
        lf = e.latent_factors
        assert e.kind == "latent_factors"
        assert len(lf.factors) == 3 and len(set(lf.factors)) == 3
        assert all(0 <= f < n_factors for f in lf.factors)
        assert len(lf.contributions) == len(lf.shares) == 3
        assert lf.closest_item_id in history_ids(loaded, user)
        assert lf.closest_item_title == title_of(loaded, lf.closest_item_id)
        assert e.text.startswith("Matches your taste (factors ")
        assert f"closest to {lf.closest_item_title} you liked" in e.text


def test_explanation_popularity(client, loaded):
    r = rec(client, "someone-new", model="popularity", explain=True)
    ranks = [i.explanation.trending.rank for i in r.items]
    assert ranks == sorted(ranks) and ranks[0] == 1  # nothing seen: the trending list itself
    t = r.items[0].explanation.trending
    assert t.half_life_days == loaded.manifest["models"]["popularity"]["params"]["half_life_days"]
    assert t.window_end.seconds >= t.window_start.seconds > 0
    assert r.items[0].explanation.text.startswith("Popular right now (#1); we will personalise")
    # the calibrated P(hit) of the most popular item: popularity's table at its score
    cal = loaded.calibrations["popularity"]
    ref = max(loaded.models["popularity"].scores_)
    assert r.items[0].confidence == pytest.approx(cal.confidence(r.items[0].score, ref), abs=1e-6)


def test_explanation_hybrid(client, users):
    """The default model names its evidence: the text's titles and numbers are in the
    structured fields, the component shares stay there too."""
    texts = set()
    named = 0
    for user in users[:5]:
        r = rec(client, user, explain=True)
        for i in r.items:
            e = i.explanation
            assert e.kind == "blend" and 0 < len(e.text) <= 120 and "\n" not in e.text
            shares = {c.model: c.share for c in e.components}
            assert set(shares) <= set(COMPONENTS)
            assert sum(shares.values()) == pytest.approx(1.0, abs=1e-4)
            texts.add(e.text)
            named += names_evidence(e)
    assert named >= 0.95 * 5 * 10
    assert len(texts) > 10  # not one template for every item


def names_evidence(e) -> bool:
    """The text names at least one concrete reason the structured fields carry."""
    t = e.text
    if any(c.title[:20] in t for c in e.items):
        return True
    su = e.similar_users
    if su.count and f"{su.count} of {su.neighbours} " in t:
        return True
    if e.latent_factors.closest_item_title and e.latent_factors.closest_item_title[:20] in t:
        return True
    return any(c in t for c in e.content.categories)


def test_tiers_no_history_short_history_and_explicit_model(client, loaded):
    r = rec(client, "tier-nobody", explain=True)
    assert r.fallback_tier == pb.FALLBACK_TIER_POPULARITY and r.model == "popularity"
    assert r.items[0].explanation.kind == "trending"
    assert r.items[0].explanation.text == (
        "Popular right now (#1); we will personalise after a few more interactions"
    )

    items = [str(x) for x in loaded.item_ids[:2]]
    resp = client.RecordInteractions(
        pb.RecordInteractionsRequest(
            events=[event(f"tier-{n}", "tier-newbie", it, "click") for n, it in enumerate(items)]
        )
    )
    assert resp.recorded == 2
    r = rec(client, "tier-newbie", explain=True)
    assert r.fallback_tier == pb.FALLBACK_TIER_COLD_START and r.model == "hybrid"
    assert not {i.item_id for i in r.items} & set(items)
    e = r.items[0].explanation
    assert e.kind == "blend" and e.text.endswith(
        "we will personalise after a few more interactions"
    )
    shares = {c.model: c.share for c in e.components}
    assert set(shares) <= set(COMPONENTS) and "popularity" in shares  # the blend with popularity
    # An explicit non-hybrid model answers itself.
    r = rec(client, "tier-newbie", model="item_cf", explain=True)
    assert r.fallback_tier == pb.FALLBACK_TIER_PERSONALIZED and r.model == "item_cf"
    assert r.items[0].explanation.text.startswith("Because you clicked ")
    # Session context works the same for anyone.
    r = rec(client, "tier-session", recent_item_ids=items)
    assert r.fallback_tier == pb.FALLBACK_TIER_COLD_START
    five = [str(x) for x in loaded.item_ids[:6]]
    r = rec(client, "tier-session", recent_item_ids=five, explain=True)
    assert r.fallback_tier == pb.FALLBACK_TIER_PERSONALIZED and r.model == "hybrid"
    assert not {i.item_id for i in r.items} & set(five)


def test_exclude_allow_and_unknown_ids(client, loaded, users):
    user = users[2]
    base = rec(client, user)
    top = base.items[0].item_id
    r = rec(client, user, exclude_item_ids=[top, "no-such-item"])
    assert top not in {i.item_id for i in r.items}
    allowed = [i.item_id for i in base.items[3:8]] + ["no-such-item"]
    r = rec(client, user, allow_item_ids=allowed)
    assert {i.item_id for i in r.items} == set(allowed[:-1])
    r = rec(client, user, allow_item_ids=["no-such-item"])
    assert len(r.items) == 0 and r.model_version == loaded.version
    r = rec(client, user, recent_item_ids=["no-such-item"])
    assert [i.item_id for i in r.items] == [i.item_id for i in base.items]


def test_k_larger_than_catalog(client, loaded, users):
    r = rec(client, users[0], k=1000, model="item_cf")
    assert len(r.items) == len(loaded.item_ids) - len(history_ids(loaded, users[0]))


def test_recommend_batch_in_order(client, users):
    reqs = [
        pb.RecommendRequest(user_id=users[0], k=3),
        pb.RecommendRequest(user_id="batch-unknown", k=4),
        pb.RecommendRequest(user_id=users[1], k=5, model="svd", explain=True),
    ]
    r = client.RecommendBatch(pb.RecommendBatchRequest(requests=reqs))
    assert [x.user_id for x in r.responses] == [users[0], "batch-unknown", users[1]]
    assert [len(x.items) for x in r.responses] == [3, 4, 5]
    assert r.responses[1].fallback_tier == pb.FALLBACK_TIER_POPULARITY
    assert r.responses[2].model == "svd" and r.responses[2].items[0].explanation.text
    single = rec(client, users[0], k=3)
    assert [i.item_id for i in single.items] == [i.item_id for i in r.responses[0].items]
    assert client.RecommendBatch(pb.RecommendBatchRequest()).responses == []


def test_recommend_batch_limits(client, users):
    bad = [pb.RecommendRequest(user_id=users[0], k=3), pb.RecommendRequest(user_id="x", k=0)]
    code, msg = code_of(client.RecommendBatch, pb.RecommendBatchRequest(requests=bad))
    assert code == INVALID and msg.startswith("requests[1].k")
    many = [pb.RecommendRequest(user_id="x", k=1)] * 1001
    code, msg = code_of(client.RecommendBatch, pb.RecommendBatchRequest(requests=many))
    assert code == INVALID and msg.startswith("requests:")


LONG = "x" * 257


@pytest.mark.parametrize(
    ("request_kw", "field"),
    [
        ({"user_id": "u", "k": 0}, "k"),
        ({"user_id": "u", "k": 1001}, "k"),
        ({"user_id": "u", "k": -5}, "k"),
        ({"user_id": "", "k": 10}, "user_id"),
        ({"user_id": LONG, "k": 10}, "user_id"),
        ({"user_id": "u", "k": 10, "exclude_item_ids": ["i"] * 1001}, "exclude_item_ids"),
        ({"user_id": "u", "k": 10, "allow_item_ids": ["a", ""]}, "allow_item_ids[1]"),
        ({"user_id": "u", "k": 10, "recent_item_ids": [LONG]}, "recent_item_ids[0]"),
    ],
)
def test_recommend_invalid_arguments(client, request_kw, field):
    code, msg = code_of(client.Recommend, pb.RecommendRequest(**request_kw))
    assert code == INVALID
    assert msg.startswith(f"{field}:"), msg


def test_unknown_model_not_found_lists_available(client):
    code, msg = code_of(client.Recommend, pb.RecommendRequest(user_id="u", k=3, model="bpr"))
    assert code == grpc.StatusCode.NOT_FOUND
    assert "bpr" in msg and f"available: {', '.join(sorted(MODELS))}" in msg


# -- SimilarItems ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["", *SIMILAR])
def test_similar_items(client, loaded, model):
    item = str(loaded.item_ids[5])
    r = client.SimilarItems(pb.SimilarItemsRequest(item_id=item, k=7, model=model))
    assert r.item_id == item and r.model == (model or "item_cf")
    assert r.model_version == loaded.version
    assert len(r.items) == 7 and item not in {i.item_id for i in r.items}
    scores = [i.score for i in r.items]
    assert scores == sorted(scores, reverse=True)
    for i in r.items:
        assert 0.0 <= i.confidence <= 1.0
        assert i.title == title_of(loaded, i.item_id)


@pytest.mark.parametrize(
    ("kw", "code", "start"),
    [
        ({"item_id": "no-such-item", "k": 5}, grpc.StatusCode.NOT_FOUND, "item 'no-such-item'"),
        ({"item_id": "i001", "k": 5, "model": "popularity"}, INVALID, "model:"),
        ({"item_id": "i001", "k": 0}, INVALID, "k:"),
        ({"item_id": "", "k": 5}, INVALID, "item_id:"),
    ],
)
def test_similar_items_errors(client, kw, code, start):
    got, msg = code_of(client.SimilarItems, pb.SimilarItemsRequest(**kw))
    assert got == code and msg.startswith(start), msg


@pytest.mark.parametrize("model", [n for n in MODELS if n not in SIMILAR])
def test_similar_items_refuses_models_without_it(client, loaded, model):
    req = pb.SimilarItemsRequest(item_id=str(loaded.item_ids[5]), k=5, model=model)
    got, msg = code_of(client.SimilarItems, req)
    assert got == INVALID and msg.startswith("model:"), msg


# -- RecordInteractions ------------------------------------------------------------------------


def test_record_changes_next_recommendations(client, loaded, users):
    user = users[3]
    before = rec(client, user, model="item_cf", explain=True)
    bought = [i.item_id for i in before.items[:3]]
    resp = client.RecordInteractions(
        pb.RecordInteractionsRequest(
            events=[event(f"chg-{n}", user, it, "purchase") for n, it in enumerate(bought)]
        )
    )
    assert (resp.recorded, resp.duplicates) == (3, 0)
    after = rec(client, user, model="item_cf", explain=True)
    ids = [i.item_id for i in after.items]
    assert not set(ids) & set(bought), "bought items are now seen"
    assert ids != [i.item_id for i in before.items]
    explained = [
        i.explanation for i in after.items if {c.item_id for c in i.explanation.items} & set(bought)
    ]
    assert explained, "purchases (weight 8) should drive item-CF"
    for e in explained:
        assert "bought " in e.text
    assert not {i.item_id for i in rec(client, user).items} & set(bought)  # default route too


def test_record_same_event_id_twice_stored_once(client, srv):
    e = event("dup-1", "dup-user", "i001", "view", ts=1_700_000_000)
    r1 = client.RecordInteractions(pb.RecordInteractionsRequest(events=[e]))
    r2 = client.RecordInteractions(pb.RecordInteractionsRequest(events=[e]))
    r3 = client.RecordInteractions(pb.RecordInteractionsRequest(events=[e, e]))
    assert (r1.recorded, r1.duplicates) == (1, 0)
    assert (r2.recorded, r2.duplicates) == (0, 1)
    assert (r3.recorded, r3.duplicates) == (0, 2)
    e2 = event("dup-2", "dup-user", "i002", "rating", rating=4.5)
    r4 = client.RecordInteractions(pb.RecordInteractionsRequest(events=[e2, e2]))
    assert (r4.recorded, r4.duplicates) == (1, 1)
    stored = [x for x in stored_events(srv.config.store_url) if x.event_id.startswith("dup-")]
    assert [x.event_id for x in stored] == ["dup-1", "dup-2"]
    assert stored[0].timestamp == 1_700_000_000 and stored[0].rating is None
    assert stored[1].rating == 4.5 and stored[1].event_type == "rating"
    assert client.RecordInteractions(pb.RecordInteractionsRequest()).recorded == 0


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"event_id": ""}, "event_id"),
        ({"event_id": "e" * 129}, "event_id"),
        ({"user_id": ""}, "user_id"),
        ({"item_id": LONG}, "item_id"),
        ({"event_id": "a\x00b"}, "event_id"),  # PostgreSQL text cannot hold NUL
        ({"user_id": "\x00"}, "user_id"),
        ({"event_type": "like"}, "event_type"),
        ({"event_type": "View"}, "event_type"),
        ({"event_type": "rating"}, "rating"),
        ({"event_type": "rating", "rating": -1.0}, "rating"),
        ({"event_type": "rating", "rating": math.nan}, "rating"),
        ({"event_type": "view", "rating": 3.0}, "rating"),
    ],
)
def test_record_invalid_events(client, kw, field):
    fields = {"event_id": "bad-1", "user_id": "u", "item_id": "i001", "event_type": "view"}
    fields.update(kw)
    good = event("ok-before-bad", "u", "i001")
    req = pb.RecordInteractionsRequest(events=[good, pb.Interaction(**fields)])
    code, msg = code_of(client.RecordInteractions, req)
    assert code == INVALID and msg.startswith(f"events[1].{field}:"), msg


def test_record_too_many_events(client):
    events = [event(f"many-{n}", "u", "i001") for n in range(1001)]
    code, msg = code_of(client.RecordInteractions, pb.RecordInteractionsRequest(events=events))
    assert code == INVALID and msg.startswith("events:")


def test_nothing_of_an_invalid_request_is_stored(client, srv):
    req = pb.RecordInteractionsRequest(
        events=[event("partial-ok", "u", "i001"), event("partial-bad", "u", "i001", "nope")]
    )
    code_of(client.RecordInteractions, req)
    assert "partial-ok" not in {e.event_id for e in stored_events(srv.config.store_url)}


# -- errors never surface as UNKNOWN ------------------------------------------------------------


def test_unexpected_exception_is_internal_with_generic_message(client, srv, users, caplog):
    core = srv.running.core

    def boom(q):
        raise RuntimeError("secret detail 42")

    core.recommend = boom
    try:
        code, msg = code_of(client.Recommend, pb.RecommendRequest(user_id=users[0], k=3))
    finally:
        del core.recommend
    assert code == grpc.StatusCode.INTERNAL
    assert "secret" not in msg and "internal error" in msg
    assert rec(client, users[0], k=3).items  # still serving


def test_a_batch_stops_at_its_deadline_by_itself(srv, users):
    """The worker reads the deadline itself: a batch whose deadline has passed is not worked
    for, whatever the event loop knows, and is counted as abandoned work."""
    core = srv.running.core
    abandoned = core.metrics.abandoned.labels("RecommendBatch")
    before = abandoned._value.get()
    queries = [Query(user_id=u, k=3) for u in users[:5]]
    with pytest.raises(DeadlineExceeded, match="after 0 of 5 requests"):
        asyncio.run(core.recommend_batch(queries, deadline=time.monotonic() - 1))
    assert abandoned._value.get() == before + 1
    far = time.monotonic() + 3600  # a deadline far away changes nothing
    assert len(asyncio.run(core.recommend_batch(queries, deadline=far))) == 5
