"""Diversity on request: the MMR re-ranking (`recsys_server.diversify`) on constructed
similarities, its similarity source rule, and Recommend / RecommendBatch with ``diversity``
through a real server."""

from __future__ import annotations

import json
import math

import grpc
import numpy as np
import pytest
import scipy.sparse as sp
from srv_support import Client, code_of, serving, trained  # noqa: F401 (fixture)

from recsys_core import artifacts
from recsys_proto.v1 import recommender_pb2 as pb
from recsys_server import diversify as dv

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def ild(order, sim: np.ndarray) -> float:
    a, b = np.triu_indices(len(order), 1)
    o = np.asarray(order)
    return float(np.mean(1.0 - sim[o[a], o[b]]))


# Two clusters: 0-2 near-duplicates of each other, 3-5 likewise; relevance favours cluster A.
CLUSTERS = np.array(
    [
        [1.0, 0.9, 0.9, 0.1, 0.1, 0.1],
        [0.9, 1.0, 0.9, 0.1, 0.1, 0.1],
        [0.9, 0.9, 1.0, 0.1, 0.1, 0.1],
        [0.1, 0.1, 0.1, 1.0, 0.9, 0.9],
        [0.1, 0.1, 0.1, 0.9, 1.0, 0.9],
        [0.1, 0.1, 0.1, 0.9, 0.9, 1.0],
    ]
)
RELEVANCE = np.array([1.0, 0.95, 0.9, 0.6, 0.55, 0.5])


# -- MMR on constructed similarities -----------------------------------------------------------


def test_lambda_zero_returns_relevance_order_exactly():
    rng = np.random.default_rng(3)
    rel = rng.random(40)
    sim = rng.random((40, 40))
    got = dv.mmr(rel, sim, 40, 0.0)
    assert got.tolist() == np.argsort(-rel, kind="stable").tolist()
    # and on the candidates as the server hands them (sorted by score), the same order
    assert dv.mmr(np.sort(rel)[::-1], sim, 10, 0.0).tolist() == list(range(10))


def test_positive_lambda_picks_across_clusters_and_raises_ild():
    plain = dv.mmr(RELEVANCE, CLUSTERS, 3, 0.0)
    assert plain.tolist() == [0, 1, 2]
    mixed = dv.mmr(RELEVANCE, CLUSTERS, 3, 0.5)
    # first the most relevant; then cluster B's best (0.5*0.6 - 0.5*0.1 = 0.25 beats
    # 0.5*0.95 - 0.5*0.9 = 0.025); then back to A (0.5*0.95 - 0.45 = 0.025 vs 0.5*0.55 - 0.45)
    assert mixed.tolist() == [0, 3, 1]
    assert ild(mixed, CLUSTERS) > ild(plain, CLUSTERS)
    assert ild(plain, CLUSTERS) == pytest.approx(0.1)
    assert ild(mixed, CLUSTERS) == pytest.approx((0.9 + 0.1 + 0.9) / 3)


def test_ild_grows_with_lambda_on_random_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 8))
    f = np.repeat(centres, 20, axis=0) + 0.1 * rng.normal(size=(100, 8))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    sim = f @ f.T
    rel = np.sort(rng.random(100))[::-1]
    values = [ild(dv.mmr(rel, sim, 10, lam), sim) for lam in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert values[-1] > values[0]
    assert values == sorted(values)


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
@pytest.mark.parametrize(("n", "k"), [(50, 10), (10, 10), (7, 10), (1, 1)])
def test_k_items_whenever_k_candidates(lam, n, k):
    rng = np.random.default_rng(n)
    got = dv.mmr(rng.random(n), rng.random((n, n)), k, lam)
    assert len(got) == min(n, k)
    assert len(set(got.tolist())) == len(got)


def test_ties_go_to_the_earlier_candidate():
    rel = np.ones(6)
    sim = np.zeros((6, 6))
    for lam in (0.0, 0.5, 1.0):
        assert dv.mmr(rel, sim, 4, lam).tolist() == [0, 1, 2, 3]
    # full tie on both terms at lambda 1: still the candidate order, run after run
    assert dv.mmr(RELEVANCE, np.ones((6, 6)), 6, 1.0).tolist() == list(range(6))


def test_relevance_scaling():
    assert dv.relevance(np.array([3.0, 2.0, 1.0])).tolist() == [1.0, 0.5, 0.0]
    assert dv.relevance(np.array([2.0, 2.0])).tolist() == [1.0, 1.0]
    assert dv.relevance(np.array([4.0, -np.inf, 2.0])).tolist() == [1.0, 0.0, 0.0]


def test_rerank_keeps_scores_with_their_items():
    items = np.array([10, 11, 12, 13, 14, 15])
    source = dv.Similarity("test", lambda it: CLUSTERS[np.ix_(it - 10, it - 10)], None)
    scores = 4.0 * RELEVANCE  # relevance (scaled over the candidates): 1, .9, .8, .2, .1, 0
    got, s = dv.rerank(items, scores, 3, 0.5, source)
    assert got.tolist() == [10, 13, 11] and s.tolist() == [4.0, 2.4, 3.8]
    off, s0 = dv.rerank(items, scores, 3, 0.0, source)
    assert off.tolist() == [10, 11, 12] and s0.tolist() == [4.0, 3.8, 3.6]


def test_candidates():
    assert dv.candidates(1) == 50 and dv.candidates(10) == 50 and dv.candidates(20) == 60


# -- the similarity source rule ----------------------------------------------------------------


class _SVD:
    def __init__(self, f):
        self.item_factors_ = np.asarray(f, np.float32)


class _ItemCF:
    def __init__(self, s):
        self.similarity_ = sp.csr_matrix(np.asarray(s, np.float32))


CATS = [("a", "b"), ("b",), ("c",), ()]


def test_source_prefers_svd_then_item_cf_then_categories():
    svd = _SVD([[1, 0], [1, 1], [0, 1], [-1, 0]])
    cf = _ItemCF([[0, 4, 0, 0], [2, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    s = dv.similarity_source({"svd": svd, "item_cf": cf}, CATS)
    assert s.kind == "svd"
    m = s.matrix(np.array([0, 1, 3]))
    assert m[0, 1] == pytest.approx(1 / math.sqrt(2), rel=1e-5)
    assert m[0, 2] == pytest.approx(-1.0)
    assert s.pairs(np.array([0, 0]), np.array([1, 3])) == pytest.approx([m[0, 1], -1.0])

    s = dv.similarity_source({"item_cf": cf}, CATS)
    assert s.kind == "item_cf"
    m = s.matrix(np.array([0, 1, 2]))
    assert m[0, 1] == m[1, 0] == pytest.approx(1.0)  # max(4, 2) / 4
    assert m[0, 2] == 0.0
    assert s.pairs(np.array([1, 2]), np.array([0, 3])) == pytest.approx([1.0, 0.25])

    s = dv.similarity_source({}, CATS)
    assert s.kind == "categories"
    m = s.matrix(np.array([0, 1, 2, 3]))
    assert m[0, 1] == pytest.approx(0.5) and m[0, 2] == 0.0 and m[2, 3] == 0.0
    assert s.pairs(np.array([0, 1]), np.array([1, 2])) == pytest.approx([0.5, 0.0])

    s = dv.similarity_source({}, [(), ()])
    assert s.kind == "none" and not s.matrix(np.array([0, 1])).any()


# -- through the server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(trained, tmp_path_factory):  # noqa: F811
    with serving(trained, tmp_path_factory.mktemp("div")) as s:
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
    counts = np.diff(loaded.history.indptr)
    return [str(loaded.user_ids[u]) for u in np.flatnonzero(counts >= 10)[:12]]


def rec(client, user, k=10, **kw) -> pb.RecommendResponse:
    return client.Recommend(pb.RecommendRequest(user_id=user, k=k, **kw))


def test_diversity_zero_is_the_plain_answer(client, users):
    for u in users[:4]:
        a, b = rec(client, u), rec(client, u, diversity=0.0)
        assert [i.item_id for i in a.items] == [i.item_id for i in b.items]


def test_diversity_reranks_from_the_models_candidates(client, loaded, users):
    sim = dv.similarity_source(loaded.models, [()] * len(loaded.item_ids))
    assert sim.kind == "svd"  # the fixture's version has an SVD
    full = sim.matrix(np.arange(len(loaded.item_ids)))
    index = {str(i): n for n, i in enumerate(loaded.item_ids.tolist())}
    plain_ild, div_ild, changed = [], [], 0
    for u in users:
        plain = rec(client, u, k=10)
        cands = rec(client, u, k=dv.candidates(10))
        div = rec(client, u, k=10, diversity=0.7)
        ids = [i.item_id for i in div.items]
        assert len(ids) == 10 and len(set(ids)) == 10
        assert ids[0] == plain.items[0].item_id  # the first pick is the most relevant
        assert set(ids) <= {i.item_id for i in cands.items}
        score = {i.item_id: i.score for i in cands.items}
        assert [i.score for i in div.items] == pytest.approx([score[i] for i in ids])
        # the server's order is MMR over the same candidates and similarity
        c_items = np.array([index[i.item_id] for i in cands.items])
        want = dv.rerank(c_items, np.array(list(score.values())), 10, 0.7, sim)[0]
        assert [index[i] for i in ids] == want.tolist()
        changed += ids != [i.item_id for i in plain.items]
        plain_ild.append(ild([index[i.item_id] for i in plain.items], full))
        div_ild.append(ild([index[i] for i in ids], full))
    assert changed > 0
    assert np.mean(div_ild) > np.mean(plain_ild)


def test_diversity_honours_exclude_allow_and_explains_final_items(client, users):
    u = users[0]
    plain = rec(client, u, k=60)
    allow = [i.item_id for i in plain.items[:30]]
    exclude = allow[:5]
    r = rec(
        client,
        u,
        k=8,
        diversity=0.5,
        allow_item_ids=allow,
        exclude_item_ids=exclude,
        explain=True,
    )
    ids = [i.item_id for i in r.items]
    assert len(ids) == 8 and set(ids) <= set(allow) - set(exclude)
    for i in r.items:
        assert i.explanation.text and 0.0 <= i.confidence <= 1.0


def test_batch_uses_diversity(client, users):
    reqs = [pb.RecommendRequest(user_id=u, k=10, diversity=0.7) for u in users[:3]]
    got = client.RecommendBatch(pb.RecommendBatchRequest(requests=reqs)).responses
    for r, u in zip(got, users[:3], strict=True):
        assert [i.item_id for i in r.items] == [
            i.item_id for i in rec(client, u, k=10, diversity=0.7).items
        ]


@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, math.inf])
def test_diversity_out_of_range_is_invalid(client, value):
    code, msg = code_of(client.Recommend, pb.RecommendRequest(user_id="u", k=3, diversity=value))
    assert code == INVALID and msg.startswith("diversity:"), msg
    reqs = [
        pb.RecommendRequest(user_id="u", k=3),
        pb.RecommendRequest(user_id="u", k=3, diversity=value),
    ]
    code, msg = code_of(client.RecommendBatch, pb.RecommendBatchRequest(requests=reqs))
    assert code == INVALID and msg.startswith("requests[1].diversity:"), msg


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_diversity_bounds_are_valid(client, users, value):
    assert len(rec(client, users[0], k=5, diversity=value).items) == 5


def test_sdk_and_cli_against_the_server(srv, users, capsys):
    from recsys_client import RecommendRequest, RecsysClient
    from recsys_client.cli import main

    with RecsysClient(srv.address, timeout=30) as c:
        plain = c.recommend(users[1], k=10)
        div = c.recommend(users[1], k=10, diversity=0.7)
        assert len(div.items) == 10 and div.item_ids[0] == plain.item_ids[0]
        assert div.item_ids != plain.item_ids
        batch = c.recommend_batch([RecommendRequest(users[1], k=10, diversity=0.7)])
        assert batch[0].item_ids == div.item_ids
    argv = ["--target", srv.address, "--json", "recommend", "--user", users[1]]
    code = main([*argv, "--diversity", "0.7"])
    out = capsys.readouterr().out
    assert code == 0
    assert [i["item_id"] for i in json.loads(out)["items"]] == div.item_ids
