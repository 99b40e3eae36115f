"""Model explanations (`recsys_core.models.Explanation`) -> readable text + structured
evidence with item ids and catalog titles (transport-agnostic; the servicer makes protos)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from recsys_core.models import Explanation
from recsys_core.models.registry import REGISTRY
from recsys_server.snapshot import Snapshot

VERBS = {
    "view": "viewed",
    "click": "clicked",
    "add_to_cart": "added to cart",
    "purchase": "bought",
    "session": "viewed",  # request.recent_item_ids
}
DEFAULT_VERB = "watched"  # ratings, training history
NO_BLEND_SIGNAL = "Blend of the models (no strong signal for this item)"
COMPONENT_NAMES = {name: spec.label for name, spec in REGISTRY.items()}


@dataclass(slots=True)
class ItemReason:
    item_id: str
    title: str
    similarity: float
    contribution: float


@dataclass(slots=True)
class SimilarUsers:
    count: int
    neighbours: int
    mean_similarity: float
    max_similarity: float


@dataclass(slots=True)
class LatentFactors:
    factors: list[int]
    contributions: list[float]
    shares: list[float]
    closest_item_id: str = ""
    closest_item_title: str = ""
    closest_similarity: float = 0.0


@dataclass(slots=True)
class Trending:
    rank: int
    half_life_days: float
    window_start: int
    window_end: int


@dataclass(slots=True)
class Component:
    model: str
    share: float
    contribution: float


@dataclass(slots=True)
class Reason:
    text: str
    kind: str
    items: list[ItemReason] = field(default_factory=list)
    similar_users: SimilarUsers | None = None
    latent_factors: LatentFactors | None = None
    trending: Trending | None = None
    components: list[Component] = field(default_factory=list)


def join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def describe(e: Explanation, snap: Snapshot, kinds: Mapping[int, str]) -> Reason:
    """``kinds``: the user's latest event type per item index (for the verb)."""
    text = DESCRIBERS.get(e.kind)
    if text is None:
        return Reason(text=f"Recommended by {e.kind}", kind=e.kind)
    return text(e.fields, snap, kinds)


def _item_cf(f: Mapping, snap: Snapshot, kinds: Mapping[int, str]) -> Reason:
    items = [
        ItemReason(snap.item_ids[i], snap.titles[i], float(s), float(c))
        for i, s, c in zip(f["items"], f["similarities"], f["contributions"], strict=True)
    ]
    if not items:
        return Reason(
            "No close link to your history; added to complete your list", "because_you_interacted"
        )
    groups: dict[str, list[str]] = {}
    for i in f["items"]:
        verb = VERBS.get(kinds.get(i, ""), DEFAULT_VERB)
        groups.setdefault(verb, []).append(snap.title(i))
    text = "Because you " + ", and ".join(f"{v} {join(t)}" for v, t in groups.items())
    return Reason(text, "because_you_interacted", items=items)


def _user_cf(f: Mapping, snap: Snapshot, kinds: Mapping[int, str]) -> Reason:
    su = SimilarUsers(
        int(f["n_similar_users"]),
        int(f["n_neighbours"]),
        float(f["mean_similarity"]),
        float(f["max_similarity"]),
    )
    if su.neighbours == 0:
        text = "No users with similar taste yet"
    elif su.count == 0:
        text = f"None of the {su.neighbours} users with the most similar taste chose this yet"
    else:
        text = (
            f"{su.count} of {su.neighbours} users with similar taste chose this "
            f"(similarity {su.mean_similarity:.2f})"
        )
    return Reason(text, "similar_users", similar_users=su)


def _svd(f: Mapping, snap: Snapshot, kinds: Mapping[int, str]) -> Reason:
    lf = LatentFactors(
        [int(x) for x in f["factors"]],
        [float(x) for x in f["contributions"]],
        [float(x) for x in f["shares"]],
    )
    text = f"Matches your taste (factors {', '.join(str(x) for x in lf.factors)})"
    closest = f.get("closest_item")
    if closest is not None:
        lf.closest_item_id = snap.item_ids[closest]
        lf.closest_item_title = snap.titles[closest]
        lf.closest_similarity = float(f["closest_similarity"])
        text += f"; closest to {snap.title(closest)} you liked"
    return Reason(text, "latent_factors", latent_factors=lf)


def _trending(f: Mapping, snap: Snapshot, kinds: Mapping[int, str]) -> Reason:
    t = Trending(
        int(f["rank"]), float(f["half_life_days"]), int(f["window_start"]), int(f["window_end"])
    )
    end = datetime.fromtimestamp(t.window_end, UTC)
    if math.isfinite(t.half_life_days):
        text = f"Trending: #{t.rank} as of {end:%Y-%m-%d} ({t.half_life_days:g}-day half-life)"
    else:
        text = f"Popular: #{t.rank} as of {end:%Y-%m-%d}"
    return Reason(text, "trending", trending=t)


def _blend(f: Mapping, snap: Snapshot, kinds: Mapping[int, str]) -> Reason:
    names = list(f["contributions"])
    contrib = np.array([[float(f["contributions"][n])] for n in names], np.float64)
    shares = np.array([[float(f["shares"].get(n, 0.0))] for n in names], np.float64)
    return blend_reasons(names, contrib, shares, bool(f.get("cold_start")))[0]


def _content(f: Mapping, snap: Snapshot, kinds: Mapping[int, str]) -> Reason:
    items = [
        ItemReason(snap.item_ids[i], snap.titles[i], 0.0, float(c))
        for i, c in zip(f["items"], f["item_contributions"], strict=True)
    ]
    if not f["labels"]:
        return Reason("Nothing in common with your history; added to complete your list", "content")
    text = f"Matches your interest in {join(list(f['labels']))}"
    if items:
        text += f", like {snap.title(f['items'][0])}"
    return Reason(text[:120], "content", items=items)


DESCRIBERS = {
    "because_you_interacted": _item_cf,
    "similar_users": _user_cf,
    "latent_factors": _svd,
    "trending": _trending,
    "blend": _blend,
    "content": _content,
}
"""Explanation kind (``ModelSpec.explanation``) -> its text and structured evidence."""


def blend_reasons(
    names: list[str], contrib: np.ndarray, shares: np.ndarray, cold_start: bool
) -> list[Reason]:
    """One "blend" reason per column of ``contrib`` / ``shares`` (parts x items: each part's
    weighted score at the item and its share of the item's score). Vectorised because the
    hybrid is the default model and this runs for every item of most responses: the per-item
    Python work is a sort of a few tuples and a join of preformatted labels."""
    # Parts by share, largest first, ties by name: a stable sort of the name-ordered parts.
    by_name = sorted(range(len(names)), key=names.__getitem__)
    ranked = np.asarray(by_name)[np.argsort(-shares[by_name], axis=0, kind="stable")]
    pcts = np.rint(shares * 100).astype(np.int64).T.tolist()  # each "{share:.0%}"
    visible = (shares >= 0.005).T.tolist()
    labels = [COMPONENT_NAMES.get(n, n) for n in names]
    suffix = " (short history)" if cold_start else ""
    out = []
    cols = zip(contrib.T.tolist(), shares.T.tolist(), pcts, visible, ranked.T.tolist(), strict=True)
    for c, sh, pct, vis, order in cols:
        words = [f"{labels[p]} {pct[p]}%" for p in order if vis[p]]
        text = "Blend of " + ", ".join(words) if words else NO_BLEND_SIGNAL
        comps = [Component(names[p], sh[p], c[p]) for p in order]
        out.append(Reason(text + suffix, "blend", components=comps))
    return out
