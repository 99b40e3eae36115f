"""Serving-side speedups for the trainer's models, applied to loaded instances (the trainer's
code is not changed). Each one computes what the model itself computes, only faster for the
one-user calls a server makes:

* `ServingHybrid` is a `Hybrid` that scores a one-user history without scipy's per-call
  overhead (the item-CF and user-CF parts are a weighted sum of a few CSR rows: gathered and
  summed with numpy instead of a sparse matrix product, same values up to float rounding), and
  keeps the component scores of the last history it scored, so ``recommend`` followed by
  ``explain`` on the same history scores once.
* `OneUser` ranks one user through recsys_core's single-user calls (``SparseScorer.recommend``,
  ``DenseScorer.recommend`` with one thread), which run on the calling thread. The models'
  ``recommend`` uses the batch calls, which always hand the work to a rayon pool thread, even
  for one row: a thread wake-up per request, and milliseconds of it when the CPU is busy.
  Same items in the same order as ``model.recommend`` on the 1-row history.
"""

from __future__ import annotations

import threading

import numpy as np
import scipy.sparse as sp

import recsys_core as rc
from recsys_trainer.models import SVD, Explanation, Hybrid, ItemCF, Popularity, Recommender, UserCF


def mix_rows(m: sp.csr_matrix, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``sum_r weights[r] * m[rows[r]]`` as a dense float32 row of shape (1, n_cols)."""
    starts = m.indptr[rows]
    lens = m.indptr[np.asarray(rows) + 1] - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros((1, m.shape[1]), np.float32)
    # Positions of every gathered entry: each row's start, then consecutive offsets.
    first = np.cumsum(lens) - lens
    pos = np.repeat(starts - first, lens) + np.arange(total)
    vals = m.data[pos] * np.repeat(np.asarray(weights, np.float32), lens)
    out = np.bincount(m.indices[pos], vals, minlength=m.shape[1])
    return out.astype(np.float32)[None, :]


PRECOMPUTED_K = 50
"""How long a list `ServingHybrid.precompute` keeps: requests for up to this many items."""


class ServingHybrid(Hybrid):
    """A `Hybrid` over already-loaded components, with a one-entry cache of component scores
    (per thread) so that explaining what was just recommended costs no second scoring pass."""

    def __init__(self, base: Hybrid, weights: dict[str, float] | None = None) -> None:
        super().__init__(base.config, components=base.components)
        self.weights_ = dict(base.weights_)
        if weights:
            self.weights_.update({k: float(v) for k, v in weights.items()})
        self.n_users, self.n_items = base.n_users, base.n_items
        self._memo = threading.local()
        # user -> (the row it was ranked for, then what `_rank` returns); see `precompute`
        self._ranked: dict[int, tuple] = {}
        self.keep = 0
        """How many users' rankings requests may add (`precompute` sets it)."""

    def _component_scores(self, users, history: sp.csr_matrix) -> dict[str, np.ndarray]:
        users = np.asarray(users)
        hit = getattr(self._memo, "last", None)
        if hit is not None and hit[0] is history and np.array_equal(hit[1], users):
            return hit[2]
        if history.shape[0] != 1:
            return super()._component_scores(users, history)
        user = int(users[0])
        parts = {}
        for n, m in self.components.items():
            if self.weights_.get(n, 0.0) > 0 or n in ("popularity", "item_cf"):
                if isinstance(m, Popularity):
                    parts[n] = self._pop(m)[1]
                else:
                    parts[n] = _normalize_row(self._one_row(m, user, history))
        # Holding ``history`` keeps its id from being reused by another object.
        self._memo.last = (history, users.copy(), parts)
        return parts

    def score(self, users, history: sp.csr_matrix) -> np.ndarray:
        if history.shape[0] != 1:
            return super().score(users, history)
        parts = self._component_scores(users, history)
        cold = float(self.cold_share(history)[0])
        if cold > 0:  # Hybrid.score's cold-start fallback, for one row
            c = np.float32(cold)
            return c * parts["popularity"] + (1 - c) * parts["item_cf"]
        blend = np.zeros((1, self.n_items), np.float32)
        for n, s in sorted(parts.items()):  # Hybrid.score's summation order
            w = self.weights_.get(n, 0.0)
            if w > 0:
                blend += w * s
        return blend

    def recommend_one(
        self, user: int, row: sp.csr_matrix, k: int, allow=None, deny=None
    ) -> rc.Recommendations | None:
        """The whole blend in one Rust call (``recsys_core.blend_topk``), or the head of the
        list `precompute` ranked for this very row; the parts' scores at the chosen items are
        kept for `explain`. None when a component is of a kind the kernel does not take (then
        the generic path runs)."""
        plain = allow is None and deny is None and k <= PRECOMPUTED_K
        hit = self._ranked.get(user) if plain else None
        if hit is None or hit[0] is not row:
            # Ranked now; a known user's top PRECOMPUTED_K is kept for the next request with
            # this history (while there is room), so a user with new events is ranked once.
            keep = plain and user >= 0 and (hit is not None or len(self._ranked) < self.keep)
            ranked = self._rank(user, row, PRECOMPUTED_K if keep else k, allow, deny)
            if ranked is None:
                return None
            hit = (row, *ranked)
            if keep:
                self._ranked[user] = hit
        _, items, scores, names, weights, part_scores, cold = hit
        if len(items) > k:
            items, scores, part_scores = items[:k], scores[:k], part_scores[:, :k]
        # each part's normalised score at each chosen item, kept for `blend_parts`
        self._memo.blend = (row, user, items, names, weights, part_scores, cold)
        return rc.Recommendations(items, scores, None)

    def precompute(self, user: int, row: sp.csr_matrix) -> bool:
        """Ranks a known user's top PRECOMPUTED_K for ``row`` (their training history) now, at
        load time: their requests with that history and no allow/deny filters then read the
        head of this list instead of scoring the catalogue (the same items, scores and
        explanations: the top k of a ranking is the head of its top PRECOMPUTED_K). A live
        event or session items make another history, which is ranked on the request."""
        ranked = self._rank(user, row, PRECOMPUTED_K, None, None)
        if ranked is not None:
            self._ranked[user] = (row, *ranked)
        return ranked is not None

    def _rank(self, user: int, row: sp.csr_matrix, k: int, allow, deny):
        """(items, scores, part names, weights, part scores, cold share) of the blend's top k,
        or None (a component the kernel does not take)."""
        h = row.tocsr()
        t = self.config.cold_start_threshold
        nnz = len(h.indices)
        cold = (t - nnz) / max(t, 1) if nnz < t else 0.0  # Hybrid.cold_share for one row
        if cold > 0:
            weights = {"popularity": cold, "item_cf": 1 - cold}
        else:
            weights = {n: w for n, w in self.weights_.items() if w > 0}
        names, parts = sorted(weights), []  # Hybrid.score's summation order
        for n in names:
            m, w = self.components.get(n), float(weights[n])
            if isinstance(m, ItemCF) and m.similarity_ is not None:
                hw = m.weigh(h)  # the model's weight transform
                parts.append((m._scorer, hw.indices, hw.data, w))
            elif isinstance(m, UserCF) and m.user_items_ is not None:
                nb, sims = m.neighbours_of(user, h)
                parts.append((m._scorer, nb, sims, w))
            elif isinstance(m, SVD):
                # SVD.user_vectors for one user: the trained vector, else folded in
                vec = m.user_factors_[user] if 0 <= user < m.n_users else m.fold_in(h)[0]
                parts.append((m._scorer, vec, w))
            elif isinstance(m, Popularity):
                parts.append((self._pop(m)[0], w))
            else:
                return None
        b = rc.blend_topk(parts, self.n_items, k, exclude=h.indices, allow=allow, deny=deny)
        return b.items, b.scores, names, weights, b.part_scores, cold

    def blend_parts(
        self, user, history: sp.csr_matrix, items
    ) -> tuple[list[str], np.ndarray, np.ndarray, bool] | None:
        """(part names, contributions, shares, cold start) at ``items``, parts x items, from
        the `recommend_one` call just made for this history; None if there was none."""
        memo = getattr(self._memo, "blend", None)
        if memo is None or memo[0] is not history or memo[1] != user:
            return None
        _, _, chosen, names, weights, part_scores, cold = memo
        if items is not chosen and not np.array_equal(items, chosen):
            # explaining other items than those just ranked
            pos = {int(j): r for r, j in enumerate(chosen)}
            if any(int(j) not in pos for j in np.asarray(items)):
                return None
            part_scores = part_scores[:, [pos[int(j)] for j in np.asarray(items)]]
        w = np.array([weights[n] for n in names], np.float64)
        contrib = w[:, None] * part_scores.astype(np.float64)
        # blend_explanation's shares, for every item at once
        total = contrib.sum(axis=0)
        return names, contrib, contrib / np.where(total > 0, total, np.inf), cold > 0

    def explain(self, user, history: sp.csr_matrix, items) -> list[Explanation]:
        got = self.blend_parts(user, history, items)
        if got is None:
            return super().explain(user, history, items)
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

    def _pop(self, m: Popularity) -> tuple[np.ndarray, np.ndarray]:
        """The popularity scores as float32 (a blend part) and as a normalised 1-row matrix
        (a component score), computed once per model."""
        cached = getattr(self, "_pop_cache", None)
        if cached is None or cached[0] is not m.scores_:
            raw = m.scores_.astype(np.float32)
            row = _normalize_row(raw[None, :].copy())
            row.setflags(write=False)
            cached = self._pop_cache = (m.scores_, raw, row)
        return cached[1], cached[2]

    @staticmethod
    def _one_row(m: Recommender, user: int, history: sp.csr_matrix) -> np.ndarray:
        if isinstance(m, ItemCF) and m.similarity_ is not None:
            h = m.weigh(history.tocsr())
            return mix_rows(m.similarity_, h.indices, h.data)
        if isinstance(m, UserCF) and m.user_items_ is not None:
            nb, sims = m.neighbours_of(user, history)
            return mix_rows(m.user_items_, nb, sims)
        return m.score(np.array([user]), history)


_ONE = np.ones(1, np.float32)


def _normalize_row(s: np.ndarray) -> np.ndarray:
    """``normalize_rows`` for one fresh row, in place (same float32 division)."""
    peak = max(float(s.max()), -float(s.min())) if s.size else 0.0
    if peak != 0.0:
        np.divide(s, np.float32(peak), out=s)
    return s


class OneUser:
    """``model.recommend`` for a single user (see the module doc)."""

    def __init__(self, model: Recommender) -> None:
        self.model = model

    def __call__(
        self, user: int, row: sp.csr_matrix, k: int, allow=None, deny=None
    ) -> rc.Recommendations:
        m = self.model
        seen = row.indices
        if isinstance(m, ItemCF) and m.similarity_ is not None:
            return m.recommend_history(row.indices, row.data, k, allow=allow, deny=deny)
        if isinstance(m, SVD):
            vec = m.user_vectors(np.array([user]), row)[0]
            return m._scorer.recommend(vec, k, exclude=seen, allow=allow, deny=deny, num_threads=1)
        if isinstance(m, UserCF) and m.user_items_ is not None:
            nb, sims = m.neighbours_of(user, row)
            return m._scorer.recommend(
                nb, sims, k, exclude=seen, allow=allow, deny=deny, exclude_history=False
            )
        if isinstance(m, Popularity) and m.scores_.size:
            return m._scorer.recommend(_ONE, k, exclude=seen, allow=allow, deny=deny, num_threads=1)
        if isinstance(m, ServingHybrid):
            fast = m.recommend_one(user, row, k, allow=allow, deny=deny)
            if fast is not None:
                return fast
        if isinstance(m, Hybrid):
            scores = m.score(np.array([user]), row)[0]
            return rc.DenseScorer(scores[:, None]).recommend(
                _ONE, k, exclude=seen, allow=allow, deny=deny, num_threads=1
            )
        return m.recommend(np.array([user]), row, k, allow=allow, deny=deny).user(0)


def accelerate(models: dict[str, Recommender]) -> dict[str, Recommender]:
    """The loaded models with the speedups applied (a hybrid shares the same components)."""
    out = dict(models)
    hybrid = out.get("hybrid")
    if isinstance(hybrid, Hybrid):
        out["hybrid"] = ServingHybrid(hybrid)
    return out
