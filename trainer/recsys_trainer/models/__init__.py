"""The five recommenders behind one interface (``Recommender``)."""

from recsys_trainer.models.base import Explanation, Recommender
from recsys_trainer.models.hybrid import Hybrid, HybridConfig
from recsys_trainer.models.item_cf import ItemCF, ItemCFConfig
from recsys_trainer.models.popularity import Popularity, PopularityConfig
from recsys_trainer.models.svd import SVD, SVDConfig
from recsys_trainer.models.user_cf import UserCF, UserCFConfig

MODELS: dict[str, type[Recommender]] = {
    m.name: m for m in (Popularity, UserCF, ItemCF, SVD, Hybrid)
}

__all__ = [
    "MODELS",
    "SVD",
    "Explanation",
    "Hybrid",
    "HybridConfig",
    "ItemCF",
    "ItemCFConfig",
    "Popularity",
    "PopularityConfig",
    "Recommender",
    "SVDConfig",
    "UserCF",
    "UserCFConfig",
]
