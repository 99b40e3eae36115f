"""The calibration step of training: for each model, P(hit | score / reference) fitted on the
validation split the hyperparameter search uses (`tuning.Validation`, same sample and seed).

Each model is fitted again, with the final configuration, on the split's fit part; its top
`CALIBRATION_K` for the validation users give (feature, hit) pairs, a hit being an item among
the user's held-out ones; `recsys_core.calibration.fit` turns them into a step table. The
final model cannot be used: it has seen the held-out items, so it would look too sure.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp

from recsys_core.calibration import Calibration, fit, reference_score
from recsys_core.data import Interactions
from recsys_core.models import Hybrid, Recommender

CALIBRATION_K = 20
"""List length the pairs come from: deeper than the usual 10, so the low-score end of the map
is fitted on items a longer request returns."""


def pairs(
    model: Recommender,
    users: np.ndarray,
    history: sp.csr_matrix,
    relevant: list[np.ndarray],
    k: int,
) -> tuple[np.ndarray, np.ndarray, float]:
    """(score / reference, hit) for every returned item of each user of ``users`` (row n of
    ``history`` is user n's, ``relevant[n]`` their held-out items), and the reference used."""
    recs = model.recommend(users, history, k, exclude_seen=True)
    indptr = np.asarray(recs.indptr, np.int64)
    items = np.asarray(recs.items, np.int64)
    scores = np.asarray(recs.scores, np.float64)
    firsts = indptr[:-1][np.diff(indptr) > 0]
    reference = reference_score(scores[firsts])
    hits = np.zeros(len(items), bool)
    for n in range(len(relevant)):
        a, b = indptr[n], indptr[n + 1]
        if b > a and len(relevant[n]):
            hits[a:b] = np.isin(items[a:b], relevant[n])
    return scores / reference, hits, reference


def validation_models(
    final: dict[str, Recommender], fit_part: Interactions, build, users=None
) -> dict:
    """Fresh models with the final ones' configurations fitted on ``fit_part``; the hybrid
    keeps the final weights (no second weight search) and blends the fresh components.
    ``build(name, config)`` makes an unfitted model. ``users``: the only users the models
    will be asked about (``Recommender.fit_for``); None: any."""
    fresh: dict[str, Recommender] = {}
    for name, model in final.items():
        if name != "hybrid":
            m = build(name, model.config)
            fresh[name] = m.fit(fit_part) if users is None else m.fit_for(fit_part, users)
    hybrid = final.get("hybrid")
    if isinstance(hybrid, Hybrid):
        cfg = dataclasses.replace(hybrid.config, weights=dict(hybrid.weights_), tune=False)
        parts = {n: m for n, m in fresh.items() if n in hybrid.components}
        fresh["hybrid"] = Hybrid(cfg, components=parts, fit_components=False).fit(fit_part)
    return fresh


def calibrate(
    final: dict[str, Recommender], val, build, k: int = CALIBRATION_K
) -> dict[str, Calibration]:
    """A calibration per model of ``final`` (a model whose pairs hold no hit gets none: the
    server then keeps the relative rule for it). ``val``: a `tuning.Validation`."""
    if len(val.users) == 0:
        return {}
    fresh = validation_models(final, val.fit_part, build, val.users)
    out: dict[str, Calibration] = {}
    for name, model in fresh.items():
        f, h, _ = pairs(model, val.users, val.history, val.relevant, k)
        if h.any():
            out[name] = fit(f, h, k)
    return out
