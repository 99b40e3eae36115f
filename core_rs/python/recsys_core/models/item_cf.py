"""Item-based collaborative filtering: "because you watched X"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Self

import numpy as np
import scipy.sparse as sp

import recsys_core as rc
from recsys_core.data import Interactions
from recsys_core.models.base import (
    Axes,
    Explanation,
    Recommender,
    check_transform,
    csr_arrays,
    csr_from,
    transform_axis,
)

POP_BETAS = (-0.3, -0.2, -0.1, 0.0, 0.1)
"""The ``pop_beta`` values the search tries, both directions: the weighting and measure already
normalise popularity in part (cosine divides by the candidate's norm, BM25 by its length), so
what is left to correct can go either way."""


@dataclass(frozen=True)
class ItemCFConfig:
    k_neighbors: int = 200
    """Neighbours kept per item."""
    weighting: Literal["none", "tfidf", "bm25"] = "bm25"
    measure: Literal["cosine", "dot"] = "dot"
    shrink: float = 0.0
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    pop_beta: float = 0.0
    """Popularity exponent on the neighbour side: the similarity from item i to candidate j is
    multiplied by users(j) ** -pop_beta (users(j): j's users in the fitted matrix) before i's
    top k_neighbors are chosen. 0: plain similarity; > 0 lowers popular neighbours, < 0
    raises them. Tuned (``search_space``)."""
    explain_top: int = 3
    """Contributing history items kept per recommendation."""
    transform: str = "linear"
    """How interaction weights are read: linear | binary | log (log(1 + w / transform_eps))."""
    transform_eps: float = 1.0
    max_items: int = 2_000_000
    """Fitted up to this many items: the neighbour lists take about n_items x k_neighbors x 8
    bytes (1M items: 19 s and 3 GB peak on this machine; 10M would need 16 GB for the lists
    alone, more with the tuner's k_neighbors = 800)."""

    def __post_init__(self) -> None:
        check_transform(self.transform, self.transform_eps)


class ItemCF(Recommender):
    name = "item_cf"

    def __init__(self, config: ItemCFConfig | None = None) -> None:
        self.config = config or ItemCFConfig()
        self.similarity_: sp.csr_matrix | None = None
        self._scorer: rc.SparseScorer | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Self:
        return cls(ItemCFConfig(**params))

    @classmethod
    def search_space(cls, train: Interactions) -> Axes:
        return [
            transform_axis(train),
            [
                {"weighting": w, "measure": m}
                for w in ("bm25", "tfidf", "none")
                for m in ("dot", "cosine")
            ],
            [{"k_neighbors": k} for k in (25, 50, 100, 200, 400, 800)],
            [{"shrink": s} for s in (0.0, 10.0, 50.0)],
            [{"bm25_k1": k1, "bm25_b": b} for k1 in (0.6, 1.2, 2.0) for b in (0.5, 0.75, 1.0)],
            [{"pop_beta": b} for b in POP_BETAS],
        ]

    def can_fit(self, n_users: int, n_items: int) -> bool:
        return n_items <= self.config.max_items

    def unfit_reason(self, data: Interactions) -> str | None:
        if self.can_fit(data.n_users, data.n_items):
            return None
        c = self.config
        gb = data.n_items * c.k_neighbors * 8 / 1e9
        return (
            f"{data.n_items} items is more than max_items={c.max_items} (its "
            f"neighbour lists: ~{gb:.1f} GB at k_neighbors={c.k_neighbors}); raise "
            "models.item_cf.max_items or leave it out"
        )

    def fit(self, train: Interactions) -> Self:
        self.n_users, self.n_items = train.n_users, train.n_items
        self.fit_matrix(train.to_csr())
        return self

    def fit_matrix(self, user_items: sp.csr_matrix) -> Self:
        c = self.config
        self.n_users, self.n_items = user_items.shape
        user_items = self.weigh(user_items)
        # The CSC view of user_items is the item-user matrix, read without a conversion.
        self.similarity_ = self.kernels.similarity_topk(
            user_items.T,
            c.k_neighbors,
            shrink=c.shrink,
            weighting=c.weighting,
            bm25_k1=c.bm25_k1,
            bm25_b=c.bm25_b,
            measure=c.measure,
            pop_beta=c.pop_beta,
        )
        self._scorer = rc.SparseScorer(self.similarity_)
        return self

    def score(self, users, history: sp.csr_matrix) -> np.ndarray:
        return np.asarray((self.weigh(history) @ self.similarity_).toarray(), dtype=np.float32)

    def recommend(self, users, history, k=10, *, exclude_seen=True, allow=None, deny=None):
        return self._scorer.recommend_batch(
            self.weigh(history), k, exclude_history=exclude_seen, allow=allow, deny=deny
        )

    def recommend_one(self, user, row, k, allow=None, deny=None) -> rc.Recommendations:
        w = self.weigh_data(row)
        return self._scorer.recommend(row.indices, w, k, allow=allow, deny=deny)

    def blend_part(self, user, row, weight):
        return (self._scorer, row.indices, self.weigh_data(row), weight)

    def similar_items(self, item: int, k: int = 10) -> rc.Recommendations:
        row = self.similarity_[item]
        order = np.lexsort((row.indices, -row.data))[:k]
        return rc.Recommendations(row.indices[order].astype(np.int32), row.data[order])

    def explain(self, user, history: sp.csr_matrix, items) -> list[Explanation]:
        items = np.asarray(items, dtype=np.int32)
        h = self.weigh(history).tocsr()
        r = self._scorer.recommend(
            h.indices,
            h.data,
            self.n_items,
            exclude_history=False,
            allow=items,
            explain=self.config.explain_top,
        )
        pos = {int(it): n for n, it in enumerate(r.items)}
        w = dict(zip(h.indices.tolist(), h.data.tolist(), strict=True))
        out = []
        for it in items:
            n = pos.get(int(it))
            src, val = (np.zeros(0, np.int32), np.zeros(0, np.float32))
            if n is not None and r.explanations is not None:
                src, val = r.explanations.for_item(n)
            out.append(
                Explanation(
                    "because_you_interacted",
                    {
                        "items": src.tolist(),
                        "contributions": val.tolist(),
                        "similarities": [
                            float(c) / w[s] if w.get(s) else 0.0
                            for s, c in zip(src.tolist(), val.tolist(), strict=True)
                        ],
                    },
                )
            )
        return out

    def evidence(self, user, row, items, part=None) -> dict[str, np.ndarray]:
        """``sources``/``contributions``/``similarities`` (items x ``explain_top``, source -1
        where there are fewer) of the history items that add most to each item's score, and
        ``scores`` (the whole history's), read from the similarity matrix in Rust
        (`SparseScorer.evidence`) without scoring every item."""
        _, idx, w, _ = part if part is not None else self.blend_part(user, row, 1.0)
        return self._scorer.evidence(idx, w, items, self.config.explain_top)

    def _arrays(self) -> dict[str, np.ndarray]:
        return csr_arrays(self.similarity_, "similarity")

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.similarity_ = csr_from(arrays, "similarity")
        self._scorer = rc.SparseScorer(self.similarity_)
