"""Plain, immutable result and request types of the recsys client (no protobuf in sight).

Conversion from and to the protobuf messages lives in :mod:`recsys_client._convert`.
Timestamps returned by the server are timezone-aware UTC ``datetime`` objects.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

__all__ = [
    "EVENT_TYPES",
    "FALLBACK_TIERS",
    "ComponentShare",
    "ExperimentReport",
    "Explanation",
    "HistoryEvent",
    "HistoryItem",
    "Interaction",
    "InterleavingResult",
    "Interval",
    "Item",
    "ItemContribution",
    "ItemsPage",
    "ItemsResult",
    "LatentFactors",
    "MetricComparison",
    "ModelInfo",
    "ModelsResult",
    "RecommendRequest",
    "RecommendResult",
    "Recommendation",
    "RecordResult",
    "ReloadResult",
    "SampleRatio",
    "SimilarItemsResult",
    "SimilarUsers",
    "Trending",
    "UserHistory",
    "VariantSummary",
    "new_event_id",
]

#: The event types the API documents for :class:`Interaction.event_type`.
EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase", "rating")
#: The values of :attr:`RecommendResult.fallback_tier` ("unspecified" if the server sent none).
FALLBACK_TIERS: tuple[str, ...] = ("personalized", "cold_start", "popularity", "unspecified")


# --- explanations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemContribution:
    """Item-CF: one of the user's items behind a recommendation."""

    item_id: str
    title: str = ""
    similarity: float = 0.0
    contribution: float = 0.0


@dataclass(frozen=True)
class SimilarUsers:
    """User-CF: how many of the user's ``neighbours`` chose the item, and how similar they are."""

    count: int = 0
    neighbours: int = 0
    mean_similarity: float = 0.0
    max_similarity: float = 0.0


@dataclass(frozen=True)
class LatentFactors:
    """SVD: the factors driving the score and the user's item closest in factor space."""

    factors: list[int] = field(default_factory=list)
    contributions: list[float] = field(default_factory=list)
    shares: list[float] = field(default_factory=list)
    closest_item_id: str = ""
    closest_item_title: str = ""
    closest_similarity: float = 0.0


@dataclass(frozen=True)
class Trending:
    """Popularity: the item's 1-based rank by time-decayed popularity in a window."""

    rank: int = 0
    half_life_days: float = 0.0
    window_start: datetime | None = None
    window_end: datetime | None = None


@dataclass(frozen=True)
class ContentMatch:
    """Content: the item's categories among the user's main interests, and the history items
    holding them."""

    categories: list[str] = field(default_factory=list)
    items: list[ItemContribution] = field(default_factory=list)


@dataclass(frozen=True)
class ComponentShare:
    """Hybrid: one component model's share of the score."""

    model: str
    share: float = 0.0
    contribution: float = 0.0


@dataclass(frozen=True)
class Explanation:
    """Why an item was recommended. ``kind`` is one of because_you_interacted | similar_users |
    latent_factors | trending | content | blend; the detail fields the kind does not use are
    empty/None. ``text`` is one line (at most 120 characters) naming the strongest evidence;
    ``new_item``: the item was just added to the catalogue (no interactions yet)."""

    text: str
    kind: str = ""
    items: list[ItemContribution] = field(default_factory=list)
    similar_users: SimilarUsers | None = None
    latent_factors: LatentFactors | None = None
    trending: Trending | None = None
    components: list[ComponentShare] = field(default_factory=list)
    content: ContentMatch | None = None
    new_item: bool = False


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recommendation:
    """One recommended (or similar) item. ``score`` is only comparable within one response;
    ``confidence`` is in [0, 1]. ``explanation`` is set when explanations were asked for."""

    item_id: str
    score: float
    confidence: float = 0.0
    title: str = ""
    categories: list[str] = field(default_factory=list)
    explanation: Explanation | None = None


@dataclass(frozen=True)
class RecommendResult:
    """The answer for one user. ``fallback_tier`` says which path produced it: "personalized",
    "cold_start" or "popularity". ``experiment``/``variant`` are None outside any A/B test.
    ``recommendation_id`` names this answer (None when the server records no impressions):
    pass it, with the item's 1-based position, in the :class:`Interaction` of what the user
    did with it, so the event is credited to this answer in experiment reports."""

    user_id: str
    items: list[Recommendation]
    model: str
    model_version: str
    fallback_tier: str = "personalized"
    experiment: str | None = None
    variant: str | None = None
    recommendation_id: str | None = None

    @property
    def item_ids(self) -> list[str]:
        return [r.item_id for r in self.items]


@dataclass(frozen=True)
class SimilarItemsResult:
    """The neighbours of ``item_id`` according to ``model``."""

    item_id: str
    items: list[Recommendation]
    model: str
    model_version: str

    @property
    def item_ids(self) -> list[str]:
        return [r.item_id for r in self.items]


@dataclass(frozen=True)
class RecordResult:
    """Events newly stored, and events acknowledged again because their event_id was known."""

    recorded: int
    duplicates: int


@dataclass(frozen=True)
class ModelInfo:
    """A loaded model. ``metrics`` are the trainer's offline metrics, e.g. ``{"ndcg@10": 0.31}``;
    ``trained_at`` is None if the server did not say."""

    name: str
    version: str
    trained_at: datetime | None
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelsResult:
    """The loaded models, the artifact ``version`` being served and the default model."""

    models: list[ModelInfo]
    version: str
    default_model: str

    def get(self, name: str) -> ModelInfo | None:
        return next((m for m in self.models if m.name == name), None)


@dataclass(frozen=True)
class ReloadResult:
    """The artifact version serving after a reload, and whether it changed."""

    version: str
    changed: bool
    message: str = ""


# --- requests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecommendRequest:
    """One entry of :meth:`RecsysClient.recommend_batch` (same meaning as ``recommend``'s
    arguments)."""

    user_id: str
    k: int = 10
    model: str | None = None
    exclude: Sequence[str] = ()
    allow: Sequence[str] = ()
    recent: Sequence[str] = ()
    explain: bool = False
    diversity: float = 0.0


# --- the live catalogue ---------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """A catalogue item. To upsert, give ``item_id`` and what to set; ``available`` None keeps
    a stored item's availability (a new item is available). In answers ``available`` is always
    set, ``in_model`` says whether the loaded model version knows the item and ``updated_at``
    when its last stored change committed (None: never changed through the API)."""

    item_id: str
    title: str = ""
    categories: Sequence[str] = ()
    attributes: dict[str, str] = field(default_factory=dict)
    available: bool | None = None
    in_model: bool = False
    updated_at: datetime | None = None


@dataclass(frozen=True)
class ItemsResult:
    """Items (UpsertItems) or ids (SetItemAvailability) whose stored record changed, and
    those already stored exactly so."""

    changed: int
    unchanged: int


@dataclass(frozen=True)
class ItemsPage:
    """One page of ListItems; ``next_page_token`` is "" on the last page."""

    items: list[Item]
    next_page_token: str = ""


@dataclass(frozen=True)
class HistoryItem:
    """An item of the user's training history, with its summed weight."""

    item_id: str
    title: str
    weight: float


@dataclass(frozen=True)
class HistoryEvent:
    """A stored event; ``trained``: the loaded model version was trained on it."""

    event_id: str
    item_id: str
    title: str
    event_type: str
    timestamp: datetime | None
    rating: float
    trained: bool


@dataclass(frozen=True)
class UserHistory:
    """GetUserHistory: training items (heaviest first) and stored events (newest first)."""

    user_id: str
    model_version: str
    training_items: list[HistoryItem]
    events: list[HistoryEvent]


def new_event_id() -> str:
    """A fresh random event id (uuid4, 32 hex digits)."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Interaction:
    """A behaviour event to record. ``event_id`` is the idempotency key: resending an event with
    the same id (e.g. after a lost answer) does not store it twice. ``timestamp`` is a datetime
    (naive means UTC) or Unix seconds. ``rating`` only goes with event_type "rating".
    ``recommendation_id`` (:attr:`RecommendResult.recommendation_id`) and ``position`` (the
    item's 1-based place in that answer) say which recommendation the event came from.

    Use :meth:`create` to get a fresh event id and the current time by default."""

    event_id: str
    user_id: str
    item_id: str
    event_type: str
    timestamp: datetime | float
    rating: float | None = None
    recommendation_id: str | None = None
    position: int | None = None

    @classmethod
    def create(
        cls,
        user_id: str,
        item_id: str,
        event_type: str,
        *,
        timestamp: datetime | float | None = None,
        rating: float | None = None,
        event_id: str | None = None,
        recommendation_id: str | None = None,
        position: int | None = None,
    ) -> Interaction:
        return cls(
            event_id=event_id if event_id is not None else new_event_id(),
            user_id=user_id,
            item_id=item_id,
            event_type=event_type,
            timestamp=timestamp if timestamp is not None else time.time(),
            rating=rating,
            recommendation_id=recommendation_id,
            position=position,
        )


# --- experiment reports ---------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A 95% interval; both ends nan when it cannot be estimated (too few users)."""

    low: float
    high: float


@dataclass(frozen=True)
class VariantSummary:
    """One variant: its users (with at least one impression), their impressions and the
    outcomes credited to them; ``ctr`` is clicks per item shown, the others per user."""

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


@dataclass(frozen=True)
class MetricComparison:
    """``variant`` against the control on one metric (ctr | conversions_per_user |
    value_per_user): the difference with its fixed-horizon 95% interval (``ci95``, valid for
    one look) and always-valid one (valid at every look; ``significant`` when it excludes 0),
    the p-value and the relative effect detectable at the current sample size."""

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


@dataclass(frozen=True)
class SampleRatio:
    """Users per variant against the configured shares; ``mismatch`` when p < 0.001."""

    observed: list[int]
    expected_shares: list[float]
    chi_square: float
    p_value: float
    mismatch: bool


@dataclass(frozen=True)
class InterleavingResult:
    """Interleaving: impressions whose clicks favoured model a, model b, or neither, and the
    preference for a (0.5: none) at the user level with its intervals."""

    model_a: str
    model_b: str
    wins_a: int
    wins_b: int
    ties: int
    preference_a: float
    ci95: Interval
    always_valid: Interval
    p_value: float


@dataclass(frozen=True)
class ExperimentReport:
    """GetExperimentReport: per-variant summaries in configured order, each variant compared
    with the control (the first), the sample-ratio check (None for interleaving), the
    interleaving preference (None for A/B) and the impressions the server dropped under
    overload since it started (not in the numbers)."""

    experiment: str
    kind: str
    control: str
    generated_at: datetime | None
    attribution_hours: float
    variants: list[VariantSummary]
    comparisons: list[MetricComparison]
    sample_ratio: SampleRatio | None
    interleaving: InterleavingResult | None
    impressions_dropped: int

    def variant(self, name: str) -> VariantSummary | None:
        return next((v for v in self.variants if v.variant == name), None)
