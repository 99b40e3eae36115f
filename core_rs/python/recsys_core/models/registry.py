"""The one table of models. Everything that lists models (the trainer CLI and config, the
hybrid's components, artifacts, the server's routes and SimilarItems, the tests) reads it, so
a model is added here and nowhere else (docs/trainer.md, "Adding a model")."""

from __future__ import annotations

from dataclasses import dataclass

from recsys_core.models.base import Recommender
from recsys_core.models.content import Content, ContentConfig
from recsys_core.models.ease import EASE, EASEConfig
from recsys_core.models.hybrid import Hybrid, HybridConfig
from recsys_core.models.item_cf import ItemCF, ItemCFConfig
from recsys_core.models.popularity import Popularity, PopularityConfig
from recsys_core.models.svd import SVD, SVDConfig
from recsys_core.models.user_cf import UserCF, UserCFConfig


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model: type[Recommender]
    config: type
    explanation: str
    """The ``Explanation.kind`` its ``explain`` returns."""
    label: str
    """How people read the name (explanation text, charts)."""
    similar_items: bool = False
    """Answers ``similar_items`` (the SimilarItems RPC)."""
    blend_weight: float | None = None
    """Its starting weight as a hybrid component (tuned at fit); None: not a component."""


SPECS: tuple[ModelSpec, ...] = (
    ModelSpec("popularity", Popularity, PopularityConfig, "trending", "popularity", False, 0.1),
    ModelSpec("user_cf", UserCF, UserCFConfig, "similar_users", "user-CF", False, 0.5),
    ModelSpec("item_cf", ItemCF, ItemCFConfig, "because_you_interacted", "item-CF", True, 1.0),
    ModelSpec("svd", SVD, SVDConfig, "latent_factors", "SVD", True, 0.5),
    ModelSpec("ease", EASE, EASEConfig, "because_you_interacted", "EASE", True, 0.5),
    ModelSpec("content", Content, ContentConfig, "content", "content", True, 0.1),
    ModelSpec("hybrid", Hybrid, HybridConfig, "blend", "hybrid"),
)
"""In fitting order: a hybrid comes after the components it shares."""

REGISTRY: dict[str, ModelSpec] = {s.name: s for s in SPECS}
NAMES: tuple[str, ...] = tuple(REGISTRY)
COMPONENTS: tuple[str, ...] = tuple(s.name for s in SPECS if s.blend_weight is not None)
SIMILAR: tuple[str, ...] = tuple(s.name for s in SPECS if s.similar_items)


def default_weights() -> dict[str, float]:
    """The hybrid's starting weights, one per component."""
    return {s.name: s.blend_weight for s in SPECS if s.blend_weight is not None}
