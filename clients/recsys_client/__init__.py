"""Python client SDK for recsys-engine's gRPC API (recsys.v1.Recommender).

    from recsys_client import RecsysClient

    with RecsysClient("127.0.0.1:50051", token="...") as client:
        result = client.recommend("42", k=10, explain=True)
        for rec in result.items:
            print(rec.item_id, rec.title, rec.score, rec.explanation and rec.explanation.text)

:class:`AsyncRecsysClient` (in :mod:`recsys_client.aio`) has the same API on asyncio. Failures
raise :class:`RecsysError` subclasses (:mod:`recsys_client.errors`). The ``recsys`` command
(:mod:`recsys_client.cli`) wraps the client for the shell.
"""

from recsys_client._core import Backoff
from recsys_client._version import __version__
from recsys_client.aio import AsyncRecsysClient
from recsys_client.client import RecsysClient
from recsys_client.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RecsysError,
    ResourceExhausted,
    ServerError,
    Unauthenticated,
    Unavailable,
)
from recsys_client.types import (
    EVENT_TYPES,
    ComponentShare,
    ContentMatch,
    ExperimentReport,
    Explanation,
    HistoryEvent,
    HistoryItem,
    Interaction,
    InterleavingResult,
    Interval,
    Item,
    ItemContribution,
    ItemsPage,
    ItemsResult,
    LatentFactors,
    MetricComparison,
    ModelInfo,
    ModelsResult,
    Recommendation,
    RecommendRequest,
    RecommendResult,
    RecordResult,
    ReloadResult,
    SampleRatio,
    SimilarItemsResult,
    SimilarUsers,
    Trending,
    UserHistory,
    VariantSummary,
    new_event_id,
)

__all__ = [
    "EVENT_TYPES",
    "AsyncRecsysClient",
    "Backoff",
    "ComponentShare",
    "ContentMatch",
    "DeadlineExceeded",
    "ExperimentReport",
    "Explanation",
    "HistoryEvent",
    "HistoryItem",
    "Interaction",
    "InterleavingResult",
    "Interval",
    "InvalidArgument",
    "Item",
    "ItemContribution",
    "ItemsPage",
    "ItemsResult",
    "LatentFactors",
    "MetricComparison",
    "ModelInfo",
    "ModelsResult",
    "NotFound",
    "PermissionDenied",
    "RecommendRequest",
    "RecommendResult",
    "Recommendation",
    "RecordResult",
    "RecsysClient",
    "RecsysError",
    "ReloadResult",
    "ResourceExhausted",
    "SampleRatio",
    "ServerError",
    "SimilarItemsResult",
    "SimilarUsers",
    "Trending",
    "Unauthenticated",
    "Unavailable",
    "UserHistory",
    "VariantSummary",
    "__version__",
    "new_event_id",
]
