"""Matrix factorisation for implicit feedback: weighted ALS (Hu, Koren and Volinsky).

Why weighted ALS rather than PureSVD or a biased rating model: behaviour logs are implicit
(a view is weak evidence of interest, a missing entry is not a dislike), and weighted ALS models
exactly that, a confidence 1 + alpha * w on observed entries and a weak zero everywhere else.
The solver is the Rust conjugate-gradient half-step (``recsys_core.als_half_step``).

Fold-in: a history the model was not trained on (an unknown user's session, or a known user's
training row plus live events) gets its factor row solved against the fixed item factors,
the user half-step's normal equations for that row (``recsys_core.als_solve_row``). A known
user whose history is still their training row keeps the trained vector, so offline
evaluation and serving agree; the model recognises that row by a per-user checksum kept
since training (artifacts without one keep every known user's trained vector).

Scoring: exact (every item vector, f16) or, from ``compressed_min_items`` items, compressed
codes with an exact rerank (`recsys_core.models.compressed`); chosen at fit by ``scoring``,
stored in the artifact and followed on load.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import scipy.sparse as sp

import recsys_core as rc
from recsys_core.data import Interactions
from recsys_core.models.base import (
    Axes,
    Explanation,
    Recommender,
    check_transform,
    transform_axis,
    transform_values,
)
from recsys_core.models.compressed import COMPRESSED_MIN_ITEMS, Index, check_scoring, chosen

FOLD_IN_STEPS = 50
"""CG steps at most per fold-in; the solve stops earlier, at a residual 1e-5 of the start's
(a few tens of µs at 100 factors)."""


@dataclass(frozen=True)
class SVDConfig:
    n_factors: int = 100
    regularization: float = 30.0
    """Strong: tuned on ML-100k and the synthetic data, the good region is reg 20-50 with
    alpha 2-10 whatever the number of factors (docs/quality.md)."""
    alpha: float = 2.0
    """Confidence of an observed entry is 1 + alpha * weight."""
    reg_exponent: float = 0.0
    """Frequency-scaled regularisation (Zhou et al. 2008; Rendle et al. 2021, "Revisiting the
    Performance of iALS on Item Recommendation Benchmarks"): a row with n observed entries
    (a user's history length in the user half-step, an item's count in the item half-step,
    and the history length again at fold-in) is regularised by
    ``regularization * max(n, 1) ** reg_exponent``. 0 is one λ for every row; 1 makes λ a
    per-observation penalty, so busy rows are shrunk as hard, relative to their data, as
    sparse ones. Why the plain count and not Rendle et al.'s (n + α₀·N)^ν, N the number of
    columns and α₀ the weight of an unobserved entry: here an unobserved entry weighs 1
    against 1 + alpha·w for an observed one, so the analogue is the row's total confidence
    N + alpha·Σw, which N dominates for every row of a sparse log; the scale would be nearly
    the same for all rows and ν would only rescale λ, which ``regularization`` already does.
    The count keeps ν meaningful, needs no second constant, and is what the kernel computes
    from the row alone."""
    iterations: int = 15
    cg_steps: int = 3
    seed: int = 42
    explain_factors: int = 3
    transform: str = "linear"
    """How interaction weights are read: linear | binary | log (log(1 + w / transform_eps))."""
    transform_eps: float = 1.0
    scoring: str = "auto"
    """How top-K is scored: exact | compressed | auto (compressed from compressed_min_items
    items). Chosen at fit; a loaded model scores the way it was fitted."""
    compressed_min_items: int = COMPRESSED_MIN_ITEMS

    def __post_init__(self) -> None:
        check_transform(self.transform, self.transform_eps)
        check_scoring(self.scoring, self.compressed_min_items)
        if not 0.0 <= self.reg_exponent <= 1.0:  # NaN fails too
            raise ValueError(f"reg_exponent must be in [0, 1], got {self.reg_exponent}")


def typical_row_count(train: Interactions) -> float:
    """Entries of a typical row, for scaling λ with ν: the geometric mean of the mean user
    count (nnz / users) and the mean item count (nnz / items), as one λ serves both
    half-steps. 1 for an empty log."""
    if len(train) == 0:
        return 1.0
    return max(len(train) / math.sqrt(max(train.n_users, 1) * max(train.n_items, 1)), 1.0)


def item_hash(n_items: int) -> np.ndarray:
    """A fixed pseudo-random weight in [1, 2) per item index (the fractional parts of
    multiples of the golden ratio): a row's checksum Σ w_i h_i changes when any item's weight
    does, whatever the order its entries are stored in."""
    return 1.0 + np.modf(np.arange(n_items, dtype=np.float64) * 0.6180339887498949)[0]


ROWS = 1 << 20
"""Item factors are processed by blocks of this many rows where a whole-matrix temporary
would be large (10M x 64 in float64 is 5 GB); up to ROWS items it is one block, so the
results are those of the whole-matrix expressions."""


def _by_rows(f, a: np.ndarray) -> np.ndarray:
    """``f`` (row-wise: each output row depends on its input row alone) applied by blocks of
    ``ROWS`` rows."""
    if len(a) <= ROWS:
        return f(a)
    out = None
    for lo in range(0, len(a), ROWS):
        r = f(a[lo : lo + ROWS])
        if out is None:
            out = np.empty((len(a), *r.shape[1:]), r.dtype)
        out[lo : lo + len(r)] = r
    return out


def _round2(x: float) -> float:
    """Two significant digits: readable tuned values, the grid's spacing is far coarser."""
    return float(f"{x:.2g}")


class SVD(Recommender):
    name = "svd"

    def __init__(self, config: SVDConfig | None = None) -> None:
        self.config = config or SVDConfig()
        self.user_factors_ = np.zeros((0, self.config.n_factors), np.float32)
        self.item_factors_ = np.zeros((0, self.config.n_factors), np.float32)
        # each training user's row: entries and checksum (``item_hash``); None: not known
        self.row_nnz_: np.ndarray | None = None
        self.row_checksum_: np.ndarray | None = None
        # per thread: the last folded (row, user, vector), so explaining it solves nothing
        self._memo = threading.local()
        self._index: Index | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Self:
        return cls(SVDConfig(**params))

    def info(self) -> dict[str, Any]:
        """The scoring the fit chose, and its index's cost (``index``)."""
        return {"index": self._index.stats} if self._index is not None else {}

    def save(self, directory: Path) -> list[Path]:
        return super().save(directory) + (
            self._index.save(directory, self.name) if self._index else []
        )

    @classmethod
    def load(cls, directory: Path) -> Self:
        model = super().load(directory)  # _restore leaves the index to this
        stats = (model.loaded_info_ or {}).get("index")
        stats = stats if isinstance(stats, dict) else {}
        model._index = Index.load(stats, model._parts(), directory, cls.name)
        return model

    @classmethod
    def search_space(cls, train: Interactions) -> Axes:
        # factors early and smallest first: they set the cost of every later trial;
        # every axis that sets λ sets ν (reg_exponent) with it, since λ's scale depends on ν
        # (reg · n^ν per row): the confidence × λ axes at ν = 0, then ν × λ
        n = typical_row_count(train)
        return [
            transform_axis(train),
            [{"n_factors": f} for f in (32, 64, 128)],
            # confidence and regularisation together: a larger α needs a larger λ
            [
                {"alpha": a, "regularization": r, "reg_exponent": 0.0}
                for a in (1.0, 4.0, 16.0, 64.0)
                for r in (3.0, 10.0, 30.0, 100.0)
            ],
            # frequency-scaled λ at the α found: λ₀ is the λ one row of the typical count n
            # gets (λ₀ = λ · n^ν), spanning the good ν = 0 region (30-100) a factor 2 apart
            [
                {"reg_exponent": nu, "regularization": _round2(r0 / n**nu)}
                for nu in (0.5, 1.0)
                for r0 in (15.0, 30.0, 60.0, 120.0, 240.0)
            ],
            [{"alpha": a} for a in (0.5, 2.0, 8.0, 32.0)],
            [{"regularization": r, "reg_exponent": 0.0} for r in (1.0, 300.0)],
        ]

    def fit(self, train: Interactions) -> Self:
        return self.fit_matrix(train.to_csr())

    def fit_matrix(self, user_items: sp.csr_matrix, progress=None) -> Self:
        c = self.config
        self.n_users, self.n_items = user_items.shape
        rng = np.random.default_rng(c.seed)
        x = (rng.standard_normal((self.n_users, c.n_factors)) * 0.01).astype(np.float32)
        y = (rng.standard_normal((self.n_items, c.n_factors)) * 0.01).astype(np.float32)
        ui = sp.csr_matrix(self.weigh(user_items), dtype=np.float32)
        iu = ui.T.tocsr()
        kw = dict(
            alpha=c.alpha, reg=c.regularization, cg_steps=c.cg_steps, reg_exponent=c.reg_exponent
        )
        user_step, item_step = self.kernels.als_rows(ui), self.kernels.als_rows(iu)
        for _ in range(c.iterations):
            user_step(x, y, **kw)
            item_step(y, x, **kw)
            if progress is not None:
                progress()
        # Item factors rounded to half precision: the scorer then streams half the bytes on
        # every request with the same scores as these values give (NDCG unchanged, see
        # docs/quality.md); each is within 2^-11 of the solved value.
        self.user_factors_, self.item_factors_ = x, _by_rows(rc.half_exact, y)
        del y, ui, iu, user_step, item_step  # at 10M items each n_items x f copy is 2.6 GB
        raw = sp.csr_matrix(user_items)
        self.row_nnz_ = np.diff(raw.indptr).astype(np.int32)
        self.row_checksum_ = self._checksums(raw)
        self._prepare()
        self._index = self._build_index()
        return self

    def _build_index(self) -> Index:
        c = self.config
        mode = chosen(c.scoring, c.compressed_min_items, self.n_items)
        return Index.build(mode, self._parts(), seed=c.seed)

    @property
    def index(self) -> Index:
        """The scorers; a model rebuilt from its arrays alone (`_restore`, e.g. shipped to a
        trainer engine's worker) builds the index its fit chose (same config, same seed, same
        codes) on first use."""
        if self._index is None:
            self._index = self._build_index()
        return self._index

    def _parts(self) -> dict[str, np.ndarray]:
        """The factor matrices scored: items for recommendations, unit vectors for similar
        items."""
        return {"items": self.item_factors_, "similar": self._unit}

    @property
    def scoring(self) -> str:
        return self.index.mode

    def _prepare(self) -> None:
        self._dense: rc.DenseScorer | None = None
        # YᵀY once per fitted/loaded model: fold-in solves one small system per new history,
        # and rebuilding the n_items x f product each time (what a full ALS half-step does)
        # cost ~15 ms per call at 5k items x 100 factors. The regularisation is added per
        # solve: with reg_exponent > 0 it depends on the history's length.
        y = self.item_factors_
        gram = np.zeros((y.shape[1], y.shape[1]), np.float64)
        for lo in range(0, len(y), ROWS):
            block = y[lo : lo + ROWS].astype(np.float64)
            gram += block.T @ block
        self._gram = gram.astype(np.float32)
        norms = _by_rows(lambda b: np.linalg.norm(b, axis=1, keepdims=True), y)
        self._unit = (y / np.where(norms > 0, norms, 1)).astype(np.float32, copy=False)
        self._hash = item_hash(self.item_factors_.shape[0])

    def fold_in(self, history: sp.csr_matrix) -> np.ndarray:
        """User vectors for histories as given, whoever they belong to: each row's ALS normal
        equations against the fixed item factors, solved by conjugate gradient from 0 (an
        empty row gives 0)."""
        h = sp.csr_matrix(self.weigh(history), dtype=np.float32)
        out = np.zeros((h.shape[0], self.config.n_factors), np.float32)
        for r in range(h.shape[0]):
            a, b = h.indptr[r], h.indptr[r + 1]
            if b > a:
                out[r] = self._solve(h.indices[a:b], h.data[a:b])
        return out

    def _solve(self, cols: np.ndarray, vals: np.ndarray) -> np.ndarray:
        # (YᵀY + reg_u I + Σ alpha w_i y_i y_iᵀ) x = Σ (1 + alpha w_i) y_i in Rust, with
        # reg_u = reg * max(n, 1)^reg_exponent as in the training half-step
        c = self.config
        return rc.als_solve_row(
            cols,
            vals,
            self.item_factors_,
            self._gram,
            alpha=c.alpha,
            reg=c.regularization,
            reg_exponent=c.reg_exponent,
            max_steps=max(c.cg_steps, FOLD_IN_STEPS),
        )

    def _checksums(self, history: sp.csr_matrix) -> np.ndarray:
        """Σ w_i h_i per row (raw weights, float64)."""
        return np.asarray(history @ item_hash(history.shape[1]), np.float64).ravel()

    def trained_rows(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """Whether each row of ``history`` (raw weights) is its user's training row, so the
        trained vector answers for it: a known user whose row has the training row's entries
        and checksum. Every known user's row counts as trained when the model has no
        checksums (artifacts older than them), and so does an empty row (a server with no
        training history to add live events to)."""
        users = np.asarray(users)
        known = (users >= 0) & (users < self.n_users)
        if self.row_nnz_ is None or not known.any():
            return known
        history = sp.csr_matrix(history)
        nnz = np.diff(history.indptr)
        u = users[known]
        want = self.row_checksum_[u]
        same = (nnz[known] == self.row_nnz_[u]) & (
            np.abs(self._checksums(history[np.flatnonzero(known)]) - want)
            <= 1e-9 * (1.0 + np.abs(want))
        )
        out = known.copy()
        out[known] = same | (nnz[known] == 0)
        return out

    def user_vectors(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """The trained vector of each user whose row is their training row, the row folded
        in (``fold_in``) for everyone else."""
        users = np.asarray(users)
        if len(users) == 1 and history.shape[0] == 1:
            return self._vector(int(users[0]), history)[None]
        vec = np.empty((len(users), self.config.n_factors), np.float32)
        trained = self.trained_rows(users, history)
        vec[trained] = self.user_factors_[users[trained]]
        if not trained.all():
            stale = np.flatnonzero(~trained)
            vec[stale] = self.fold_in(history[stale])
        return vec

    def score(self, users, history: sp.csr_matrix) -> np.ndarray:
        return self.user_vectors(users, history) @ self.item_factors_.T

    def recommend(self, users, history, k=10, *, exclude_seen=True, allow=None, deny=None):
        return self.index.recommend_batch(
            "items",
            self.user_vectors(users, history),
            k,
            exclude=history if exclude_seen else None,
            allow=allow,
            deny=deny,
        )

    def recommend_one(self, user, row, k, allow=None, deny=None) -> rc.Recommendations:
        return self.index.recommend(
            "items", self._vector(user, row), k, exclude=row.indices, allow=allow, deny=deny
        )

    def blend_part(self, user, row, weight):
        # a hybrid blends exact scores, so it needs the dense scorer whatever the index is
        if self.index.mode == "exact":
            dense = self.index.scorers["items"]
        else:
            if self._dense is None:
                self._dense = rc.DenseScorer(self.item_factors_)
            dense = self._dense
        return (dense, self._vector(user, row), weight)

    def _vector(self, user: int, row: sp.csr_matrix) -> np.ndarray:
        """`user_vectors` for one user and their 1-row history."""
        if 0 <= user < self.n_users and self._is_training_row(user, row):
            return self.user_factors_[user]
        memo = getattr(self._memo, "last", None)
        if memo is not None and memo[0] is row and memo[1] == user:
            return memo[2]
        if row.nnz == 0:
            vec = np.zeros(self.config.n_factors, np.float32)
        else:
            kind = self.config.transform
            vals = row.data
            if kind != "linear" and getattr(row, "_weighed_by", None) is not self:
                vals = transform_values(vals.astype(np.float32), kind, self.config.transform_eps)
            vec = self._solve(row.indices, vals)
        # Holding ``row`` keeps its id from being reused by another object.
        self._memo.last = (row, user, vec)
        return vec

    def _is_training_row(self, user: int, row: sp.csr_matrix) -> bool:
        """`trained_rows` for one row, without building arrays (the request path)."""
        if self.row_nnz_ is None or row.nnz == 0:
            return True
        if row.nnz != self.row_nnz_[user]:
            return False
        want = float(self.row_checksum_[user])
        got = float(row.data.astype(np.float64) @ self._hash[row.indices])
        return abs(got - want) <= 1e-9 * (1.0 + abs(want))

    def similar_items(self, item: int, k: int = 10) -> rc.Recommendations:
        if not self._unit[item].any():
            # an item no one interacted with has zero factors, so every score is 0 and the
            # answer is the first k other items (ties go to the lower index): no scan, which
            # on a long-tail catalogue (half the items at 1M) would find nothing to prune
            first = np.arange(min(k + 1, self.n_items), dtype=np.int32)
            first = first[first != item][:k]
            return rc.Recommendations(first, np.zeros(len(first), np.float32), None)
        return self.index.recommend(
            "similar", self._unit[item], k, exclude=[item], num_threads=None
        )

    def explain(self, user, history: sp.csr_matrix, items) -> list[Explanation]:
        """The top factors of u · y_j and the history item closest to j, for every item at
        once (the vector is the one `recommend_one` scored: trained or folded in)."""
        u = self.user_vectors(np.array([user]), history)[0]
        hist = history.tocsr().indices
        items = np.asarray(items, dtype=np.int64)
        contrib = u * self.item_factors_[items]  # items x f
        totals = contrib.sum(axis=1)
        top = np.argsort(-contrib, axis=1, kind="stable")[:, : self.config.explain_factors]
        picked = np.take_along_axis(contrib, top, axis=1)
        if len(hist):
            cos = self._unit[hist] @ self._unit[items].T  # history x items
            best = np.argmax(cos, axis=0)
            best_cos = cos[best, np.arange(len(items))]
        out = []
        for r in range(len(items)):
            total = float(totals[r])
            fields: dict[str, Any] = {
                "factors": top[r].tolist(),
                "contributions": picked[r].tolist(),
                "shares": (picked[r] / total).tolist() if total > 0 else [0.0] * top.shape[1],
            }
            if len(hist):
                fields["closest_item"] = int(hist[best[r]])
                fields["closest_similarity"] = float(best_cos[r])
            out.append(Explanation("latent_factors", fields))
        return out

    def evidence(self, user, row, items, part=None) -> dict[str, np.ndarray]:
        """Each item's ``closest`` history item in factor space (cosine; -1 with no history)
        and its ``closest_similarity``."""
        items = np.asarray(items, np.int64)
        hist = row.indices
        k = len(items)
        out: dict[str, np.ndarray] = {
            "closest": np.full(k, -1, np.int64),
            "closest_similarity": np.zeros(k, np.float32),
        }
        if len(hist) and k:
            cos = self._unit[hist] @ self._unit[items].T  # history x items
            best = cos.argmax(axis=0)
            out["closest"] = np.asarray(hist, np.int64)[best]
            out["closest_similarity"] = cos[best, np.arange(k)]
        return out

    def _arrays(self) -> dict[str, np.ndarray]:
        out = {"user_factors": self.user_factors_, "item_factors": self.item_factors_}
        if self.row_nnz_ is not None:
            out |= {"row_nnz": self.row_nnz_, "row_checksum": self.row_checksum_}
        return out

    def _restore(self, arrays: dict[str, np.ndarray]) -> None:
        self.user_factors_ = np.ascontiguousarray(arrays["user_factors"], np.float32)
        self.item_factors_ = np.ascontiguousarray(arrays["item_factors"], np.float32)
        # absent from artifacts written before fold-in of known users: they keep their
        # trained vectors whatever their live events
        nnz, checksum = arrays.get("row_nnz"), arrays.get("row_checksum")
        n = len(self.user_factors_)
        ok = nnz is not None and checksum is not None and len(nnz) == len(checksum) == n
        self.row_nnz_ = np.asarray(nnz, np.int32) if ok else None
        self.row_checksum_ = np.asarray(checksum, np.float64) if ok else None
        self._prepare()
        self._index = None  # `load` attaches the stored one; else built on first use
