"""GetUserHistory: a user's training history from the loaded version (items and weights) and
their stored events (types and times), newest first, so clients need not read the trainer's
files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from recsys_core.datastore import StoredEvent
from recsys_server.catalogue import Catalogue
from recsys_server.errors import NotFound
from recsys_server.snapshot import Snapshot

DEFAULT_EVENTS = 100
MAX_EVENTS = 1000


@dataclass(frozen=True, slots=True)
class TrainedItem:
    item_id: str
    title: str
    weight: float


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    event_id: str
    item_id: str
    title: str
    event_type: str
    timestamp: float
    rating: float
    trained: bool
    """The loaded version was trained on it (seq at or below its store cursor)."""


@dataclass(slots=True)
class UserHistory:
    user_id: str
    version: str
    training_items: list[TrainedItem] = field(default_factory=list)
    events: list[HistoryEvent] = field(default_factory=list)


def _title(snap: Snapshot, catalogue: Catalogue, item_id: str) -> str:
    v = catalogue.view(snap, item_id)
    return v.title if v is not None else ""


def build(
    snap: Snapshot, catalogue: Catalogue, user_id: str, stored: Sequence[StoredEvent]
) -> UserHistory:
    """``stored``: the user's latest events in seq order (`DataStore.user_history`). NOT_FOUND
    when neither the version nor the store knows the user."""
    user = snap.user_index.get(user_id)
    if user is None and not stored:
        raise NotFound(f"user {user_id!r} has no history in version {snap.version} or the store")
    out = UserHistory(user_id, snap.version)
    if user is not None:
        h = snap.history
        a, b = h.indptr[user], h.indptr[user + 1]
        idx, w = h.indices[a:b], h.data[a:b]
        for j in np.lexsort((idx, -w)).tolist():  # heaviest first, then by index
            item = snap.item_ids[int(idx[j])]
            out.training_items.append(TrainedItem(item, snap.title(int(idx[j])), float(w[j])))
    for s in reversed(stored):
        e = s.event
        out.events.append(
            HistoryEvent(
                e.event_id,
                e.item_id,
                _title(snap, catalogue, e.item_id),
                e.event_type,
                float(e.timestamp),
                float(e.rating or 0.0),
                s.seq <= snap.store_seq,
            )
        )
    return out
