"""Behaviour events: `Event`, one event as the server records it in the data store
(`recsys_core.datastore`), and `events_to_interactions`, the store's events as rows of the
trainer's interaction data (what ``recsys-train refresh`` adds to its base data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

from recsys_core.data import EventWeights

_FIELDS = ("event_id", "user_id", "item_id", "event_type", "timestamp", "rating")
_ATTRIBUTION = ("recommendation_id", "position")  # serialized only when set


@dataclass(frozen=True)
class Event:
    """One user behaviour event. ``event_id`` is unique: the data store keeps one event per id.

    ``timestamp`` is unix seconds; ``rating`` is the explicit rating of rating events (else
    None). Ints are accepted for the numbers and stored as floats; non-finite numbers and empty
    ids are rejected (ValueError), as are non-string ids (TypeError).

    ``recommendation_id`` names the answer (RecommendResponse.recommendation_id) the event
    came from and ``position`` the item's 1-based place in it; both None when not given. An id
    the store does not know is kept as given (reports attribute such events by time window).
    """

    event_id: str
    user_id: str
    item_id: str
    event_type: str
    timestamp: float
    rating: float | None = None
    recommendation_id: str | None = None
    position: int | None = None

    def __post_init__(self) -> None:
        for name in ("event_id", "user_id", "item_id", "event_type"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"Event.{name} must be a str, got {type(value).__name__}")
            if not value:
                raise ValueError(f"Event.{name} must not be empty")
        object.__setattr__(self, "timestamp", _number("timestamp", self.timestamp))
        if self.rating is not None:
            object.__setattr__(self, "rating", _number("rating", self.rating))
        rid = self.recommendation_id
        if rid is not None:
            if not isinstance(rid, str):
                raise TypeError(f"Event.recommendation_id must be a str, got {type(rid).__name__}")
            if not rid:
                raise ValueError("Event.recommendation_id must not be empty (None: not given)")
        pos = self.position
        if pos is not None:
            if isinstance(pos, bool) or not isinstance(pos, int):
                raise TypeError(f"Event.position must be an int, got {type(pos).__name__}")
            if not 1 <= pos < 2**31:
                raise ValueError(f"Event.position is 1-based (below 2**31), got {pos}")

    def to_dict(self) -> dict[str, object]:
        """The JSON object of the event; the attribution fields only when set, so an event
        without them serializes exactly as before they existed."""
        out = {name: getattr(self, name) for name in _FIELDS}
        for name in _ATTRIBUTION:
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_dict(cls, obj: dict[str, object]) -> Event:
        """An event from its JSON object (unknown keys are ignored; ``rating``,
        ``recommendation_id`` and ``position`` may be absent)."""
        missing = [k for k in _FIELDS[:5] if k not in obj]
        if missing:
            raise ValueError(f"event is missing {', '.join(missing)}")
        keys = (*_FIELDS, *_ATTRIBUTION)
        return cls(**{k: obj[k] for k in keys if k in obj})  # type: ignore[arg-type]


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"Event.{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"Event.{name} must be finite, got {value}")
    return value


def events_to_interactions(
    events: pl.DataFrame, event_weights: EventWeights | None = None
) -> pl.DataFrame:
    """The events of `DataStore.events_frame` (columns event_id, user_id, item_id, event_type,
    timestamp, rating; others, such as recommendation_id, are ignored) as rows ``user, item,
    event, weight, timestamp`` (the columns of `Interactions.to_frame` and `from_frame`'s
    defaults), to append to the trainer's base data.

    Event types are matched like `EventWeights` (stripped, lower-cased) and ``event`` holds the
    normalized name. Rating events take their ``rating`` as weight; other events their type's
    weight. Timestamps become whole unix seconds (floored). An unknown event type, a rating
    event without a rating, or a negative rating raises ValueError naming the first such event.
    """
    event_weights = event_weights or EventWeights()
    table = event_weights.normalized()
    rating_event = (event_weights.rating_event or "").strip().lower() or None
    kind = pl.col("event_type").str.strip_chars().str.to_lowercase()
    frame = events.with_columns(kind.alias("event"))
    is_rating = pl.col("event") == (rating_event or "")
    known = sorted(set(table) | ({rating_event} if rating_event else set()))
    problems = (
        (~pl.col("event").is_in(known), "unknown event type {type!r} (known: {known})"),
        (is_rating & pl.col("rating").is_null(), "rating event without a rating"),
        (is_rating & (pl.col("rating") < 0), "negative rating {rating}"),
    )
    for condition, message in problems:
        bad = frame.filter(condition).head(1)
        if bad.height:
            row = bad.row(0, named=True)
            text = message.format(type=row["event_type"], known=", ".join(known), **row)
            raise ValueError(f"event {row['event_id']!r}: {text}")
    weight = (
        pl.when(is_rating)
        .then(pl.col("rating"))
        .otherwise(pl.col("event").replace_strict(table, default=None, return_dtype=pl.Float64))
    )
    return frame.select(
        pl.col("user_id").cast(pl.String).alias("user"),
        pl.col("item_id").cast(pl.String).alias("item"),
        pl.col("event").cast(pl.String),
        weight.cast(pl.Float32).alias("weight"),
        pl.col("timestamp").floor().cast(pl.Int64).alias("timestamp"),
    )
