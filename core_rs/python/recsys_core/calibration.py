"""Confidence as a hit probability: a monotone map from an item's relative score to the
probability that it is one of the user's held-out items, fitted on the trainer's validation
split (`recsys_trainer.calibrate`) and applied by the server per returned item.

The feature is ``score / reference``, where ``reference`` is the model's 95th percentile of
top-1 scores over a sample of users (`reference_score`): dividing by it makes the feature
mean the same for the validation-split model the map is fitted on and the final model the
server runs, whose raw scores can sit on another scale (item-CF sums grow with the data).
The map is isotonic regression (pool adjacent violators) on that feature, stored as a step
table of at most `MAX_BINS` rows, so a lookup is one bisect.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_BINS = 64
"""Quantile bins the (feature, hit) pairs are pooled into before PAV: bounds the table size."""
REFERENCE_QUANTILE = 95.0


def pav(y: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Pool adjacent violators: the non-decreasing sequence closest to ``y`` in weighted least
    squares (weights ``w``, default 1), same length as ``y``."""
    y = np.asarray(y, np.float64)
    w = np.ones_like(y) if w is None else np.asarray(w, np.float64)
    means: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for v, wt in zip(y.tolist(), w.tolist(), strict=True):
        means.append(v)
        weights.append(wt)
        sizes.append(1)
        # Merge backwards while the last block breaks the order.
        while len(means) > 1 and means[-2] > means[-1]:
            wa, wb = weights[-2], weights[-1]
            total = wa + wb
            m = (means[-2] * wa + means[-1] * wb) / total if total > 0 else means[-1]
            means[-2:] = [m]
            weights[-2:] = [total]
            sizes[-2:] = [sizes[-2] + sizes[-1]]
    return np.repeat(np.array(means), np.array(sizes, dtype=np.int64))


@dataclass(frozen=True)
class Calibration:
    """A step function: feature ``f`` maps to ``probs[i]`` for the last ``i`` with
    ``edges[i] <= f`` (``probs[0]`` below ``edges[0]``). ``probs`` is non-decreasing."""

    edges: tuple[float, ...]
    probs: tuple[float, ...]
    pairs: int
    """(item, hit) pairs it was fitted on."""
    hit_rate: float
    """Their overall hit rate."""
    k: int
    """List length the pairs came from."""

    def __post_init__(self) -> None:
        if not self.edges or len(self.edges) != len(self.probs):
            raise ValueError("calibration: edges and probs must be non-empty and of equal length")
        if any(not (0.0 <= p <= 1.0) for p in self.probs):
            raise ValueError("calibration: probabilities must be in [0, 1]")
        if any(b < a for a, b in zip(self.probs, self.probs[1:], strict=False)):
            raise ValueError("calibration: probabilities must be non-decreasing")
        if any(not (b > a) for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("calibration: edges must be increasing")

    def confidence(self, score: float, reference: float) -> float:
        """P(hit) for one item. Plain floats: the server calls it for each of k items."""
        f = score / reference if reference > 0 else score
        if f != f:
            return self.probs[0]
        return self.probs[max(bisect_right(self.edges, f) - 1, 0)]

    def predict(self, features: np.ndarray) -> np.ndarray:
        edges, probs = np.array(self.edges), np.array(self.probs)
        f = np.nan_to_num(np.asarray(features, np.float64), nan=-np.inf)
        return probs[np.maximum(np.searchsorted(edges, f, side="right") - 1, 0)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": "score/reference",
            "edges": [round(e, 9) for e in self.edges],
            "probs": [round(p, 9) for p in self.probs],
            "pairs": self.pairs,
            "hit_rate": round(self.hit_rate, 9),
            "k": self.k,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Calibration:
        """Raises ValueError for anything that is not a valid table."""
        if not isinstance(d, dict) or d.get("feature") != "score/reference":
            raise ValueError("calibration: not a score/reference table")
        try:
            edges = tuple(float(e) for e in d["edges"])
            probs = tuple(float(p) for p in d["probs"])
            return cls(edges, probs, int(d["pairs"]), float(d["hit_rate"]), int(d["k"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"calibration: {type(e).__name__}: {e}") from e


def fit(features: np.ndarray, hits: np.ndarray, k: int, max_bins: int = MAX_BINS) -> Calibration:
    """Isotonic P(hit | feature): the pairs sorted by feature, pooled into at most
    ``max_bins`` quantile bins (ties never split), then PAV over the bins' hit rates weighted
    by their counts; adjacent bins left with one value are merged into one table row."""
    f = np.asarray(features, np.float64)
    h = np.asarray(hits, np.float64)
    keep = np.isfinite(f)
    f, h = f[keep], h[keep]
    if len(f) == 0:
        raise ValueError("calibration: no (feature, hit) pairs")
    order = np.argsort(f, kind="stable")
    f, h = f[order], h[order]
    # Bin starts at quantile positions, moved to the first of a run of equal features.
    starts = np.unique(np.searchsorted(f, f[np.linspace(0, len(f), max_bins + 1)[:-1].astype(int)]))
    counts = np.diff(np.append(starts, len(f)))
    rates = np.add.reduceat(h, starts) / counts
    fitted = pav(rates, counts)
    lower = f[starts]
    rows = np.flatnonzero(np.r_[True, np.diff(fitted) > 1e-12])
    edges = lower[rows]
    probs = np.clip(fitted[rows], 0.0, 1.0)
    return Calibration(
        tuple(edges.tolist()), tuple(probs.tolist()), len(f), float(h.mean()), int(k)
    )


def reference_score(top1: np.ndarray) -> float:
    """The 95th percentile of the finite top-1 scores, 1.0 when that is not positive (the
    scale ``score / reference`` divides by; `snapshot.measure_references` uses the same)."""
    s = np.asarray(top1, np.float64)
    s = s[np.isfinite(s)]
    top = float(np.percentile(s, REFERENCE_QUANTILE)) if s.size else 0.0
    return top if top > 0 and math.isfinite(top) else 1.0


def reliability(
    predicted: np.ndarray, hits: np.ndarray, bins: int = 10
) -> tuple[list[tuple[float, float, float, float, int]], float]:
    """Equal-width bins of predicted confidence: (low, high, mean predicted, observed hit rate,
    count) for each non-empty bin, and the expected calibration error (count-weighted mean of
    |mean predicted - observed|)."""
    p = np.asarray(predicted, np.float64)
    h = np.asarray(hits, np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    rows = []
    ece = 0.0
    for b in range(bins):
        m = which == b
        n = int(m.sum())
        if n == 0:
            continue
        mp, hr = float(p[m].mean()), float(h[m].mean())
        rows.append((b / bins, (b + 1) / bins, mp, hr, n))
        ece += n * abs(mp - hr)
    return rows, ece / max(len(p), 1)
