"""What each recommender should get right on data whose answer is known, beyond the shared
contract in test_model_contract.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.sparse as sp
from test_model_contract import (
    DAY,
    GROUP_USERS,
    HALF_ITEMS,
    PER_USER,
    checkerboard,
    group_of_items,
    group_of_user,
    make_interactions,
    synthetic,
)

import recsys_core as rc
from recsys_core.metrics import ndcg_at_k
from recsys_core.models import (
    SVD,
    Hybrid,
    HybridConfig,
    ItemCF,
    ItemCFConfig,
    Popularity,
    PopularityConfig,
    SVDConfig,
    UserCF,
    UserCFConfig,
)
from recsys_core.models.base import normalize_rows, single_row
from recsys_core.models.hybrid import WEIGHT_GRID
from recsys_core.splits import random_holdout, relevant_items

UNSEEN_IN_HALF = HALF_ITEMS - PER_USER

# Configurations sized for the small logs below. Default ALS (100 factors, reg 0.1) fits the
# 24 x 20 checkerboard so closely that unseen in-half items score no higher than the other
# half's (~0) and, on the 300 x 150 synthetic log, ranks below popularity; UserCF's defaults
# (50 neighbours, no weighting) also rank below popularity there. Strong regularisation / more
# neighbours with BM25 fix both.
PERSONALISED = {
    "item_cf": lambda: ItemCF(),
    "user_cf": lambda: UserCF(UserCFConfig(k_neighbors=100, weighting="bm25")),
    "svd": lambda: SVD(SVDConfig(n_factors=8, regularization=10.0, alpha=1.0)),
    "hybrid": lambda: Hybrid(),
}


@pytest.fixture(scope="module")
def fitted_on_checkerboard():
    data = checkerboard()
    return {name: make().fit(data) for name, make in PERSONALISED.items()}


# -- checkerboard: every personalised model stays in the user's half ---------------------------


@pytest.mark.parametrize("name", list(PERSONALISED))
def test_recommends_only_from_the_users_half(fitted_on_checkerboard, name):
    """Each user has UNSEEN_IN_HALF unseen items in their half: those are exactly the top."""
    model = fitted_on_checkerboard[name]
    data = checkerboard()
    users = np.arange(data.n_users)
    recs = model.recommend(users, data.to_csr(), UNSEEN_IN_HALF)
    for u in users:
        items = recs.user(u).items
        assert len(items) == UNSEEN_IN_HALF
        assert (group_of_items(items) == group_of_user(u)).all(), (u, items.tolist())


@pytest.mark.parametrize("name", list(PERSONALISED))
def test_unknown_user_is_folded_in_to_their_half(fitted_on_checkerboard, name):
    """A user the model never saw, with a partial history in one half, gets that half."""
    model = fitted_on_checkerboard[name]
    n_items = 2 * HALF_ITEMS
    for half in (0, 1):
        picked = np.array([0, 2, 3, 5, 7, 8]) + half * HALF_ITEMS
        row = single_row(picked, None, n_items)
        items = model.recommend(np.array([-1]), row, UNSEEN_IN_HALF).user(0).items
        assert (group_of_items(items) == half).all(), (half, items.tolist())
        assert not set(items.tolist()) & set(picked.tolist())


@pytest.mark.parametrize("name", ["item_cf", "svd"])
def test_similar_items_are_from_the_same_half(fitted_on_checkerboard, name):
    model = fitted_on_checkerboard[name]
    for i in range(2 * HALF_ITEMS):
        got = model.similar_items(i, 3)
        assert len(got.items) == 3
        assert (group_of_items(got.items) == group_of_items(i)).all(), (i, got.items.tolist())


def test_item_cf_explanation_adds_up_to_the_score():
    """With a history no longer than explain_top, every contribution is listed."""
    model = ItemCF().fit(checkerboard())
    row = single_row([1, 4], [1.0, 3.0], 2 * HALF_ITEMS)
    got = model.recommend(np.array([-1]), row, 3).user(0)
    for item, score, e in zip(
        got.items, got.scores, model.explain(-1, row, got.items), strict=True
    ):
        assert set(e.fields["items"]) <= {1, 4}
        assert math.isclose(sum(e.fields["contributions"]), float(score), rel_tol=1e-5)
        for src, c, s in zip(
            e.fields["items"], e.fields["contributions"], e.fields["similarities"], strict=True
        ):
            weight = {1: 1.0, 4: 3.0}[src]
            assert math.isclose(c, weight * s, rel_tol=1e-5)
            assert math.isclose(s, float(model.similarity_[src, item]), rel_tol=1e-5)


def test_item_cf_pop_beta_zero_is_todays_similarity():
    """pop_beta = 0 (the default) fits the similarity the kernel gives without the option,
    bit for bit, whatever the weighting and measure."""
    data = synthetic()
    for cfg in (
        ItemCFConfig(),
        ItemCFConfig(pop_beta=0.0, weighting="tfidf", measure="cosine", shrink=10.0),
        ItemCFConfig(pop_beta=0.0, transform="log", k_neighbors=25),
    ):
        model = ItemCF(cfg).fit(data)
        want = rc.similarity_topk(
            model.weigh(data.to_csr()).T,
            cfg.k_neighbors,
            shrink=cfg.shrink,
            weighting=cfg.weighting,
            bm25_k1=cfg.bm25_k1,
            bm25_b=cfg.bm25_b,
            measure=cfg.measure,
        )
        got = model.similarity_
        for part in ("indptr", "indices", "data"):
            np.testing.assert_array_equal(getattr(got, part), getattr(want, part))


def pop_log():
    """Item 0 (2 users) shares 2 users with item 1 (5 users) and 1 with item 2 (2 users)."""
    rows = {0: [0, 1, 2], 1: [0, 1], 2: [1], 3: [1], 4: [1], 5: [2]}
    users = [u for u, items in rows.items() for _ in items]
    items = [i for its in rows.values() for i in its]
    return make_interactions(users, items, n_users=6, n_items=3)


@pytest.mark.parametrize(
    ("beta", "k", "want"),
    [
        (0.0, 1, {1: 2.0}),  # dot products: 2 with item 1, 1 with item 2
        (0.5, 1, {1: 2 / 5**0.5}),  # 0.894 > 1 / 2**0.5 = 0.707: item 1 still first
        (1.0, 1, {2: 1 / 2}),  # 2 / 5 < 1 / 2: the popular item 1 drops out of the top 1
        (1.0, 2, {1: 2 / 5, 2: 1 / 2}),
        (-1.0, 2, {1: 2 * 5, 2: 1 * 2}),  # a negative beta raises popular candidates
    ],
)
def test_item_cf_pop_beta_scales_candidates_by_their_users(beta, k, want):
    """similarity(i -> j) = dot(i, j) * users(j) ** -beta, computed by hand, and the top k
    neighbours are chosen after that; recommendations and explanations follow."""
    model = ItemCF(ItemCFConfig(weighting="none", measure="dot", k_neighbors=k, pop_beta=beta)).fit(
        pop_log()
    )
    row = model.similarity_[0]
    got = dict(zip(row.indices.tolist(), row.data.tolist(), strict=True))
    assert got.keys() == want.keys()
    for j, v in want.items():
        assert math.isclose(got[j], v, rel_tol=1e-6), (j, got)
    history = single_row([0], None, 3)
    recs = model.recommend(np.array([-1]), history, 2).user(0)
    best = max(want, key=want.get)
    assert recs.items[0] == best
    (e,) = model.explain(-1, history, [best])
    assert e.fields["items"] == [0]
    assert math.isclose(e.fields["similarities"][0], want[best], rel_tol=1e-6)


def test_item_cf_pop_beta_is_searched_and_old_artifacts_load(tmp_path):
    """The search tries pop_beta both ways from 0; an artifact saved before the parameter
    existed (no pop_beta in its params) loads as pop_beta = 0 with its similarity unchanged."""
    axes = ItemCF.search_space(synthetic())
    (axis,) = [a for a in axes if any("pop_beta" in v for v in a)]
    betas = [v["pop_beta"] for v in axis]
    assert all(v.keys() == {"pop_beta"} for v in axis)
    assert 0.0 in betas and min(betas) < 0 < max(betas)
    assert ItemCFConfig().pop_beta == 0.0

    model = ItemCF(ItemCFConfig(pop_beta=0.2)).fit(synthetic())
    model.save(tmp_path)
    loaded = ItemCF.load(tmp_path)
    assert loaded.config.pop_beta == 0.2
    assert (loaded.similarity_ != model.similarity_).nnz == 0
    meta = tmp_path / "item_cf.json"
    old = json.loads(meta.read_text())
    del old["params"]["pop_beta"]
    meta.write_text(json.dumps(old))
    loaded = ItemCF.load(tmp_path)
    assert loaded.config.pop_beta == 0.0
    assert (loaded.similarity_ != model.similarity_).nnz == 0


def test_user_cf_explanation_names_neighbours_who_chose_the_item():
    data = checkerboard()
    model = UserCF().fit(data)
    row = data.to_csr()[[0]]
    got = model.recommend(np.array([0]), row, UNSEEN_IN_HALF).user(0)
    for item, e in zip(got.items, model.explain(0, row, got.items), strict=True):
        chose = {
            v for v in range(GROUP_USERS) if v != 0 and model.user_items_[v, item] > 0
        }  # every other group member is a neighbour (k_neighbors >= group size)
        assert e.fields["n_similar_users"] == len(chose)
        assert set(e.fields["users"]) <= chose


# -- popularity --------------------------------------------------------------------------------


def test_popularity_ranks_by_weighted_counts():
    # item 3: 5 rows; item 0: 2 rows of weight 2 (4); item 1: 3 rows (3); item 2: 1 row.
    items = [3, 3, 3, 3, 3, 0, 0, 1, 1, 1, 2]
    weights = [1, 1, 1, 1, 1, 2, 2, 1, 1, 1, 1]
    users = list(range(len(items)))
    data = make_interactions(users, items, n_users=len(items), n_items=5, weights=weights)
    model = Popularity(PopularityConfig(half_life_days=math.inf)).fit(data)
    np.testing.assert_allclose(model.scores_, [4, 3, 1, 5, 0])
    empty = sp.csr_matrix((1, 5), dtype=np.float32)
    got = model.recommend(np.array([-1]), empty, 5).user(0)
    assert got.items.tolist() == [3, 0, 1, 2, 4]
    assert model.trending_rank().tolist() == [2, 3, 4, 1, 5]
    # A user who has seen the top item gets the rest in the same order.
    seen = single_row([3], None, 5)
    assert model.recommend(np.array([0]), seen, 5).user(0).items.tolist() == [0, 1, 2, 4]


def test_popularity_time_decay_favours_recent_interactions():
    """Item 0 was popular long ago (10 rows, 120 days before the newest); item 1 is popular
    now (6 rows in the last day); item 2 has one row 60 days old. Plain counts rank them
    0, 1, 2; a 7-day half-life ranks them 1, 2, 0 (10 * 2**(-120/7) < 2**(-60/7))."""
    now = 1_700_000_000
    old = [now - 120 * DAY + h * 3_600 for h in range(10)]
    recent = [now - h * 3_600 for h in range(6)]
    items = [0] * 10 + [1] * 6 + [2]
    stamps = np.array([*old, *recent, now - 60 * DAY])
    data = make_interactions(
        range(len(items)), items, n_users=len(items), n_items=3, timestamps=stamps
    )
    empty = sp.csr_matrix((1, 3), dtype=np.float32)

    plain = Popularity(PopularityConfig(half_life_days=math.inf)).fit(data)
    assert plain.recommend(np.array([-1]), empty, 3).user(0).items.tolist() == [0, 1, 2]

    decayed = Popularity(PopularityConfig(half_life_days=7.0)).fit(data)
    assert decayed.recommend(np.array([-1]), empty, 3).user(0).items.tolist() == [1, 2, 0]
    # The newest row counts fully; one 120 days older counts 0.5 ** (120 / 7).
    assert decayed.scores_[1] == pytest.approx(
        sum(0.5 ** ((now - t) / (7 * DAY)) for t in recent), rel=1e-5
    )
    assert decayed.scores_[0] < 1e-3
    (e,) = decayed.explain(-1, empty, [1])
    assert e.fields["rank"] == 1 and e.fields["half_life_days"] == 7.0
    assert (e.fields["window_start"], e.fields["window_end"]) == (int(stamps.min()), now)


# -- hybrid ------------------------------------------------------------------------------------


def test_hybrid_records_tuned_weights_and_validation_ndcg():
    model = Hybrid().fit(synthetic())
    assert set(model.weights_) == set(model.components)
    start = HybridConfig().weights
    for name, w in model.weights_.items():
        assert math.isfinite(w) and w >= 0
        assert w in WEIGHT_GRID or w == start[name]
    assert any(model.weights_[n] > 0 for n in ("item_cf", "user_cf", "svd"))
    assert isinstance(model.validation_ndcg_, float)
    assert math.isfinite(model.validation_ndcg_) and 0 < model.validation_ndcg_ <= 1
    assert model.params()["tuned_weights"] == model.weights_


def test_hybrid_without_tuning_keeps_the_configured_weights():
    weights = {"item_cf": 1.0, "user_cf": 0.0, "svd": 0.25, "popularity": 0.1}
    model = Hybrid(HybridConfig(weights=weights, tune=False)).fit(checkerboard())
    assert model.weights_ == weights
    assert model.validation_ndcg_ is None


def test_hybrid_cold_start_blends_in_popularity(fitted_on_checkerboard):
    model = fitted_on_checkerboard["hybrid"]
    t = model.config.cold_start_threshold
    n_items = 2 * HALF_ITEMS
    cold_row = single_row([0, 1], None, n_items)  # 2 < t interactions
    warm_row = single_row(list(range(t)), None, n_items)
    assert model.cold_share(cold_row)[0] == pytest.approx((t - 2) / t)
    assert model.cold_share(warm_row)[0] == 0.0
    assert model.is_cold(cold_row) and not model.is_cold(warm_row)

    got = model.recommend(np.array([-1]), cold_row, 5).user(0)
    for e in model.explain(-1, cold_row, got.items):
        assert e.kind == "blend" and e.fields["cold_start"] is True
        assert set(e.fields["shares"]) <= set(model.weights_)
        assert sum(e.fields["shares"].values()) == pytest.approx(1.0)
    for e in model.explain(-1, warm_row, got.items):
        assert e.fields["cold_start"] is False

    # The cold score is the blend scaled by 1 - share, plus popularity with share times the
    # personal weights' total (every part normalised to a peak of 1).
    c = (t - 2) / t
    w = model.weights_
    personal = {n: v for n, v in w.items() if n != "popularity"}
    parts = {
        n: normalize_rows(m.score(np.array([-1]), cold_row)) for n, m in model.components.items()
    }
    expected = (
        sum((1 - c) * v * parts[n] for n, v in personal.items())
        + ((1 - c) * w.get("popularity", 0.0) + c * sum(personal.values())) * parts["popularity"]
    )
    np.testing.assert_allclose(model.score(np.array([-1]), cold_row), expected, rtol=1e-5)


def test_hybrid_empty_history_falls_back_to_popularity(fitted_on_checkerboard):
    model = fitted_on_checkerboard["hybrid"]
    empty = sp.csr_matrix((1, 2 * HALF_ITEMS), dtype=np.float32)
    got = model.recommend(np.array([-1]), empty, 2 * HALF_ITEMS).user(0)
    pop = model.components["popularity"].recommend(np.array([-1]), empty, 2 * HALF_ITEMS)
    np.testing.assert_array_equal(got.items, pop.user(0).items)
    (e,) = model.explain(-1, empty, got.items[:1])
    assert e.fields["cold_start"] is True
    assert e.fields["shares"] == {"popularity": 1.0}


def test_hybrid_refit_on_a_new_log_refits_its_components():
    first = checkerboard()
    # The same users with each group moved to the other half of the items: same shape.
    second = make_interactions(
        first.user_idx,
        (first.item_idx + HALF_ITEMS) % (2 * HALF_ITEMS),
        n_users=first.n_users,
        n_items=first.n_items,
        weights=first.weight,
    )
    users, history = np.arange(second.n_users), second.to_csr()
    refit = Hybrid().fit(first).fit(second)
    fresh = Hybrid().fit(second)
    assert refit.weights_ == fresh.weights_
    np.testing.assert_array_equal(
        refit.recommend(users, history, 5).items, fresh.recommend(users, history, 5).items
    )


# -- user-CF fold-in uses the training similarity ----------------------------------------------


@pytest.mark.parametrize("weighting", ["none", "bm25", "tfidf"])
def test_user_cf_fold_in_matches_training_similarity(weighting):
    """Folding in a training user's own history as an unknown user finds the same neighbours
    with the same similarities (plus the user themself)."""
    data = synthetic()
    model = UserCF(UserCFConfig(k_neighbors=1_000, weighting=weighting)).fit(data)
    x = data.to_csr()
    for u in (0, 5, 17):
        nb, sims = model.neighbours_of(-1, x[[u]])
        folded = dict(zip(nb.tolist(), sims.tolist(), strict=True))
        assert folded.pop(u) == pytest.approx(1.0, rel=1e-5)
        stored = model.neighbours_[u]
        trained = dict(zip(stored.indices.tolist(), stored.data.tolist(), strict=True))
        assert folded.keys() == trained.keys()
        for v, s in trained.items():
            assert folded[v] == pytest.approx(s, rel=1e-4, abs=1e-6)


# -- synthetic: personalised models beat popularity -------------------------------------------

HOLDOUT_SEEDS = (0, 1, 2)


def holdout_ndcg(make, seed: int, k: int = 10) -> float:
    train, test = random_holdout(synthetic(), 0.2, seed=seed)
    relevant = relevant_items(test)
    users = np.flatnonzero([len(r) > 0 for r in relevant])
    recs = make().fit(train).recommend(users, train.to_csr()[users], k)
    return ndcg_at_k(
        [recs.user(r).items for r in range(len(users))], [relevant[u] for u in users], k
    )


@pytest.fixture(scope="module")
def popularity_ndcg() -> list[float]:
    return [holdout_ndcg(Popularity, s) for s in HOLDOUT_SEEDS]


@pytest.mark.parametrize("name", list(PERSONALISED))
def test_personalised_models_beat_popularity(name, popularity_ndcg):
    ndcg = [holdout_ndcg(PERSONALISED[name], s) for s in HOLDOUT_SEEDS]
    assert all(math.isfinite(v) for v in ndcg)
    assert np.mean(ndcg) > np.mean(popularity_ndcg), (ndcg, popularity_ndcg)
    assert sum(a > b for a, b in zip(ndcg, popularity_ndcg, strict=True)) >= 2


@pytest.mark.parametrize(("reg_exponent", "reg"), [(0.0, 30.0), (0.5, 3.0), (1.0, 0.3)])
def test_svd_fold_in_solves_what_the_training_half_step_solves(reg_exponent, reg):
    """fold_in (Rust CG on a cached Gram matrix, the row's regularisation added per solve)
    against the Rust ALS half-step on the same rows: both solve each row's normal equations
    from 0 with the same number of CG steps, reg * n^reg_exponent for a history of n items."""
    import recsys_core as rc

    data = synthetic()
    cfg = SVDConfig(n_factors=16, regularization=reg, reg_exponent=reg_exponent)
    model = SVD(cfg).fit(data)
    rows = data.to_csr()[:30]
    c = model.config
    want = np.zeros((rows.shape[0], c.n_factors), np.float32)
    rc.als_half_step(
        rows, want, model.item_factors_, alpha=c.alpha, reg=c.regularization,
        cg_steps=max(c.cg_steps, 10), reg_exponent=c.reg_exponent,
    )  # fmt: skip
    got = model.fold_in(rows)
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-3)
    # and a training user's history folds in to (nearly) the vector training gave them
    trained = model.user_factors_[:30]
    rel = np.linalg.norm(got - trained, axis=1) / np.linalg.norm(trained, axis=1)
    assert rel.max() < 0.1, rel
    empty = sp.csr_matrix((2, data.n_items), dtype=np.float32)
    assert not model.fold_in(empty).any()


def test_svd_frequency_scaled_fold_in_uses_the_history_length():
    """With reg_exponent 1 a history of n items is regularised n times harder than one of a
    single item: the fold-in of the same factors with and without the scaling differ exactly
    on histories longer than one."""
    data = synthetic()
    scaled = SVD(SVDConfig(n_factors=8, regularization=0.5, reg_exponent=1.0)).fit(data)
    flat = SVD(SVDConfig(n_factors=8, regularization=0.5))
    flat._restore(scaled._arrays())
    one, many = single_row([3], None, data.n_items), single_row([3, 5, 8, 13], None, data.n_items)
    np.testing.assert_array_equal(scaled.fold_in(one), flat.fold_in(one))
    a, b = scaled.fold_in(many)[0], flat.fold_in(many)[0]
    assert np.linalg.norm(a) < np.linalg.norm(b)


def test_ease_helpers_give_what_the_whole_matrix_formulas_give():
    """EASE's blockwise mirror equals the plain expression bit for bit, and its cut keeps
    each row's k largest weights in magnitude, equal sizes to the lower column, ties and
    zero rows included (the order a stable sort by decreasing size gives)."""
    from recsys_core.models.ease import _symmetric_from_lower

    rng = np.random.default_rng(3)
    for n in (1, 7, 600):
        p = rng.standard_normal((n, n)).astype(np.float32)
        want = np.tril(p) + np.tril(p, -1).T
        assert np.array_equal(_symmetric_from_lower(p.copy(), block=64), want)
    b = rng.standard_normal((300, 250)).astype(np.float32).round(1)  # ties
    b[b > 1.2] = 0.0
    b[5] = 0.0
    for k in (0, 1, 10, 249, 250, 1000):
        cols = np.argsort(-np.abs(b), axis=1, kind="stable")[:, :k]
        cols.sort(axis=1)
        vals = np.take_along_axis(b, cols, axis=1)
        keep = vals != 0
        rows = np.repeat(np.arange(len(b)), keep.sum(axis=1))
        want = sp.csr_matrix((vals[keep], (rows, cols[keep])), shape=b.shape, dtype=np.float32)
        want.sort_indices()
        for threads in (1, 2):
            got = rc.top_magnitude_rows(b, k, num_threads=threads)
            assert got.shape == b.shape and got.has_sorted_indices
            assert np.array_equal(got.indptr, want.indptr)
            assert np.array_equal(got.indices, want.indices)
            assert np.array_equal(got.data, want.data)
    with pytest.raises(rc.NonFiniteError):
        rc.top_magnitude_rows(np.array([[1.0, np.nan]], np.float32), 1)


@pytest.mark.parametrize("weighting", ["bm25", "tfidf", "none"])
def test_user_cf_fit_for_some_users_recommends_them_what_a_full_fit_does(weighting):
    """A tuning trial's fit (``fit_for``: the scored users' neighbours only) gives those
    users the lists, scores and blend parts of a full fit."""
    data = synthetic()
    users = np.arange(0, data.n_users, 7)
    cfg = UserCFConfig(k_neighbors=20, weighting=weighting, shrink=5.0)
    full, some = UserCF(cfg).fit(data), UserCF(cfg).fit_for(data, users)
    history = data.to_csr()[users]
    a = full.recommend(users, history, 10)
    b = some.recommend(users, history, 10)
    assert np.array_equal(a.indptr, b.indptr)
    assert np.array_equal(a.items, b.items)
    assert np.array_equal(a.scores, b.scores)
    assert np.array_equal(full.score(users, history), some.score(users, history))
