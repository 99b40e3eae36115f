"""A/B routing: sticky assignment, split by shares, per-variant hybrid weights."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from srv_support import Client, metric, scrape, serving, trained  # noqa: F401 (fixtures)

from recsys_core import artifacts
from recsys_core.models.registry import COMPONENTS
from recsys_proto.v1 import recommender_pb2 as pb
from recsys_server.config import Experiment, Variant
from recsys_server.router import assign, bucket

EXPERIMENT = Experiment(
    "blend",
    (
        Variant("control", "hybrid", 0.5),
        Variant("itemcf", "item_cf", 0.3),
        Variant(
            "svd-only",
            "hybrid",
            0.2,
            {n: 0.0 for n in COMPONENTS} | {"svd": 1.0},
        ),
    ),
)
MODEL_OF = {"control": "hybrid", "itemcf": "item_cf", "svd-only": "hybrid"}


@pytest.fixture(scope="module")
def srv(trained, tmp_path_factory):  # noqa: F811
    with serving(trained, tmp_path_factory.mktemp("ab"), experiments=(EXPERIMENT,)) as s:
        yield s


@pytest.fixture(scope="module")
def warm_users(trained):  # noqa: F811
    loaded = artifacts.load_version(trained / artifacts.latest_version(trained))
    counts = np.diff(loaded.history.indptr)
    return [str(loaded.user_ids[u]) for u in np.flatnonzero(counts >= 10)[:60]]


def test_assignment_is_sticky_and_reported(srv, warm_users):
    c = Client(srv.address)
    try:
        for user in warm_users:
            first = c.Recommend(pb.RecommendRequest(user_id=user, k=3))
            assert first.experiment == "blend" and first.variant in MODEL_OF
            assert first.model == MODEL_OF[first.variant]
            for _ in range(2):
                again = c.Recommend(pb.RecommendRequest(user_id=user, k=3))
                assert (again.experiment, again.variant) == ("blend", first.variant)
            _, v = assign((EXPERIMENT,), user)
            assert v.name == first.variant
            # An explicit model bypasses the experiment.
            explicit = c.Recommend(pb.RecommendRequest(user_id=user, k=3, model="svd"))
            assert (explicit.experiment, explicit.variant, explicit.model) == ("", "", "svd")
    finally:
        c.close()


def test_split_follows_shares():
    counts = Counter(assign((EXPERIMENT,), f"user-{n}")[1].name for n in range(2000))
    for v in EXPERIMENT.variants:
        assert abs(counts[v.name] / 2000 - v.share) < 0.04, counts
    b = [bucket("blend", f"user-{n}") for n in range(2000)]
    assert all(0.0 <= x < 1.0 for x in b)
    assert bucket("blend", "u1") == bucket("blend", "u1") != bucket("other", "u1")


def test_unassigned_share_goes_to_the_default():
    half = Experiment("half", (Variant("a", "svd", 0.25), Variant("b", "item_cf", 0.25)))
    picks = [assign((half,), f"user-{n}") for n in range(2000)]
    none = sum(p is None for p in picks)
    assert abs(none / 2000 - 0.5) < 0.04


def test_variant_hybrid_weights_apply(srv, warm_users):
    c = Client(srv.address)
    try:
        users = [u for u in warm_users if assign((EXPERIMENT,), u)[1].name == "svd-only"]
        assert users
        for user in users[:5]:
            r = c.Recommend(pb.RecommendRequest(user_id=user, k=5, explain=True))
            assert r.variant == "svd-only" and r.fallback_tier == pb.FALLBACK_TIER_PERSONALIZED
            for i in r.items:
                shares = {x.model: x.share for x in i.explanation.components}
                assert shares == {"svd": pytest.approx(1.0)}
            svd = c.Recommend(pb.RecommendRequest(user_id=user, k=5, model="svd"))
            # Only SVD is weighted: the same ranking as the SVD model itself.
            assert [i.item_id for i in r.items] == [i.item_id for i in svd.items]
        control = next(u for u in warm_users if assign((EXPERIMENT,), u)[1].name == "control")
        r = c.Recommend(pb.RecommendRequest(user_id=control, k=5, explain=True))
        assert len({x.model for x in r.items[0].explanation.components}) > 1
    finally:
        c.close()


def test_variant_metrics(srv, warm_users):
    c = Client(srv.address)
    try:
        user = next(u for u in warm_users if assign((EXPERIMENT,), u)[1].name == "itemcf")
        c.Recommend(pb.RecommendRequest(user_id=user, k=3))
    finally:
        c.close()
    text = scrape(srv.metrics_url)
    got = metric(
        text, "recsys_recommendations_total", model="item_cf", variant="blend/itemcf",
        tier="personalized",
    )  # fmt: skip
    assert got >= 1
    assert (
        metric(text, "recsys_recommendations_total", model="svd", variant="blend/svd-only",
               tier="cold_start") == 0
    )  # fmt: skip
