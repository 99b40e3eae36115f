"""``recommend_one`` (the one-user path a server takes) gives what the batch ``recommend`` gives
on the same 1-row history, for every registered model: same items in the same order, scores
equal up to float rounding; and the hybrid's explanations from its kept parts equal the
explanations computed from scratch."""

from __future__ import annotations

import dataclasses
from functools import cache

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_core.catalog import with_catalog
from recsys_core.data import from_frame
from recsys_core.models import Hybrid
from recsys_core.models.registry import NAMES
from recsys_trainer import config
from recsys_trainer.cli import build_models
from recsys_trainer.synthetic import generate


@cache
def fitted(transform: str = "linear"):
    """Every registered model fitted as the trainer fits them (the hybrid shares the others),
    each reading weights through ``transform``."""
    df, catalog = generate(n_users=300, n_items=150, n_interactions=6000, seed=3)
    data = with_catalog(from_frame(df), catalog)
    cfg = config.TrainConfig()
    models_cfg = {
        f.name: dataclasses.replace(getattr(cfg.models, f.name), transform=transform)
        for f in dataclasses.fields(cfg.models)
        if hasattr(getattr(cfg.models, f.name), "transform")
    }
    cfg = dataclasses.replace(cfg, models=dataclasses.replace(cfg.models, **models_cfg))
    models = build_models(cfg, NAMES)
    for m in models.values():
        m.fit(data)
    return data, models


def row_of(items, weights, n_items) -> sp.csr_matrix:
    items = np.asarray(items, np.int32)
    w = np.asarray(weights, np.float32)
    return sp.csr_matrix((w, items, [0, len(items)]), shape=(1, n_items))


def cases(n=12):
    """(user, 1-row history): training rows of known users; the same rows for an unknown user;
    live histories (training row plus new events, some on items already seen); short rows (the
    hybrid's cold start); an empty row."""
    data, _ = fitted()
    h = data.to_csr()
    rng = np.random.default_rng(3)
    out = []
    for u in rng.choice(h.shape[0], n, replace=False).tolist():
        row = h[[u]]
        out.append((u, row))
        out.append((-1, row))
        new = rng.choice(h.shape[1], 3, replace=False)
        items = np.concatenate([row.indices, new, row.indices[:1]])
        weights = np.concatenate([row.data, [8.0, 1.0, 2.0], [4.0]])
        live = row_of(items, weights, h.shape[1])
        live.sum_duplicates()
        out.append((u, live))
        short = row.indices[:2]
        out.append((-1, row_of(short, np.array([2.0, 1.0])[: len(short)], h.shape[1])))
    out.append((-1, sp.csr_matrix((1, h.shape[1]), dtype=np.float32)))
    return out


def assert_same(got, want, what):
    assert got.items.tolist() == want.items.tolist(), what
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-6, err_msg=str(what))


@pytest.mark.parametrize("name", NAMES)
def test_recommend_one_is_recommend_for_one_row(name):
    data, models = fitted()
    m = models[name]
    deny = np.array([1, 2, 3], np.int32)
    for n, (u, row) in enumerate(cases()):
        allow = np.arange(0, data.n_items, 2, dtype=np.int32) if n % 3 == 0 else None
        for k in (1, 10, data.n_items):
            want = m.recommend(np.array([u]), row, k, allow=allow, deny=deny).user(0)
            got = m.recommend_one(u, row, k, allow=allow, deny=deny)
            assert_same(got, want, (name, u, row.nnz, k))
        plain = m.recommend(np.array([u]), row, 10).user(0)
        assert_same(m.recommend_one(u, row, 10), plain, (name, u, row.nnz))


@pytest.mark.parametrize("transform", ["log", "binary"])
@pytest.mark.parametrize("name", NAMES)
def test_recommend_one_weighs_the_history(name, transform):
    """With every model (for the hybrid: every component) reading weights through a transform,
    the one-user path still answers what the batch path does: each applies it exactly once."""
    _, models = fitted(transform)
    m = models[name]
    for u, row in cases(4):
        want = m.recommend(np.array([u]), row, 10).user(0)
        assert_same(m.recommend_one(u, row, 10), want, (name, transform, u, row.nnz))


def test_hybrid_explains_what_it_answered_from_the_kept_parts():
    """``explain`` right after ``recommend_one`` on the same row reads the blend's kept part
    scores; they give the explanation a fresh computation gives. Other items, or another row,
    are computed from scratch."""
    _, models = fitted()
    m: Hybrid = models["hybrid"]
    for u, row in cases(6):
        got = m.recommend_one(u, row, 10)
        kept = m.explain(u, row, got.items)
        assert m.blend_parts(u, row, got.items) is not None
        copy = row.copy()  # another row object: nothing kept for it
        assert m.blend_parts(u, copy, got.items) is None
        fresh = m.explain(u, copy, got.items)
        for a, b, score in zip(kept, fresh, got.scores, strict=True):
            assert a.kind == b.kind == "blend"
            assert a.fields["cold_start"] == b.fields["cold_start"] == m.is_cold(row)
            assert a.fields["shares"] == pytest.approx(b.fields["shares"], abs=1e-5)
            assert sum(a.fields["contributions"].values()) == pytest.approx(score, rel=1e-4)
    u, row = cases(1)[0]
    m.recommend_one(u, row, 3)
    seen = row.indices[:1]  # not in the answer: explained from scratch
    assert m.blend_parts(u, row, seen) is None
    assert m.explain(u, row, seen)[0].kind == "blend"


def test_with_weights_shares_the_components_and_changes_the_blend():
    _, models = fitted()
    m: Hybrid = models["hybrid"]
    svd_only = m.with_weights({n: 0.0 for n in m.weights_} | {"svd": 1.0})
    assert svd_only.components is m.components
    u, row = next((u, r) for u, r in cases() if u >= 0 and not m.is_cold(r))
    got = svd_only.recommend_one(u, row, 10)
    assert_same(got, svd_only.recommend(np.array([u]), row, 10).user(0), u)
    want = models["svd"].recommend_one(u, row, 10).items.tolist()
    assert got.items.tolist() == want
