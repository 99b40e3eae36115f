"""Exact or compressed top-K scoring for a factor model, chosen by catalogue size.

An exact scan of every item vector costs ~12 ms at 1M x 64 on this 2-core machine
(docs/benchmarks.md), so from ``compressed_min_items`` items a model scores through
`recsys_core.CompressedScorer` (quantised codes, exact rerank of the best candidates). The
codes are built once at fit time and stored next to the model's arrays as
``<name>.<part>.codes``: the artifact manifest checksums them like every other file, and on
load ``CompressedScorer.from_bytes`` checks them against the factors again, so a damaged or
mismatched blob is refused and the server keeps the last good version.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

import recsys_core as rc

SCORING = ("auto", "exact", "compressed")
COMPRESSED_MIN_ITEMS = 200_000
"""auto's threshold: ML-100k (1.7k items), Steam (5k) and the default synthetic set (5k)
stay exact; at 200k x 64 the exact scan is already ~2.5 ms."""


def check_scoring(scoring: str, min_items: int) -> None:
    if scoring not in SCORING:
        raise ValueError(f"scoring must be one of {', '.join(SCORING)}, got {scoring!r}")
    if min_items < 1:
        raise ValueError(f"compressed_min_items must be >= 1, got {min_items}")


def chosen(scoring: str, min_items: int, n_items: int) -> str:
    """``exact`` or ``compressed`` for a catalogue of ``n_items``."""
    if scoring == "auto":
        return "compressed" if n_items >= min_items else "exact"
    return scoring


def codes_file(directory: Path, model: str, part: str) -> Path:
    return Path(directory) / f"{model}.{part}.codes"


class Index:
    """The scorers of one factor matrix per named part (e.g. ``items`` and the unit vectors
    ``similar`` ranks by), exact or compressed, with what building them cost."""

    def __init__(self, mode: str, scorers: dict[str, Any], stats: dict[str, Any]) -> None:
        self.mode = mode
        self.scorers = scorers
        self.stats = stats
        # (the deny array last seen, its bool mask): the live catalogue hands every request
        # the same array until availability changes, so the mask is built once per change
        self._mask: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
        self._blobs: dict[str, bytes] = {}

    @classmethod
    def build(cls, mode: str, parts: dict[str, np.ndarray], seed: int = 0) -> Index:
        if mode == "exact":
            return cls(mode, {p: rc.DenseScorer(f) for p, f in parts.items()}, {"scoring": mode})
        t0 = time.perf_counter()
        scorers = {p: rc.CompressedScorer.build(f, seed=seed) for p, f in parts.items()}
        seconds = time.perf_counter() - t0
        blobs = {p: s.to_bytes() for p, s in scorers.items()}
        stats = {
            "scoring": mode,
            "ivf_lists": int(next(iter(scorers.values())).ivf_lists),
            "bytes": sum(len(b) for b in blobs.values()),
            "build_seconds": round(seconds, 3),
        }
        index = cls(mode, scorers, stats)
        index._blobs = blobs  # written by the first save, then dropped
        return index

    @classmethod
    def load(
        cls, stats: dict[str, Any], parts: dict[str, np.ndarray], directory: Path, model: str
    ) -> Index:
        """The index a fit recorded in ``stats`` (its ``scoring``; none recorded: exact),
        compressed codes read back from ``directory`` and verified against ``parts``."""
        if stats.get("scoring") != "compressed":
            return cls.build("exact", parts)
        scorers = {}
        for p, f in parts.items():
            path = codes_file(directory, model, p)
            blob = path.read_bytes()  # FileNotFoundError: missing_file for the artifact
            try:
                scorers[p] = rc.CompressedScorer.from_bytes(blob, f)
            except rc.InvalidArgumentError as e:
                raise rc.InvalidArgumentError(f"{path.name}: {e}") from e
        return cls("compressed", scorers, dict(stats))

    def save(self, directory: Path, model: str) -> list[Path]:
        if self.mode != "compressed":
            return []
        out = []
        for p, s in self.scorers.items():
            path = codes_file(directory, model, p)
            path.write_bytes(self._blobs.get(p) or s.to_bytes())
            out.append(path)
        self._blobs = {}
        return out

    def deny_mask(self, deny, n_items: int) -> np.ndarray | None:
        """``deny`` (item indices) as a bool mask over the items, cached by identity."""
        if deny is None or not len(deny):
            return None
        held, mask = self._mask
        if held is deny:
            return mask
        mask = np.zeros(n_items, np.bool_)
        mask[np.asarray(deny, np.int64)] = True
        self._mask = (deny, mask)  # holding ``deny`` keeps its id from being reused
        return mask

    def recommend(
        self, part: str, vector, k: int, *, exclude=None, allow=None, deny=None, num_threads=1
    ):
        s = self.scorers[part]
        if self.mode == "exact":
            return s.recommend(
                vector, k, exclude=exclude, allow=allow, deny=deny, num_threads=num_threads
            )
        mask = self.deny_mask(deny, s.n_items)
        return s.recommend(
            vector, k, exclude=exclude, allow=allow, deny_mask=mask, num_threads=num_threads
        )

    def recommend_batch(self, part: str, vectors, k: int, *, exclude=None, allow=None, deny=None):
        s = self.scorers[part]
        if self.mode == "exact":
            return s.recommend_batch(vectors, k, exclude=exclude, allow=allow, deny=deny)
        mask = self.deny_mask(deny, s.n_items)
        return s.recommend_batch(vectors, k, exclude=exclude, allow=allow, deny_mask=mask)
