"""Hybrid: a weighted blend of the other models, weights tuned on a validation split carved
from the training data, with a cold-start fallback for users with short histories."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Self

import numpy as np
import scipy.sparse as sp

import recsys_core as rc
from recsys_core.data import Interactions
from recsys_core.metrics import ndcg_at_k
from recsys_core.models.base import Explanation, Recommender, normalize_rows
from recsys_core.splits import random_holdout, relevant_items

COLD_START_PARTS = ("popularity",)
"""The cold-start blend adds these to the tuned weights, whatever those are."""
WEIGHT_GRID = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class HybridConfig:
    weights: dict[str, float] = field(default_factory=lambda: _registry().default_weights())
    """Starting weights; replaced by the tuned ones when ``tune``."""
    tune: bool = True
    validation_fraction: float = 0.2
    validation_users: int = 2000
    tune_k: int = 10
    cold_start_threshold: int = 5
    """Users with fewer interactions get the blend with popularity: for n interactions, the
    tuned blend scaled by 1 - c and popularity added with c times its total weight, where
    c = (threshold - n) / threshold (popularity alone with no history)."""
    seed: int = 42


def _registry():
    # Imported late: the registry imports this module (the hybrid is a registered model).
    from recsys_core.models import registry

    return registry


def blend_explanation(contributions: dict[str, float], cold_start: bool) -> Explanation:
    """The "blend" explanation: each component's weighted score and its share of the sum."""
    total = sum(contributions.values())
    return Explanation(
        "blend",
        {
            "cold_start": cold_start,
            "contributions": contributions,
            "shares": {n: (v / total if total > 0 else 0.0) for n, v in contributions.items()},
        },
    )


@dataclass(frozen=True)
class Ranking:
    """One user's blended top k (`Hybrid.rank`), with what explains it: each part's normalised
    score at each item (parts x items, parts in ``names`` order)."""

    items: np.ndarray
    scores: np.ndarray
    names: list[str]
    weights: dict[str, float]
    part_scores: np.ndarray
    cold: float
    """Popularity's cold-start share (0: the weighted blend)."""

    def head(self, k: int) -> Ranking:
        """The top ``k`` (the top k of a ranking is the head of a longer one)."""
        if len(self.items) <= k:
            return self
        return Ranking(
            self.items[:k],
            self.scores[:k],
            self.names,
            self.weights,
            self.part_scores[:, :k],
            self.cold,
        )


class Hybrid(Recommender):
    name = "hybrid"

    def __init__(
        self,
        config: HybridConfig | None = None,
        components: dict[str, Recommender] | None = None,
        *,
        fit_components: bool = True,
    ) -> None:
        """``fit_components=False``: the components are fitted by the caller on the same data
        before ``fit`` (the trainer fits each model once and shares it)."""
        self.config = config or HybridConfig()
        self.fit_components = fit_components
        self.weights_ = dict(self.config.weights)
        self.components = components or {}
        self._picks = not components  # chooses its own components, on every fit
        self.validation_ndcg_: float | None = None
        # per thread: the last `answer` (row, user, ranking), so explaining it scores nothing
        self._memo = threading.local()

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Self:
        # The tuned weights are restored from the arrays, not from the config.
        return cls(HybridConfig(**{k: v for k, v in params.items() if k != "tuned_weights"}))

    def params(self) -> dict[str, Any]:
        return asdict(self.config) | {"tuned_weights": self.weights_}

    @staticmethod
    def default_components(**configs) -> dict[str, Recommender]:
        """One unfitted model per registered component; ``configs``: name -> its config."""
        reg = _registry()
        return {n: reg.REGISTRY[n].model(configs.get(n)) for n in reg.COMPONENTS}

    def fit(self, train: Interactions) -> Self:
        """Fits the components (unless ``fit_components`` is off) and tunes the weights."""
        if self._picks:
            # a component that cannot fit this data (content without a catalogue) is left out
            self.components = {
                n: m for n, m in self.default_components().items() if m.unfit_reason(train) is None
            }
        if self.config.tune:
            self.weights_ = self._tune(train)
        if self.fit_components:
            for m in self.components.values():
                m.fit(train)
        self.n_users, self.n_items = train.n_users, train.n_items
        return self

    prefit: tuple[np.ndarray, sp.csr_matrix, list, dict[str, Recommender]] | None = None
    """(validation users, their histories, their held-out items, components fitted on the rest)
    from the hyperparameter search (``recsys_trainer.tuning``): the weights are then tuned on
    those instead of refitting every component on a split of its own."""

    def _tune(self, train: Interactions) -> dict[str, float]:
        c = self.config
        if self.prefit is not None:
            users, history, rel, fresh = self.prefit
            fresh = {n: fresh[n] for n in self.components}
        else:
            fit_part, val_part = random_holdout(
                train, c.validation_fraction, min_interactions=c.cold_start_threshold, seed=c.seed
            )
            fresh = {name: type(m)(m.config) for name, m in self.components.items()}
            for m in fresh.values():
                m.fit(fit_part)
            relevant = relevant_items(val_part)
            users = np.flatnonzero([len(r) > 0 for r in relevant])
            cap = min(c.validation_users, max(100, int(2e7 // max(train.n_items, 1))))
            if len(users) > cap:
                users = np.sort(np.random.default_rng(c.seed).choice(users, cap, replace=False))
            history = fit_part.to_csr()[users]
            rel = [relevant[u] for u in users]
        parts = {name: normalize_rows(m.score(users, history)) for name, m in fresh.items()}

        def quality(w: dict[str, float]) -> float:
            blend = sum(w[n] * parts[n] for n in parts if w.get(n, 0) > 0)
            if isinstance(blend, int):
                return 0.0
            top = rc.select_topk(blend, c.tune_k, exclude=history)
            recs = (
                top.items.reshape(len(users), -1)
                if len(top.items) == len(users) * c.tune_k
                else [top.user(u).items for u in range(len(users))]
            )
            return ndcg_at_k(recs, rel, c.tune_k)

        w = {n: float(self.weights_.get(n, 0.0)) for n in parts}
        best = quality(w)
        for _ in range(2):  # coordinate ascent, two sweeps
            for n in parts:
                for g in WEIGHT_GRID:
                    trial = w | {n: g}
                    q = quality(trial)
                    if q > best + 1e-9:
                        best, w = q, trial
        self.validation_ndcg_ = best
        return w

    def _component_scores(self, users, history: sp.csr_matrix) -> dict[str, np.ndarray]:
        return {
            n: normalize_rows(m.score(users, history))
            for n, m in self.components.items()
            if self.weights_.get(n, 0.0) > 0 or n in COLD_START_PARTS
        }

    def score(self, users, history: sp.csr_matrix) -> np.ndarray:
        parts = self._component_scores(users, history)
        blend = np.zeros((len(users), self.n_items), np.float32)
        cold = self.cold_share(history)
        for c in np.unique(cold):  # the rows sharing one set of weights
            rows = cold == c
            weights = self.weights_for(float(c))
            for n in sorted(weights):  # a fixed order: sums are reproducible to the bit
                if weights[n] > 0 and n in parts:
                    blend[rows] += np.float32(weights[n]) * parts[n][rows]
        return blend

    def weights_for(self, cold: float) -> dict[str, float]:
        """The blend's weights for a user with popularity share ``cold`` (``cold_share``): the
        tuned weights, and below the threshold the personal ones scaled by 1 - cold with
        popularity given cold times their total."""
        if cold <= 0:
            return dict(self.weights_)
        personal = {n: w for n, w in self.weights_.items() if n not in COLD_START_PARTS}
        total = sum(personal.values()) or 1.0
        out = {n: (1 - cold) * w for n, w in personal.items()}
        out["popularity"] = (1 - cold) * self.weights_.get("popularity", 0.0) + cold * total
        return out

    def cold_of(self, n: int) -> float:
        """Popularity's share for a user with ``n`` interactions: (threshold - n) / threshold
        below the threshold, 0 from it on."""
        t = self.config.cold_start_threshold
        return (t - n) / max(t, 1) if n < t else 0.0

    def cold_share(self, history: sp.csr_matrix) -> np.ndarray:
        """``cold_of`` for each row of ``history``."""
        counts = np.diff(history.tocsr().indptr)
        return np.array([self.cold_of(int(n)) for n in counts], np.float32)

    def is_cold(self, history: sp.csr_matrix) -> bool:
        return history.nnz < self.config.cold_start_threshold

    def with_weights(self, weights: dict[str, float]) -> Hybrid:
        """The same hybrid (sharing the fitted components) with some weights replaced."""
        h = Hybrid(self.config, components=self.components, fit_components=False)
        h.weights_ = self.weights_ | {k: float(v) for k, v in weights.items()}
        h.n_users, h.n_items = self.n_users, self.n_items
        return h

    # -- one user: the whole blend in one recsys_core.blend_topk call ---------------------------

    def recommend_one(self, user, row, k, allow=None, deny=None) -> rc.Recommendations:
        """The same items as ``recommend`` on the 1-row history; the parts' scores at them are
        kept (per thread) for ``explain`` and ``blend_parts`` on the same row."""
        return self.answer(user, row, self.rank(user, row, k, allow, deny))

    def rank(self, user: int, row: sp.csr_matrix, k: int, allow=None, deny=None) -> Ranking:
        """The blend's top k for one user, ``Hybrid.score`` for one row: each component's part
        (its ``blend_part``, which applies its own weight transform) normalised to a maximum
        of 1, weighted, summed; the blend with popularity below the threshold."""
        cold = self.cold_of(len(row.indices))
        weights = {n: w for n, w in self.weights_for(cold).items() if w > 0}  # as `explain`
        # sorted: `score`'s summation order; a component not loaded counts 0, as in `score`
        names = sorted(n for n in weights if n in self.components)
        parts = []
        for n in names:
            m = self.components[n]
            parts.append(m.blend_part(user, row, float(weights[n])))
        b = rc.blend_topk(parts, self.n_items, k, exclude=row.indices, allow=allow, deny=deny)
        # kept for `evidence` on this row (a user-CF part of a folded-in history is costly)
        self._memo.parts = (row, user, dict(zip(names, parts, strict=True)))
        return Ranking(b.items, b.scores, names, weights, b.part_scores, cold)

    def answer(self, user: int, row: sp.csr_matrix, ranking: Ranking) -> rc.Recommendations:
        """``ranking``'s items for this user and row (one `rank` made, or the head of one made
        earlier for the same row), kept for explaining them."""
        # Holding ``row`` keeps its id from being reused by another object.
        self._memo.last = (row, user, ranking)
        return rc.Recommendations(ranking.items, ranking.scores, None)

    def blend_parts(
        self, user, history: sp.csr_matrix, items
    ) -> tuple[list[str], np.ndarray, np.ndarray, bool] | None:
        """(part names, contributions, shares, cold start) at ``items``, parts x items, from
        the ranking last answered on this thread for this row; None if there is none or it
        lacks an item."""
        memo = getattr(self._memo, "last", None)
        if memo is None or memo[0] is not history or memo[1] != user:
            return None
        r: Ranking = memo[2]
        part_scores = r.part_scores
        if items is not r.items and not np.array_equal(items, r.items):
            pos = {int(j): n for n, j in enumerate(r.items)}
            if any(int(j) not in pos for j in np.asarray(items)):
                return None
            part_scores = part_scores[:, [pos[int(j)] for j in np.asarray(items)]]
        w = np.array([r.weights[n] for n in r.names], np.float64)
        contrib = w[:, None] * part_scores.astype(np.float64)
        total = contrib.sum(axis=0)  # blend_explanation's shares, every item at once
        return r.names, contrib, contrib / np.where(total > 0, total, np.inf), r.cold > 0

    def evidence(self, user, history: sp.csr_matrix, items, names) -> dict[str, dict]:
        """Each named component's ``evidence`` at ``items`` (name -> its arrays; components
        without any are left out), from the parts the last ``rank`` on this thread computed
        for this row when there are any, else from fresh ``blend_part``s."""
        memo = getattr(self._memo, "parts", None)
        kept = memo[2] if memo is not None and memo[0] is history and memo[1] == user else {}
        out = {}
        for n in names:
            m = self.components.get(n)
            if m is None:
                continue
            part = kept.get(n)
            if part is None and type(m).evidence is not Recommender.evidence:
                part = m.blend_part(user, history, 1.0)
            got = m.evidence(user, history, items, part)
            if got is not None:
                out[n] = got
        return out

    def explain(self, user, history: sp.csr_matrix, items) -> list[Explanation]:
        got = self.blend_parts(user, history, items)
        if got is not None:
            names, contrib, shares, cold_start = got
            return [
                Explanation(
                    "blend",
                    {
                        "cold_start": cold_start,
                        "contributions": dict(zip(names, c, strict=True)),
                        "shares": dict(zip(names, sh, strict=True)),
                    },
                )
                for c, sh in zip(contrib.T.tolist(), shares.T.tolist(), strict=True)
            ]
        users = np.array([user])
        parts = self._component_scores(users, history)
        items = np.asarray(items, dtype=np.int64)
        cold = float(self.cold_share(history)[0])
        weights = self.weights_for(cold)
        return [
            blend_explanation(
                {n: weights[n] * float(s[0, j]) for n, s in parts.items() if weights.get(n, 0) > 0},
                cold > 0,
            )
            for j in items
        ]

    def _arrays(self) -> dict[str, np.ndarray]:
        names = sorted(self.weights_)
        return {
            "weight_names": np.array(names),
            "weights": np.array([self.weights_[n] for n in names], np.float64),
        }

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.weights_ = dict(
            zip(arrays["weight_names"].tolist(), arrays["weights"].tolist(), strict=True)
        )
