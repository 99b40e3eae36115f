"""User-based collaborative filtering: "users like you chose this"."""

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


@dataclass(frozen=True)
class UserCFConfig:
    k_neighbors: int = 200
    """More neighbours than the textbook 50: with thousands of users and long-tailed activity,
    50 leaves most items unscored (docs/quality.md has the sweep)."""
    weighting: Literal["none", "tfidf", "bm25"] = "bm25"
    """BM25 damps heavy users and summed event weights (a purchase path counts 15x a view)."""
    shrink: float = 0.0
    explain_top: int = 50
    """Neighbours inspected when explaining a recommendation."""
    transform: str = "linear"
    """How interaction weights are read: linear | binary | log (log(1 + w / transform_eps))."""
    transform_eps: float = 1.0

    def __post_init__(self) -> None:
        check_transform(self.transform, self.transform_eps)


class UserCF(Recommender):
    name = "user_cf"

    def __init__(self, config: UserCFConfig | None = None) -> None:
        self.config = config or UserCFConfig()
        self.user_items_: sp.csr_matrix | None = None
        self.neighbours_: sp.csr_matrix | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Self:
        return cls(UserCFConfig(**params))

    @classmethod
    def search_space(cls, train: Interactions) -> Axes:
        return [
            transform_axis(train),
            [{"weighting": w} for w in ("bm25", "tfidf", "none")],
            [{"k_neighbors": k} for k in (25, 50, 100, 200, 400)],
            [{"shrink": s} for s in (0.0, 10.0, 50.0)],
        ]

    def fit(self, train: Interactions) -> Self:
        return self.fit_matrix(train.to_csr())

    def fit_for(self, train: Interactions, users: np.ndarray) -> Self:
        """Neighbours of ``users`` only (the others' rows stay empty): the neighbour search
        is the fit's whole cost, and a tuning trial scores a sample of the users."""
        return self.fit_matrix(train.to_csr(), only=users)

    def fit_matrix(self, user_items: sp.csr_matrix, only: np.ndarray | None = None) -> Self:
        c = self.config
        self.n_users, self.n_items = user_items.shape
        self.user_items_ = sp.csr_matrix(self.weigh(user_items), dtype=np.float32)
        kw = {} if only is None else {"only_rows": np.asarray(only, np.int64)}
        self.neighbours_ = self.kernels.similarity_topk(
            self.user_items_, c.k_neighbors, shrink=c.shrink, weighting=c.weighting, **kw
        )
        self._prepare()
        return self

    def _prepare(self) -> None:
        # Scoring walks the neighbours' rows of the user-item matrix; folding in a new
        # history compares its weighted row with the weighted item-user matrix, weighted
        # exactly as the stored neighbours were (docs/core.md gives the formulas).
        x = self.user_items_
        self._scorer = rc.SparseScorer(x)
        n = max(x.shape[0], 1)
        df = np.diff(sp.csc_matrix(x > 0).indptr).astype(np.float64)
        lens = np.asarray(x.sum(axis=1)).ravel().astype(np.float64)
        self._avg_len = float(lens.mean()) if len(lens) else 0.0
        if self.config.weighting == "tfidf":
            self._idf = np.where(df > 0, np.log(n / np.maximum(df, 1)), 0.0)
        else:
            self._idf = np.log(n) - np.log1p(df)
        weighted = x.astype(np.float64)
        weighted.data = self._weigh_all(weighted)
        self._item_users = weighted.T.tocsr()
        self._norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1))).ravel()

    def _weigh(self, items: np.ndarray, w: np.ndarray) -> np.ndarray:
        """One user's weights under the configured weighting (float64)."""
        w = np.asarray(w, dtype=np.float64)
        return self._weighted(items, w, np.full(len(w), w.sum()))

    def _weigh_all(self, m: sp.csr_matrix) -> np.ndarray:
        """Every stored weight of ``m`` (users x items, float64) under the weighting."""
        lens = np.repeat(np.asarray(m.sum(axis=1)).ravel(), np.diff(m.indptr))
        return self._weighted(m.indices, m.data, lens)

    def _weighted(self, items: np.ndarray, w: np.ndarray, row_len: np.ndarray) -> np.ndarray:
        if self.config.weighting == "tfidf":
            return w * self._idf[items]
        if self.config.weighting == "bm25":
            k1, b = 1.2, 0.75
            length = (1 - b) + b * row_len / self._avg_len if self._avg_len else np.ones_like(w)
            denom = k1 * length + w
            tf = np.divide(w * (k1 + 1), denom, out=np.zeros_like(w), where=denom != 0)
            return tf * self._idf[items]
        return w

    def neighbours_of(self, user: int, history: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """(user indices, cosine similarities) of the k nearest users. A user seen in training
        with an unchanged history uses the stored neighbours; anyone else is folded in."""
        idx, w = history.indices, self.weigh_data(history)
        if 0 <= user < self.n_users and _same_row(self.user_items_, user, idx):
            # Read straight from the arrays: scipy row indexing costs more than the lookup.
            nb = self.neighbours_
            a, b = nb.indptr[user], nb.indptr[user + 1]
            return nb.indices[a:b].astype(np.int32), nb.data[a:b].astype(np.float32)
        hw = self._weigh(idx, w)
        dots = np.asarray(self._item_users[idx].T @ hw).ravel()
        if 0 <= user < self.n_users:
            dots[user] = 0.0
        hn = float(np.sqrt((hw**2).sum()))
        sims = dots / (hn * self._norms + self.config.shrink).clip(min=1e-12)
        k = min(self.config.k_neighbors, int((sims > 0).sum()))
        if k == 0:
            return np.zeros(0, np.int32), np.zeros(0, np.float32)
        top = np.argpartition(-sims, k - 1)[:k]
        return top.astype(np.int32), sims[top].astype(np.float32)

    def score(self, users, history: sp.csr_matrix) -> np.ndarray:
        rows = [self.neighbours_of(int(u), history[n]) for n, u in enumerate(users)]
        nb = _rows_to_csr(rows, self.n_users)
        return np.asarray((nb @ self.user_items_).toarray(), dtype=np.float32)

    def recommend(self, users, history, k=10, *, exclude_seen=True, allow=None, deny=None):
        users = np.asarray(users)
        if ((users >= 0) & (users < self.n_users)).all() and history.shape[0] == len(users):
            nb = self.neighbours_[users.astype(np.int64)]
            if _same_rows(self.user_items_, users.astype(np.int64), history):
                return self._scorer.recommend_batch(
                    nb,
                    k,
                    exclude=history if exclude_seen else None,
                    exclude_history=False,
                    allow=allow,
                    deny=deny,
                )
        return super().recommend(
            users, history, k, exclude_seen=exclude_seen, allow=allow, deny=deny
        )

    def recommend_one(self, user, row, k, allow=None, deny=None) -> rc.Recommendations:
        nb, sims = self.neighbours_of(user, row)
        return self._scorer.recommend(
            nb, sims, k, exclude=row.indices, allow=allow, deny=deny, exclude_history=False
        )

    def blend_part(self, user, row, weight):
        nb, sims = self.neighbours_of(user, row)
        return (self._scorer, nb, sims, weight)

    def explain(self, user, history: sp.csr_matrix, items) -> list[Explanation]:
        nb, sims = self.neighbours_of(int(user), history)
        order = np.argsort(-sims)[: self.config.explain_top]
        nb, sims = nb[order], sims[order]
        chose = self.user_items_[nb][:, np.asarray(items, dtype=np.int64)].toarray() > 0
        out = []
        for col in range(len(items)):
            s = sims[chose[:, col]]
            out.append(
                Explanation(
                    "similar_users",
                    {
                        "n_similar_users": int(chose[:, col].sum()),
                        "n_neighbours": len(nb),
                        "mean_similarity": float(s.mean()) if len(s) else 0.0,
                        "max_similarity": float(s.max()) if len(s) else 0.0,
                        "users": nb[chose[:, col]][:5].tolist(),
                    },
                )
            )
        return out

    def evidence(self, user, row, items, part=None) -> dict[str, np.ndarray]:
        """Of the ``explain_top`` nearest neighbours (``neighbours``, one number), how many
        chose each item (``counts``) and their mean and max similarity: one allow-masked scan
        of those neighbours' rows, each chooser one contribution."""
        _, nb, sims, _ = part if part is not None else self.blend_part(user, row, 1.0)
        items = np.asarray(items, np.int32)
        k = len(items)
        top = self.config.explain_top
        if len(nb) > top:
            keep = np.argpartition(-sims, top - 1)[:top]
            nb, sims = nb[keep], sims[keep]
        out = {
            "neighbours": np.int64(len(nb)),
            "counts": np.zeros(k, np.int64),
            "mean_similarity": np.zeros(k, np.float64),
            "max_similarity": np.zeros(k, np.float64),
        }
        if k == 0 or len(nb) == 0:
            return out
        ones = np.ones(len(nb), np.float32)
        r = self._scorer.recommend(nb, ones, k, exclude_history=False, allow=items, explain=len(nb))
        order = np.argsort(r.items, kind="stable")
        at = order[np.searchsorted(r.items[order], items)]
        ex = r.explanations
        counts = np.diff(ex.indptr)  # per position in r
        nb_order = np.argsort(nb, kind="stable")
        s = np.asarray(sims, np.float64)[nb_order][
            np.searchsorted(np.asarray(nb)[nb_order], ex.sources)
        ]
        owner = np.repeat(np.arange(len(counts)), counts)
        sums = np.bincount(owner, weights=s, minlength=len(counts))
        peak = np.zeros(len(counts))
        np.maximum.at(peak, owner, s)
        c = counts[at]
        out["counts"] = c.astype(np.int64)
        out["mean_similarity"] = np.divide(sums[at], c, out=np.zeros(k), where=c > 0)
        out["max_similarity"] = peak[at]
        return out

    def _arrays(self) -> dict[str, np.ndarray]:
        return csr_arrays(self.user_items_, "user_items") | csr_arrays(
            self.neighbours_, "neighbours"
        )

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_items_ = csr_from(arrays, "user_items")
        self.neighbours_ = csr_from(arrays, "neighbours")
        self._prepare()


def _same_row(m: sp.csr_matrix, r: int, idx: np.ndarray) -> bool:
    a, b = m.indptr[r], m.indptr[r + 1]
    return (b - a) == len(idx) and np.array_equal(m.indices[a:b], np.sort(idx))


def _same_rows(m: sp.csr_matrix, users: np.ndarray, history: sp.csr_matrix) -> bool:
    """`_same_row` for every row of ``history`` (user ``users[n]``'s is row n) at once."""
    h = sp.csr_matrix(history)
    mine = m[users]
    if not np.array_equal(np.diff(mine.indptr), np.diff(h.indptr)):
        return False
    if not h.has_sorted_indices:
        h = h.copy()
        h.sort_indices()
    return np.array_equal(mine.indices, h.indices)


def _rows_to_csr(rows: list[tuple[np.ndarray, np.ndarray]], n_cols: int) -> sp.csr_matrix:
    indptr = np.zeros(len(rows) + 1, np.int64)
    indptr[1:] = np.cumsum([len(r[0]) for r in rows])
    idx = np.concatenate([r[0] for r in rows]) if rows else np.zeros(0, np.int32)
    val = np.concatenate([r[1] for r in rows]) if rows else np.zeros(0, np.float32)
    return sp.csr_matrix((val, idx, indptr), shape=(len(rows), n_cols))
