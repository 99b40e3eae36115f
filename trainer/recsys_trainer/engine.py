"""Where the trainer's heavy work runs: in this process (``local``, the default) or on a Ray
cluster (``ray``, ``recsys_trainer.ray_engine``, imported only when asked for: Ray is an
optional dependency, the ``ray`` extra).

An engine maps a function over blocks (``map``) and gives the models the kernels their fits
run (``kernels``, see ``recsys_core.models.base.Kernels``). What runs where:

* the tuning trials (``recsys_trainer.tuning``): one axis's candidates at once;
* the evaluation's top-k lists, by blocks of users (``top_k``);
* the item-CF / user-CF neighbour lists, by blocks of rows;
* the ALS half-steps, by blocks of user rows and of item rows.

Each block runs the same Rust kernel on the whole inputs it depends on, so the blocks put
back together equal the local result (docs/ray.md gives the tolerances).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from recsys_core.models import MODELS, Hybrid, Recommender
from recsys_core.models.base import LOCAL_KERNELS, Kernels

ENGINES = ("local", "ray")


class Engine:
    """The local engine: everything in this process, exactly as without an engine."""

    name = "local"
    kernels: Kernels = LOCAL_KERNELS
    workers = 1

    def map(self, fn: Callable[[Any, Any], Any], items: Sequence[Any], shared: Any = None) -> list:
        """``[fn(item, shared) for item in items]``, in order; ``shared`` (a value or what
        ``share`` returned) is sent once per call."""
        return [fn(item, shared) for item in items]

    def share(self, value: Any) -> Any:
        """``value`` sent once for many ``map`` calls (its handle is passed as ``shared``)."""
        return value

    def attach(self, model: Recommender) -> Recommender:
        """``model`` (and a hybrid's components) fitting with this engine's kernels."""
        if self.kernels is not LOCAL_KERNELS:
            model.kernels = self.kernels
        return model

    def top_k(self, model: Recommender, history: sp.csr_matrix, users: np.ndarray, k: int):
        from recsys_trainer.evaluate import top_k

        return top_k(model, history, users, k)

    def close(self) -> None:
        pass

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make(name: str = "local", address: str | None = None) -> Engine:
    if name == "local":
        return Engine()
    if name == "ray":
        from recsys_trainer.ray_engine import RayEngine

        return RayEngine(address)
    raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {name!r}")


def blocks(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous (lo, hi) ranges covering 0..n, sizes differing by at most one
    (fewer when n < parts; none when n is 0)."""
    parts = max(1, min(parts, n))
    edges = np.linspace(0, n, parts + 1).round().astype(int) if n else [0]
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


# -- shipping fitted models to workers: the arrays and parameters artifacts hold, no pickle of
# the Rust scorers (they do not pickle) ---------------------------------------------------------


def pack(model: Recommender) -> tuple:
    params = {k: v for k, v in model.params().items() if k != "tuning"}
    parts = None
    if isinstance(model, Hybrid):
        parts = {n: pack(m) for n, m in model.components.items()}
    return (model.name, params, model.n_users, model.n_items, model._arrays(), parts)


def unpack(packed: tuple) -> Recommender:
    name, params, n_users, n_items, arrays, parts = packed
    model = MODELS[name].from_params(params)
    model.n_users, model.n_items = n_users, n_items
    if parts is not None:
        model.components = {n: unpack(p) for n, p in parts.items()}
    model._restore(arrays)
    return model


def read_partition(path: str, _shared: Any = None) -> pl.DataFrame:
    return pl.read_parquet(path)
