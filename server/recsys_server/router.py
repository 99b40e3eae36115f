"""Which model answers a request: an explicit ``model``, else the user's A/B variant (or, in an
interleave experiment, both variants), else the configured default; then the tier, from how
much history the user has."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from recsys_core.models import Hybrid, Recommender
from recsys_server.config import Experiment, Variant
from recsys_server.errors import NotFound
from recsys_server.snapshot import Snapshot, variant_key

PERSONALIZED = "personalized"
COLD_START = "cold_start"
POPULARITY = "popularity"
TIERS = (PERSONALIZED, COLD_START, POPULARITY)
INTERLEAVED = "interleaved"
"""The variant reported for every user of an interleave experiment."""


def bucket(experiment: str, user_id: str) -> float:
    """The user's sticky position in [0, 1) for one experiment."""
    digest = hashlib.sha256(f"{experiment}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign(experiments: tuple[Experiment, ...], user_id: str) -> tuple[Experiment, Variant] | None:
    """The first experiment whose variants' cumulative shares cover the user's bucket (shares
    adding up to less than 1 leave the rest of the users on the default model)."""
    for exp in experiments:
        b = bucket(exp.name, user_id)
        edge = 0.0
        for v in exp.variants:
            edge += v.share
            if b < edge:
                return exp, v
    return None


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    model: Recommender
    key: str
    """Reference-score key: the model name, or ``experiment/variant``."""
    explicit: bool
    experiment: str = ""
    variant: str = ""
    pair: tuple[Route, Route] | None = None
    """Interleave: the two variants' own routes, whose lists are merged; ``model`` is the
    first's (what the cold-start and popularity tiers fall back from)."""


def route(
    snap: Snapshot, experiments: tuple[Experiment, ...], user_id: str, requested: str
) -> Route:
    if requested:
        model = snap.models.get(requested)
        if model is None:
            raise NotFound(
                f"model {requested!r} is not loaded (version {snap.version}); "
                f"available: {', '.join(sorted(snap.models))}"
            )
        return Route(requested, model, requested, True)
    picked = assign(experiments, user_id)
    if picked is not None:
        exp, v = picked
        if exp.kind == "interleave":
            a, b = (variant_route(snap, exp, x) for x in exp.variants)
            if a is not None and b is not None:
                name = f"{a.name}+{b.name}"
                return Route(name, a.model, a.key, False, exp.name, INTERLEAVED, (a, b))
        elif (r := variant_route(snap, exp, v)) is not None:
            return r
    name = snap.default_model
    return Route(name, snap.models[name], name, False)


def variant_route(snap: Snapshot, exp: Experiment, v: Variant) -> Route | None:
    """None when the version lacks the variant's model (the default model answers)."""
    key = variant_key(exp.name, v.name)
    model = snap.variant_models.get(key)
    return None if model is None else Route(v.model, model, key, False, exp.name, v.name)


@dataclass(frozen=True, slots=True)
class Choice:
    name: str
    model: Recommender
    tier: str
    key: str


def choose(snap: Snapshot, r: Route, history_len: int) -> Choice:
    """No history: popularity. A history shorter than the hybrid's cold-start threshold on a
    default/variant/hybrid route: the hybrid's cold-start blend. Otherwise the routed model."""
    if history_len == 0:
        pop = snap.models.get("popularity")
        if pop is not None:
            return Choice("popularity", pop, POPULARITY, "popularity")
        return Choice(r.name, r.model, POPULARITY, r.key)
    if history_len < snap.cold_threshold and (not r.explicit or r.name == "hybrid"):
        hybrid = r.model if isinstance(r.model, Hybrid) else snap.models.get("hybrid")
        if hybrid is not None:
            return Choice("hybrid", hybrid, COLD_START, "cold_start")
    return Choice(r.name, r.model, PERSONALIZED, r.key)
