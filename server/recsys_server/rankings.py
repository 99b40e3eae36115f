"""Rankings made ahead of the request: a wrapper around a hybrid that keeps the top
PRECOMPUTED_K of known users' histories. The scoring is the model's (`Hybrid.rank`); this only
decides when a stored list answers a request."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

import recsys_core as rc
from recsys_core.models import Hybrid
from recsys_core.models.hybrid import Ranking

PRECOMPUTED_K = 50
"""How long a stored list is: requests for up to this many items read its head."""


def without(r: Ranking, deny: np.ndarray) -> Ranking:
    """``r`` without the items in ``deny`` (the top of the rest, in the same order)."""
    keep = ~np.isin(r.items, deny)
    if keep.all():
        return r
    return Ranking(
        r.items[keep], r.scores[keep], r.names, r.weights, r.part_scores[:, keep], r.cold
    )


class RankingCache:
    """A `Hybrid` route with the rankings of known users' histories kept by row object."""

    def __init__(self, model: Hybrid) -> None:
        self.model = model
        # user -> (the row it was ranked for, its Ranking of PRECOMPUTED_K)
        self._ranked: dict[int, tuple] = {}
        # user -> (row, deny array, the stored ranking without it): the catalogue hands every
        # request the same deny array until availability changes, so filtering is done once.
        self._filtered: dict[int, tuple] = {}
        self.keep = 0
        """How many users' rankings there is room for (`precompute` sets it)."""

    def recommend_one(
        self, user: int, row: sp.csr_matrix, k: int, allow=None, deny=None
    ) -> rc.Recommendations:
        """The head of the list ranked for this very row, or the model's answer. A known
        user's top PRECOMPUTED_K is kept for their next request with this row (while there is
        room), so a user with new events is ranked once per event, not once per request."""
        m = self.model
        # A deny list (exclusions, unavailable items) only removes items from a stored list,
        # which still answers when k remain; an allow list needs the model.
        plain = allow is None and k <= PRECOMPUTED_K
        hit = self._ranked.get(user) if plain else None
        if hit is None or hit[0] is not row:
            keep = plain and user >= 0 and (hit is not None or len(self._ranked) < self.keep)
            if not keep:
                return m.recommend_one(user, row, k, allow, deny)
            hit = (row, m.rank(user, row, PRECOMPUTED_K))
            self._ranked[user] = hit
        ranking = hit[1]
        if deny is not None and len(deny):
            f = self._filtered.get(user)
            if f is not None and f[0] is row and f[1] is deny:
                ranking = f[2]
            else:
                ranking = without(ranking, deny)
                self._filtered[user] = (row, deny, ranking)
            if len(ranking.items) < k and len(hit[1].items) >= PRECOMPUTED_K:
                return m.recommend_one(user, row, k, allow, deny)  # the list ran short
        return m.answer(user, row, ranking.head(k))

    def precompute(self, user: int, row: sp.csr_matrix) -> None:
        """Ranks a known user's top PRECOMPUTED_K for ``row`` (their training history) now, at
        load time: the same items, scores and explanations as ranking it on the request."""
        m = self.model
        self._ranked[user] = (row, m.rank(user, row, PRECOMPUTED_K))

    def ranked_row(self, user: int) -> sp.csr_matrix | None:
        """The row the stored ranking of ``user`` is for (None: none stored)."""
        hit = self._ranked.get(user)
        return None if hit is None else hit[0]
