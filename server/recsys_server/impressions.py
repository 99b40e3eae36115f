"""Impressions, recorded off the request path: what each Recommend answer showed, stored in the
data store (`recsys_core.datastore.impressions`) by a background thread.

A request only gives its answer a fresh `new_id` and puts what it showed in a bounded queue
(`shown`): no I/O, no waiting. The writer thread takes up to `BATCH` at a time and stores them
in one transaction (`DataStore.append_impressions`). When the queue is full the new impression
is dropped and counted (``recsys_impressions_dropped_total{reason="queue_full"}``). A store
failure is retried with backoff; the batch stays in the queue meanwhile, so during an outage
the queue fills and further impressions are dropped and counted, never waited for. At
shutdown `ImpressionRecorder.stop` stores what is queued within the time left; the rest is
counted (``reason="shutdown"``).

`RecentImpressions` keeps the latest stored impressions (bounded) so that recorded events can
be credited to their experiment and variant as they arrive (``recsys_outcomes_total``); the
report (`recsys_server.experiments`) attributes from the store, not from this.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from recsys_core.datastore import DataStore, Impression, StoreUnavailable
from recsys_core.events import Event

if TYPE_CHECKING:
    from recsys_server.metrics import Metrics
    from recsys_server.scoring import Answer

log = logging.getLogger(__name__)

BATCH = 500
"""Impressions per store transaction, at most."""
LINGER_S = 0.2
"""The writer waits this long for a batch to fill before storing a partial one: fewer, larger
transactions, and less of the writer's Python work interleaved with requests."""
BACKOFF_S = (0.05, 5.0)
"""A failed store write is retried after the first delay, doubling up to the second."""
CHUNK = 16
"""Impressions added to `RecentImpressions` per hold of its lock: an event being credited on
the event loop meanwhile waits for at most one chunk."""
MAX_IDS = 100_000
"""Recent recommendation ids kept for crediting events live."""
MAX_USERS = 50_000
PER_USER = 20
"""Users, and impressions per user, kept for crediting events without a known id."""


ID_POOL = 256
"""Recommendation ids drawn from os.urandom at a time."""
_ids: list[str] = []


def new_id() -> str:
    """A random 128-bit recommendation id: 32 hex digits from os.urandom, drawn ID_POOL at a
    time: os.urandom releases the GIL for its system call, and on a busy server another thread
    (grpc's, the impression writer) then holds it before the request can go on."""
    while True:
        try:
            return _ids.pop()  # atomic under the GIL: an id is handed out once
        except IndexError:
            fresh = os.urandom(16 * ID_POOL).hex()
            _ids.extend([fresh[i : i + 32] for i in range(0, len(fresh), 32)])


def shown(rid: str, a: Answer, ts: float) -> tuple[Any, ...]:
    """The fields of an `Impression` of ``a``, as a plain tuple of strings and numbers: the
    queue keeps these rather than the answers, whose objects (items, explanations) would
    otherwise stay alive until stored."""
    teams = getattr(a, "teams", None)  # interleaving answers carry the team of each item
    items = a.items
    return (
        rid,
        a.user_id,
        a.experiment,
        a.variant,
        a.model,
        a.version,
        ts,
        tuple([s.item_id for s in items]),
        tuple([s.score for s in items]),
        tuple(teams) if teams else (),
    )


class RecentImpressions:
    """The latest stored impressions, bounded (`MAX_IDS` ids; `PER_USER` impressions for each
    of the `MAX_USERS` users seen last), to credit events to an experiment's variant live.
    Thread-safe (the writer thread adds, the event loop reads)."""

    def __init__(
        self, max_ids: int = MAX_IDS, max_users: int = MAX_USERS, per_user: int = PER_USER
    ) -> None:
        self._max_ids, self._max_users, self._per_user = max_ids, max_users, per_user
        self._lock = threading.Lock()
        # Only tuples of strings and numbers inside: the cyclic GC untracks them, so up to a
        # million kept impressions add nothing to the full collections the request path pays
        # for (a frozenset and a deque each did; docs/benchmarks.md, "Recording impressions").
        self._ids: OrderedDict[str, tuple[str, str, str]] = OrderedDict()
        self._users: OrderedDict[str, tuple[tuple[float, str, str, tuple[str, ...]], ...]] = (
            OrderedDict()
        )

    def add(self, rows: Iterable[Impression]) -> None:
        with self._lock:
            for r in rows:
                self._ids[r.recommendation_id] = (r.user_id, r.experiment, r.variant)
                if len(self._ids) > self._max_ids:
                    self._ids.popitem(last=False)
                old = self._users.pop(r.user_id, ())
                kept = old[max(0, len(old) + 1 - self._per_user) :]
                self._users[r.user_id] = (*kept, (r.ts, r.experiment, r.variant, r.item_ids))
                if len(self._users) > self._max_users:
                    self._users.popitem(last=False)

    def credit(self, e: Event, window_s: float) -> tuple[str, str] | None:
        """(experiment, variant) of the impression ``e`` is credited to: the one its
        recommendation_id names (same user), else the latest of its user's that showed its
        item with ``ts <= e.timestamp <= ts + window_s``; None when neither is known here."""
        with self._lock:
            if e.recommendation_id is not None:
                hit = self._ids.get(e.recommendation_id)
                if hit is not None and hit[0] == e.user_id:
                    return hit[1], hit[2]
            shown = self._users.get(e.user_id)
            if shown is None:
                return None
            for ts, experiment, variant, items in reversed(shown):
                if e.item_id in items and ts <= e.timestamp <= ts + window_s:
                    return experiment, variant
        return None


class ImpressionRecorder:
    """The bounded queue and its writer thread (see the module doc). Counters (since start):
    ``stored``, ``dropped`` (every impression not stored: queue full, a batch the store
    refused, shutdown), ``store_errors`` (failed store writes, each retried)."""

    def __init__(
        self,
        store: DataStore,
        capacity: int,
        metrics: Metrics | None = None,
        *,
        batch: int = BATCH,
        linger: float = LINGER_S,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.store = store
        self.capacity = capacity
        self.metrics = metrics
        self.recent = RecentImpressions()
        self.stored = 0
        self.dropped = 0
        self.store_errors = 0
        self._batch = batch
        self._linger = linger
        self._queue: deque[tuple[Any, ...]] = deque()  # `shown` tuples
        self._cond = threading.Condition()
        self._waiting = False  # the writer sleeps for work: wake it on add
        self._paused = False
        self._closing = False
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name="impressions-writer", daemon=True)
        self._thread.start()

    # -- the request path ----------------------------------------------------------------------

    def add(self, rid: str, answer: Answer, ts: float) -> bool:
        """Queue the impression of ``answer``; False (dropped and counted) when the queue is
        full or the recorder stopped. Never blocks on I/O."""
        with self._cond:
            if len(self._queue) < self.capacity and not self._closing:
                self._queue.append(shown(rid, answer, ts))
                if self._waiting:
                    self._waiting = False
                    self._cond.notify()
                return True
            self.dropped += 1
        self._count_dropped("shutdown" if self._closing else "queue_full", 1)
        return False

    def __len__(self) -> int:
        return len(self._queue)

    # -- test hooks ----------------------------------------------------------------------------

    def pause(self) -> None:
        """Stop taking from the queue (tests fill it deterministically); `resume` undoes it."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is stored (or dropped); False on timeout."""
        with self._cond:
            self._cond.notify_all()
            return self._cond.wait_for(lambda: not self._queue, timeout)

    # -- shutdown ------------------------------------------------------------------------------

    def stop(self, timeout: float) -> int:
        """Store what is queued within ``timeout`` seconds, then end the writer; return how
        many impressions could not be stored in time (counted as dropped). Blocking."""
        with self._cond:
            self._closing = True
            self._paused = False
            self._cond.notify_all()
        self._thread.join(max(0.0, timeout))
        with self._cond:
            lost = len(self._queue)
            self._queue.clear()
            self._abandoned = True  # a write still running is not counted again
            self.dropped += lost
            self._cond.notify_all()
        if lost:
            log.warning("shutdown: %d impressions not stored within %.1f s", lost, timeout)
            self._count_dropped("shutdown", lost)
        return lost

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        delay = BACKOFF_S[0]
        while True:
            with self._cond:
                while not self._closing and (self._paused or not self._queue):
                    self._waiting = not self._paused
                    self._cond.wait()
                if not self._queue or self._abandoned:
                    return  # closing, and drained
                if not self._closing and len(self._queue) < self._batch and self._linger > 0:
                    self._waiting = False
                    self._cond.wait(self._linger)  # let the batch fill (adds do not wake us)
                taken = list(itertools.islice(self._queue, self._batch))
            rows = []
            # No explicit yields (time.sleep(0)) in this work: each forced a GIL hand-over and
            # back, and those cost the request path more than the work itself (throughput at
            # saturation 0.85x -> 0.91-0.95x without them; the interpreter's switch interval
            # still lets requests in). docs/benchmarks.md, "Recording impressions".
            for fields in taken:
                # Recommend takes any user id; no backend stores one with NUL (PostgreSQL text
                # cannot): left out here, so the rest of the batch is stored.
                if "\x00" not in fields[1]:
                    rows.append(Impression(*fields))
            try:
                self.store.append_impressions(rows)
            except StoreUnavailable as e:
                self.store_errors += 1
                log.warning("impressions: store write failed (retrying in %.2f s): %s", delay, e)
                with self._cond:
                    if not self._abandoned:
                        self._cond.wait(delay)  # stop() wakes us to retry at once
                delay = min(delay * 2, BACKOFF_S[1])
                continue
            except Exception:  # a bug or a row no backend can store: drop the batch, counted
                log.exception("impressions: %d could not be stored; dropped", len(rows))
                self._done(len(taken), [])
                continue
            delay = BACKOFF_S[0]
            for at in range(0, len(rows), CHUNK):
                self.recent.add(rows[at : at + CHUNK])
            self._done(len(taken), rows)

    def _done(self, n: int, stored: list[Impression]) -> None:
        """The first ``n`` queued impressions are settled: ``stored`` were stored, the others
        refused (counted as dropped)."""
        refused = n - len(stored)
        with self._cond:
            if self._abandoned:  # stop() already counted them as not stored
                return
            for _ in range(n):
                self._queue.popleft()
            self.dropped += refused
            self.stored += len(stored)
            self._cond.notify_all()  # flush() waiters
        if refused:
            self._count_dropped("store_refused", refused)
        if self.metrics is not None:
            counts: dict[tuple[str, str], int] = {}
            for r in stored:
                key = (r.experiment, r.variant)
                counts[key] = counts.get(key, 0) + 1
            for (experiment, variant), k in counts.items():
                self.metrics.impression_stored(experiment, variant, k)

    def _count_dropped(self, reason: str, n: int) -> None:
        if self.metrics is not None:
            self.metrics.impressions_dropped.labels(reason).inc(n)
