"""Self-tuning: each model's hyperparameters searched on a validation split carved from the
training data only, so ``recsys-train train`` with no flags fits the data it is given.

The search is coordinate ascent from the configured values: one parameter at a time, every
value of its list is fitted and scored (NDCG@k on the validation users), the best is kept,
then the next parameter; a second pass revisits them while anything improved. Why not
successive halving or a Bayesian search: a trial's cost here is the fit, not the scoring, so
halving on users saves little; the spaces are small and close to separable (the transform,
then the confidence weight, then the regularisation), so one parameter at a time finds the
good region in tens of fits instead of the hundreds a grid needs, and it is deterministic and
explainable (every trial is recorded).

Deterministic: the same data and configuration choose the same hyperparameters. Nothing the
search decides depends on the clock (searches run in registry order, trials in axis order), and
a log larger than ``sample_interactions`` is tuned on a seeded sample of whole users, so the
search's cost is bounded whatever the log's size and finishes inside the budget. The time
budget is a safety limit, checked before each trial against the mean cost of the ones so far:
a search it cuts keeps the best found so far and is recorded as ``stopped_by_budget`` (and
is then no longer reproducible), so the default budget is set well above what a full search
of the sample takes on a 2-core machine.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys_core.data import Interactions
from recsys_core.metrics import ndcg_at_k
from recsys_core.models import MODELS, Recommender
from recsys_core.models.base import Axes
from recsys_core.splits import random_holdout, relevant_items
from recsys_trainer.evaluate import top_k

TRIAL_SCHEDULE = {"svd": {"iterations": 6}}
"""Trials fit a shorter schedule than the final model (the configured ``iterations`` stay in
the chosen config): ALS ranks configurations after 6 sweeps as it does after 15, at 40% of
the cost, so the budget buys more trials."""


@dataclass(frozen=True)
class TuneConfig:
    enabled: bool = True
    budget_seconds: float = 120.0
    """A safety limit for all searches together, checked before each trial; 0 means none."""
    sample_interactions: int = 200_000
    """Logs larger than this are tuned on a seeded sample of whole users of about this many
    interactions (0: never sample). Bounds the search's cost, so it finishes inside the
    budget (and stays deterministic) at any size."""
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
    tuned_on: int = 0
    """Interactions of the (sampled) log the validation split was carved from."""
    model: Recommender | None = None
    """The best trial's model, fitted on the validation split's fit part."""

    def record(self) -> dict[str, Any]:
        """What the manifest, the report and ListModels carry."""
        return {
            "chosen": self.chosen,
            "validation_ndcg": round(self.validation_ndcg, 6),
            "seconds": round(self.seconds, 2),
            "stopped_by_budget": self.stopped_by_budget,
            "tuned_on": self.tuned_on,
            "trials": [
                {"params": t.params, "ndcg": round(t.ndcg, 6), "seconds": round(t.seconds, 3)}
                for t in self.trials
            ],
        }


def space(name: str, train: Interactions) -> Axes:
    """The axes searched for ``name`` on ``train`` (the model's ``search_space``)."""
    return MODELS[name].search_space(train)


# -- the search -----------------------------------------------------------------------------


def sample_users(train: Interactions, size: int, seed: int) -> Interactions:
    """Whole users, in a seeded random order, until about ``size`` interactions (all of
    ``train`` when it is no larger or ``size`` is 0). Same id maps as ``train``."""
    if size <= 0 or len(train) <= size:
        return train
    counts = np.bincount(train.user_idx, minlength=train.n_users)
    order = np.random.default_rng(seed).permutation(train.n_users)
    n = max(int(np.searchsorted(np.cumsum(counts[order]), size, side="right")), 1)
    keep = np.zeros(train.n_users, dtype=bool)
    keep[order[:n]] = True
    return train.take(keep[train.user_idx])


class Validation:
    """A validation split of (a sample of) the training data and the users scored on it."""

    def __init__(self, train: Interactions, cfg: TuneConfig) -> None:
        sample = sample_users(train, cfg.sample_interactions, cfg.seed)
        self.size = len(sample)
        self.fit_part, val = random_holdout(
            sample, cfg.validation_fraction, min_interactions=5, seed=cfg.seed
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
        engine: Any = None,
        shared: Any = None,
    ) -> None:
        self.name, self.start, self.val, self.axes, self.log = name, start, val, axes, log
        self.trials: list[Trial] = []
        self.seen: dict[tuple, float] = {}
        self.best, self.best_score, self.best_model = start, -1.0, None
        self.seconds = 0.0
        self.stopped = False
        self.engine = engine
        self.shared = shared if shared is not None else val
        """The validation split as the engine's workers get it (sent once for all trials)."""
        self.ahead: dict[tuple, tuple[float, float]] = {}
        """Scores of trials run ahead of the walk on a distributed engine, by config key."""

    def trial_cost(self) -> float:
        """What the next trial is assumed to cost: the mean so far."""
        return self.seconds / len(self.trials) if self.trials else 0.0

    def _run(self, cfg: Any) -> float:
        key = _key(cfg)
        if key in self.seen:
            return self.seen[key]
        if key in self.ahead:  # run on the engine with the rest of its axis
            score, seconds = self.ahead.pop(key)
            model = None
        elif self.engine is not None:
            ((score, seconds),) = self.engine.map(remote_trial, [(self.name, cfg)], self.shared)
            model = None
        else:
            t0 = time.perf_counter()
            model = trial_model(self.name, cfg).fit_for(self.val.fit_part, self.val.users)
            score = self.val.score(model)
            seconds = time.perf_counter() - t0
        self.seen[key] = score
        base = dataclasses.asdict(self.start)
        diff = {k: v for k, v in dataclasses.asdict(cfg).items() if base[k] != v}
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
                if self.engine is not None:
                    if time.perf_counter() + self.trial_cost() > deadline:
                        self.stopped = True
                        return
                    self.run_ahead([self.best], axis)
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

    def run_ahead(self, bases: list[Any], axis: list[dict[str, Any]]) -> None:
        """Runs on the engine, all at once, the trials the walk over ``axis`` will ask for
        if it starts from one of ``bases`` (each axis value applied to it). The walk then
        goes on as in one process, taking these scores: the same trials in the same order
        choose the same values; a trial it asks for that was not run ahead (the best changed
        mid-axis to a config whose other fields differ) runs then."""
        todo = {}
        for base in bases:
            for values in axis or [{}]:
                try:
                    cand = dataclasses.replace(base, **values)
                except (TypeError, ValueError):
                    continue
                key = _key(cand)
                if key not in self.seen and key not in self.ahead:
                    todo[key] = cand
        if todo:
            jobs = [(self.name, c) for c in todo.values()]
            for key, out in zip(
                todo, self.engine.map(remote_trial, jobs, self.shared), strict=True
            ):
                self.ahead[key] = out

    def result(self) -> ModelTuning:
        if self.best_model is None and self.trials and self.engine is not None:
            # trials ran elsewhere: the best is fitted again here (same config and seed, so
            # the same model) for a hybrid to tune its weights on
            self.best_model = trial_model(self.name, self.best).fit_for(
                self.val.fit_part, self.val.users
            )
        return ModelTuning(
            self.name,
            dataclasses.asdict(self.best),
            self.best_score,
            self.trials,
            self.seconds,
            self.stopped,
            self.val.size,
            self.best_model,
        )


def trial_model(name: str, cfg: Any) -> Recommender:
    """An unfitted model for one trial of ``cfg``, on the trials' schedule."""
    short = {k: min(v, getattr(cfg, k)) for k, v in TRIAL_SCHEDULE.get(name, {}).items()}
    return MODELS[name](dataclasses.replace(cfg, **short))


def remote_trial(job: tuple[str, Any], val: Validation) -> tuple[float, float]:
    """One trial as an engine's worker runs it: (validation NDCG, seconds)."""
    name, cfg = job
    t0 = time.perf_counter()
    model = trial_model(name, cfg).fit_for(val.fit_part, val.users)
    return val.score(model), time.perf_counter() - t0


def _key(cfg: Any) -> tuple:
    return tuple(sorted(dataclasses.asdict(cfg).items(), key=lambda kv: kv[0]))


def tune(
    train: Interactions,
    configs: dict[str, Any],
    cfg: TuneConfig,
    log: Callable[[str], None] | None = None,
    engine: Any = None,
) -> tuple[dict[str, Any], dict[str, ModelTuning], Validation]:
    """Tuned configs for the models of ``configs`` that have a search space (others are
    returned as given), what each search did, and the validation split it used.

    Each model's configured values are tried first; then the searches run in the order of
    ``configs``, each given an equal share of the budget left (only a budget that binds makes
    the share matter: a search that finishes early leaves its time to the ones after it).

    With a distributed ``engine`` (``recsys_trainer.engine``) the trials of one axis run at
    once on its workers, the validation split sent once; the walk, and so the choice, is the
    one a single process makes (``Search.run_ahead``). The budget is then checked before each
    axis rather than each trial."""
    t0 = time.perf_counter()
    val = Validation(train, cfg)
    budget = cfg.budget_seconds if cfg.budget_seconds > 0 else math.inf
    distributed = engine if engine is not None and engine.name != "local" else None
    shared = distributed.share(val) if distributed is not None else None
    searches = [
        Search(n, configs[n], val, axes, log, distributed, shared)
        for n in configs
        if (axes := space(n, train))
    ]
    if distributed is not None:  # every model's first trial at once
        starts = [(s.name, s.start) for s in searches]
        for s, out in zip(searches, distributed.map(remote_trial, starts, shared), strict=True):
            s.ahead[_key(s.start)] = out
    for s in searches:
        s.begin()
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
