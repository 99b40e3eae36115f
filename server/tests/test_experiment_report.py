"""GetExperimentReport on a real server: a small fixed scenario of Recommend answers (recorded
as impressions) and interactions with and without their recommendation_id, and every number
of the report checked against a hand computation written out below."""

from __future__ import annotations

import math
import time

import grpc
import numpy as np
import pytest
from srv_support import Client, code_of, serving, trained, wait_until  # noqa: F401 (fixture)

from recsys_core import artifacts
from recsys_core.datastore import open_store
from recsys_proto.v1 import recommender_pb2 as pb
from recsys_server.config import Experiment, Outcomes, Variant
from recsys_server.experiments import stats
from recsys_server.experiments.interleave import credit
from recsys_server.router import assign

EXP = Experiment("duo", (Variant("control", "hybrid", 0.5), Variant("treat", "item_cf", 0.5)))
OUTCOMES = Outcomes(clicks=("click",), conversions=("purchase",), values=("purchase", "rating"))
HOUR = 3600.0


def users_by_variant(trained) -> dict[str, list[str]]:  # noqa: F811
    """Two users with enough history for personal lists, per variant (by the router's hash)."""
    loaded = artifacts.load_version(trained / artifacts.latest_version(trained))
    counts = np.diff(loaded.history.indptr)
    out: dict[str, list[str]] = {"control": [], "treat": []}
    for u in np.flatnonzero(counts >= 10):
        user = str(loaded.user_ids[u])
        _, v = assign((EXP,), user)
        if len(out[v.name]) < 2:
            out[v.name].append(user)
        if all(len(x) == 2 for x in out.values()):
            return out
    raise AssertionError("not enough users in each variant")


def ev(eid, user, item, kind, ts, rid="", position=0, rating=0.0) -> pb.Interaction:
    e = pb.Interaction(
        event_id=eid,
        user_id=user,
        item_id=item,
        event_type=kind,
        rating=rating,
        recommendation_id=rid,
        position=position,
    )
    e.timestamp.FromNanoseconds(int(ts * 1e9))
    return e


def same(got: pb.MetricComparison, want: stats.Comparison) -> None:
    pairs = [
        (got.control_value, want.control),
        (got.variant_value, want.variant),
        (got.difference, want.difference),
        (got.relative_difference, want.relative),
        (got.ci95.low, want.ci95.low),
        (got.ci95.high, want.ci95.high),
        (got.always_valid.low, want.always_valid.low),
        (got.always_valid.high, want.always_valid.high),
        (got.p_value, want.p_value),
        (got.mde_relative, want.mde_relative),
    ]
    for g, w in pairs:
        assert (math.isnan(g) and math.isnan(w)) or g == pytest.approx(w, rel=1e-12), pairs
    assert got.metric == want.metric and got.significant == want.significant


def test_report_equals_the_hand_computation(trained, tmp_path):  # noqa: F811
    users = users_by_variant(trained)
    a1, a2 = users["control"]
    b1, b2 = users["treat"]
    with serving(
        trained, tmp_path, experiments=(EXP,), outcomes=OUTCOMES, attribution_hours=1.0
    ) as srv:
        c = Client(srv.address)
        try:

            def rec(user: str) -> pb.RecommendResponse:
                r = c.Recommend(pb.RecommendRequest(user_id=user, k=3))
                assert len(r.items) == 3 and r.recommendation_id
                assert (r.experiment, r.variant) == ("duo", assign((EXP,), user)[1].name)
                return r

            # b1 asks for a model by name: an answer outside the experiment, recorded first (the
            # writer stores in queue order, so it is stored once the five below are).
            rx = c.Recommend(pb.RecommendRequest(user_id=b1, k=3, model="svd"))
            assert rx.recommendation_id and (rx.experiment, rx.variant) == ("", "")
            ra1, ra1b, ra2, rb1, rb2 = rec(a1), rec(a1), rec(a2), rec(b1), rec(b2)
            t = time.time()  # after every impression
            items = {r.recommendation_id: [i.item_id for i in r.items] for r in (ra1, ra1b)}
            ia1 = items[ra1.recommendation_id]
            ia2 = [i.item_id for i in ra2.items]
            ib1 = [i.item_id for i in rb1.items]
            ib2 = [i.item_id for i in rb2.items]
            never_b2 = next(i for i in ia1 + ia2 + ib1 if i not in ib2)

            def stored_impressions() -> int:
                r = c.GetExperimentReport(pb.GetExperimentReportRequest(experiment="duo"))
                return sum(v.impressions for v in r.variants) == 5

            wait_until(stored_impressions, "5 impressions stored")

            events = [
                # a1: a click with its id and position 2 (-> ra1, control), a purchase with its
                # id and no position (-> ra1: a conversion and a value of 1).
                ev("1", a1, ia1[1], "click", t + 10, ra1.recommendation_id, 2),
                ev("2", a1, ia1[0], "purchase", t + 20, ra1.recommendation_id),
                # a2: a click with an id the store does not know: by the window -> ra2.
                ev("3", a2, ia2[0], "click", t + 60, "no-such-id"),
                # a2: a view is no outcome.
                ev("4", a2, ia2[1], "view", t + 60),
                # b1: a click without id (window -> rb1), a rating of 4 with its id (a value).
                ev("5", b1, ib1[1], "click", t + 60),
                ev("6", b1, ib1[2], "rating", t + 70, rb1.recommendation_id, rating=4.0),
                # b2: a click two hours later: outside the one-hour window, not credited.
                ev("7", b2, ib2[0], "click", t + 2 * HOUR),
                # b2: a click on an item never shown to b2: not credited.
                ev("8", b2, never_b2, "click", t + 30),
                # b2: a purchase naming a1's answer: another user's id, so by the window -> rb2.
                ev("9", b2, ib2[1], "purchase", t + 30, ra1.recommendation_id),
                # b1: a click naming b1's own answer outside the experiment: it came from that
                # answer, so it is not credited to rb1 by the window.
                ev("10", b1, ib1[0], "click", t + 40, rx.recommendation_id, 1),
            ]
            assert c.RecordInteractions(pb.RecordInteractionsRequest(events=events)).recorded == 10
            r = c.GetExperimentReport(pb.GetExperimentReportRequest(experiment="duo"))
        finally:
            c.close()

    assert (r.experiment, r.kind, r.control, r.attribution_hours) == ("duo", "ab", "control", 1.0)
    assert r.impressions_dropped == 0
    assert abs(r.generated_at.seconds - time.time()) < 600
    control, treat = r.variants
    # control: a1 (2 answers, 6 items shown; clicks: 1; conversions: 2; value 1),
    #          a2 (1 answer, 3 items; clicks: 3).
    assert (control.variant, control.model, control.share) == ("control", "hybrid", 0.5)
    assert (control.users, control.impressions, control.clicks, control.conversions) == (2, 3, 2, 1)
    assert control.value == 1.0
    assert control.ctr == pytest.approx(2 / 9)
    assert (control.conversions_per_user, control.value_per_user) == (0.5, 0.5)
    # treat: b1 (1 answer, 3 items; click 5; value 4 from 6; 10 not credited), b2 (1 answer,
    #        3 items; conversion and value 1 from 9; 7 and 8 not credited).
    assert (treat.variant, treat.model, treat.share) == ("treat", "item_cf", 0.5)
    assert (treat.users, treat.impressions, treat.clicks, treat.conversions) == (2, 2, 1, 1)
    assert treat.value == 5.0
    assert treat.ctr == pytest.approx(1 / 6)
    assert (treat.conversions_per_user, treat.value_per_user) == (0.5, 2.5)
    # Per-user arrays (a1, a2 | b1, b2): clicks, items shown, conversions, value.
    want = [
        stats.compare_ratio("ctr", [1, 1], [6, 3], [1, 0], [3, 3]),
        stats.compare_mean("conversions_per_user", [1, 0], [0, 1]),
        stats.compare_mean("value_per_user", [1, 0], [4, 1]),
    ]
    assert [(x.metric, x.variant) for x in r.comparisons] == [
        ("ctr", "treat"),
        ("conversions_per_user", "treat"),
        ("value_per_user", "treat"),
    ]
    for got, w in zip(r.comparisons, want, strict=True):
        same(got, w)
    assert r.comparisons[0].difference == pytest.approx(1 / 6 - 2 / 9)
    assert r.comparisons[2].difference == pytest.approx(2.0)
    assert r.comparisons[0].ci95.low < r.comparisons[0].difference < r.comparisons[0].ci95.high
    srm = stats.sample_ratio([2, 2], [0.5, 0.5])
    assert list(r.sample_ratio.observed) == [2, 2]
    assert list(r.sample_ratio.expected_shares) == [0.5, 0.5]
    assert r.sample_ratio.p_value == pytest.approx(srm.p_value) and not r.sample_ratio.mismatch
    assert not r.HasField("interleaving")


def test_unknown_experiment_is_not_found(trained, tmp_path):  # noqa: F811
    with serving(trained, tmp_path, experiments=(EXP,), read_token="r-token") as srv:
        c, anon = Client(srv.address, "r-token"), Client(srv.address)
        try:
            # A read: with a read token configured, it needs one.
            code, _ = code_of(anon.GetExperimentReport, pb.GetExperimentReportRequest())
            assert code == grpc.StatusCode.UNAUTHENTICATED
            code, details = code_of(
                c.GetExperimentReport, pb.GetExperimentReportRequest(experiment="nope")
            )
            assert code == grpc.StatusCode.NOT_FOUND
            assert "'nope'" in details and "'duo'" in details
            code, details = code_of(c.GetExperimentReport, pb.GetExperimentReportRequest())
            assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("experiment")
            # Configured but nothing recorded yet: zeros, no error.
            r = c.GetExperimentReport(pb.GetExperimentReportRequest(experiment="duo"))
            assert [(v.variant, v.users, v.impressions) for v in r.variants] == [
                ("control", 0, 0),
                ("treat", 0, 0),
            ]
            assert not r.sample_ratio.mismatch and r.impressions_dropped == 0
        finally:
            c.close()
            anon.close()


MIX = Experiment("mix", (Variant("a", "item_cf", 0.5), Variant("b", "svd", 0.5)), kind="interleave")


def test_interleaving_report_on_a_real_server(trained, tmp_path):  # noqa: F811
    loaded = artifacts.load_version(trained / artifacts.latest_version(trained))
    counts = np.diff(loaded.history.indptr)
    u1, u2, u3 = (str(loaded.user_ids[u]) for u in np.flatnonzero(counts >= 10)[:3])
    with serving(trained, tmp_path, experiments=(MIX,)) as srv:
        c = Client(srv.address)
        try:
            answers = [c.Recommend(pb.RecommendRequest(user_id=u, k=4)) for u in (u1, u1, u2, u3)]
            assert all(len(r.items) == 4 and r.experiment == "mix" for r in answers)
            r1, r1b, r2, _ = answers
            t = time.time()

            def stored():
                with open_store(srv.config.store_url) as store:
                    f = store.impressions("mix")
                return [f] if f.height == 4 else None

            (frame,) = wait_until(stored, "4 impressions stored")
            teams = dict(zip(frame["recommendation_id"], frame["teams"].to_list(), strict=True))
            events = [
                ev("1", u1, r1.items[0].item_id, "click", t + 1, r1.recommendation_id, 1),
                ev("2", u1, r1.items[1].item_id, "click", t + 2, r1.recommendation_id, 2),
                ev("3", u1, r1b.items[2].item_id, "click", t + 3, r1b.recommendation_id, 3),
                # No id: credited by the window at the item's position in u2's list.
                ev("4", u2, r2.items[1].item_id, "click", t + 4),
            ]
            c.RecordInteractions(pb.RecordInteractionsRequest(events=events))
            r = c.GetExperimentReport(pb.GetExperimentReportRequest(experiment="mix"))
        finally:
            c.close()

    # By hand: each impression's clicks credited to the team that placed the item.
    t1, t1b, t2 = (teams[x.recommendation_id] for x in (r1, r1b, r2))
    won = [credit(t1, [1, 2]), credit(t1b, [3]), credit(t2, [2])]  # (a, b) per impression
    assert sum(a + b for a, b in won) == 4

    def outcome(ab):  # (win a, win b, tie)
        return (int(ab[0] > ab[1]), int(ab[1] > ab[0]), int(ab[0] == ab[1]))

    per_user = [
        tuple(x + y for x, y in zip(outcome(won[0]), outcome(won[1]), strict=True)),
        outcome(won[2]),
    ]
    want = stats.preference(*(list(col) for col in zip(*per_user, strict=True)))
    il = r.interleaving
    assert (il.model_a, il.model_b) == ("item_cf", "svd")
    assert (il.wins_a, il.wins_b, il.ties) == (want.wins_a, want.wins_b, want.ties)
    for g, w in [
        (il.preference_a, want.preference_a),
        (il.ci95.low, want.ci95.low),
        (il.ci95.high, want.ci95.high),
        (il.always_valid.low, want.always_valid.low),
        (il.always_valid.high, want.always_valid.high),
        (il.p_value, want.p_value),
    ]:
        assert (math.isnan(g) and math.isnan(w)) or g == pytest.approx(w, rel=1e-12)
    # Per variant: all 3 users and 4 impressions; the items its team placed; its clicks.
    all_teams = [x for ts in teams.values() for x in ts]
    a, b = r.variants
    assert (a.variant, a.model, a.users, a.impressions) == ("a", "item_cf", 3, 4)
    assert (b.variant, b.model, b.users, b.impressions) == ("b", "svd", 3, 4)
    assert (a.clicks, b.clicks) == (sum(x[0] for x in won), sum(x[1] for x in won))
    assert a.ctr == pytest.approx(a.clicks / all_teams.count(0))
    assert b.ctr == pytest.approx(b.clicks / all_teams.count(1))
    assert (r.kind, len(r.comparisons), r.HasField("sample_ratio")) == ("interleave", 0, False)
