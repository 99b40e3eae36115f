"""The recommenders behind one interface (``Recommender``), listed in ``registry``."""

from recsys_core.models.base import Explanation, Recommender
from recsys_core.models.hybrid import Hybrid, HybridConfig
from recsys_core.models.item_cf import ItemCF, ItemCFConfig
from recsys_core.models.popularity import Popularity, PopularityConfig
from recsys_core.models.registry import REGISTRY, ModelSpec
from recsys_core.models.svd import SVD, SVDConfig
from recsys_core.models.user_cf import UserCF, UserCFConfig

MODELS: dict[str, type[Recommender]] = {name: s.model for name, s in REGISTRY.items()}

__all__ = [
    "MODELS",
    "REGISTRY",
    "SVD",
    "Explanation",
    "Hybrid",
    "HybridConfig",
    "ItemCF",
    "ItemCFConfig",
    "ModelSpec",
    "Popularity",
    "PopularityConfig",
    "Recommender",
    "SVDConfig",
    "UserCF",
    "UserCFConfig",
]
