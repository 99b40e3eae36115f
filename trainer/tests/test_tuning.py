"""Weight transforms and the self-tuning search (recsys_trainer.tuning)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_core import artifacts
from recsys_core.data import Interactions, from_frame
from recsys_core.models import (
    SVD,
    ItemCF,
    ItemCFConfig,
    Popularity,
    PopularityConfig,
    SVDConfig,
    UserCF,
    UserCFConfig,
)
from recsys_core.models.base import transform_values
from recsys_core.models.ease import EASE, EASEConfig
from recsys_core.models.registry import NAMES
from recsys_trainer import synthetic
from recsys_trainer.cli import main
from recsys_trainer.tuning import TuneConfig, sample_users, space, tune


def test_transform_values_by_hand():
    w = np.array([0.0, 1.0, 3.0, 99.0], np.float32)
    assert transform_values(w, "linear") is w
    np.testing.assert_array_equal(transform_values(w, "binary"), [1, 1, 1, 1])
    np.testing.assert_allclose(
        transform_values(w, "log", 2.0), [0.0, math.log(1.5), math.log(2.5), math.log(50.5)],
        rtol=1e-6,
    )  # fmt: skip
    with pytest.raises(ValueError, match="transform must be one of linear, binary, log"):
        transform_values(w, "sqrt")


@pytest.mark.parametrize(
    "make", [lambda: SVDConfig(transform="cube"), lambda: ItemCFConfig(transform_eps=0.0)]
)
def test_bad_transform_settings_are_refused(make):
    with pytest.raises(ValueError, match="transform"):
        make()


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan])
def test_svd_reg_exponent_outside_0_1_is_refused(bad):
    with pytest.raises(ValueError, match="reg_exponent"):
        SVDConfig(reg_exponent=bad)
    assert SVDConfig(reg_exponent=0.5).reg_exponent == 0.5


def counts_log(seed: int = 3) -> Interactions:
    """Play counts: a few heavy listeners' counts run to thousands."""
    df, _ = synthetic.generate(200, 80, 4000, seed)
    inter = from_frame(df)
    _, first = np.unique(inter.user_idx.astype(np.int64) * inter.n_items + inter.item_idx, True)
    inter = inter.take(np.sort(first))  # one row per (user, item): sums are the rows
    rng = np.random.default_rng(seed)
    w = rng.integers(1, 20, len(inter.weight)).astype(np.float32)
    heavy = rng.random(len(w)) < 0.05
    w[heavy] = rng.integers(500, 20000, heavy.sum())
    return dataclasses.replace(inter, weight=w)


def logged(inter: Interactions, eps: float) -> Interactions:
    return dataclasses.replace(inter, weight=np.log1p(inter.weight / np.float32(eps)))


@pytest.mark.parametrize(
    "cls,cfg",
    [
        (ItemCF, ItemCFConfig),
        (UserCF, UserCFConfig),
        (SVD, SVDConfig),
        (Popularity, lambda **kw: PopularityConfig(half_life_days=math.inf, **kw)),
    ],
)
def test_a_transformed_model_is_the_linear_model_on_transformed_data(cls, cfg):
    """Fitting with transform=log on raw counts, then recommending from raw histories, gives
    what the plain model gives on log-transformed data: the transform is applied at fit and
    to every incoming history, exactly once."""
    inter = counts_log()
    raw = cls(cfg(transform="log", transform_eps=4.0)).fit(inter)
    ref = cls(cfg()).fit(logged(inter, 4.0))
    users = np.arange(0, inter.n_users, 7)
    history = inter.to_csr()[users]
    got = raw.recommend(users, history, 10)
    want = ref.recommend(users, logged(inter, 4.0).to_csr()[users], 10)
    for n in range(len(users)):
        np.testing.assert_array_equal(got.user(n).items, want.user(n).items)
        np.testing.assert_allclose(got.user(n).scores, want.user(n).scores, rtol=1e-4, atol=1e-6)
    # an unknown user's history (-1) goes through the fold-in / neighbour search paths
    row = history[:1]
    np.testing.assert_array_equal(
        raw.recommend(np.array([-1]), row, 10).user(0).items,
        ref.recommend(np.array([-1]), logged(inter, 4.0).to_csr()[users[:1]], 10).user(0).items,
    )


def test_weigh_is_applied_once():
    m = ItemCF(ItemCFConfig(transform="log"))
    x = sp.csr_matrix(np.array([[0, 3.0, 8.0]], np.float32))
    once = m.weigh(x)
    assert m.weigh(once) is once
    np.testing.assert_allclose(once.data, np.log1p([3.0, 8.0]), rtol=1e-6)
    assert ItemCF().weigh(x) is x  # linear: nothing copied


def test_search_space_follows_the_data():
    inter = counts_log()
    axes = space("svd", inter)
    transforms = {(v["transform"], v["transform_eps"]) for v in axes[0]}
    median = float(np.median(inter.weight))
    assert transforms == {("linear", 1.0), ("binary", 1.0), ("log", 1.0), ("log", median)}
    flat = dataclasses.replace(inter, weight=np.ones_like(inter.weight))
    assert space("svd", flat)[0] == [{"transform": "linear", "transform_eps": 1.0}]
    days = (inter.timestamp.max() - inter.timestamp.min()) / 86400
    lives = [v["half_life_days"] for v in space("popularity", inter)[1]]
    assert lives[0] == math.inf and lives[1] == pytest.approx(days)


def test_svd_frequency_axis_scales_lambda_with_the_typical_row_count():
    """The ν × λ axis offers, for ν > 0, the λ that gives a row of the typical count the
    same penalty λ₀ (reg · n^ν = λ₀); every axis that sets λ also sets ν."""
    from recsys_core.models.svd import typical_row_count

    inter = counts_log()
    n = typical_row_count(inter)
    assert n == pytest.approx(len(inter) / math.sqrt(inter.n_users * inter.n_items))
    axes = space("svd", inter)
    for axis in axes:
        for values in axis:
            assert ("regularization" in values) == ("reg_exponent" in values), values
    nu_axis = next(a for a in axes if any(v.get("reg_exponent", 0) > 0 for v in a))
    assert {v["reg_exponent"] for v in nu_axis} == {0.5, 1.0}
    for v in nu_axis:
        r0 = v["regularization"] * n ** v["reg_exponent"]
        assert min(abs(r0 / want - 1) for want in (15, 30, 60, 120, 240)) < 0.05, v
    # the same events on half the users: longer rows, so the same λ₀ are smaller λ at ν > 0
    half = (inter.n_users + 1) // 2
    dense = dataclasses.replace(inter, user_idx=inter.user_idx // 2, user_ids=inter.user_ids[:half])
    assert typical_row_count(dense) > n
    dense_axis = next(
        a for a in space("svd", dense) if any(v.get("reg_exponent", 0) > 0 for v in a)
    )
    assert all(
        d["regularization"] < v["regularization"] for d, v in zip(dense_axis, nu_axis, strict=True)
    )


def test_tuning_is_deterministic_records_every_trial_and_tames_counts():
    inter = counts_log()
    configs = {"svd": SVDConfig(n_factors=16, iterations=8), "popularity": PopularityConfig()}
    cfg = TuneConfig(budget_seconds=0, validation_users=500)
    a, rec_a, _ = tune(inter, configs, cfg)
    b, rec_b, _ = tune(inter, configs, cfg)
    assert a == b
    for name in configs:
        ra, rb = rec_a[name].record(), rec_b[name].record()
        assert [t["params"] for t in ra["trials"]] == [t["params"] for t in rb["trials"]]
        assert [t["ndcg"] for t in ra["trials"]] == [t["ndcg"] for t in rb["trials"]]
        # the first trial is the configured values; the chosen is the best trial
        assert ra["trials"][0]["params"] == {}
        assert ra["validation_ndcg"] == max(t["ndcg"] for t in ra["trials"])
        assert not ra["stopped_by_budget"]
        assert rec_a[name].model is not None
    # raw counts in the thousands as confidences drown the signal: the search moves off them
    assert a["svd"].transform != "linear"
    assert a["svd"].iterations == 8  # trials ran a shorter schedule; the config keeps its own


def test_a_budget_stops_the_search_and_says_so():
    inter = counts_log()
    tiny = TuneConfig(budget_seconds=1e-9)
    _, rec, _ = tune(inter, {"svd": SVDConfig(n_factors=16)}, tiny)
    r = rec["svd"].record()
    assert r["stopped_by_budget"] and len(r["trials"]) == 1  # only the configured values


def test_train_records_the_search_in_the_manifest_and_no_tune_keeps_the_config(tmp_path):
    data = tmp_path / "data" / "interactions.tsv"
    args = ["generate", "--out", str(data), "--users", "200", "--items", "80"]
    assert main([*args, "--interactions", "4000", "--seed", "9"]) == 0
    out = tmp_path / "tuned"
    assert main(["train", "--interactions", str(data), "--out", str(out), "--models", "svd"]) == 0
    loaded = artifacts.load_version(out / artifacts.latest_version(out))
    record = loaded.manifest["models"]["svd"]["params"]["tuning"]
    assert len(record["trials"]) > 1
    assert record["chosen"] == {
        k: v for k, v in loaded.manifest["models"]["svd"]["params"].items() if k != "tuning"
    }
    assert loaded.models["svd"].tuning_ == record  # the loaded model carries it
    json.dumps(record)  # plain JSON

    plain = tmp_path / "plain"
    assert main(
        ["train", "--interactions", str(data), "--out", str(plain), "--models", "svd", "--no-tune"]
    ) == 0  # fmt: skip
    loaded = artifacts.load_version(plain / artifacts.latest_version(plain))
    params = loaded.manifest["models"]["svd"]["params"]
    assert "tuning" not in params
    assert params == dataclasses.asdict(SVDConfig())


def test_ease_is_the_closed_form_with_each_row_cut_to_its_largest_weights():
    inter = counts_log()
    x = (inter.to_csr() > 0).astype(np.float64).toarray()  # binary: EASE's default transform
    lam = 50.0
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    k = 7
    ref = np.zeros_like(b)
    for i in range(len(b)):
        top = np.argsort(-np.abs(b[i]), kind="stable")[:k]
        ref[i, top] = b[i, top]
    m = EASE(EASEConfig(l2=lam, k_neighbors=k)).fit(inter)
    np.testing.assert_allclose(m.similarity_.toarray(), ref, rtol=1e-3, atol=1e-6)
    users = np.arange(0, inter.n_users, 5)
    got = m.recommend(users, inter.to_csr()[users], 5)
    scores = x[users] @ ref
    scores[x[users] > 0] = -np.inf
    for n in range(len(users)):
        np.testing.assert_allclose(
            got.user(n).scores, np.sort(scores[n])[::-1][:5], rtol=1e-3, atol=1e-6
        )


def test_ease_beyond_max_items_is_refused_alone_and_left_out_of_the_hybrid(tmp_path):
    inter = counts_log()
    with pytest.raises(ValueError, match="max_items=50"):
        EASE(EASEConfig(max_items=50)).fit(inter)
    data = tmp_path / "data" / "interactions.tsv"
    args = ["generate", "--out", str(data), "--users", "200", "--items", "80"]
    assert main([*args, "--interactions", "4000", "--seed", "9"]) == 0
    small = ["--set", "models.ease.max_items=50", "--tune-budget", "5"]
    out = tmp_path / "art"
    train = ["train", "--interactions", str(data), "--out", str(out), *small]
    assert main([*train, "--models", "hybrid"]) == 0
    loaded = artifacts.load_version(out / artifacts.latest_version(out))
    assert "ease" not in loaded.models
    assert "ease" not in loaded.models["hybrid"].components
    assert main([*train, "--models", "ease"]) == 2  # asked for by name: a clear error
    plain = tmp_path / "plain"  # no --models: every model that fits
    assert main(["train", "--interactions", str(data), "--out", str(plain), *small]) == 0
    loaded = artifacts.load_version(plain / artifacts.latest_version(plain))
    assert set(loaded.models) == set(NAMES) - {"ease"}


def test_a_large_log_is_tuned_on_a_seeded_sample_of_whole_users():
    inter = counts_log()
    size = len(inter) // 3
    a, b = sample_users(inter, size, seed=7), sample_users(inter, size, seed=7)
    assert np.array_equal(a.user_idx, b.user_idx) and np.array_equal(a.item_idx, b.item_idx)
    assert size - inter.to_csr().getnnz(axis=1).max() <= len(a) <= size
    assert (a.user_ids == inter.user_ids).all() and (a.item_ids == inter.item_ids).all()
    kept = np.unique(a.user_idx)  # whole users: every row of a kept user, none of the others
    assert len(a) == np.isin(inter.user_idx, kept).sum()
    assert not np.array_equal(kept, np.unique(sample_users(inter, size, seed=8).user_idx))
    assert sample_users(inter, len(inter), seed=7) is inter
    assert sample_users(inter, 0, seed=7) is inter

    cfg = TuneConfig(budget_seconds=0, validation_users=500, sample_interactions=size)
    configs = {"popularity": PopularityConfig()}
    first, rec, _ = tune(inter, configs, cfg)
    assert rec["popularity"].record()["tuned_on"] == len(a)
    assert tune(inter, configs, cfg)[0] == first
