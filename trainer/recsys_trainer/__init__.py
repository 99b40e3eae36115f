"""recsys-engine trainer: data loading, synthetic data, splits and evaluation metrics."""

from recsys_trainer.catalog import Catalog, load_catalog
from recsys_trainer.data import (
    ColumnMap,
    DataError,
    EventWeights,
    Interactions,
    from_frame,
    load_interactions,
)

__all__ = [
    "Catalog",
    "ColumnMap",
    "DataError",
    "EventWeights",
    "Interactions",
    "from_frame",
    "load_catalog",
    "load_interactions",
]
