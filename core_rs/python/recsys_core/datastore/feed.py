"""Change feeds: how a server sharing the store with other replicas finds what they stored.

A replica folds the events it acknowledges itself into its live state at once; a follower
(``recsys_server.follow``) reads everything else through a `ChangeFeed`:

    batch = feed.read(cursor, item_seq, limit)   # events not covered by cursor, item changes
    await feed.wait(timeout)                      # until something may be new, or timeout

`StoreFeed` reads the store's own tables (``events.seq``, ``items.change_seq``) and is woken
by PostgreSQL's LISTEN/NOTIFY (`Listener`: every commit of events or items by a store object
sends ``NOTIFY recsys_changes, '<origin>'``), with a poll as the fallback. A Kafka feed would
implement the same two calls over a topic (docs/replicas.md says what it needs).

Sequence gaps: PostgreSQL hands out ``seq`` at insert, not at commit, so with several writing
replicas a row with a lower seq can become visible after a higher one; a reader that kept
only ``seq > last`` would skip it for good. `SeqCursor` therefore keeps, below its high
mark, the seqs it has not seen yet (gaps) and asks for them again on every read, until they
show up or ``gap_seconds`` pass (a rolled-back insert or a deleted row leaves a gap that
never fills).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from recsys_core.datastore.base import COLUMNS, StoredEvent, stored
from recsys_core.datastore.items import ITEM_COLUMNS, ItemRecord, record_of

if TYPE_CHECKING:
    from recsys_core.datastore.base import DataStore

log = logging.getLogger(__name__)

CHANNEL = "recsys_changes"
"""The PostgreSQL NOTIFY channel; the payload is the committing store object's ``origin``."""

GAP_SECONDS = 30.0
"""How long a missing seq is waited for: longer than a writing transaction can stay open
between its insert and its commit (statement timeout 30 s), bar pathologies."""
MAX_GAPS = 10_000
GAPS_PER_READ = 1_000


class SeqCursor:
    """Which seqs of a table a reader has covered: every seq <= ``high`` but the gaps, plus
    ``ahead`` (seqs above ``high`` covered out of band: a replica's own acknowledged events).

    Not thread-safe: used from one thread (the server's event loop)."""

    def __init__(
        self,
        high: int = 0,
        gaps: Iterable[int] = (),
        *,
        now: float | None = None,
        gap_seconds: float = GAP_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        t = clock() if now is None else now
        self.high = high
        self.gaps: dict[int, float] = {g: t for g in gaps if g <= high}  # seq -> first missed
        self.ahead: set[int] = set()
        self.gap_seconds = gap_seconds
        self.abandoned = 0  # gaps given up on (never filled within gap_seconds)

    def covered(self, seq: int) -> bool:
        return seq in self.ahead if seq > self.high else seq not in self.gaps

    def mark(self, seq: int) -> None:
        """``seq`` is covered from now on (folded by someone else than the reader)."""
        if seq > self.high:
            self.ahead.add(seq)
        else:
            self.gaps.pop(seq, None)

    def wanted(self) -> tuple[int, list[int]]:
        """(high, the oldest GAPS_PER_READ gaps): a read asks for ``seq > high OR seq IN
        gaps``."""
        gaps = sorted(self.gaps)[:GAPS_PER_READ] if self.gaps else []
        return self.high, gaps

    def advance(self, seqs: Iterable[int]) -> None:
        """A read returned ``seqs`` (each now folded or already covered): the high mark moves
        to the highest of them, and every seq passed over that neither the read nor ``ahead``
        holds becomes a gap."""
        got = set(seqs)
        now = self.clock()
        top = max(got, default=self.high)
        if top > self.high:
            for s in range(self.high + 1, top):
                if s not in got and s not in self.ahead:
                    self.gaps[s] = now
            self.ahead = {s for s in self.ahead if s > top}
            self.high = top
        for s in got:
            self.gaps.pop(s, None)
        self.expire(now)

    def expire(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        old = [s for s, t in self.gaps.items() if now - t > self.gap_seconds]
        if len(self.gaps) - len(old) > MAX_GAPS:  # keep the newest MAX_GAPS
            old = sorted(self.gaps)[: len(self.gaps) - MAX_GAPS]
        for s in old:
            del self.gaps[s]
        self.abandoned += len(old)


@dataclass
class Batch:
    events: list[StoredEvent] = field(default_factory=list)
    stored_at: list[float] = field(default_factory=list)  # per event: its commit's clock
    items: list[ItemRecord] = field(default_factory=list)  # change_seq order
    head: int = 0  # the store's highest event seq when read
    full: bool = False  # a limit was reached: read again at once


class ChangeFeed(ABC):
    """What a follower reads. ``read`` is blocking (call it in a thread); ``wait`` runs on the
    event loop."""

    @abstractmethod
    def read(self, cursor: tuple[int, list[int]], item_seq: int, limit: int) -> Batch:
        """Events not covered by ``cursor`` (`SeqCursor.wanted`) in seq order, and catalogue
        records changed after ``item_seq`` in change order, at most ``limit`` of each
        (``Batch.full`` when a limit was reached). StoreUnavailable when the store cannot be
        read."""

    @abstractmethod
    async def wait(self, timeout: float) -> None:
        """Returns when another writer may have committed something, or after ``timeout``."""

    @abstractmethod
    def close(self) -> None:
        """Stops any background work."""


class StoreFeed(ChangeFeed):
    """Reads the store's tables. ``listen`` (PostgreSQL only) wakes `wait` at every commit of
    another store object; without it `wait` simply polls."""

    def __init__(self, store: DataStore, *, listen: bool = False) -> None:
        self.store = store
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: Listener | None = None
        self._listen = listen

    def _notified(self) -> None:  # listener thread
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                loop.call_soon_threadsafe(wake.set)

    def read(self, cursor: tuple[int, list[int]], item_seq: int, limit: int) -> Batch:
        high, gaps = cursor
        where = "seq > ?"
        params: list[object] = [high]
        if gaps:
            where += f" OR seq IN ({','.join('?' * len(gaps))})"
            params += gaps
        # head first: a row committed after it may still be read below, never the reverse
        (head,), rows, items = self.store._fetch_many(
            [
                ("SELECT COALESCE(MAX(seq), 0) FROM events", ()),
                (
                    f"SELECT {COLUMNS}, stored_at FROM events WHERE {where} ORDER BY seq LIMIT ?",
                    (*params, limit),
                ),
                (
                    f"SELECT {ITEM_COLUMNS} FROM items WHERE change_seq > ? ORDER BY change_seq "
                    "LIMIT ?",
                    (item_seq, limit),
                ),
            ]
        )
        head = int(head[0])
        return Batch(
            [stored(r[:-1]) for r in rows],
            [float(r[-1]) for r in rows],
            [record_of(r) for r in items],
            head,
            len(rows) >= limit or len(items) >= limit,
        )

    async def wait(self, timeout: float) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            if self._listen:
                self._listener = Listener(self.store, self._notified)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    @property
    def listening(self) -> bool:
        return self._listener is not None and self._listener.connected

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()


class Listener:
    """LISTEN on `CHANNEL` in a thread with its own connection; calls ``on_notify`` for each
    notification from another store object (payload != ``store.origin``). Reconnects with
    backoff; while it is down the follower's poll still finds everything."""

    def __init__(self, store: DataStore, on_notify: Callable[[], None]) -> None:
        self._conninfo = store._conninfo  # PostgresStore only
        self._scrub = store._scrub  # libpq may echo parts of the URL: never log a password
        self._origin = store.origin
        self._on_notify = on_notify
        self._stop = threading.Event()
        self.connected = False
        self._thread = threading.Thread(target=self._run, name="datastore-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psycopg

        delay = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connected, delay = True, 0.5
                    self._on_notify()  # something may have committed while not listening
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=0.5):
                            if n.payload != self._origin:
                                self._on_notify()
            except psycopg.Error as e:
                log.info("store listener: %s; reconnecting in %.1f s", self._scrub(e), delay)
            self.connected = False
            self._stop.wait(delay)
            delay = min(2 * delay, 10.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
