"""Validation and conversion between :mod:`recsys_client.types` and the protobuf messages.

The only module that knows both sides; used by the sync and the async client alike. Invalid
arguments raise :class:`~recsys_client.errors.InvalidArgument` before anything is sent.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2

from recsys_client.errors import InvalidArgument
from recsys_client.types import (
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
)
from recsys_proto.v1 import recommender_pb2 as pb

#: API limits (see recommender.proto).
MAX_K = 1000
MAX_BATCH = 1000
MAX_EVENTS = 1000
MAX_ITEMS = 1000
MAX_PAGE = 1000
MAX_RECOMMENDATION_ID = 128

_TIERS = {
    pb.FALLBACK_TIER_UNSPECIFIED: "unspecified",
    pb.FALLBACK_TIER_PERSONALIZED: "personalized",
    pb.FALLBACK_TIER_COLD_START: "cold_start",
    pb.FALLBACK_TIER_POPULARITY: "popularity",
}


# --- validation -----------------------------------------------------------------------------


def check_id(name: str, value: Any) -> str:
    """A non-empty id; integers (numpy's too) are accepted and sent as their decimal string."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(f"{name} must be a non-empty string, got {value!r}")
    return value


def check_ids(name: str, values: Iterable[Any] | None) -> list[str]:
    """A list of ids (a bare string is refused: it would be read as its characters)."""
    if values is None:
        return []
    if isinstance(values, str | bytes):
        raise InvalidArgument(f"{name} must be a list of item ids, not a single string")
    try:
        items = list(values)
    except TypeError:
        raise InvalidArgument(f"{name} must be a list of item ids, got {values!r}") from None
    return [check_id(f"{name}[{i}]", v) for i, v in enumerate(items)]


def check_k(k: Any) -> int:
    if isinstance(k, numbers.Integral) and not isinstance(k, bool) and 1 <= k <= MAX_K:
        return int(k)
    raise InvalidArgument(f"k must be an integer in [1, {MAX_K}], got {k!r}")


def check_model(model: Any) -> str:
    if model is None:
        return ""
    if not isinstance(model, str):
        raise InvalidArgument(f"model must be a string or None, got {model!r}")
    return model


def check_diversity(value: Any) -> float:
    """0 … 1 (0: off), as the server checks it."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    raise InvalidArgument(f"diversity must be a number in [0, 1], got {value!r}")


def check_timeout(timeout: Any, name: str = "timeout") -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise InvalidArgument(f"{name} must be a number of seconds or None, got {timeout!r}")
    if not timeout > 0 or math.isinf(timeout):
        raise InvalidArgument(f"{name} must be a positive, finite number of seconds")
    return float(timeout)


# --- timestamps -----------------------------------------------------------------------------


def to_timestamp(value: datetime | float) -> timestamp_pb2.Timestamp:
    """A datetime (naive means UTC) or Unix seconds as a protobuf Timestamp."""
    ts = timestamp_pb2.Timestamp()
    if isinstance(value, datetime):
        ts.FromDatetime(value if value.tzinfo is not None else value.replace(tzinfo=UTC))
        return ts
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgument(f"timestamp must be a datetime or Unix seconds, got {value!r}")
    seconds = math.floor(value)
    nanos = round((value - seconds) * 1e9)
    if nanos >= 1_000_000_000:
        seconds, nanos = seconds + 1, nanos - 1_000_000_000
    ts.seconds, ts.nanos = int(seconds), nanos
    return ts


def from_timestamp(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def _optional_timestamp(msg: Any, name: str) -> datetime | None:
    return from_timestamp(getattr(msg, name)) if msg.HasField(name) else None


# --- requests -------------------------------------------------------------------------------


def recommend_request(
    user_id: Any,
    k: Any = 10,
    *,
    model: Any = None,
    exclude: Iterable[Any] | None = (),
    allow: Iterable[Any] | None = (),
    recent: Iterable[Any] | None = (),
    explain: bool = False,
    diversity: Any = 0.0,
) -> pb.RecommendRequest:
    return pb.RecommendRequest(
        user_id=check_id("user_id", user_id),
        k=check_k(k),
        model=check_model(model),
        exclude_item_ids=check_ids("exclude", exclude),
        allow_item_ids=check_ids("allow", allow),
        recent_item_ids=check_ids("recent", recent),
        explain=bool(explain),
        diversity=check_diversity(diversity),
    )


def recommend_batch_request(requests: Iterable[Any], **defaults: Any) -> pb.RecommendBatchRequest:
    """Entries are :class:`RecommendRequest` objects or bare user ids, which take ``defaults``
    (recommend's keyword arguments, ``k`` included)."""
    if isinstance(requests, str | bytes):
        raise InvalidArgument("requests must be a list of user ids or RecommendRequest objects")
    out = []
    for entry in requests:
        if isinstance(entry, RecommendRequest):
            out.append(
                recommend_request(
                    entry.user_id,
                    entry.k,
                    model=entry.model,
                    exclude=entry.exclude,
                    allow=entry.allow,
                    recent=entry.recent,
                    explain=entry.explain,
                    diversity=entry.diversity,
                )
            )
        else:
            out.append(recommend_request(entry, **defaults))
    if len(out) > MAX_BATCH:
        raise InvalidArgument(f"at most {MAX_BATCH} requests per batch, got {len(out)}")
    return pb.RecommendBatchRequest(requests=out)


def similar_items_request(item_id: Any, k: Any = 10, model: Any = None) -> pb.SimilarItemsRequest:
    return pb.SimilarItemsRequest(
        item_id=check_id("item_id", item_id), k=check_k(k), model=check_model(model)
    )


def interaction_to_proto(event: Interaction) -> pb.Interaction:
    if not isinstance(event, Interaction):
        raise InvalidArgument(f"events must be Interaction objects, got {type(event).__name__}")
    event_type = event.event_type
    if not isinstance(event_type, str) or not event_type:
        raise InvalidArgument(f"event_type must be a non-empty string, got {event_type!r}")
    msg = pb.Interaction(
        event_id=check_id("event_id", event.event_id),
        user_id=check_id("user_id", event.user_id),
        item_id=check_id("item_id", event.item_id),
        event_type=event_type,
        timestamp=to_timestamp(event.timestamp),
    )
    if event_type == "rating":
        rating = event.rating
        if isinstance(rating, bool) or not isinstance(rating, int | float):
            raise InvalidArgument("a rating event needs a numeric rating")
        if not math.isfinite(rating):
            raise InvalidArgument(f"rating must be finite, got {rating!r}")
        msg.rating = float(rating)
    elif event.rating is not None:
        raise InvalidArgument(f"rating is only for event_type 'rating', not {event_type!r}")
    rid, position = event.recommendation_id, event.position
    if rid is not None:
        if not isinstance(rid, str) or len(rid) > MAX_RECOMMENDATION_ID or "\x00" in rid:
            raise InvalidArgument(
                f"recommendation_id must be a string of at most {MAX_RECOMMENDATION_ID} "
                f"characters without NUL, got {rid!r}"
            )
        msg.recommendation_id = rid
    if position is not None:
        if isinstance(position, bool) or not isinstance(position, int) or not 1 <= position < 2**31:
            raise InvalidArgument(f"position is 1-based, got {position!r}")
        msg.position = position
    return msg


def record_interactions_request(events: Iterable[Interaction]) -> pb.RecordInteractionsRequest:
    if isinstance(events, Interaction):
        events = [events]
    msgs = [interaction_to_proto(e) for e in events]
    if len(msgs) > MAX_EVENTS:
        raise InvalidArgument(f"at most {MAX_EVENTS} events per call, got {len(msgs)}")
    ids = [m.event_id for m in msgs]
    if len(set(ids)) != len(ids):
        raise InvalidArgument("event_id repeats within one call")
    return pb.RecordInteractionsRequest(events=msgs)


def item_to_proto(item: Item) -> pb.Item:
    if not isinstance(item, Item):
        raise InvalidArgument(f"items must be Item objects, got {type(item).__name__}")
    if not isinstance(item.title, str):
        raise InvalidArgument(f"title must be a string, got {item.title!r}")
    attributes = dict(item.attributes or {})
    for key, value in attributes.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidArgument(f"attributes must map strings to strings, got {key!r}: {value!r}")
    msg = pb.Item(
        item_id=check_id("item_id", item.item_id),
        title=item.title,
        categories=check_ids("categories", item.categories),
        attributes=attributes,
    )
    if item.available is not None:
        msg.available = bool(item.available)
    return msg


def upsert_items_request(items: Iterable[Item]) -> pb.UpsertItemsRequest:
    if isinstance(items, Item):
        items = [items]
    msgs = [item_to_proto(i) for i in items]
    if not msgs or len(msgs) > MAX_ITEMS:
        raise InvalidArgument(f"1..{MAX_ITEMS} items per call, got {len(msgs)}")
    return pb.UpsertItemsRequest(items=msgs)


def set_availability_request(
    item_ids: Iterable[Any], available: bool
) -> pb.SetItemAvailabilityRequest:
    ids = check_ids("item_ids", item_ids)
    if not ids or len(ids) > MAX_ITEMS:
        raise InvalidArgument(f"1..{MAX_ITEMS} item ids per call, got {len(ids)}")
    if not isinstance(available, bool):
        raise InvalidArgument(f"available must be True or False, got {available!r}")
    return pb.SetItemAvailabilityRequest(item_ids=ids, available=available)


def list_items_request(
    page_size: Any = 100, page_token: Any = "", available: bool | None = None
) -> pb.ListItemsRequest:
    if (
        isinstance(page_size, bool)
        or not isinstance(page_size, int)
        or not 1 <= page_size <= MAX_PAGE
    ):
        raise InvalidArgument(f"page_size must be an integer in [1, {MAX_PAGE}], got {page_size!r}")
    if not isinstance(page_token, str):
        raise InvalidArgument(f"page_token must be a string, got {page_token!r}")
    msg = pb.ListItemsRequest(page_size=page_size, page_token=page_token)
    if available is not None:
        msg.available = bool(available)
    return msg


def user_history_request(user_id: Any, limit: Any = 100) -> pb.GetUserHistoryRequest:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_EVENTS:
        raise InvalidArgument(f"limit must be an integer in [1, {MAX_EVENTS}], got {limit!r}")
    return pb.GetUserHistoryRequest(user_id=check_id("user_id", user_id), limit=limit)


# --- responses ------------------------------------------------------------------------------


def explanation_from_proto(msg: pb.Explanation) -> Explanation:
    similar_users = latent_factors = trending = None
    if msg.HasField("similar_users"):
        s = msg.similar_users
        similar_users = SimilarUsers(s.count, s.neighbours, s.mean_similarity, s.max_similarity)
    if msg.HasField("latent_factors"):
        f = msg.latent_factors
        latent_factors = LatentFactors(
            factors=list(f.factors),
            contributions=list(f.contributions),
            shares=list(f.shares),
            closest_item_id=f.closest_item_id,
            closest_item_title=f.closest_item_title,
            closest_similarity=f.closest_similarity,
        )
    if msg.HasField("trending"):
        t = msg.trending
        trending = Trending(
            rank=t.rank,
            half_life_days=t.half_life_days,
            window_start=_optional_timestamp(t, "window_start"),
            window_end=_optional_timestamp(t, "window_end"),
        )
    content = None
    if msg.HasField("content"):
        content = ContentMatch(list(msg.content.categories), _contributions(msg.content.items))
    return Explanation(
        text=msg.text,
        kind=msg.kind,
        items=_contributions(msg.items),
        similar_users=similar_users,
        latent_factors=latent_factors,
        trending=trending,
        components=[ComponentShare(c.model, c.share, c.contribution) for c in msg.components],
        content=content,
        new_item=msg.new_item,
    )


def _contributions(msgs) -> list[ItemContribution]:
    return [ItemContribution(c.item_id, c.title, c.similarity, c.contribution) for c in msgs]


def scored_item_from_proto(msg: pb.ScoredItem) -> Recommendation:
    return Recommendation(
        item_id=msg.item_id,
        score=msg.score,
        confidence=msg.confidence,
        title=msg.title,
        categories=list(msg.categories),
        explanation=explanation_from_proto(msg.explanation)
        if msg.HasField("explanation")
        else None,
    )


def recommend_result(msg: pb.RecommendResponse) -> RecommendResult:
    return RecommendResult(
        user_id=msg.user_id,
        items=[scored_item_from_proto(i) for i in msg.items],
        model=msg.model,
        model_version=msg.model_version,
        fallback_tier=_TIERS.get(msg.fallback_tier, "unspecified"),
        experiment=msg.experiment or None,
        variant=msg.variant or None,
        recommendation_id=msg.recommendation_id or None,
    )


def similar_items_result(msg: pb.SimilarItemsResponse) -> SimilarItemsResult:
    return SimilarItemsResult(
        item_id=msg.item_id,
        items=[scored_item_from_proto(i) for i in msg.items],
        model=msg.model,
        model_version=msg.model_version,
    )


def record_result(msg: pb.RecordInteractionsResponse) -> RecordResult:
    return RecordResult(recorded=msg.recorded, duplicates=msg.duplicates)


def model_info(msg: pb.ModelInfo) -> ModelInfo:
    return ModelInfo(
        name=msg.name,
        version=msg.version,
        trained_at=_optional_timestamp(msg, "trained_at"),
        metrics=dict(msg.metrics),
        params=dict(msg.params),
    )


def models_result(msg: pb.ListModelsResponse) -> ModelsResult:
    return ModelsResult(
        models=[model_info(m) for m in msg.models],
        version=msg.version,
        default_model=msg.default_model,
    )


def reload_result(msg: pb.ReloadModelsResponse) -> ReloadResult:
    return ReloadResult(version=msg.version, changed=msg.changed, message=msg.message)


def item_from_proto(msg: pb.Item) -> Item:
    return Item(
        item_id=msg.item_id,
        title=msg.title,
        categories=list(msg.categories),
        attributes=dict(msg.attributes),
        available=msg.available if msg.HasField("available") else True,
        in_model=msg.in_model,
        updated_at=_optional_timestamp(msg, "updated_at"),
    )


def items_result(msg: Any) -> ItemsResult:
    return ItemsResult(changed=msg.changed, unchanged=msg.unchanged)


def get_item_result(msg: pb.GetItemResponse) -> Item:
    return item_from_proto(msg.item)


def items_page(msg: pb.ListItemsResponse) -> ItemsPage:
    return ItemsPage([item_from_proto(i) for i in msg.items], msg.next_page_token)


def user_history_result(msg: pb.GetUserHistoryResponse) -> UserHistory:
    return UserHistory(
        user_id=msg.user_id,
        model_version=msg.model_version,
        training_items=[HistoryItem(t.item_id, t.title, t.weight) for t in msg.training_items],
        events=[
            HistoryEvent(
                e.event_id,
                e.item_id,
                e.title,
                e.event_type,
                _optional_timestamp(e, "timestamp"),
                e.rating,
                e.trained,
            )
            for e in msg.events
        ],
    )


def experiment_report_request(experiment: Any) -> pb.GetExperimentReportRequest:
    return pb.GetExperimentReportRequest(experiment=check_id("experiment", experiment))


def _interval(msg: pb.Interval) -> Interval:
    return Interval(msg.low, msg.high)


def experiment_report(msg: pb.GetExperimentReportResponse) -> ExperimentReport:
    sr = msg.sample_ratio if msg.HasField("sample_ratio") else None
    il = msg.interleaving if msg.HasField("interleaving") else None
    return ExperimentReport(
        experiment=msg.experiment,
        kind=msg.kind,
        control=msg.control,
        generated_at=_optional_timestamp(msg, "generated_at"),
        attribution_hours=msg.attribution_hours,
        variants=[
            VariantSummary(
                v.variant,
                v.model,
                v.share,
                v.users,
                v.impressions,
                v.clicks,
                v.conversions,
                v.value,
                v.ctr,
                v.conversions_per_user,
                v.value_per_user,
            )
            for v in msg.variants
        ],
        comparisons=[
            MetricComparison(
                c.metric,
                c.variant,
                c.control_value,
                c.variant_value,
                c.difference,
                c.relative_difference,
                _interval(c.ci95),
                _interval(c.always_valid),
                c.p_value,
                c.significant,
                c.mde_relative,
            )
            for c in msg.comparisons
        ],
        sample_ratio=None
        if sr is None
        else SampleRatio(
            list(sr.observed), list(sr.expected_shares), sr.chi_square, sr.p_value, sr.mismatch
        ),
        interleaving=None
        if il is None
        else InterleavingResult(
            il.model_a,
            il.model_b,
            il.wins_a,
            il.wins_b,
            il.ties,
            il.preference_a,
            _interval(il.ci95),
            _interval(il.always_valid),
            il.p_value,
        ),
        impressions_dropped=msg.impressions_dropped,
    )
