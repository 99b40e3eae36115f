"""The one interface every recommender implements.

Item and user arguments are dense internal indices (see ``recsys_core.data``). A model is
fitted on an ``Interactions`` log; scoring takes user histories as CSR rows (users x items) so
that the same code serves training-time evaluation and live histories at serving time.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

import recsys_core as rc
from recsys_core.data import Interactions


@dataclass(frozen=True)
class Explanation:
    """Why one item was recommended: ``kind`` names the model's reason, ``fields`` carries the
    structured evidence (item indices, similarities, shares) a program can use; text is made
    from it where titles are known (``recsys_trainer.explain``)."""

    kind: str
    fields: dict[str, Any] = field(default_factory=dict)


TRANSFORMS = ("linear", "binary", "log")
"""How a model reads interaction weights: as given, as 1 for any interaction, or as
log(1 + w / eps), which keeps order but tames counts (hours played, listens) that span
orders of magnitude. Part of each model's configuration, chosen by the tuner."""


def transform_values(w: np.ndarray, kind: str, eps: float = 1.0) -> np.ndarray:
    """``w`` (float32) under a weight transform."""
    if kind == "linear":
        return w
    if kind == "binary":
        return np.ones_like(w)
    if kind == "log":
        return np.log1p(np.maximum(w, 0) / np.float32(eps)).astype(w.dtype)
    raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {kind!r}")


def check_transform(kind: str, eps: float) -> None:
    if kind not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {kind!r}")
    if not eps > 0:
        raise ValueError(f"transform_eps must be > 0, got {eps}")


Axes = list[list[dict[str, Any]]]
"""A search space: axes searched one at a time, each a list of partial configurations."""


def transform_axis(train: Interactions) -> list[dict[str, Any]]:
    """The weight transforms worth trying on ``train``: one when all weights are equal (every
    transform is then the same), else linear, binary, log(1 + w) and log(1 + w / median)."""
    w = train.weight
    if len(w) == 0 or np.all(w == w[0]):
        return [{"transform": "linear", "transform_eps": 1.0}]
    median = float(np.median(w[w > 0])) if np.any(w > 0) else 1.0
    out = [{"transform": t, "transform_eps": 1.0} for t in ("linear", "binary", "log")]
    if not np.isclose(median, 1.0, rtol=0.25):
        out.append({"transform": "log", "transform_eps": median})
    return out


def single_row(items, weights, n_items: int) -> sp.csr_matrix:
    items = np.asarray(items, dtype=np.int32)
    w = np.ones(len(items), np.float32) if weights is None else np.asarray(weights, np.float32)
    m = sp.csr_matrix((w, items, np.array([0, len(items)])), shape=(1, n_items))
    m.sum_duplicates()
    return m


class Kernels:
    """The whole-matrix Rust kernels a fit runs. A trainer engine (``recsys_trainer.engine``)
    swaps in versions that run them by row blocks on other processes (a Ray cluster) and
    put the blocks back together: each row's result depends only on the whole inputs, so the
    blocks concatenate to what these give."""

    def similarity_topk(self, X, k: int, **kw) -> sp.csr_matrix:
        """``rc.similarity_topk``: every row's top-k neighbours."""
        return rc.similarity_topk(X, k, **kw)

    def als_rows(self, r: sp.csr_matrix):
        """A half-step over the rows of ``r``: ``step(x, y, **kw)`` updates ``x`` in place
        (``rc.als_half_step``). Taking ``r`` once lets an engine ship it once per fit."""
        return lambda x, y, **kw: rc.als_half_step(r, x, y, **kw)


LOCAL_KERNELS = Kernels()


BlendPart = tuple
"""What ``recsys_core.blend_topk`` takes for one component: ``(SparseScorer, history items,
history weights, weight)``, ``(DenseScorer, user vector, weight)`` or ``(scores, weight)``."""


class Recommender(ABC):
    """fit / recommend (batch, with exclusions) / recommend_one (one user, as a server asks) /
    similar_items / explain / save / load."""

    name: ClassVar[str]
    n_users: int = 0
    n_items: int = 0
    kernels: Kernels = LOCAL_KERNELS
    """Where ``fit`` runs its heavy kernels: in process unless a trainer engine sets it."""

    @abstractmethod
    def fit(self, train: Interactions) -> Self: ...

    def fit_for(self, train: Interactions, users: np.ndarray) -> Self:
        """``fit`` for recommending to ``users`` only, each with their training row as the
        history (what a tuning trial scores): a model may then skip what no other user
        needs, and answers only for them. The default is ``fit``."""
        return self.fit(train)

    @classmethod
    def search_space(cls, train: Interactions) -> Axes:
        """What the trainer's hyperparameter search tries for this model on ``train``
        (``recsys_trainer.tuning``); values in the order tried, each list depending only on
        the data's shape, never on a named data set. Empty: not tuned."""
        return []

    def can_fit(self, n_users: int, n_items: int) -> bool:
        """Whether data of this shape is within the model's limits (its settings)."""
        return True

    def unfit_reason(self, data: Interactions) -> str | None:
        """Why this model cannot fit ``data`` (e.g. it needs a catalogue the data lacks), or
        None when it can; the trainer and the hybrid leave such a model out."""
        if self.can_fit(data.n_users, data.n_items):
            return None
        return (
            f"{self.name} cannot fit {data.n_users} users x {data.n_items} items with its "
            f"settings (models.{self.name}, e.g. max_items)"
        )

    def weigh(self, m: sp.csr_matrix) -> sp.csr_matrix:
        """``m`` (users x items, raw weights) as this model reads it: its configured weight
        transform applied. The same matrix object when there is nothing to change, and a
        matrix this model already weighed is returned as is, so entry points that call each
        other never apply the transform twice."""
        if not self._transforms(m):
            return m
        out = sp.csr_matrix(m, dtype=np.float32, copy=True)
        out.data = transform_values(out.data, self.config.transform, self.config.transform_eps)
        out._weighed_by = self
        return out

    def _transforms(self, m: sp.csr_matrix) -> bool:
        """Whether ``m``'s weights still need this model's (non-linear) transform."""
        kind = getattr(getattr(self, "config", None), "transform", "linear")
        return kind != "linear" and getattr(m, "_weighed_by", None) is not self

    def weigh_data(self, row: sp.csr_matrix) -> np.ndarray:
        """``weigh(row).data`` without building a matrix: the one-row request paths only need
        the values, and scipy's constructor costs more than the transform."""
        if not self._transforms(row):
            return row.data
        c = self.config
        return transform_values(row.data.astype(np.float32), c.transform, c.transform_eps)

    @abstractmethod
    def score(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """Dense float32 scores (len(users) x n_items). ``users`` may hold -1 for a user the
        model has never seen; ``history`` holds each user's (live) interactions."""

    def recommend(
        self,
        users: np.ndarray,
        history: sp.csr_matrix,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        allow=None,
        deny=None,
    ) -> rc.BatchRecommendations:
        """Top-k items for each user; ``history`` rows are excluded when ``exclude_seen``."""
        scores = self.score(np.asarray(users), history)
        return rc.select_topk(
            scores, k, exclude=history if exclude_seen else None, allow=allow, deny=deny
        )

    def recommend_one(
        self, user: int, row: sp.csr_matrix, k: int, allow=None, deny=None
    ) -> rc.Recommendations:
        """``recommend`` for one user (index or -1) and their 1-row history, excluding it: the
        same items in the same order. Models override it with recsys_core's single-user calls,
        which run on the calling thread (the batch calls always hand the work to a pool thread,
        a wake-up per request)."""
        return self.recommend(np.array([user]), row, k, allow=allow, deny=deny).user(0)

    def blend_part(self, user: int, row: sp.csr_matrix, weight: float) -> BlendPart:
        """This model's part of a hybrid blend for one user (see `BlendPart`) from their raw
        history ``row``: like every entry point, it applies the model's transform (``weigh``)
        where it reads weights."""
        raise NotImplementedError(f"{self.name} cannot be a hybrid component")

    def similar_items(self, item: int, k: int = 10) -> rc.Recommendations:
        """Items most like ``item`` by this model's notion of similarity."""
        raise NotImplementedError(f"{self.name} has no item similarity")

    @abstractmethod
    def explain(self, user: int, history: sp.csr_matrix, items: np.ndarray) -> list[Explanation]:
        """One explanation per recommended item (``history`` is the user's single CSR row)."""

    def evidence(
        self, user: int, row: sp.csr_matrix, items: np.ndarray, part: BlendPart | None = None
    ) -> dict[str, np.ndarray] | None:
        """This model's evidence at ``items`` as arrays (one entry per item), for a hybrid's
        explanations: computed for all items at once, from ``part`` (this model's
        ``blend_part`` for ``row``, as the ranking computed it) when given. None: none."""
        return None

    # -- persistence: arrays in <dir>/<name>.npz (no pickle), parameters in <name>.json --------

    @abstractmethod
    def _arrays(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _restore(self, arrays: dict[str, np.ndarray]) -> None: ...

    tuning_: dict[str, Any] | None = None
    """What the hyperparameter search tried and chose (``recsys_trainer.tuning``), if any."""

    def params(self) -> dict[str, Any]:
        out = asdict(self.config) if hasattr(self, "config") else {}
        return out | ({"tuning": self.tuning_} if self.tuning_ else {})

    loaded_info_: dict[str, Any] | None = None
    """``info()`` as saved, for ``load`` (empty for artifacts written before it)."""

    def info(self) -> dict[str, Any]:
        """What the fit built besides its parameters (e.g. a scoring index's kind and size),
        for the artifact manifest and ListModels; empty: nothing to say."""
        return {}

    def save(self, directory: Path) -> list[Path]:
        directory = Path(directory)
        arrays = self._arrays()
        npz = directory / f"{self.name}.npz"
        np.savez(npz, **arrays)
        meta = directory / f"{self.name}.json"
        meta.write_text(
            json.dumps(
                {
                    "model": self.name,
                    "params": self.params(),
                    "n_users": self.n_users,
                    "n_items": self.n_items,
                }
                | ({"info": info} if (info := self.info()) else {}),
                indent=2,
                sort_keys=True,
            )
        )
        return [npz, meta]

    @classmethod
    def load(cls, directory: Path) -> Self:
        directory = Path(directory)
        meta = json.loads((directory / f"{cls.name}.json").read_text())
        params = dict(meta["params"])
        tuning = params.pop("tuning", None)
        model = cls.from_params(params)
        model.tuning_ = tuning
        model.n_users, model.n_items = int(meta["n_users"]), int(meta["n_items"])
        info = meta.get("info")
        model.loaded_info_ = info if isinstance(info, dict) else {}
        with np.load(directory / f"{cls.name}.npz", allow_pickle=False) as z:
            model._restore({k: z[k] for k in z.files})
        return model

    @classmethod
    @abstractmethod
    def from_params(cls, params: dict[str, Any]) -> Self: ...


def csr_arrays(m: sp.csr_matrix, prefix: str) -> dict[str, np.ndarray]:
    m = sp.csr_matrix(m)
    return {
        f"{prefix}_indptr": m.indptr.astype(np.int64),
        f"{prefix}_indices": m.indices.astype(np.int32),
        f"{prefix}_data": m.data.astype(np.float32),
        f"{prefix}_shape": np.asarray(m.shape, dtype=np.int64),
    }


def csr_from(arrays: dict[str, np.ndarray], prefix: str) -> sp.csr_matrix:
    shape = tuple(int(v) for v in arrays[f"{prefix}_shape"])
    return sp.csr_matrix(
        (arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]),
        shape=shape,
    )


def normalize_rows(scores: np.ndarray) -> np.ndarray:
    """Scales each row by its largest absolute score so components blend on one scale."""
    peak = np.abs(scores).max(axis=1, keepdims=True)
    peak[peak == 0] = 1.0
    return scores / peak
