"""Hybrid weights the user can change, applied client-side.

The server takes no hybrid weights per request (only A/B variants configured at start), so the
dashboard re-blends what the components return: for one user it asks each component model for
its top ``pool`` items, then for its scores on the union of those (``allow``), and blends them
the way the trainer's hybrid does: ``sum(w[m] * score[m] / peak[m])``, where ``peak[m]`` is the
component's largest score for the user. The server's own hybrid explanation gives each part's
normalised score at its items, which pins ``peak`` exactly for the components it uses, so the
trained weights reproduce the server's hybrid list; a component the hybrid does not use falls
back to its best returned score.
"""

from __future__ import annotations

from dataclasses import dataclass

from recsys_client import RecommendRequest, RecommendResult, RecsysClient


@dataclass(frozen=True)
class Parts:
    """One user's component scores on a shared candidate pool."""

    user_id: str
    hybrid: RecommendResult
    """The server's hybrid answer (explicit model, trained weights)."""
    scores: dict[str, dict[str, float]]
    """component -> item -> raw score (items the component did not return are absent)."""
    peaks: dict[str, float]
    exact: dict[str, bool]
    """Whether the component's peak came from the server's hybrid explanation."""
    titles: dict[str, str]


@dataclass(frozen=True)
class Blended:
    item_id: str
    title: str
    score: float
    contributions: dict[str, float]


def components(params: dict[str, str]) -> tuple[str, ...]:
    """The hybrid's components, from its ListModels params (``tuned_weights.<model>``, else
    ``weights.<model>``): the server's list, so a newly registered model shows up here."""
    for prefix in ("tuned_weights.", "weights."):
        names = tuple(sorted(k[len(prefix) :] for k in params if k.startswith(prefix)))
        if names:
            return names
    return ()


def trained_weights(params: dict[str, str]) -> dict[str, float]:
    """The hybrid's tuned weights from its ListModels params (``tuned_weights.<model>``)."""
    out = {}
    for m in components(params):
        raw = params.get(f"tuned_weights.{m}", params.get(f"weights.{m}", "0"))
        try:
            out[m] = float(raw)
        except ValueError:
            out[m] = 0.0
    return out


def fetch(
    client: RecsysClient,
    user_id: str,
    weights: dict[str, float],
    components: tuple[str, ...],
    k: int = 10,
    pool: int = 50,
) -> Parts:
    """Two RecommendBatch calls: the hybrid plus each component's top ``pool``, then each
    component's scores on the union. ``weights`` are the server's trained ones."""
    first = client.recommend_batch(
        [RecommendRequest(user_id, k, model="hybrid", explain=True)]
        + [RecommendRequest(user_id, pool, model=m) for m in components]
    )
    hybrid, tops = first[0], dict(zip(components, first[1:], strict=True))
    titles = {r.item_id: r.title for res in first for r in res.items}
    candidates = sorted({i for res in first for i in res.item_ids})
    scores: dict[str, dict[str, float]] = {m: {} for m in components}
    if candidates:
        second = client.recommend_batch(
            [
                RecommendRequest(user_id, len(candidates), model=m, allow=candidates)
                for m in components
            ]
        )
        for m, res in zip(components, second, strict=True):
            scores[m] = {r.item_id: r.score for r in res.items}
    peaks, exact = {}, {}
    for m in components:
        peak = _peak_from_explanation(hybrid, m, weights.get(m, 0.0), scores[m])
        exact[m] = peak is not None
        if peak is None:
            best = [abs(r.score) for r in tops[m].items]
            peak = max(best) if best else 1.0
        peaks[m] = peak if peak > 0 else 1.0
    return Parts(user_id, hybrid, scores, peaks, exact, titles)


def _peak_from_explanation(
    hybrid: RecommendResult, model: str, weight: float, raw: dict[str, float]
) -> float | None:
    if hybrid.fallback_tier != "personalized" or weight <= 0:
        return None
    for rec in hybrid.items:
        parts = rec.explanation.components if rec.explanation else []
        for c in parts:
            normalised = c.contribution / weight if c.model == model else 0.0
            if abs(normalised) > 1e-6 and rec.item_id in raw:
                return abs(raw[rec.item_id] / normalised)
    return None


def reblend(parts: Parts, weights: dict[str, float], k: int = 10) -> list[Blended]:
    """The top ``k`` of the pool under ``weights`` (ties by item id, like a stable ranking)."""
    pool = sorted({i for s in parts.scores.values() for i in s})
    out = []
    for item in pool:
        contrib = {
            m: weights.get(m, 0.0) * s.get(item, 0.0) / parts.peaks[m]
            for m, s in parts.scores.items()
            if weights.get(m, 0.0) > 0
        }
        out.append(Blended(item, parts.titles.get(item, ""), sum(contrib.values()), contrib))
    out.sort(key=lambda b: (-b.score, b.item_id))
    return out[:k]
