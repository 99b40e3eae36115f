"""`recsys_core.events`: the `Event` record, and the data store's events as trainer rows."""

import asyncio
import math

import polars as pl
import pytest

from recsys_core.data import EventWeights, from_frame
from recsys_core.datastore import open_store
from recsys_core.events import Event, events_to_interactions


def ev(i: int, **kw) -> Event:
    fields = dict(event_id=f"e{i}", user_id=f"u{i % 7}", item_id=f"i{i % 11}", event_type="click")
    fields.update(kw)
    fields.setdefault("timestamp", 1_700_000_000.0 + i)
    return Event(**fields)


@pytest.mark.parametrize(
    "kw, error",
    [
        ({"event_id": ""}, ValueError),
        ({"user_id": 5}, TypeError),
        ({"timestamp": math.nan}, ValueError),
        ({"timestamp": True}, TypeError),
        ({"timestamp": "1"}, TypeError),
        ({"rating": math.inf}, ValueError),
    ],
)
def test_invalid_events_are_rejected(kw, error):
    with pytest.raises(error):
        ev(1, **kw)


def stored_frame(tmp_path, events: list[Event]) -> pl.DataFrame:
    """The events as the data store hands them to the trainer (a real SQLite store)."""
    tmp_path.mkdir(exist_ok=True)
    with open_store(f"sqlite:///{tmp_path}/events.db") as store:
        if events:
            asyncio.run(store.append(events))
        return store.events_frame()


def test_events_to_interactions_weights_and_schema(tmp_path):
    events = [
        Event("a", "u1", "i1", "view", 10.7),
        Event("b", "u1", "i2", " Purchase ", 11.0),
        Event("c", "u2", "i1", "rating", 12.0, rating=3.5),
    ]
    df = events_to_interactions(stored_frame(tmp_path, events), EventWeights())
    assert df.schema == pl.Schema(
        {
            "user": pl.String,
            "item": pl.String,
            "event": pl.String,
            "weight": pl.Float32,
            "timestamp": pl.Int64,
        }
    )
    assert df.rows() == [
        ("u1", "i1", "view", 1.0, 10),
        ("u1", "i2", "purchase", 8.0, 11),
        ("u2", "i1", "rating", 3.5, 12),
    ]
    # The frame goes straight into the trainer's loader.
    inter = from_frame(df)
    assert len(inter) == 3 and sorted(inter.weight.tolist()) == [1.0, 3.5, 8.0]


def test_events_to_interactions_of_an_empty_store_and_custom_weights(tmp_path):
    assert events_to_interactions(stored_frame(tmp_path / "a", [])).height == 0
    frame = stored_frame(tmp_path / "b", [ev(i) for i in range(4)])
    df = events_to_interactions(frame, EventWeights({"click": 2.5}))
    assert df["weight"].to_list() == [2.5] * 4


@pytest.mark.parametrize(
    "event, match",
    [
        (Event("x", "u", "i", "like", 1.0), "event 'x': unknown event type 'like'"),
        (Event("x", "u", "i", "rating", 1.0), "event 'x': rating event without a rating"),
        (Event("x", "u", "i", "rating", 1.0, rating=-1), "event 'x': negative rating -1.0"),
    ],
)
def test_events_to_interactions_errors_name_the_event(tmp_path, event, match):
    frame = stored_frame(tmp_path, [ev(0), event])
    with pytest.raises(ValueError, match=match):
        events_to_interactions(frame)
