"""The data store interface shared by every backend, and the group-commit writer they all use.

A backend (SQLite, PostgreSQL) subclasses `DataStore` and supplies only the database calls:
"store this batch of events in ONE transaction and return the ids that were newly inserted,
with their seqs" (`DataStore._write_batch`), "run this statement in one checked write
transaction" (`_execute_write`, for retention's delete), and "run this read query" (`_fetch`
for rows, `_frame` for a polars frame). The SQL, queueing, group commit, idempotency
bookkeeping, error fan-out, counters and closing live here, once.

Group commit: `DataStore.append` queues its events and waits; one writer thread drains the
queue, commits everything queued (at most ``max_batch`` events; one call is never split) in a
single transaction and tells each call which of its events were newly stored. A failed
transaction fails every call in it with `StoreUnavailable`; it is all or nothing (the
database rolls it back), and retrying is safe because ``event_id`` is UNIQUE in the table.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from recsys_core.datastore import impressions as imp
from recsys_core.datastore.impressions import Impression
from recsys_core.datastore.items import ITEM_COLUMNS, ItemChange, ItemRecord, record_of
from recsys_core.events import Event

log = logging.getLogger(__name__)

__all__ = [
    "AppendResult",
    "DataStore",
    "GroupCommitter",
    "StoreClosed",
    "StoreConfigError",
    "StoreConflict",
    "StoreError",
    "StoreURL",
    "StoreUnavailable",
    "StoredEvent",
    "parse_store_url",
    "redact",
]

URL_HINT = "use sqlite:///PATH or postgresql://…"


# -- errors ----------------------------------------------------------------------------------


class StoreError(Exception):
    """Base of every data store error."""


class StoreUnavailable(StoreError):
    """A commit (or the connection) failed: database down, disk full, lock timeout. The failed
    transaction is all or nothing, and normally nothing: only a failure during COMMIT itself
    (the connection lost, the final fsync failing) can leave it committed without the
    acknowledgement. Either way retrying is safe (stored events come back as duplicates).
    ``errno`` is ENOSPC (or EDQUOT) when the disk is full (the server answers
    RESOURCE_EXHAUSTED), else usually None."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class StoreClosed(StoreUnavailable):
    """Append on a store that is closed or closing."""


class StoreConflict(StoreError):
    """A checked write found the table other than the caller read it (`delete_events` with
    ``expect``); it was rolled back."""


class StoreConfigError(StoreError):
    """The store cannot be opened as configured: bad URL, missing database, read-only path,
    schema newer than the code, corrupt SQLite file. The message names the URL or path (with
    any password redacted)."""


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppendResult:
    recorded: list[Event]  # this call's events newly stored, in call order
    duplicates: int  # this call's events not stored: id already stored, or repeated in the call
    seqs: list[int] = field(default_factory=list)  # the store seq of each recorded event
    # Events of earlier calls answered as failed though their commit went through (see
    # `DataStore._write`): stored, never acknowledged as recorded; the caller folds them.
    recovered: list[StoredEvent] = field(default_factory=list)


@dataclass(frozen=True)
class StoredEvent:
    seq: int  # the store's cursor: increases with every stored event
    event: Event


# -- URLs ------------------------------------------------------------------------------------


def redact(url: str) -> str:
    """``url`` with its password (``user:PASSWORD@`` or ``password=`` in the query) as ***."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    # The authority's userinfo ends at the last "@" before any query: a password may hold an
    # unescaped "/" (redacting too much is the safe mistake).
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    head, tail = rest[:cut], rest[cut:]
    userinfo, at, after = head.rpartition("@")
    if at and ":" in userinfo:
        head = userinfo.split(":", 1)[0] + ":***@" + after
    tail = re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", tail)
    return f"{scheme}://{head}{tail}"


@dataclass(frozen=True)
class StoreURL:
    scheme: str  # "sqlite" or "postgresql"
    url: str  # as given (may hold a password: never log it)
    redacted: str
    path: str | None = None  # sqlite: the database file


def parse_store_url(url: str) -> StoreURL:
    """Check a ``--store`` URL: ``sqlite:///relative.db``, ``sqlite:////absolute.db``,
    ``postgresql://…`` or ``postgres://…``. StoreConfigError naming the URL otherwise."""
    if not isinstance(url, str):
        raise StoreConfigError(f"--store must be a URL string, got {type(url).__name__}")
    shown = redact(url)
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        raise StoreConfigError(f"--store {shown!r}: not a URL; {URL_HINT}")
    scheme = scheme.lower()
    if scheme in ("postgresql", "postgres"):
        return StoreURL("postgresql", url, shown)
    if scheme != "sqlite":
        raise StoreConfigError(f"--store {shown!r}: unsupported scheme {scheme!r}; {URL_HINT}")
    if not rest.startswith("/"):
        raise StoreConfigError(
            f"--store {shown!r}: a SQLite URL has no host; use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    path = rest[1:]
    if not path:
        raise StoreConfigError(f"--store {shown!r}: no database path; {URL_HINT}")
    if "?" in path or "#" in path:
        raise StoreConfigError(f"--store {shown!r}: SQLite URL options are not supported")
    if path == ":memory:":
        # Readers use their own connections, which would each see a different empty database.
        raise StoreConfigError(f"--store {shown!r}: in-memory SQLite is not supported; give a file")
    return StoreURL("sqlite", url, shown, path)


COLUMNS = "seq, event_id, user_id, item_id, event_type, ts, rating, recommendation_id, position"
"""The events table's columns, in the order `stored` reads a row."""

FRAME_SCHEMA = {
    "seq": pl.Int64,
    "event_id": pl.String,
    "user_id": pl.String,
    "item_id": pl.String,
    "event_type": pl.String,
    "timestamp": pl.Float64,
    "rating": pl.Float64,
    "recommendation_id": pl.String,
    "position": pl.Int64,
}
"""`DataStore.events_frame`'s columns and types."""

ARCHIVE_SCHEMA = FRAME_SCHEMA | {"stored_at": pl.Float64}
"""`DataStore.events_frame`'s columns with ``with_stored_at``: every column of the table."""


def _range(
    after_seq: int, up_to_seq: int | None, stored_before: float | None
) -> tuple[str, list[Any]]:
    """The WHERE clause (``?`` placeholders) and parameters shared by reads and deletes."""
    where, params = ["seq > ?"], [after_seq]
    if up_to_seq is not None:
        where.append("seq <= ?")
        params.append(up_to_seq)
    if stored_before is not None:
        where.append("stored_at < ?")
        params.append(stored_before)
    return " AND ".join(where), params


def stored(row: Sequence[Any]) -> StoredEvent:
    """A row of `COLUMNS` as a StoredEvent."""
    seq, event_id, user_id, item_id, event_type, ts, rating, rid, position = row
    position = None if position is None else int(position)
    event = Event(event_id, user_id, item_id, event_type, ts, rating, rid or None, position)
    return StoredEvent(int(seq), event)


# -- group commit ----------------------------------------------------------------------------


@dataclass
class _Call:  # one append (or catalogue change) waiting for the writer
    events: list[Any]  # Events, or ItemChanges when kind is "items"
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[Any]  # events: the ids this call got stored -> seq; items: records
    kind: str = "events"


_Stored = dict[str, int]  # event id -> the seq it was stored at
_Outcome = tuple[asyncio.Future[_Stored], _Stored | None, BaseException | None]

# How long the writer waits, at most, for settled callers to queue their next appends (see
# `GroupCommitter._release`). Only a safety net: the release normally comes one loop turn later.
_HOLD_MAX_S = 0.05


def _retrieve(fut: asyncio.Future[Any]) -> None:
    # A cancelled caller no longer awaits its future: mark a failure as retrieved.
    if not fut.cancelled():
        fut.exception()


def _copy(error: StoreUnavailable) -> StoreUnavailable:
    # One exception object per waiting call: raising mutates __traceback__.
    return type(error)(str(error), error.errno)


class GroupCommitter:
    """Group commit for any backend: an asyncio-facing queue drained by one writer thread.

    ``write(events)`` runs on the writer thread. It must store the events in one transaction
    and return the ids it inserted, each with the seq it was stored at (ids already in the
    table are skipped by the database, not by us: no id set is kept in memory), or raise
    `StoreUnavailable` having rolled back. The events it gets have distinct ids: repeats
    across and within the queued calls are settled here, the first occurrence in queue order
    being the one offered to the database.

    The writer thread owns a queued call until it is committed: cancelling the awaiting
    caller cancels only its wait, never the write (what ``asyncio.shield`` does for a write
    running on the loop).

    Batches stay whole through two rules (without them the writer takes the first caller
    that comes back alone, the others make the next batch, and that split repeats forever):
    a submit wakes the writer on the loop's next turn, after the callers resuming in this
    turn have all queued; and after a commit the writer holds until the loop has resumed the
    callers it settled (`_release`), instead of taking a straggler alone.

    Catalogue changes (``submit(changes, kind="items")``) share the queue and the thread:
    ``write_items(changes)`` commits the consecutive item calls of the queue in one
    transaction, in queue order, and returns one result per change. A batch holds calls of
    one kind, so events and catalogue changes are committed in the order they were queued.

    Counters (plain ints, written only by the writer thread): ``commits``,
    ``events_committed``, ``commit_errors``, ``duplicates``.
    """

    def __init__(
        self,
        write: Callable[[list[Event]], Mapping[str, int]],
        *,
        max_batch: int = 1000,
        name: str = "datastore",
        on_success: Callable[[], None] = lambda: None,
        on_failure: Callable[[StoreUnavailable], None] = lambda e: None,
        write_items: Callable[[list[Any]], list[Any]] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._write = write
        self._write_items = write_items
        self._max_batch = max_batch
        self._name = name
        self._on_success = on_success
        self._on_failure = on_failure
        self.commits = 0
        self.events_committed = 0
        self.commit_errors = 0
        self.duplicates = 0
        self._cond = threading.Condition()
        self._queue: deque[_Call] = deque()
        self._hold = False  # a batch was settled; its callers have not resumed yet
        self._closing = False
        self._thread: threading.Thread | None = None  # started by the first submit

    def submit(self, events: list[Any], kind: str = "events") -> asyncio.Future[Any]:
        """Queue ``events`` (non-empty) for the next commit; the future resolves to the ids of
        them that this commit newly stored, or fails with StoreUnavailable. Call from the event
        loop; StoreClosed once `stop` was called."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[_Stored] = loop.create_future()
        done.add_done_callback(_retrieve)
        with self._cond:
            if self._closing:
                raise StoreClosed(f"{self._name}: the store is closed")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="datastore-writer", daemon=True
                )
                self._thread.start()
            self._queue.append(_Call(events, loop, done, kind))
        loop.call_soon(self._wake)  # next turn: see the class doc
        return done

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def _release(self) -> None:
        with self._cond:
            self._hold = False
            self._cond.notify()

    def _settle(self, outcomes: list[_Outcome]) -> None:
        """On the callers' loop: resolve their futures. Resolving schedules each caller's
        resumption for the next turn; `_release`, scheduled after them, runs once they have
        resumed and queued whatever they append next."""
        try:
            for fut, ids, error in outcomes:
                if fut.done():  # the caller was cancelled
                    continue
                if error is not None:
                    fut.set_exception(error)
                else:
                    fut.set_result({} if ids is None else ids)
        finally:
            asyncio.get_running_loop().call_soon(self._release)

    def stop(self) -> None:
        """Refuse new calls, commit everything already queued, and end the writer thread.
        Blocking; safe to call more than once."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closing and (self._hold or not self._queue):
                    if self._hold and self._queue:
                        if not self._cond.wait(_HOLD_MAX_S):
                            self._hold = False  # the loop did not answer: go anyway
                    else:
                        self._cond.wait()
                if not self._queue:  # closing, and drained
                    return
                batch = [self._queue.popleft()]
                n = len(batch[0].events)
                while (
                    self._queue
                    and self._queue[0].kind == batch[0].kind
                    and n + len(self._queue[0].events) <= self._max_batch
                ):
                    n += len(self._queue[0].events)
                    batch.append(self._queue.popleft())
            self._commit(batch)

    def _commit(self, batch: list[_Call]) -> None:
        if batch[0].kind == "items":
            self._commit_items(batch)
            return
        owner: dict[str, _Call] = {}  # id -> the call whose copy is offered to the database
        unique: list[Event] = []
        for call in batch:
            for e in call.events:
                if e.event_id not in owner:
                    owner[e.event_id] = call
                    unique.append(e)
        try:
            inserted = self._write(unique)
        except StoreUnavailable as e:
            error = e
        except Exception as e:  # a bug or an unmapped driver error: still fail every call
            log.exception("%s: commit failed", self._name)
            error = StoreUnavailable(f"{self._name}: commit failed: {e!r}")
        else:
            won: dict[int, _Stored] = {id(call): {} for call in batch}
            for eid, seq in inserted.items():
                if (call := owner.get(eid)) is not None:
                    won[id(call)][eid] = seq
            self.commits += 1
            self.events_committed += len(inserted)
            self.duplicates += sum(len(c.events) for c in batch) - len(inserted)
            self._on_success()
            self._notify([(call, won[id(call)], None) for call in batch])
            return
        self.commit_errors += 1
        self._on_failure(error)
        self._notify([(call, None, _copy(error)) for call in batch])

    def _commit_items(self, batch: list[_Call]) -> None:
        changes = [c for call in batch for c in call.events]
        try:
            if self._write_items is None:
                raise StoreUnavailable(f"{self._name}: this store cannot hold items")
            results = list(self._write_items(changes))
        except StoreUnavailable as e:
            error = e
        except Exception as e:
            log.exception("%s: commit failed", self._name)
            error = StoreUnavailable(f"{self._name}: commit failed: {e!r}")
        else:
            self.commits += 1
            self._on_success()
            outcomes, at = [], 0
            for call in batch:
                outcomes.append((call, results[at : at + len(call.events)], None))
                at += len(call.events)
            self._notify(outcomes)
            return
        self.commit_errors += 1
        self._on_failure(error)
        self._notify([(call, None, _copy(error)) for call in batch])

    def _notify(self, outcomes: list[tuple[_Call, _Stored | None, BaseException | None]]) -> None:
        # One wake-up per event loop for the whole batch, so its callers resume together.
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for call, ids, error in outcomes:
            by_loop.setdefault(call.loop, []).append((call.done, ids, error))
        with self._cond:
            self._hold = True
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(self._settle, settled)
            except RuntimeError:  # that loop is closed: nobody there is waiting
                self._release()


# -- the interface ---------------------------------------------------------------------------


class DataStore(ABC):
    """Durable store of behaviour events, catalogue records and impressions.

    Open with the backend's constructor (blocking: connects and runs migrations) or ``await
    Backend.open(url)``; ``await append(...)`` from the event loop; reads are synchronous (use
    ``asyncio.to_thread`` from async code); ``await close()`` (or `close_sync`) at the end.

    ``url`` is the store's URL with the password redacted. ``state`` is "ok" or "unavailable"
    (the last commit or ping failed; ``last_error`` says why); it returns to "ok" after the
    next success. Counters for metrics: ``commits``, ``events_committed``,
    ``commit_errors``, ``duplicates``.

    ``clock`` gives each commit's ``stored_at`` (the server's clock; retention ages events by
    it). Tests pass a fixed one instead of waiting.

    Subclasses implement `_write_batch`, `_execute_write`, `_execute_many`, `_frame`, `_fetch`
    and `_close`, and call ``super().__init__(url, max_batch=..., clock=...)``.
    """

    def __init__(
        self, url: str, *, max_batch: int = 1000, clock: Callable[[], float] = time.time
    ) -> None:
        self.url = redact(url)
        self.clock = clock
        # Names this store object's commits in change notifications (`feed.Listener` skips
        # its own) and, where ``_writes_origin``, its rows (events.origin). A fresh one per
        # open: a restarted server is another writer.
        self.origin = uuid.uuid4().hex
        self._writes_origin = False
        self.state = "ok"
        self.last_error = ""
        # Writer thread only: the highest seq this process committed, and whether a commit
        # failed since (its outcome unknown: a connection lost after COMMIT reached the
        # database stores the rows without acknowledging them). See `_write`.
        self._last_seq: int | None = None
        self._uncertain = False
        self._acked_uncertain: set[int] = set()  # seqs committed and answered since then
        self._recovered: list[StoredEvent] = []  # for the next `append` to hand out
        self._recovered_lock = threading.Lock()
        self._writer = GroupCommitter(
            self._write,
            max_batch=max_batch,
            name=self.url,
            on_success=self._mark_ok,
            on_failure=self._mark_unavailable,
            write_items=self._write_items,
        )
        self._close_lock = threading.Lock()
        self._closed = False

    @classmethod
    async def open(cls, url: str, **opts: Any) -> DataStore:
        """The constructor, run in a thread (it connects and migrates)."""
        return await asyncio.to_thread(cls, url, **opts)

    # -- counters and state ------------------------------------------------------------------

    @property
    def commits(self) -> int:
        return self._writer.commits

    @property
    def events_committed(self) -> int:
        return self._writer.events_committed

    @property
    def commit_errors(self) -> int:
        return self._writer.commit_errors

    @property
    def duplicates(self) -> int:
        return self._writer.duplicates

    def _mark_ok(self) -> None:
        self.state = "ok"

    def _mark_unavailable(self, error: StoreError) -> None:
        self.state = "unavailable"
        self.last_error = str(error)

    # -- writing -----------------------------------------------------------------------------

    async def append(self, events: Sequence[Event]) -> AppendResult:
        """Store the call's new events; return once they are committed.

        Idempotent by ``event_id``: ids already stored, repeated within the call, or stored by
        a concurrent call count as duplicates (of concurrent calls with the same id, exactly
        one reports it recorded). Raises StoreUnavailable when the commit failed (retry: see
        StoreUnavailable), StoreClosed after close, TypeError for a non-Event.
        A cancelled caller does not cancel the write.
        """
        events = list(events)
        for e in events:
            if not isinstance(e, Event):
                raise TypeError(f"expected Event, got {type(e).__name__}")
        if not events:
            return AppendResult([], 0)
        # Not shielded: the writer thread owns the call, so cancelling only stops the wait.
        won = dict(await self._writer.submit(events))
        recorded, seqs = [], []
        for e in events:
            seq = won.pop(e.event_id, None)  # a repeat within the call is a duplicate
            if seq is not None:
                recorded.append(e)
                seqs.append(seq)
        return AppendResult(recorded, len(events) - len(recorded), seqs, self._take_recovered())

    def _write(self, events: list[Event]) -> Mapping[str, int]:
        """`_write_batch`, plus recovery of rows a failed commit stored anyway.

        A commit that fails may still have been applied (the connection broke after the
        database committed). Its events were answered UNAVAILABLE; a retry reports them as
        duplicates, so without this nobody would fold them into the live histories. This
        process is the store's only writer and commits one batch at a time, so after the
        next successful commit every row above the last seq it committed before the failure,
        other than those of commits acknowledged since, is such a row: they are read back
        here and handed out with the next `append` result (``AppendResult.recovered``). A
        read-back that fails is tried again after the following commit. With several
        processes writing one PostgreSQL store (replicas) only this store object's own rows
        are read back (``events.origin``)."""
        if self._last_seq is None:
            self._last_seq = self.max_seq()
        try:
            inserted = self._write_batch(events)
        except StoreUnavailable:
            self._uncertain = True
            raise
        mine = set(inserted.values())
        if not self._uncertain:
            self._last_seq = max([self._last_seq, *mine])
            return inserted
        self._acked_uncertain |= mine  # acknowledged: never handed out as recovered
        try:
            found = [
                x
                for x in self._own_events_after(self._last_seq)
                if x.seq not in self._acked_uncertain
            ]
        except StoreUnavailable as e:  # the commit stands; recover after the next one
            log.warning("%s: reading back after a failed commit: %s", self.url, e)
            return inserted
        if found:
            log.warning(
                "%s: %d events of a commit reported failed were stored; folding them",
                self.url,
                len(found),
            )
        with self._recovered_lock:
            self._recovered.extend(found)
        self._last_seq = max([self._last_seq, *self._acked_uncertain, *(x.seq for x in found)])
        self._uncertain, self._acked_uncertain = False, set()
        return inserted

    def _own_events_after(self, seq: int) -> list[StoredEvent]:
        if not self._writes_origin:  # one writer: every row is this store object's
            return list(self.read_events(after_seq=seq))
        rows = self._fetch(
            f"SELECT {COLUMNS} FROM events WHERE seq > ? AND origin = ? ORDER BY seq",
            (seq, self.origin),
        )
        return [stored(r) for r in rows]

    def _take_recovered(self) -> list[StoredEvent]:
        with self._recovered_lock:
            out, self._recovered = self._recovered, []
        return out

    @abstractmethod
    def _write_batch(self, events: list[Event]) -> Mapping[str, int]:
        """In ONE transaction, insert the events (distinct ids) skipping ids already stored,
        and return the inserted ids, each mapped to its seq; on failure roll back and raise
        StoreUnavailable. Runs on the writer thread only."""

    # -- the catalogue (recsys_core.datastore.items) -------------------------------------------

    async def change_items(self, changes: Sequence[ItemChange]) -> list[ItemRecord | None]:
        """Apply catalogue changes in order, through the group-commit writer; return once
        committed, per change the record it stored or None when it changed nothing. Raises
        StoreUnavailable (nothing applied: the transaction is all or nothing; retrying is
        safe, as the changes are idempotent), StoreClosed after close."""
        changes = list(changes)
        for c in changes:
            if not isinstance(c, ItemChange):
                raise TypeError(f"expected ItemChange, got {type(c).__name__}")
        if not changes:
            return []
        return list(await self._writer.submit(changes, kind="items"))

    @abstractmethod
    def _write_items(self, changes: list[ItemChange]) -> list[ItemRecord | None]:
        """In ONE transaction, `items.write` the changes; on failure roll back and raise
        StoreUnavailable. Runs on the writer thread only."""

    def read_items(self) -> list[ItemRecord]:
        """Every stored catalogue record, in item id order. Blocking."""
        rows = self._fetch(f"SELECT {ITEM_COLUMNS} FROM items ORDER BY item_id", ())
        return [record_of(r) for r in rows]

    # -- impressions (recsys_core.datastore.impressions) ---------------------------------------

    def append_impressions(self, rows: Sequence[Impression]) -> None:
        """Store impressions in ONE transaction; an id already stored is skipped (idempotent
        by ``recommendation_id``, so a retry after a failure is safe). Blocking, any thread
        (SQLite: it takes the writer connection between two group commits). Raises
        StoreUnavailable (nothing stored), StoreClosed after close, TypeError for a
        non-Impression and ValueError for one that cannot be stored (NUL in a string)."""
        rows = list(rows)
        imp.check(rows)
        if not rows:
            return
        self._execute_many(imp.statements(rows, self.clock()))

    @abstractmethod
    def _execute_many(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        """In ONE write transaction run each statement (``?`` placeholders) with its
        parameters, in order (an iterable: consume it once, lazily); on failure roll back and
        raise StoreUnavailable. Any thread."""

    def impressions(self, experiment: str) -> pl.DataFrame:
        """The stored impressions of ``experiment`` ("" for answers outside any experiment),
        in ts order, with the columns of `impressions.IMPRESSION_SCHEMA`: recommendation_id,
        user_id, experiment, variant, model, version (String), ts (Float64), item_ids
        (List[String]), scores (List[Float64]), teams (List[Int64]). Blocking."""
        raw = self._frame(imp.IMPRESSIONS_SQL, [experiment], imp.RAW_SCHEMA)
        return imp.decode(raw)

    def experiment_events(self, experiment: str) -> pl.DataFrame:
        """The stored events of the users with an impression in ``experiment``, from that
        experiment's first impression on, in seq order, with the columns of
        `impressions.EXPERIMENT_EVENTS_SCHEMA`: event_id, user_id, item_id, event_type
        (String), ts, rating (Float64; null when unrated), recommendation_id (String) and
        position (Int64; both null when not given). Blocking."""
        schema = imp.EXPERIMENT_EVENTS_SCHEMA
        frame = self._frame(imp.EXPERIMENT_EVENTS_SQL, [experiment, experiment], schema)
        return frame.select(pl.col(k).cast(v) for k, v in schema.items())

    # -- reading -----------------------------------------------------------------------------

    @abstractmethod
    def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows of one read query, written with ``?`` placeholders (a backend with
        another style rewrites them); database failures raise StoreUnavailable. Any
        thread."""

    def _fetch_many(self, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        """The rows of each read query, in order (a backend may run them on one connection:
        the follower's read is three small queries, many times a second)."""
        return [self._fetch(sql, params) for sql, params in queries]

    def read_events(
        self, after_seq: int = 0, up_to_seq: int | None = None, batch: int = 10_000
    ) -> Iterator[StoredEvent]:
        """Stored events with ``after_seq < seq <= up_to_seq`` in seq order, fetched
        ``batch`` at a time. Without ``up_to_seq`` it stops at the max seq when iteration
        starts (events committed meanwhile are left for the next read)."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        last = self.max_seq() if up_to_seq is None else up_to_seq
        cursor = after_seq
        while cursor < last:
            # Keyset pages, one query each: an abandoned iterator holds no connection open.
            rows = self._fetch(
                f"SELECT {COLUMNS} FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (cursor, last, batch),
            )
            if not rows:
                return
            for row in rows:
                yield stored(row)
            cursor = rows[-1][0]

    def events_frame(
        self,
        after_seq: int = 0,
        up_to_seq: int | None = None,
        *,
        stored_before: float | None = None,
        limit: int | None = None,
        with_stored_at: bool = False,
    ) -> pl.DataFrame:
        """The events with ``after_seq < seq <= up_to_seq`` (and ``stored_at <
        stored_before``), the first ``limit`` of them, as a polars frame read straight from
        the database: columns seq (Int64), event_id, user_id, item_id, event_type (String),
        timestamp, rating (Float64, null when unrated), recommendation_id (String) and
        position (Int64; both null when not given), and with ``with_stored_at`` also
        stored_at (Float64), in seq order."""
        where, params = _range(after_seq, up_to_seq, stored_before)
        schema = ARCHIVE_SCHEMA if with_stored_at else FRAME_SCHEMA
        columns = (
            'seq, event_id, user_id, item_id, event_type, ts AS "timestamp", rating, '
            "recommendation_id, position"
        )
        if with_stored_at:
            columns += ", stored_at"
        sql = f"SELECT {columns} FROM events WHERE {where} ORDER BY seq"
        if limit is not None:
            if limit < 0:
                raise ValueError(f"limit must be >= 0, got {limit}")
            sql += " LIMIT ?"
            params.append(limit)
        frame = self._frame(sql, params, schema)
        return frame.select(pl.col(name).cast(dtype) for name, dtype in schema.items())

    @abstractmethod
    def _frame(
        self, sql: str, params: Sequence[Any], schema: dict[str, pl.DataType]
    ) -> pl.DataFrame:
        """The rows of one read query (``?`` placeholders) as a frame with ``schema``'s
        columns, empty when there are none; database failures raise StoreUnavailable."""

    def user_history(self, user_id: str, limit: int | None = None) -> list[StoredEvent]:
        """One user's events in seq order; with ``limit``, the latest ``limit`` of them."""
        if limit is None:
            sql, params = f"SELECT {COLUMNS} FROM events WHERE user_id = ? ORDER BY seq", [user_id]
        elif limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        else:
            sql = f"SELECT {COLUMNS} FROM events WHERE user_id = ? ORDER BY seq DESC LIMIT ?"
            params = [user_id, limit]
        rows = self._fetch(sql, params)
        if limit is not None:
            rows.reverse()
        return [stored(r) for r in rows]

    def max_seq(self) -> int:
        """The highest stored seq (0 when empty)."""
        return int(self._fetch("SELECT COALESCE(MAX(seq), 0) FROM events", ())[0][0])

    def min_seq(self) -> int:
        """The lowest stored seq (0 when empty)."""
        return int(self._fetch("SELECT COALESCE(MIN(seq), 0) FROM events", ())[0][0])

    def count(self) -> int:
        """Number of stored events."""
        return int(self._fetch("SELECT COUNT(*) FROM events", ())[0][0])

    def ping(self) -> bool:
        """Cheap liveness check; sets ``state`` (True and "ok" when the database answers)."""
        try:
            self._probe()
        except StoreUnavailable as e:
            self._mark_unavailable(e)
            return False
        self._mark_ok()
        return True

    def _probe(self) -> None:
        """What `ping` checks; StoreUnavailable when the store cannot take writes."""
        self._fetch("SELECT 1", ())

    # -- deleting (retention) ----------------------------------------------------------------

    def delete_events(
        self,
        after_seq: int,
        up_to_seq: int,
        stored_before: float,
        *,
        expect: int | None = None,
    ) -> int:
        """Delete, in ONE transaction, the events that ``events_frame(after_seq, up_to_seq,
        stored_before=stored_before)`` reads, and return how many. With ``expect``, any other
        count rolls the transaction back and raises StoreConflict (something changed since
        the caller read them). seq values are never reused, so a cursor stays valid.
        Blocking; StoreUnavailable when the database fails."""
        where, params = _range(after_seq, up_to_seq, stored_before)

        def check(deleted: int) -> None:
            if expect is not None and deleted != expect:
                raise StoreConflict(
                    f"{self.url}: {deleted} events match seq {after_seq + 1}..{up_to_seq} "
                    f"stored before {stored_before!r}, expected {expect}; nothing deleted"
                )

        return self._execute_write(f"DELETE FROM events WHERE {where}", params, check)

    @abstractmethod
    def _execute_write(self, sql: str, params: Sequence[Any], check: Callable[[int], None]) -> int:
        """In ONE write transaction run ``sql`` (``?`` placeholders), pass its row count to
        ``check`` (which may raise: roll back and re-raise), commit, and return the count.
        Database failures roll back and raise StoreUnavailable. Any thread."""

    # -- closing -----------------------------------------------------------------------------

    def close_sync(self) -> None:
        """Commit what is queued, then close the connections. Blocking; idempotent."""
        with self._close_lock:
            if self._closed:
                return
            try:
                self._writer.stop()
            finally:
                self._closed = True
                self._close()

    async def close(self) -> None:
        """`close_sync` in a thread: queued appends are committed first."""
        await asyncio.to_thread(self.close_sync)

    @abstractmethod
    def _close(self) -> None:
        """Close the backend's connections (the writer thread has ended)."""

    async def __aenter__(self) -> DataStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __enter__(self) -> DataStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_sync()
