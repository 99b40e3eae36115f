"""Self-tuning: each model's hyperparameters searched on a validation split carved from the
training data only, so ``recsys-train train`` with no flags fits the data it is given.

The search is coordinate ascent from the configured values: one parameter at a time, every
value of its list is fitted and scored (NDCG@k on the validation users), the best is kept,
then the next parameter; a second pass revisits them while anything improved. Why not
successive halving or a Bayesian search: a trial's cost here is the fit, not the scoring, so
halving on users saves little; the spaces are small and close to separable (the transform,
then the confidence weight, then the regularisation), so one parameter at a time finds the
good region in tens of fits instead of the hundreds a grid needs, and it is deterministic and
explainable (every trial is recorded). The time budget is checked before each trial against
the cost of the ones so far: a search cut by the budget keeps the best found so far.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys_trainer.data import Interactions
from recsys_trainer.metrics import ndcg_at_k
from recsys_trainer.models import MODELS, Recommender
from recsys_trainer.splits import random_holdout, relevant_items

DAY = 86_400.0
TUNED = ("popularity", "item_cf", "user_cf", "svd")
"""Models with a search space, tuned in this order (cheapest first: the budget left over by
one rolls to the next)."""
TRIAL_SCHEDULE = {"svd": {"iterations": 6}}
"""Trials fit a shorter schedule than the final model (the configured ``iterations`` stay in
the chosen config): ALS ranks configurations after 6 sweeps as it does after 15, at 40% of
the cost, so the budget buys more trials."""


@dataclass(frozen=True)
class TuneConfig:
    enabled: bool = True
    budget_seconds: float = 30.0
    """For all models together, checked before each trial; 0 means no limit."""
    validation_fraction: float = 0.2
    validation_users: int = 2000
    """Validation users scored per trial (a seeded sample when there are more)."""
    k: int = 10
    passes: int = 2
    seed: int = 7


@dataclass
class Trial:
    params: dict[str, Any]
    ndcg: float
    seconds: float


@dataclass
class ModelTuning:
    name: str
    chosen: dict[str, Any]
    validation_ndcg: float
    trials: list[Trial] = field(default_factory=list)
    seconds: float = 0.0
    stopped_by_budget: bool = False
    model: Recommender | None = None
    """The best trial's model, fitted on the validation split's fit part."""

    def record(self) -> dict[str, Any]:
        """What the manifest, the report and ListModels carry."""
        return {
            "chosen": self.chosen,
            "validation_ndcg": round(self.validation_ndcg, 6),
            "seconds": round(self.seconds, 2),
            "stopped_by_budget": self.stopped_by_budget,
            "trials": [
                {"params": t.params, "ndcg": round(t.ndcg, 6), "seconds": round(t.seconds, 3)}
                for t in self.trials
            ],
        }


# -- search spaces --------------------------------------------------------------------------
# Values are tried in the order given; each space depends only on the data's shape (its time
# span, catalogue size), never on a particular data set.


def _transforms(train: Interactions) -> list[dict[str, Any]]:
    w = train.weight
    if len(w) == 0 or np.all(w == w[0]):
        return [
            {"transform": "linear", "transform_eps": 1.0}
        ]  # all weights equal: every transform is the same
    median = float(np.median(w[w > 0])) if np.any(w > 0) else 1.0
    out = [{"transform": t, "transform_eps": 1.0} for t in ("linear", "binary", "log")]
    if not math.isclose(median, 1.0, rel_tol=0.25):
        out.append({"transform": "log", "transform_eps": median})
    return out


def space(name: str, train: Interactions) -> list[list[dict[str, Any]]]:
    """The coordinates searched for ``name``: a list of axes, each a list of the partial
    configurations it tries."""
    tf = _transforms(train)
    if name == "popularity":
        ts = train.timestamp.astype(np.float64)
        span = (ts.max() - ts.min()) / DAY if len(ts) else 0.0
        lives = [math.inf] + [span * f for f in (1.0, 0.25, 1 / 16, 1 / 64) if span * f >= 1 / 24]
        return [tf, [{"half_life_days": h} for h in lives]]
    if name == "item_cf":
        return [
            tf,
            [
                {"weighting": w, "measure": m}
                for w in ("bm25", "tfidf", "none")
                for m in ("dot", "cosine")
            ],
            [{"k_neighbors": k} for k in (25, 50, 100, 200, 400, 800)],
            [{"shrink": s} for s in (0.0, 10.0, 50.0)],
            [{"bm25_k1": k1, "bm25_b": b} for k1 in (0.6, 1.2, 2.0) for b in (0.5, 0.75, 1.0)],
        ]
    if name == "user_cf":
        return [
            tf,
            [{"weighting": w} for w in ("bm25", "tfidf", "none")],
            [{"k_neighbors": k} for k in (25, 50, 100, 200, 400)],
            [{"shrink": s} for s in (0.0, 10.0, 50.0)],
        ]
    if name == "svd":
        # factors early and smallest first: they set the cost of every later trial
        return [
            tf,
            [{"n_factors": f} for f in (32, 64, 128)],
            [{"alpha": a} for a in (0.5, 2.0, 8.0, 32.0)],
            [{"regularization": r} for r in (1.0, 5.0, 30.0, 100.0, 300.0)],
            [{"alpha": a} for a in (1.0, 4.0, 16.0)],
        ]
    return []


# -- the search -----------------------------------------------------------------------------


class Validation:
    """A validation split of the training data and the users scored on it."""

    def __init__(self, train: Interactions, cfg: TuneConfig) -> None:
        self.fit_part, val = random_holdout(
            train, cfg.validation_fraction, min_interactions=5, seed=cfg.seed
        )
        relevant = relevant_items(val, exclude=self.fit_part)
        users = np.flatnonzero([len(r) > 0 for r in relevant])
        if len(users) > cfg.validation_users:
            rng = np.random.default_rng(cfg.seed)
            users = np.sort(rng.choice(users, cfg.validation_users, replace=False))
        self.users = users
        self.relevant = [relevant[u] for u in users]
        self.history = self.fit_part.to_csr()[users]
        self.k = cfg.k

    def score(self, model: Recommender) -> float:
        if len(self.users) == 0:
            return 0.0
        recs = model.recommend(self.users, self.history, self.k, exclude_seen=True)
        lists = [recs.user(n).items for n in range(len(self.users))]
        return float(ndcg_at_k(lists, self.relevant, self.k))


class Search:
    """Coordinate ascent over ``axes`` from config ``start`` for model ``name``."""

    def __init__(
        self,
        name: str,
        start: Any,
        val: Validation,
        axes: list[list[dict[str, Any]]],
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.name, self.start, self.val, self.axes, self.log = name, start, val, axes, log
        self.trials: list[Trial] = []
        self.seen: dict[tuple, float] = {}
        self.best, self.best_score, self.best_model = start, -1.0, None
        self.seconds = 0.0
        self.stopped = False

    def size(self) -> int:
        """Trials in one pass."""
        return 1 + sum(len(axis) for axis in self.axes)

    def trial_cost(self) -> float:
        """What the next trial is assumed to cost: the mean so far."""
        return self.seconds / len(self.trials) if self.trials else 0.0

    def _run(self, cfg: Any) -> float:
        key = _key(cfg)
        if key in self.seen:
            return self.seen[key]
        t0 = time.perf_counter()
        short = {k: min(v, getattr(cfg, k)) for k, v in TRIAL_SCHEDULE.get(self.name, {}).items()}
        model = MODELS[self.name](dataclasses.replace(cfg, **short)).fit(self.val.fit_part)
        score = self.val.score(model)
        self.seen[key] = score
        base = dataclasses.asdict(self.start)
        diff = {k: v for k, v in dataclasses.asdict(cfg).items() if base[k] != v}
        seconds = time.perf_counter() - t0
        self.trials.append(Trial(diff, score, seconds))
        self.seconds += seconds
        if score > self.best_score + 1e-9:
            self.best, self.best_score, self.best_model = cfg, score, model
        if self.log is not None:
            self.log(f"{self.name}: {diff or 'configured values'} ndcg {score:.4f}")
        return score

    def begin(self) -> None:
        """The configured values, the first trial: its cost sizes the budget shares."""
        self._run(self.start)

    def run(self, deadline: float, passes: int) -> None:
        for _ in range(max(passes, 1)):
            before = self.best_score
            for axis in self.axes:
                for values in axis:
                    if time.perf_counter() + self.trial_cost() > deadline:
                        self.stopped = True
                        return
                    try:
                        cand = dataclasses.replace(self.best, **values)
                    except (TypeError, ValueError):
                        continue
                    self._run(cand)
            if self.best_score <= before + 1e-9:
                return  # a pass without a gain: converged

    def result(self) -> ModelTuning:
        return ModelTuning(
            self.name,
            dataclasses.asdict(self.best),
            self.best_score,
            self.trials,
            self.seconds,
            self.stopped,
            self.best_model,
        )


def _key(cfg: Any) -> tuple:
    return tuple(sorted(dataclasses.asdict(cfg).items(), key=lambda kv: kv[0]))


def tune(
    train: Interactions,
    configs: dict[str, Any],
    cfg: TuneConfig,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], dict[str, ModelTuning], Validation]:
    """Tuned configs for the models of ``configs`` that have a search space (others are
    returned as given), what each search did, and the validation split it used.

    Each model's configured values are tried first; then the searches run cheapest first
    (size times first trial's cost), each given an equal share of the budget left."""
    t0 = time.perf_counter()
    val = Validation(train, cfg)
    budget = cfg.budget_seconds if cfg.budget_seconds > 0 else math.inf
    searches = [Search(n, configs[n], val, space(n, train), log) for n in TUNED if n in configs]
    for s in searches:
        s.begin()
    # cheapest searches first, each with an equal share of what is left: a cheap one
    # finishes and its unused time flows to the expensive ones after it
    searches.sort(key=lambda x: x.size() * x.trial_cost())
    for n, s in enumerate(searches):
        left = budget - (time.perf_counter() - t0)
        s.run(time.perf_counter() + left / (len(searches) - n), cfg.passes)
    out, records = dict(configs), {}
    for s in searches:
        out[s.name], records[s.name] = s.best, s.result()
    return out, records, val


def prefit(val: Validation, records: dict[str, ModelTuning]) -> tuple | None:
    """What ``Hybrid.prefit`` takes: the validation users, histories, held-out items and each
    component's best trial model, or None if a component has none."""
    models = {n: r.model for n, r in records.items()}
    if any(m is None for m in models.values()):
        return None
    return val.users, val.history, val.relevant, models
