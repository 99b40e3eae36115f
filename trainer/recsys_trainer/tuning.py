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
from recsys_trainer.evaluate import top_k
from recsys_trainer.metrics import ndcg_at_k
from recsys_trainer.models import MODELS, Recommender
from recsys_trainer.models.base import Axes
from recsys_trainer.splits import random_holdout, relevant_items

TRIAL_SCHEDULE = {"svd": {"iterations": 6}}
"""Trials fit a shorter schedule than the final model (the configured ``iterations`` stay in
the chosen config): ALS ranks configurations after 6 sweeps as it does after 15, at 40% of
the cost, so the budget buys more trials."""


@dataclass(frozen=True)
class TuneConfig:
    enabled: bool = True
    budget_seconds: float = 30.0
    budget_per_million: float = 40.0
    """Added to the budget per million training interactions: a larger log's trials cost
    more, and its whole training may take longer (5M events: 230 s of search)."""
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


def space(name: str, train: Interactions) -> Axes:
    """The axes searched for ``name`` on ``train`` (the model's ``search_space``)."""
    return MODELS[name].search_space(train)


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
        self.fit_csr = self.fit_part.to_csr()
        self.history = self.fit_csr[users]
        self.k = cfg.k

    def score(self, model: Recommender) -> float:
        if len(self.users) == 0:
            return 0.0
        recs = top_k(model, self.fit_csr, self.users, self.k)
        return float(ndcg_at_k(recs, self.relevant, self.k))


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


def budget_for(cfg: TuneConfig, n_interactions: int) -> float:
    """Seconds of search for a log of this size; inf when ``budget_seconds`` is 0."""
    if cfg.budget_seconds <= 0:
        return math.inf
    return cfg.budget_seconds + cfg.budget_per_million * n_interactions / 1e6


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
    budget = budget_for(cfg, len(train))
    axes = {n: space(n, train) for n in configs}
    searches = [Search(n, configs[n], val, axes[n], log) for n in configs if axes[n]]
    for s in searches:
        s.begin()
    # cheapest searches first, each with an equal share of what is left: a cheap one
    # finishes and its unused time flows to the expensive ones after it
    searches.sort(key=lambda x: x.size() * x.trial_cost())
    for n, s in enumerate(searches):
        left = budget - (time.perf_counter() - t0)
        s.run(time.perf_counter() + left / (len(searches) - n), cfg.passes)
    out, records = dict(configs), {}
    for s in sorted(searches, key=lambda x: list(configs).index(x.name)):
        out[s.name], records[s.name] = s.best, s.result()
    return out, records, val


def prefit(val: Validation, records: dict[str, ModelTuning]) -> tuple | None:
    """What ``Hybrid.prefit`` takes: the validation users, histories, held-out items and each
    component's best trial model, or None if a component has none."""
    models = {n: r.model for n, r in records.items()}
    if any(m is None for m in models.values()):
        return None
    return val.users, val.history, val.relevant, models
