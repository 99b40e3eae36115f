"""The Ray engine (``recsys-train train --engine ray --ray-address ADDR``): the blocks of
``recsys_trainer.engine`` run as Ray tasks, one CPU each, on a cluster started with
``ray start``. Imported only for ``--engine ray``.

Large inputs go to the object store once (``ray.put``) and tasks receive references: the
validation split for every tuning trial, the matrix of a neighbour computation for every row
block, each ALS row block for every iteration (only the other side's factors and their Gram
matrix, computed once on the driver rather than once per block, are put per half-step).
The workers import this checkout's code: the driver's ``sys.path`` is passed as their
PYTHONPATH, so the same Rust extension runs everywhere (the nodes must share the file
system and Python, as the nodes of one machine do).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

import recsys_core as rc
from recsys_core.models.base import Kernels
from recsys_trainer.engine import Engine, blocks, pack, unpack


def _call(fn: Callable, item: Any, shared: Any) -> Any:
    return fn(item, shared)


def _similarity_block(rows: tuple[int, int], job: tuple) -> sp.csr_matrix:
    x, k, kw = job
    return rc.similarity_topk(x, k, rows=rows, **kw)


def _als_block(block: sp.csr_matrix, x: np.ndarray, side: tuple, kw: dict) -> np.ndarray:
    y, gram = side
    out = np.array(x, dtype=np.float32, order="C")  # object-store arrays are read-only
    rc.als_half_step(block, out, y, gram=gram, **kw)
    return out


def _top_k_block(users: np.ndarray, job: tuple) -> np.ndarray:
    from recsys_trainer.evaluate import top_k

    packed, history, k = job
    return top_k(unpack(packed), history, users, k)


class Shared:
    """A value already in the object store (``RayEngine.share``)."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref


class RayKernels(Kernels):
    """The fit kernels by row blocks as Ray tasks (see ``recsys_core.models.base.Kernels``)."""

    def __init__(self, engine: RayEngine) -> None:
        self.engine = engine

    def similarity_topk(self, X, k: int, **kw) -> sp.csr_matrix:
        if kw.get("only_rows") is not None:  # a few rows (a tuning trial's): here
            return rc.similarity_topk(X, k, **kw)
        n = X.shape[0]
        parts = self.engine.map(_similarity_block, blocks(n, self.engine.workers), (X, k, kw))
        if not parts:
            return rc.similarity_topk(X, k, **kw)
        out = sp.vstack(parts, format="csr", dtype=np.float32)
        out.has_sorted_indices = True
        return out

    def als_rows(self, r: sp.csr_matrix):
        ray = self.engine.ray
        r = sp.csr_matrix(r)
        ranges = blocks(r.shape[0], self.engine.workers)
        refs = [ray.put(r[lo:hi]) for lo, hi in ranges]
        task = self.engine.task(_als_block)

        def step(x: np.ndarray, y: np.ndarray, **kw) -> None:
            # YᵀY + λI once here, not once per block (the same bits as a block would build)
            y_ref = ray.put((y, rc.als_gram(y, kw["reg"])))
            jobs = zip(refs, ranges, strict=True)
            done = ray.get([task.remote(ref, x[lo:hi], y_ref, kw) for ref, (lo, hi) in jobs])
            for (lo, hi), block in zip(ranges, done, strict=True):
                x[lo:hi] = block

        return step


class RayEngine(Engine):
    name = "ray"

    def __init__(self, address: str | None) -> None:
        import ray

        self.ray = ray
        path = os.pathsep.join(p for p in sys.path if p)
        ray.init(
            address=address,
            runtime_env={"env_vars": {"PYTHONPATH": path, "RECSYS_NUM_THREADS": "1"}},
            log_to_driver=False,
            configure_logging=False,
        )
        self.workers = max(int(ray.cluster_resources().get("CPU", 1)), 1)
        self.kernels = RayKernels(self)
        self._tasks: dict[Callable, Any] = {}

    def task(self, fn: Callable):
        if fn not in self._tasks:
            self._tasks[fn] = self.ray.remote(num_cpus=1)(fn)
        return self._tasks[fn]

    def share(self, value: Any) -> Shared:
        return Shared(self.ray.put(value))

    def map(self, fn: Callable[[Any, Any], Any], items: Sequence[Any], shared: Any = None) -> list:
        if not items:
            return []
        ref = shared.ref if isinstance(shared, Shared) else self.ray.put(shared)
        task = self.task(_call)
        return self.ray.get([task.remote(fn, item, ref) for item in items])

    def top_k(self, model, history: sp.csr_matrix, users: np.ndarray, k: int) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        ranges = blocks(len(users), self.workers)
        if not ranges:
            return np.full((0, k), -1, dtype=np.int64)
        job = (pack(model), sp.csr_matrix(history), k)
        parts = self.map(_top_k_block, [users[lo:hi] for lo, hi in ranges], job)
        return np.concatenate(parts)

    def close(self) -> None:
        self.ray.shutdown()
