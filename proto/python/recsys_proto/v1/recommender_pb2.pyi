import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FallbackTier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FALLBACK_TIER_UNSPECIFIED: _ClassVar[FallbackTier]
    FALLBACK_TIER_PERSONALIZED: _ClassVar[FallbackTier]
    FALLBACK_TIER_COLD_START: _ClassVar[FallbackTier]
    FALLBACK_TIER_POPULARITY: _ClassVar[FallbackTier]
FALLBACK_TIER_UNSPECIFIED: FallbackTier
FALLBACK_TIER_PERSONALIZED: FallbackTier
FALLBACK_TIER_COLD_START: FallbackTier
FALLBACK_TIER_POPULARITY: FallbackTier

class RecommendRequest(_message.Message):
    __slots__ = ("user_id", "k", "model", "exclude_item_ids", "allow_item_ids", "recent_item_ids", "explain", "diversity")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    RECENT_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    k: int
    model: str
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    allow_item_ids: _containers.RepeatedScalarFieldContainer[str]
    recent_item_ids: _containers.RepeatedScalarFieldContainer[str]
    explain: bool
    diversity: float
    def __init__(self, user_id: _Optional[str] = ..., k: _Optional[int] = ..., model: _Optional[str] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., allow_item_ids: _Optional[_Iterable[str]] = ..., recent_item_ids: _Optional[_Iterable[str]] = ..., explain: _Optional[bool] = ..., diversity: _Optional[float] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("user_id", "items", "model", "model_version", "fallback_tier", "experiment", "variant", "recommendation_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_TIER_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATION_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    model: str
    model_version: str
    fallback_tier: FallbackTier
    experiment: str
    variant: str
    recommendation_id: str
    def __init__(self, user_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., fallback_tier: _Optional[_Union[FallbackTier, str]] = ..., experiment: _Optional[str] = ..., variant: _Optional[str] = ..., recommendation_id: _Optional[str] = ...) -> None: ...

class ScoredItem(_message.Message):
    __slots__ = ("item_id", "score", "confidence", "title", "categories", "explanation")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    confidence: float
    title: str
    categories: _containers.RepeatedScalarFieldContainer[str]
    explanation: Explanation
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ..., confidence: _Optional[float] = ..., title: _Optional[str] = ..., categories: _Optional[_Iterable[str]] = ..., explanation: _Optional[_Union[Explanation, _Mapping]] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("text", "kind", "items", "similar_users", "latent_factors", "trending", "components", "content", "new_item")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    SIMILAR_USERS_FIELD_NUMBER: _ClassVar[int]
    LATENT_FACTORS_FIELD_NUMBER: _ClassVar[int]
    TRENDING_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    NEW_ITEM_FIELD_NUMBER: _ClassVar[int]
    text: str
    kind: str
    items: _containers.RepeatedCompositeFieldContainer[ItemContribution]
    similar_users: SimilarUsers
    latent_factors: LatentFactors
    trending: Trending
    components: _containers.RepeatedCompositeFieldContainer[ComponentShare]
    content: ContentMatch
    new_item: bool
    def __init__(self, text: _Optional[str] = ..., kind: _Optional[str] = ..., items: _Optional[_Iterable[_Union[ItemContribution, _Mapping]]] = ..., similar_users: _Optional[_Union[SimilarUsers, _Mapping]] = ..., latent_factors: _Optional[_Union[LatentFactors, _Mapping]] = ..., trending: _Optional[_Union[Trending, _Mapping]] = ..., components: _Optional[_Iterable[_Union[ComponentShare, _Mapping]]] = ..., content: _Optional[_Union[ContentMatch, _Mapping]] = ..., new_item: _Optional[bool] = ...) -> None: ...

class ContentMatch(_message.Message):
    __slots__ = ("categories", "items")
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    categories: _containers.RepeatedScalarFieldContainer[str]
    items: _containers.RepeatedCompositeFieldContainer[ItemContribution]
    def __init__(self, categories: _Optional[_Iterable[str]] = ..., items: _Optional[_Iterable[_Union[ItemContribution, _Mapping]]] = ...) -> None: ...

class ItemContribution(_message.Message):
    __slots__ = ("item_id", "title", "similarity", "contribution")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    title: str
    similarity: float
    contribution: float
    def __init__(self, item_id: _Optional[str] = ..., title: _Optional[str] = ..., similarity: _Optional[float] = ..., contribution: _Optional[float] = ...) -> None: ...

class SimilarUsers(_message.Message):
    __slots__ = ("count", "neighbours", "mean_similarity", "max_similarity")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    MEAN_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    MAX_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    count: int
    neighbours: int
    mean_similarity: float
    max_similarity: float
    def __init__(self, count: _Optional[int] = ..., neighbours: _Optional[int] = ..., mean_similarity: _Optional[float] = ..., max_similarity: _Optional[float] = ...) -> None: ...

class LatentFactors(_message.Message):
    __slots__ = ("factors", "contributions", "shares", "closest_item_id", "closest_item_title", "closest_similarity")
    FACTORS_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    CLOSEST_ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    CLOSEST_ITEM_TITLE_FIELD_NUMBER: _ClassVar[int]
    CLOSEST_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    factors: _containers.RepeatedScalarFieldContainer[int]
    contributions: _containers.RepeatedScalarFieldContainer[float]
    shares: _containers.RepeatedScalarFieldContainer[float]
    closest_item_id: str
    closest_item_title: str
    closest_similarity: float
    def __init__(self, factors: _Optional[_Iterable[int]] = ..., contributions: _Optional[_Iterable[float]] = ..., shares: _Optional[_Iterable[float]] = ..., closest_item_id: _Optional[str] = ..., closest_item_title: _Optional[str] = ..., closest_similarity: _Optional[float] = ...) -> None: ...

class Trending(_message.Message):
    __slots__ = ("rank", "half_life_days", "window_start", "window_end")
    RANK_FIELD_NUMBER: _ClassVar[int]
    HALF_LIFE_DAYS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    rank: int
    half_life_days: float
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    def __init__(self, rank: _Optional[int] = ..., half_life_days: _Optional[float] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ComponentShare(_message.Message):
    __slots__ = ("model", "share", "contribution")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    model: str
    share: float
    contribution: float
    def __init__(self, model: _Optional[str] = ..., share: _Optional[float] = ..., contribution: _Optional[float] = ...) -> None: ...

class RecommendBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RecommendRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[RecommendRequest, _Mapping]]] = ...) -> None: ...

class RecommendBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[RecommendResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[RecommendResponse, _Mapping]]] = ...) -> None: ...

class SimilarItemsRequest(_message.Message):
    __slots__ = ("item_id", "k", "model")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    k: int
    model: str
    def __init__(self, item_id: _Optional[str] = ..., k: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class SimilarItemsResponse(_message.Message):
    __slots__ = ("item_id", "items", "model", "model_version")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    items: _containers.RepeatedCompositeFieldContainer[ScoredItem]
    model: str
    model_version: str
    def __init__(self, item_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[ScoredItem, _Mapping]]] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class Interaction(_message.Message):
    __slots__ = ("event_id", "user_id", "item_id", "event_type", "timestamp", "rating", "recommendation_id", "position")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATION_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    item_id: str
    event_type: str
    timestamp: _timestamp_pb2.Timestamp
    rating: float
    recommendation_id: str
    position: int
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., item_id: _Optional[str] = ..., event_type: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rating: _Optional[float] = ..., recommendation_id: _Optional[str] = ..., position: _Optional[int] = ...) -> None: ...

class RecordInteractionsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Interaction]
    def __init__(self, events: _Optional[_Iterable[_Union[Interaction, _Mapping]]] = ...) -> None: ...

class RecordInteractionsResponse(_message.Message):
    __slots__ = ("recorded", "duplicates")
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    recorded: int
    duplicates: int
    def __init__(self, recorded: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "trained_at", "metrics", "params")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAINED_AT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    trained_at: _timestamp_pb2.Timestamp
    metrics: _containers.ScalarMap[str, float]
    params: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., trained_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., params: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "version", "default_model")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    version: str
    default_model: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., version: _Optional[str] = ..., default_model: _Optional[str] = ...) -> None: ...

class ReloadModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadModelsResponse(_message.Message):
    __slots__ = ("version", "changed", "message")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    version: str
    changed: bool
    message: str
    def __init__(self, version: _Optional[str] = ..., changed: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("item_id", "title", "categories", "attributes", "available", "in_model", "updated_at")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    IN_MODEL_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    title: str
    categories: _containers.RepeatedScalarFieldContainer[str]
    attributes: _containers.ScalarMap[str, str]
    available: bool
    in_model: bool
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, item_id: _Optional[str] = ..., title: _Optional[str] = ..., categories: _Optional[_Iterable[str]] = ..., attributes: _Optional[_Mapping[str, str]] = ..., available: _Optional[bool] = ..., in_model: _Optional[bool] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UpsertItemsRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ...) -> None: ...

class UpsertItemsResponse(_message.Message):
    __slots__ = ("changed", "unchanged")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    changed: int
    unchanged: int
    def __init__(self, changed: _Optional[int] = ..., unchanged: _Optional[int] = ...) -> None: ...

class SetItemAvailabilityRequest(_message.Message):
    __slots__ = ("item_ids", "available")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    available: bool
    def __init__(self, item_ids: _Optional[_Iterable[str]] = ..., available: _Optional[bool] = ...) -> None: ...

class SetItemAvailabilityResponse(_message.Message):
    __slots__ = ("changed", "unchanged")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    changed: int
    unchanged: int
    def __init__(self, changed: _Optional[int] = ..., unchanged: _Optional[int] = ...) -> None: ...

class GetItemRequest(_message.Message):
    __slots__ = ("item_id",)
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    def __init__(self, item_id: _Optional[str] = ...) -> None: ...

class GetItemResponse(_message.Message):
    __slots__ = ("item",)
    ITEM_FIELD_NUMBER: _ClassVar[int]
    item: Item
    def __init__(self, item: _Optional[_Union[Item, _Mapping]] = ...) -> None: ...

class ListItemsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "available")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    available: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., available: _Optional[bool] = ...) -> None: ...

class ListItemsResponse(_message.Message):
    __slots__ = ("items", "next_page_token")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    next_page_token: str
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetUserHistoryRequest(_message.Message):
    __slots__ = ("user_id", "limit")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    limit: int
    def __init__(self, user_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class HistoryItem(_message.Message):
    __slots__ = ("item_id", "title", "weight")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    title: str
    weight: float
    def __init__(self, item_id: _Optional[str] = ..., title: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class HistoryEvent(_message.Message):
    __slots__ = ("event_id", "item_id", "title", "event_type", "timestamp", "rating", "trained")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    TRAINED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    item_id: str
    title: str
    event_type: str
    timestamp: _timestamp_pb2.Timestamp
    rating: float
    trained: bool
    def __init__(self, event_id: _Optional[str] = ..., item_id: _Optional[str] = ..., title: _Optional[str] = ..., event_type: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rating: _Optional[float] = ..., trained: _Optional[bool] = ...) -> None: ...

class GetUserHistoryResponse(_message.Message):
    __slots__ = ("user_id", "model_version", "training_items", "events")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAINING_ITEMS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    model_version: str
    training_items: _containers.RepeatedCompositeFieldContainer[HistoryItem]
    events: _containers.RepeatedCompositeFieldContainer[HistoryEvent]
    def __init__(self, user_id: _Optional[str] = ..., model_version: _Optional[str] = ..., training_items: _Optional[_Iterable[_Union[HistoryItem, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[HistoryEvent, _Mapping]]] = ...) -> None: ...

class GetExperimentReportRequest(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    def __init__(self, experiment: _Optional[str] = ...) -> None: ...

class Interval(_message.Message):
    __slots__ = ("low", "high")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    low: float
    high: float
    def __init__(self, low: _Optional[float] = ..., high: _Optional[float] = ...) -> None: ...

class VariantSummary(_message.Message):
    __slots__ = ("variant", "model", "share", "users", "impressions", "clicks", "conversions", "value", "ctr", "conversions_per_user", "value_per_user")
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    IMPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    CLICKS_FIELD_NUMBER: _ClassVar[int]
    CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CTR_FIELD_NUMBER: _ClassVar[int]
    CONVERSIONS_PER_USER_FIELD_NUMBER: _ClassVar[int]
    VALUE_PER_USER_FIELD_NUMBER: _ClassVar[int]
    variant: str
    model: str
    share: float
    users: int
    impressions: int
    clicks: int
    conversions: int
    value: float
    ctr: float
    conversions_per_user: float
    value_per_user: float
    def __init__(self, variant: _Optional[str] = ..., model: _Optional[str] = ..., share: _Optional[float] = ..., users: _Optional[int] = ..., impressions: _Optional[int] = ..., clicks: _Optional[int] = ..., conversions: _Optional[int] = ..., value: _Optional[float] = ..., ctr: _Optional[float] = ..., conversions_per_user: _Optional[float] = ..., value_per_user: _Optional[float] = ...) -> None: ...

class MetricComparison(_message.Message):
    __slots__ = ("metric", "variant", "control_value", "variant_value", "difference", "relative_difference", "ci95", "always_valid", "p_value", "significant", "mde_relative")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    CONTROL_VALUE_FIELD_NUMBER: _ClassVar[int]
    VARIANT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    CI95_FIELD_NUMBER: _ClassVar[int]
    ALWAYS_VALID_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    SIGNIFICANT_FIELD_NUMBER: _ClassVar[int]
    MDE_RELATIVE_FIELD_NUMBER: _ClassVar[int]
    metric: str
    variant: str
    control_value: float
    variant_value: float
    difference: float
    relative_difference: float
    ci95: Interval
    always_valid: Interval
    p_value: float
    significant: bool
    mde_relative: float
    def __init__(self, metric: _Optional[str] = ..., variant: _Optional[str] = ..., control_value: _Optional[float] = ..., variant_value: _Optional[float] = ..., difference: _Optional[float] = ..., relative_difference: _Optional[float] = ..., ci95: _Optional[_Union[Interval, _Mapping]] = ..., always_valid: _Optional[_Union[Interval, _Mapping]] = ..., p_value: _Optional[float] = ..., significant: _Optional[bool] = ..., mde_relative: _Optional[float] = ...) -> None: ...

class SampleRatio(_message.Message):
    __slots__ = ("observed", "expected_shares", "chi_square", "p_value", "mismatch")
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SHARES_FIELD_NUMBER: _ClassVar[int]
    CHI_SQUARE_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    MISMATCH_FIELD_NUMBER: _ClassVar[int]
    observed: _containers.RepeatedScalarFieldContainer[int]
    expected_shares: _containers.RepeatedScalarFieldContainer[float]
    chi_square: float
    p_value: float
    mismatch: bool
    def __init__(self, observed: _Optional[_Iterable[int]] = ..., expected_shares: _Optional[_Iterable[float]] = ..., chi_square: _Optional[float] = ..., p_value: _Optional[float] = ..., mismatch: _Optional[bool] = ...) -> None: ...

class InterleavingResult(_message.Message):
    __slots__ = ("model_a", "model_b", "wins_a", "wins_b", "ties", "preference_a", "ci95", "always_valid", "p_value")
    MODEL_A_FIELD_NUMBER: _ClassVar[int]
    MODEL_B_FIELD_NUMBER: _ClassVar[int]
    WINS_A_FIELD_NUMBER: _ClassVar[int]
    WINS_B_FIELD_NUMBER: _ClassVar[int]
    TIES_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_A_FIELD_NUMBER: _ClassVar[int]
    CI95_FIELD_NUMBER: _ClassVar[int]
    ALWAYS_VALID_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    model_a: str
    model_b: str
    wins_a: int
    wins_b: int
    ties: int
    preference_a: float
    ci95: Interval
    always_valid: Interval
    p_value: float
    def __init__(self, model_a: _Optional[str] = ..., model_b: _Optional[str] = ..., wins_a: _Optional[int] = ..., wins_b: _Optional[int] = ..., ties: _Optional[int] = ..., preference_a: _Optional[float] = ..., ci95: _Optional[_Union[Interval, _Mapping]] = ..., always_valid: _Optional[_Union[Interval, _Mapping]] = ..., p_value: _Optional[float] = ...) -> None: ...

class GetExperimentReportResponse(_message.Message):
    __slots__ = ("experiment", "kind", "control", "generated_at", "attribution_hours", "variants", "comparisons", "sample_ratio", "interleaving", "impressions_dropped")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    GENERATED_AT_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTION_HOURS_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    COMPARISONS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATIO_FIELD_NUMBER: _ClassVar[int]
    INTERLEAVING_FIELD_NUMBER: _ClassVar[int]
    IMPRESSIONS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    kind: str
    control: str
    generated_at: _timestamp_pb2.Timestamp
    attribution_hours: float
    variants: _containers.RepeatedCompositeFieldContainer[VariantSummary]
    comparisons: _containers.RepeatedCompositeFieldContainer[MetricComparison]
    sample_ratio: SampleRatio
    interleaving: InterleavingResult
    impressions_dropped: int
    def __init__(self, experiment: _Optional[str] = ..., kind: _Optional[str] = ..., control: _Optional[str] = ..., generated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attribution_hours: _Optional[float] = ..., variants: _Optional[_Iterable[_Union[VariantSummary, _Mapping]]] = ..., comparisons: _Optional[_Iterable[_Union[MetricComparison, _Mapping]]] = ..., sample_ratio: _Optional[_Union[SampleRatio, _Mapping]] = ..., interleaving: _Optional[_Union[InterleavingResult, _Mapping]] = ..., impressions_dropped: _Optional[int] = ...) -> None: ...
