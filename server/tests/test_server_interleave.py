"""Interleave serving on a real server: an interleave experiment's users get one list that is
exactly a team draft of the two variants' own answers (asked for with explicit ``model``), with
each item's score and explanation from the model that placed it; A/B experiments unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from srv_support import Client, serving, trained  # noqa: F401 (fixtures)

from recsys_core import artifacts
from recsys_core.datastore import open_store
from recsys_proto.v1 import recommender_pb2 as pb
from recsys_server.config import Experiment, Variant
from recsys_server.experiments.interleave import A, B, team_draft
from recsys_server.router import INTERLEAVED, assign
from recsys_server.scoring import Query

MIX = Experiment("mix", (Variant("a", "item_cf", 0.3), Variant("b", "svd", 0.3)), kind="interleave")
PLAIN = Experiment("plain", (Variant("a", "item_cf", 0.5), Variant("b", "svd", 0.5)))
K = 10


class Flips:
    """An rng whose coin flips (`team_draft` draws one per tied round) are given bits."""

    def __init__(self, bits: int) -> None:
        self.bits = bits

    def random(self) -> float:
        bit, self.bits = self.bits & 1, self.bits >> 1
        return 0.0 if bit == 0 else 0.9  # 0: team A picks first


def drafts(a: list[str], b: list[str], k: int) -> dict[tuple[str, ...], set[tuple[int, ...]]]:
    """Every team draft of ``a`` and ``b`` (items -> the team sequences that give them): one
    per sequence of coin flips (at most k tied rounds)."""
    out: dict[tuple[str, ...], set[tuple[int, ...]]] = {}
    for bits in range(2**k):
        items, teams = team_draft(a, b, k, Flips(bits))
        out.setdefault(tuple(items), set()).add(tuple(teams))
    return out


@pytest.fixture(scope="module")
def srv(trained, tmp_path_factory):  # noqa: F811
    with serving(trained, tmp_path_factory.mktemp("mix"), experiments=(MIX, PLAIN)) as s:
        yield s


@pytest.fixture(scope="module")
def users(trained):  # noqa: F811
    """Known users with enough history for a personalised list, by their arm."""
    loaded = artifacts.load_version(trained / artifacts.latest_version(trained))
    counts = np.diff(loaded.history.indptr)
    warm = [str(loaded.user_ids[u]) for u in np.flatnonzero(counts >= 10)]
    arms: dict[str, list[str]] = {"mix": [], "plain": [], "": []}
    for u in warm:
        picked = assign((MIX, PLAIN), u)
        arms["" if picked is None else picked[0].name].append(u)
    assert len(arms["mix"]) >= 20 and len(arms["plain"]) >= 10
    return arms


def in_mix(user: str) -> bool:
    picked = assign((MIX, PLAIN), user)
    return picked is not None and picked[0].name == "mix"


def own(c: Client, user: str, model: str, **kw) -> pb.RecommendResponse:
    return c.Recommend(pb.RecommendRequest(user_id=user, k=K, model=model, **kw))


def test_interleaved_list_is_a_team_draft_of_the_variants_answers(srv, users):
    c = Client(srv.address)
    try:
        for user in users["mix"][:20]:
            r = c.Recommend(pb.RecommendRequest(user_id=user, k=K, explain=True))
            assert (r.experiment, r.variant, r.model) == ("mix", INTERLEAVED, "item_cf+svd")
            assert r.fallback_tier == pb.FALLBACK_TIER_PERSONALIZED
            ids = [i.item_id for i in r.items]
            assert len(ids) == K == len(set(ids))
            a = {i.item_id: i for i in own(c, user, "item_cf", explain=True).items}
            b = {i.item_id: i for i in own(c, user, "svd", explain=True).items}
            possible = drafts(list(a), list(b), K)
            assert tuple(ids) in possible, user
            for item in r.items:  # placed by one model: its score and its explanation
                sources = [m[item.item_id] for m in (a, b) if item.item_id in m]
                assert any(
                    item.score == s.score and item.explanation == s.explanation for s in sources
                )
    finally:
        c.close()


def test_teams_are_the_placing_variants_and_balanced(srv, users):
    core = srv.running.core
    firsts = []
    for n in range(200):
        user = users["mix"][n % len(users["mix"])]
        got = core.recommend(Query(user, K))
        a = core.recommend(Query(user, K, model="item_cf"))
        b = core.recommend(Query(user, K, model="svd"))
        ids = [s.item_id for s in got.items]
        assert (
            tuple(got.teams)
            in drafts([s.item_id for s in a.items], [s.item_id for s in b.items], K)[tuple(ids)]
        )
        assert abs(got.teams.count(A) - got.teams.count(B)) <= 1
        placed = {
            A: {s.item_id: s.score for s in a.items},
            B: {s.item_id: s.score for s in b.items},
        }
        assert [s.score for s in got.items] == [
            placed[t][i] for i, t in zip(ids, got.teams, strict=True)
        ]
        firsts.append(got.teams[0])
    # A fresh coin per request: either team picks first about half the time.
    assert 0.35 < firsts.count(A) / len(firsts) < 0.65


def test_filters_apply_to_both_lists(srv, users):
    c = Client(srv.address)
    try:
        user = users["mix"][0]
        before = own(c, user, "item_cf")
        exclude = [i.item_id for i in before.items[:3]]
        r = c.Recommend(pb.RecommendRequest(user_id=user, k=K, exclude_item_ids=exclude))
        ids = [i.item_id for i in r.items]
        assert not set(ids) & set(exclude)
        a = [i.item_id for i in own(c, user, "item_cf", exclude_item_ids=exclude).items]
        b = [i.item_id for i in own(c, user, "svd", exclude_item_ids=exclude).items]
        assert tuple(ids) in drafts(a, b, K)
        allow = a[:2] + b[:2]
        r = c.Recommend(pb.RecommendRequest(user_id=user, k=3, allow_item_ids=allow))
        assert len(r.items) == 3 and {i.item_id for i in r.items} <= set(allow)
        assert r.variant == INTERLEAVED
    finally:
        c.close()


def test_without_a_personalised_list_the_router_falls_back(srv, users):
    core = srv.running.core
    newcomer = next(u for u in (f"mix-new-{n}" for n in range(500)) if in_mix(u))
    # No history: the popularity tier, not interleaved.
    got = core.recommend(Query(newcomer, K))
    assert (got.experiment, got.variant, got.model, got.tier) == (
        "mix",
        INTERLEAVED,
        "popularity",
        "popularity",
    )
    assert got.teams == [] and len(got.items) == K
    # A short history (session items): the hybrid's cold-start blend, not interleaved.
    recent = [s.item_id for s in core.recommend(Query(users["mix"][0], 2, model="svd")).items]
    cold = core.recommend(Query(newcomer, K, recent_item_ids=recent))
    assert (cold.variant, cold.model, cold.tier, cold.teams) == (
        INTERLEAVED,
        "hybrid",
        "cold_start",
        [],
    )


def test_ab_experiments_are_unchanged(srv, users):
    c = Client(srv.address)
    try:
        for user in users["plain"][:10]:
            r = c.Recommend(pb.RecommendRequest(user_id=user, k=K))
            model = {"a": "item_cf", "b": "svd"}[r.variant]
            assert (r.experiment, r.model) == ("plain", model)
            assert [i.item_id for i in r.items] == [i.item_id for i in own(c, user, model).items]
            assert srv.running.core.recommend(Query(user, K)).teams == []
    finally:
        c.close()


def test_batch_interleaves_too(srv, users):
    c = Client(srv.address)
    try:
        batch = [pb.RecommendRequest(user_id=u, k=K) for u in users["mix"][:5]]
        got = c.RecommendBatch(pb.RecommendBatchRequest(requests=batch))
        for r in got.responses:
            assert (r.variant, r.model, len(r.items)) == (INTERLEAVED, "item_cf+svd", K)
    finally:
        c.close()


def test_impressions_record_the_teams(srv, users):
    c = Client(srv.address)
    try:
        shown = {}
        for user in users["mix"][:5] + users["plain"][:3]:
            r = c.Recommend(pb.RecommendRequest(user_id=user, k=K))
            shown[r.recommendation_id] = r
    finally:
        c.close()
    assert srv.running.core.impressions.flush(timeout=60), "impressions not written"
    with open_store(srv.config.store_url) as store:
        rows = {
            r["recommendation_id"]: r
            for name in ("mix", "plain")
            for r in store.impressions(name).to_dicts()
        }
    for rid, r in shown.items():
        row = rows[rid]
        assert row["item_ids"] == [i.item_id for i in r.items]
        assert (row["experiment"], row["variant"], row["model"]) == (
            r.experiment,
            r.variant,
            r.model,
        )
        if r.variant == INTERLEAVED:
            assert len(row["teams"]) == K and abs(sum(row["teams"]) - K / 2) <= 0.5
        else:
            assert row["teams"] == []


def test_report_credits_clicks_to_the_ranker_that_placed_the_item(srv, users):
    """Clicks (with the answer's recommendation_id and position) on items only item_cf
    recommends: placed by team A, so the report's preference goes to item_cf alone."""
    c = Client(srv.address)
    try:
        clicked = 0
        for n, user in enumerate(users["mix"][20:30]):
            r = c.Recommend(pb.RecommendRequest(user_id=user, k=K))
            a, b = (own(c, user, m).items for m in ("item_cf", "svd"))
            only_a = {x.item_id for x in a} - {x.item_id for x in b}
            pos = next((p for p, i in enumerate(r.items, 1) if i.item_id in only_a), None)
            if pos is None:
                continue
            e = pb.Interaction(
                event_id=f"mix-click-{n}",
                user_id=user,
                item_id=r.items[pos - 1].item_id,
                event_type="click",
                recommendation_id=r.recommendation_id,
                position=pos,
            )
            c.RecordInteractions(pb.RecordInteractionsRequest(events=[e]))
            clicked += 1
        assert clicked >= 5
        assert srv.running.core.impressions.flush(timeout=60), "impressions not written"
        got = c.GetExperimentReport(pb.GetExperimentReportRequest(experiment="mix"))
    finally:
        c.close()
    assert got.kind == "interleave"
    i = got.interleaving
    assert (i.model_a, i.model_b) == ("item_cf", "svd")
    assert (i.wins_a, i.wins_b, i.ties) == (clicked, 0, 0)
    assert i.preference_a == 1.0


def test_diversity_applies_to_both_lists(srv, users):
    c = Client(srv.address)
    try:
        user = users["mix"][1]
        r = c.Recommend(pb.RecommendRequest(user_id=user, k=K, diversity=0.7))
        a = [i.item_id for i in own(c, user, "item_cf", diversity=0.7).items]
        b = [i.item_id for i in own(c, user, "svd", diversity=0.7).items]
        assert a != [i.item_id for i in own(c, user, "item_cf").items]  # it re-ranks
        assert tuple(i.item_id for i in r.items) in drafts(a, b, K)
    finally:
        c.close()
