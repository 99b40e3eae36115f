"""Live histories: behaviour events recorded since the serving model version was trained.

Each recorded event for an item the loaded version knows is folded into its user's live
history at once (item index -> summed weight, plus the latest event type for explanations),
so the user's next recommendation reflects it. A history belongs to one model version (item
indices are per version); on a version swap it is rebuilt from the data store's events after
the version's cursor (``manifest["params"]["store_seq"]``, the last seq it was trained on).

Per-user entries are copy-on-write (a fold replaces the user's mapping), so scoring threads can
read while the event loop folds.

``cursor`` says which store seqs the history holds. With replicas sharing the store, events
reach it twice (acknowledged here, and read back by the follower, ``recsys_server.follow``);
`fold_stored` folds each seq once, whichever comes first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from recsys_core.data import EventWeights
from recsys_core.datastore import DataStore
from recsys_core.datastore.feed import SeqCursor
from recsys_core.events import Event

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "rating")
MAX_ITEMS_PER_USER = 2000
"""A user's live history keeps at most this many distinct items (the most recent ones)."""
GAP_LOOKBACK = 10_000
"""A rebuild counts the seqs missing among the last this many below its high mark as gaps
(they may still commit: another replica's transaction in flight); older ones never will."""


@dataclass(frozen=True)
class LiveItem:
    weight: float
    event_type: str


class LiveHistory:
    def __init__(self, item_index: Mapping[str, int], weights: EventWeights | None = None):
        self._item_index = item_index
        ew = weights or EventWeights()
        self._weights = ew.normalized()
        self._rating = (ew.rating_event or "").strip().lower()
        self._users: dict[str, dict[int, LiveItem]] = {}
        self.events = 0  # folded in (events for items the version knows)
        self.seen = 0  # offered: every stored event after the version's cursor
        self.cursor = SeqCursor()  # the store seqs folded (see `fold_stored`)

    def __len__(self) -> int:
        return len(self._users)

    def weight_of(self, e: Event) -> float:
        kind = e.event_type.strip().lower()
        if kind == self._rating:
            return float(e.rating or 0.0)
        return self._weights.get(kind, 0.0)

    def fold(self, events: Iterable[Event]) -> int:
        """Adds events for known items; returns how many were folded in."""
        changed: dict[str, dict[int, LiveItem]] = {}
        n = 0
        for e in events:
            self.seen += 1
            item = self._item_index.get(e.item_id)
            if item is None:
                continue
            items = changed.get(e.user_id)
            if items is None:
                items = dict(self._users.get(e.user_id, {}))  # copy-on-write
                changed[e.user_id] = items
            old = items.pop(item, None)  # re-inserted last: dict order is recency order
            w = self.weight_of(e) + (old.weight if old else 0.0)
            items[item] = LiveItem(w, e.event_type.strip().lower())
            if len(items) > MAX_ITEMS_PER_USER:
                del items[next(iter(items))]
            n += 1
        self._users.update(changed)
        self.events += n
        return n

    def fold_stored(self, seqs: Iterable[int], events: Iterable[Event]) -> list[Event]:
        """Folds the events whose seq ``cursor`` does not cover yet, and marks them covered;
        returns those (a seq folded before, by the follower or an acknowledgement, is
        skipped)."""
        new = []
        for seq, e in zip(seqs, events, strict=True):
            if not self.cursor.covered(seq):
                self.cursor.mark(seq)
                new.append(e)
        self.fold(new)
        return new

    def get(self, user_id: str) -> Mapping[int, LiveItem] | None:
        return self._users.get(user_id)

    @classmethod
    def from_store(
        cls,
        store: DataStore | None,
        after_seq: int,
        item_index: Mapping[str, int],
        weights: EventWeights | None = None,
    ) -> tuple[LiveHistory, int]:
        """The live history of the store's events with seq > ``after_seq``, and the highest
        seq it covers: it holds every event stored at or below that seq, and none above (a
        concurrently recorded event belongs in it when its seq is higher). Nothing is kept per
        event beyond the history itself. Blocking; StoreUnavailable when the store cannot be
        read."""
        live = cls(item_index, weights)
        if store is None:
            live.cursor = SeqCursor(after_seq)
            return live, after_seq
        # One writer stores seqs in commit order, but several replicas writing one PostgreSQL
        # store can commit a lower seq after a higher one: a seq missing below the max read
        # now may still come, so recent ones are kept as the cursor's gaps (the follower
        # and the swap's catch-up fold them when they do).
        last = max(store.max_seq(), after_seq)
        batch: list[Event] = []
        gaps: list[int] = []
        prev = after_seq
        for stored in store.read_events(after_seq=after_seq, up_to_seq=last):
            gaps.extend(range(max(prev + 1, last - GAP_LOOKBACK), stored.seq))
            prev = stored.seq
            batch.append(stored.event)
            if len(batch) >= 4096:
                live.fold(batch)
                batch.clear()
        gaps.extend(range(max(prev + 1, last - GAP_LOOKBACK), last + 1))
        live.fold(batch)
        live.cursor = SeqCursor(last, gaps)
        return live, last
