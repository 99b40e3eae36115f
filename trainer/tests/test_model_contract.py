"""The contract every recommender keeps, written once and run against every registered model.

`TestContract` holds the tests; the ``name`` fixture is parametrised over the model registry
(``recsys_core.models.registry``), so a newly registered model is tested without a change
here (server/tests/test_registry.py checks it is). Every test runs on two logs: a hand-built
"checkerboard" whose right answers are known (two user groups, each interacting only with its
own half of the items) and a small synthetic store log.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_core.catalog import Catalog, with_catalog
from recsys_core.data import Interactions, from_frame
from recsys_core.models import MODELS, Explanation, Hybrid, Recommender
from recsys_core.models.registry import NAMES, REGISTRY, SIMILAR
from recsys_trainer.synthetic import generate

DAY = 86_400
NOT_PERSONALISED = ("popularity",)
"""Models whose list ignores the user's history; every other model must use it."""

# Checkerboard: users [0, 12) only touch items [0, 10), users [12, 24) only items [10, 20).
GROUP_USERS, HALF_ITEMS, PER_USER = 12, 10, 6


def make_interactions(users, items, *, n_users, n_items, weights=None, timestamps=None):
    users = np.asarray(users, dtype=np.int32)
    return Interactions(
        user_idx=users,
        item_idx=np.asarray(items, dtype=np.int32),
        weight=np.ones(len(users)) if weights is None else np.asarray(weights),
        timestamp=np.arange(len(users)) * 3_600 if timestamps is None else timestamps,
        user_ids=np.array([f"u{i:02d}" for i in range(n_users)]),
        item_ids=np.array([f"i{i:02d}" for i in range(n_items)]),
    )


@cache
def checkerboard() -> Interactions:
    """Each user has PER_USER of the HALF_ITEMS items of their group's half (weights 1 or 2),
    so every user has HALF_ITEMS - PER_USER unseen items in their own half."""
    rng = np.random.default_rng(11)
    users, items = [], []
    for g in range(2):
        for u in range(GROUP_USERS):
            chosen = rng.choice(HALF_ITEMS, PER_USER, replace=False) + g * HALF_ITEMS
            users += [g * GROUP_USERS + u] * PER_USER
            items += chosen.tolist()
    weights = rng.choice([1.0, 2.0], size=len(users))
    data = make_interactions(
        users, items, n_users=2 * GROUP_USERS, n_items=2 * HALF_ITEMS, weights=weights
    )
    # Each half has its own category, so the content model sees the groups too.
    cats = [("left",) if i < HALF_ITEMS else ("right",) for i in range(2 * HALF_ITEMS)]
    titles = [f"Item {i}" for i in range(2 * HALF_ITEMS)]
    return with_catalog(data, Catalog(data.item_ids, titles, cats))


def group_of_user(u: int) -> int:
    return int(u) // GROUP_USERS


def group_of_items(items) -> np.ndarray:
    return np.asarray(items) // HALF_ITEMS


@cache
def synthetic() -> Interactions:
    df, catalog = generate(n_users=300, n_items=150, n_interactions=6000, seed=3)
    return with_catalog(from_frame(df), catalog)


DATASETS = {"checkerboard": checkerboard, "synthetic": synthetic}


def empty_rows(n: int, n_items: int) -> sp.csr_matrix:
    return sp.csr_matrix((n, n_items), dtype=np.float32)


def seen_sets(history: sp.csr_matrix) -> list[set[int]]:
    h = history.tocsr()
    return [set(h.indices[h.indptr[r] : h.indptr[r + 1]].tolist()) for r in range(h.shape[0])]


def save_model(model: Recommender, directory) -> None:
    model.save(directory)
    if isinstance(model, Hybrid):
        for component in model.components.values():
            component.save(directory)


def load_model(cls: type[Recommender], directory, components=()) -> Recommender:
    model = cls.load(directory)
    if isinstance(model, Hybrid):
        model.components = {n: MODELS[n].load(directory) for n in components}
    return model


# -- per-kind explanation checks -------------------------------------------------------------
# Each gets the model, the training log, the user's history row, one recommended item, the
# score recommend() gave it, and its explanation.


def check_trending(model, data, row, item, score, expl):
    f = expl.fields
    assert {"rank", "window_start", "window_end"} <= f.keys()
    assert 1 <= f["rank"] <= model.n_items
    assert math.isclose(f["score"], float(score), rel_tol=1e-6)
    assert f["window_start"] == int(data.timestamp.min())
    assert f["window_end"] == int(data.timestamp.max())


def check_because_you_interacted(model, data, row, item, score, expl):
    f = expl.fields
    assert len(f["items"]) == len(f["contributions"]) == len(f["similarities"])
    assert set(f["items"]) <= set(row.indices.tolist()), "explained by items not in history"
    assert all(c > 0 for c in f["contributions"])
    assert f["contributions"] == sorted(f["contributions"], reverse=True)
    assert len(f["items"]) <= model.config.explain_top
    if score > 0:
        assert f["items"], "a positive score with no history item behind it"
        assert sum(f["contributions"]) <= score * (1 + 1e-5)
        if row.nnz <= model.config.explain_top:
            assert math.isclose(sum(f["contributions"]), score, rel_tol=1e-4)


def check_similar_users(model, data, row, item, score, expl):
    f = expl.fields
    assert isinstance(f["n_similar_users"], int) and isinstance(f["n_neighbours"], int)
    assert 0 <= f["n_similar_users"] <= f["n_neighbours"]
    assert len(f["users"]) == min(5, f["n_similar_users"])
    assert all(model.user_items_[v, item] > 0 for v in f["users"]), "listed user did not choose"
    if f["n_similar_users"]:
        assert 0 < f["mean_similarity"] <= f["max_similarity"] <= 1 + 1e-5
    if score > 0:
        assert f["n_similar_users"] >= 1, "a positive score with no similar user behind it"


def check_latent_factors(model, data, row, item, score, expl):
    f = expl.fields
    n = min(model.config.explain_factors, model.config.n_factors)
    assert len(f["factors"]) == len(f["contributions"]) == len(f["shares"]) == n
    assert all(0 <= j < model.config.n_factors for j in f["factors"])
    assert f["contributions"] == sorted(f["contributions"], reverse=True)
    if row.nnz:
        assert f["closest_item"] in set(row.indices.tolist())
        assert -1 - 1e-5 <= f["closest_similarity"] <= 1 + 1e-5


def check_blend(model, data, row, item, score, expl):
    f = expl.fields
    assert isinstance(f["cold_start"], bool)
    assert f["cold_start"] == (row.nnz < model.config.cold_start_threshold)
    assert f["shares"].keys() == f["contributions"].keys()
    assert set(f["shares"]) <= set(model.components)
    # The contributions are the blend's terms, so they add up to the recommended score.
    assert math.isclose(sum(f["contributions"].values()), score, rel_tol=1e-4, abs_tol=1e-5)
    if score > 0:
        assert math.isclose(sum(f["shares"].values()), 1.0, rel_tol=1e-6)


def check_content(model, data, row, item, score, expl):
    f = expl.fields
    assert len(f["tokens"]) == len(f["labels"]) == len(f["contributions"])
    assert len(f["tokens"]) <= model.config.explain_top
    assert f["contributions"] == sorted(f["contributions"], reverse=True)
    assert all(c > 0 for c in f["contributions"])
    assert set(f["items"]) <= set(row.indices.tolist()), "explained by items not in history"
    assert len(f["items"]) == len(f["item_contributions"]) <= model.config.explain_top
    vocab = model.tokens_.tolist()
    for tok in f["tokens"]:  # each shared token is the item's and some history item's
        j = vocab.index(tok)
        assert model.attributes_[item, j] > 0
        assert any(model.attributes_[i, j] > 0 for i in row.indices)
    if score > 0:
        assert f["tokens"], "a positive score with no shared token behind it"
        assert f["items"], "a positive score with no history item behind it"
        assert sum(f["contributions"]) <= score * (1 + 1e-5)


EXPLANATION_CHECKS = {
    "trending": check_trending,
    "because_you_interacted": check_because_you_interacted,
    "similar_users": check_similar_users,
    "latent_factors": check_latent_factors,
    "blend": check_blend,
    "content": check_content,
}
"""Explanation kind (``ModelSpec.explanation``) -> its check."""


# -- the contract ----------------------------------------------------------------------------


@pytest.fixture(scope="module", params=NAMES)
def name(request) -> str:
    return request.param


@pytest.fixture(scope="module", params=list(DATASETS))
def data(request) -> Interactions:
    return DATASETS[request.param]()


@pytest.fixture(scope="module")
def model(name, data) -> Recommender:
    """Fitted once per (model, dataset); tests must not mutate it."""
    return make_model(name).fit(data)


@pytest.fixture(scope="module")
def users(data) -> np.ndarray:
    return np.arange(data.n_users)


@pytest.fixture(scope="module")
def history(data, users) -> sp.csr_matrix:
    return data.to_csr()[users]


def make_model(name: str) -> Recommender:
    """The registered model with its default config, unfitted."""
    return REGISTRY[name].model()


class TestContract:
    # fit --------------------------------------------------------------------------------

    def test_fit_returns_self(self, name, data):
        m = make_model(name)
        assert m.fit(data) is m
        assert (m.n_users, m.n_items) == (data.n_users, data.n_items)

    def test_deterministic_across_fits(self, name, data, users, history):
        a = make_model(name).fit(data).recommend(users, history, 10)
        b = make_model(name).fit(data).recommend(users, history, 10)
        np.testing.assert_array_equal(a.indptr, b.indptr)
        np.testing.assert_array_equal(a.items, b.items)
        np.testing.assert_array_equal(a.scores, b.scores)

    # score --------------------------------------------------------------------------------

    def test_score_shape_dtype_finite(self, model, data, users, history):
        s = model.score(users, history)
        assert s.shape == (len(users), data.n_items)
        assert s.dtype == np.float32
        assert np.isfinite(s).all()

    # recommend ----------------------------------------------------------------------------

    @pytest.mark.parametrize("k", [1, 4, 10, 1_000])
    def test_returns_min_k_eligible_sorted_unseen(self, model, data, users, history, k):
        recs = model.recommend(users, history, k)
        assert len(recs) == len(users)
        for r, seen in enumerate(seen_sets(history)):
            got = recs.user(r)
            assert len(got.items) == min(k, data.n_items - len(seen))
            assert len(set(got.items.tolist())) == len(got.items), "repeated item"
            assert not set(got.items.tolist()) & seen, "recommended a seen item"
            assert ((got.items >= 0) & (got.items < data.n_items)).all()
            assert np.all(np.diff(got.scores) <= 0), "scores not non-increasing"

    def test_seen_items_may_appear_without_exclusion(self, model, data, users, history):
        recs = model.recommend(users, history, data.n_items, exclude_seen=False)
        for r in range(len(users)):
            got = recs.user(r)
            assert sorted(got.items.tolist()) == list(range(data.n_items))
            assert np.all(np.diff(got.scores) <= 0)

    def test_recommended_scores_agree_with_score(self, model, data, users, history):
        """The listed scores are score()'s, and nothing eligible left out scores higher."""
        k = 5
        scores = model.score(users, history)
        recs = model.recommend(users, history, k)
        for r, seen in enumerate(seen_sets(history)):
            got = recs.user(r)
            np.testing.assert_allclose(got.scores, scores[r, got.items], rtol=1e-4, atol=1e-5)
            left_out = np.setdiff1d(np.arange(data.n_items), [*seen, *got.items.tolist()])
            if len(left_out) and len(got.items):
                assert scores[r, left_out].max() <= got.scores[-1] + 1e-5

    def test_allow_list(self, model, data, users, history):
        allow = np.arange(0, data.n_items, 3)
        recs = model.recommend(users, history, 4, allow=allow)
        for r, seen in enumerate(seen_sets(history)):
            got = set(recs.user(r).items.tolist())
            eligible = set(allow.tolist()) - seen
            assert got <= eligible
            assert len(got) == min(4, len(eligible))

    def test_deny_list(self, model, data, users, history):
        deny = np.arange(1, data.n_items, 2)
        recs = model.recommend(users, history, 6, deny=deny)
        for r, seen in enumerate(seen_sets(history)):
            got = set(recs.user(r).items.tolist())
            assert not got & set(deny.tolist())
            assert not got & seen
            assert len(got) == min(6, data.n_items - len(seen | set(deny.tolist())))

    def test_allow_and_deny_together(self, model, data, users, history):
        allow, deny = np.arange(0, data.n_items, 2), np.arange(0, data.n_items, 4)
        recs = model.recommend(users, history, data.n_items, allow=allow, deny=deny)
        for r, seen in enumerate(seen_sets(history)):
            eligible = set(allow.tolist()) - set(deny.tolist()) - seen
            assert set(recs.user(r).items.tolist()) == eligible

    def test_batch_composition_does_not_change_results(self, model, data, users, history):
        """Adding an unknown user to the batch (which can switch code paths) or asking for one
        user alone gives every user the same list."""
        k = 5
        base = model.recommend(users, history, k)
        mixed = model.recommend(np.append(users, -1), sp.vstack([history, history[[0]]]).tocsr(), k)
        alone = model.recommend(users[[1]], history[[1]], k)
        for r in range(len(users)):
            a, b = base.user(r), mixed.user(r)
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-5)
            # Items may differ only among (near-)ties.
            for x, y, s in zip(a.items, b.items, a.scores, strict=True):
                if x != y:
                    assert np.isclose(s, b.scores[list(b.items).index(y)], atol=1e-5)
        np.testing.assert_array_equal(alone.user(0).items, base.user(1).items)

    # unknown users and empty histories ----------------------------------------------------

    def test_unknown_user_is_scored_from_history(self, model, data, history):
        k = 4
        rows = history[: min(20, history.shape[0])]
        recs = model.recommend(np.full(rows.shape[0], -1), rows, k)
        lists = []
        for r, seen in enumerate(seen_sets(rows)):
            got = recs.user(r)
            assert len(got.items) == min(k, data.n_items - len(seen))
            assert not set(got.items.tolist()) & seen
            assert np.isfinite(got.scores).all()
            lists.append(tuple(got.items.tolist()))
        if model.name not in NOT_PERSONALISED:
            assert len(set(lists)) > 1, "an unknown user's list ignores their history"
        s = model.score(np.full(rows.shape[0], -1), rows)
        assert s.shape == (rows.shape[0], data.n_items) and np.isfinite(s).all()

    def test_user_index_beyond_training_is_unknown(self, model, data, history):
        """An index the model never saw (a user added after training) is treated like -1."""
        rows = history[:3]
        new = np.full(3, data.n_users + 7)
        s_new, s_unknown = model.score(new, rows), model.score(np.full(3, -1), rows)
        np.testing.assert_allclose(s_new, s_unknown, rtol=1e-5, atol=1e-6)
        a = model.recommend(new, rows, 5)
        b = model.recommend(np.full(3, -1), rows, 5)
        np.testing.assert_array_equal(a.items, b.items)

    @pytest.mark.parametrize("who", ["known", "unknown"])
    def test_empty_history_gets_a_full_list(self, model, data, who):
        k = 10
        users = np.array([0, 1]) if who == "known" else np.array([-1, -1])
        rows = empty_rows(2, data.n_items)
        recs = model.recommend(users, rows, k)
        for r in range(2):
            got = recs.user(r)
            assert len(got.items) == min(k, data.n_items)
            assert np.isfinite(got.scores).all()
            assert np.all(np.diff(got.scores) <= 0)
        assert np.isfinite(model.score(users, rows)).all()

    # explain ------------------------------------------------------------------------------

    def test_explain(self, model, data, history):
        kind = REGISTRY[model.name].explanation
        check = EXPLANATION_CHECKS[kind]
        for u in (0, data.n_users // 2, data.n_users - 1):
            row = history[[u]]
            got = model.recommend(np.array([u]), row, 5).user(0)
            expls = model.explain(u, row, got.items)
            assert len(expls) == len(got.items)
            for item, score, e in zip(got.items, got.scores, expls, strict=True):
                assert isinstance(e, Explanation)
                assert e.kind == kind
                check(model, data, row, item, score, e)
            if model.name == "popularity":
                ranks = [e.fields["rank"] for e in expls]
                assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)

    def test_explain_unknown_user(self, model, data, history):
        kind = REGISTRY[model.name].explanation
        check = EXPLANATION_CHECKS[kind]
        row = history[[0]]
        got = model.recommend(np.array([-1]), row, 3).user(0)
        expls = model.explain(-1, row, got.items)
        assert [e.kind for e in expls] == [kind] * len(got.items)
        for item, score, e in zip(got.items, got.scores, expls, strict=True):
            check(model, data, row, item, score, e)

    # similar items ------------------------------------------------------------------------

    def test_similar_items(self, model, data):
        if model.name not in SIMILAR:
            with pytest.raises(NotImplementedError):
                model.similar_items(0, 5)
            return
        for i in range(0, data.n_items, max(1, data.n_items // 10)):
            got = model.similar_items(i, 5)
            assert i not in got.items.tolist()
            assert len(got.items) <= 5
            assert len(set(got.items.tolist())) == len(got.items)
            assert np.all(np.diff(got.scores) <= 0)
            assert np.isfinite(got.scores).all()

    # persistence --------------------------------------------------------------------------

    def test_save_load_round_trip(self, model, data, users, history, tmp_path):
        save_model(model, tmp_path)
        loaded = load_model(type(model), tmp_path, getattr(model, "components", {}))
        assert (loaded.n_users, loaded.n_items) == (model.n_users, model.n_items)
        assert loaded.params() == model.params()
        a, b = model.recommend(users, history, 10), loaded.recommend(users, history, 10)
        np.testing.assert_array_equal(a.indptr, b.indptr)
        np.testing.assert_array_equal(a.items, b.items)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
        u = min(3, data.n_users - 1)
        items = a.user(u).items
        assert model.explain(u, history[[u]], items) == loaded.explain(u, history[[u]], items)


def test_checkerboard_is_what_the_tests_assume():
    data = checkerboard()
    assert group_of_items(data.item_idx).tolist() == [group_of_user(u) for u in data.user_idx]
    per_user = np.diff(data.to_csr().indptr)
    assert (per_user == PER_USER).all()
    assert math.isclose(float(data.weight.min()), 1.0) and float(data.weight.max()) == 2.0
