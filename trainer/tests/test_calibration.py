"""Confidence calibration: PAV, the step table, its storage, and its reliability on held-out
data (recsys_core.calibration, recsys_trainer.calibrate)."""

import json

import numpy as np
import pytest

from recsys_core import artifacts as art
from recsys_core.calibration import Calibration, fit, pav, reliability
from recsys_core.data import from_frame
from recsys_core.splits import random_holdout, relevant_items
from recsys_trainer import cli
from recsys_trainer import config as config_mod
from recsys_trainer.calibrate import pairs
from recsys_trainer.synthetic import generate


def test_pav_hand_computed():
    # 1, 3, 2, 4, 3, 3 -> pool (3, 2) = 2.5, then (4, 3, 3) = 10/3
    got = pav(np.array([1.0, 3.0, 2.0, 4.0, 3.0, 3.0]))
    assert got == pytest.approx([1.0, 2.5, 2.5, 10 / 3, 10 / 3, 10 / 3])
    # weights: (3 w1, 1 w3) -> (3 + 3) / 4 = 1.5
    assert pav(np.array([0.0, 3.0, 1.0]), np.array([1.0, 1.0, 3.0])) == pytest.approx(
        [0.0, 1.5, 1.5]
    )


def test_fit_is_monotone_in_unit_interval_and_a_step_table():
    rng = np.random.default_rng(0)
    f = rng.random(5000) * 2
    hits = rng.random(5000) < np.clip(f / 2, 0, 1) ** 2
    cal = fit(f, hits, k=10)
    grid = np.linspace(-1, 3, 401)
    p = cal.predict(grid)
    assert np.all(np.diff(p) >= 0) and p.min() >= 0 and p.max() <= 1
    assert len(cal.probs) <= 64 and cal.pairs == 5000
    # the scalar path the server uses agrees with the vector one
    assert [cal.confidence(x, 1.0) for x in grid[::40]] == pytest.approx(p[::40].tolist())
    assert cal.confidence(3.0, 2.0) == pytest.approx(float(cal.predict(np.array([1.5]))[0]))
    # close to the true curve in the middle
    assert cal.predict(np.array([1.0]))[0] == pytest.approx(0.25, abs=0.06)


def test_dict_round_trip_and_bad_tables():
    cal = Calibration((0.0, 0.5), (0.1, 0.4), 100, 0.2, 10)
    assert Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal
    for bad in (
        {**cal.to_dict(), "probs": [0.4, 0.1]},
        {**cal.to_dict(), "probs": [0.1, 1.5]},
        {**cal.to_dict(), "edges": [0.5, 0.5]},
        {**cal.to_dict(), "feature": "rank"},
        {"feature": "score/reference"},
    ):
        with pytest.raises(ValueError):
            Calibration.from_dict(bad)


def test_reliability_bins_and_ece():
    rows, ece = reliability(np.array([0.05, 0.05, 0.95, 0.95]), np.array([0, 1, 1, 1]), 10)
    assert [(r[2], r[3], r[4]) for r in rows] == [(0.05, 0.5, 2), (0.95, 1.0, 2)]
    assert ece == pytest.approx((2 * 0.45 + 2 * 0.05) / 4)


@pytest.fixture(scope="module")
def synthetic():
    df, catalog = generate(n_users=1500, n_items=600, n_interactions=40_000, seed=3)
    return from_frame(df), catalog


def test_train_stores_calibrations_and_old_manifests_load_without(tmp_path, synthetic):
    inter, catalog = synthetic
    cfg = config_mod.load(None, ["tuning.enabled=false"])
    path, _, _ = cli.train_and_publish(inter, cfg, ("svd", "popularity"), catalog, tmp_path, {})
    loaded = art.load_version(path)
    assert set(loaded.calibrations) == {"svd", "popularity"}
    for cal in loaded.calibrations.values():
        assert 0 < cal.hit_rate < 1 and cal.pairs > 0
        assert list(cal.probs) == sorted(cal.probs)
    # an artifact published before calibration existed: no key in the manifest, loads
    manifest = json.loads((path / art.MANIFEST).read_text())
    for entry in manifest["models"].values():
        entry.pop("calibration")
    (path / art.MANIFEST).write_text(json.dumps(manifest))
    assert art.load_version(path).calibrations == {}
    manifest["models"]["svd"]["calibration"] = {"feature": "score/reference", "edges": []}
    (path / art.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(art.ArtifactError) as e:
        art.load_version(path)
    assert e.value.reason == "bad_model"


ECE_BOUND = 0.05
"""Why 0.05: on this set the hit rate of a top-10 item is ~0.06 (docs/quality.md), so a
calibration that said "0" for everything would already score ECE ~0.06, and one off by half
(the typical error of the relative rule it replaces) ~0.03-0.06 in the busy bins; a fitted map
is expected well inside that. Sampling noise with ~10k test items is ~0.005. The bound is
the hit rate's order of magnitude, not the measured value (~0.01-0.02)."""


@pytest.mark.parametrize("name", ["svd", "popularity"])
def test_test_split_ece_is_small_on_synthetic(tmp_path, synthetic, name):
    inter, _ = synthetic
    train, test = random_holdout(inter, 0.2, seed=42)
    cfg = config_mod.load(None, ["tuning.enabled=false"])
    path, models, _ = cli.train_and_publish(train, cfg, (name,), None, tmp_path, {})
    cal = art.load_version(path).calibrations[name]
    relevant = relevant_items(test, exclude=train)
    users = np.array([u for u in range(inter.n_users) if len(relevant[u])])
    hist = train.to_csr()[users]
    f, hits, _ = pairs(models[name], users, hist, [relevant[u] for u in users], 10)
    _, ece = reliability(cal.predict(f), hits)
    assert len(hits) > 5000
    assert ece < ECE_BOUND, ece
