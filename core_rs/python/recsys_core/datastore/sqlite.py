"""SQLite backend: the embedded default (``sqlite:///PATH``), stdlib `sqlite3`, nothing to install.

One writer connection, used only by the group-commit writer thread: WAL journal,
``synchronous=FULL`` by default (a commit is on disk before `append` returns), ``BEGIN
IMMEDIATE`` per batch so a second process waits up to ``busy_timeout_ms`` for the lock instead
of failing at COMMIT. Reads use their own connections from a small pool: in WAL mode they run
while a write is in progress and see the last committed state.

Opening refuses, with StoreConfigError naming the file, a missing parent directory, a path
that cannot be written, a file that is not a SQLite database, and a database that fails
``PRAGMA quick_check`` (torn or corrupt; checked read-only, so the refused file and its -wal
are left exactly as they were). A full disk fails the commit with StoreUnavailable
(errno ENOSPC); the next append simply tries again.
"""

from __future__ import annotations

import contextlib
import errno as errnos
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl

from recsys_core.datastore import items
from recsys_core.datastore.base import (
    DataStore,
    StoreClosed,
    StoreConfigError,
    StoreError,
    StoreUnavailable,
    parse_store_url,
)
from recsys_core.datastore.items import ItemChange, ItemRecord
from recsys_core.datastore.schema import migrate
from recsys_core.events import Event

__all__ = ["SQLiteStore"]

SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
_ROWS_PER_INSERT = 500  # 9 parameters a row, well under SQLite's 32766 variables
_IDLE_READERS = 4  # read connections kept open between reads
_PAGE_BYTES = 1024
_CHECKPOINT_PAGES = 40_000
_WAL_LIMIT_BYTES = 64 * 2**20
_MIN_FREE_BYTES = 64 * 1024  # below this a ping reports the store unavailable (a full disk)
# A refused file's committed transactions may be in <file>-wal only: it belongs with the file.
_WITH_SIDE_FILES = "together with its -wal and -shm files"


@lru_cache(maxsize=64)
def _insert_sql(rows: int) -> str:
    values = ",".join(["(?,?,?,?,?,?,?,?,?)"] * rows)
    return (
        "INSERT INTO events (event_id, user_id, item_id, event_type, ts, rating, "
        "recommendation_id, position, stored_at) "
        f"VALUES {values} ON CONFLICT (event_id) DO NOTHING RETURNING event_id, seq"
    )


def _code(e: sqlite3.Error) -> str:
    return getattr(e, "sqlite_errorname", None) or type(e).__name__


class SQLiteStore(DataStore):
    """The store in one SQLite file; see the module doc. ``synchronous`` is the SQLite pragma
    (FULL by default; tests may pass NORMAL, which still survives a process crash in WAL mode
    but not a power loss)."""

    def __init__(
        self,
        url: str,
        *,
        max_batch: int = 1000,
        synchronous: str = "FULL",
        busy_timeout_ms: int = 5000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        parsed = parse_store_url(url)
        if parsed.scheme != "sqlite" or parsed.path is None:
            raise StoreConfigError(f"--store {parsed.redacted!r}: not a sqlite:/// URL")
        super().__init__(url, max_batch=max_batch, clock=clock)
        # Absolute, so reader connections opened later do not depend on the working directory.
        self.path = Path(os.path.abspath(parsed.path))
        self._synchronous = str(synchronous).upper()
        if self._synchronous not in SYNCHRONOUS:
            raise StoreConfigError(
                f"{self.path}: synchronous={synchronous!r}; use one of {', '.join(SYNCHRONOUS)}"
            )
        if busy_timeout_ms < 0:
            raise StoreConfigError(f"{self.path}: busy_timeout_ms must be >= 0")
        self._timeout = busy_timeout_ms / 1000
        self._write_lock = threading.Lock()  # the writer connection (writer thread, close)
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._check_path()
        self._conn: sqlite3.Connection | None = self._open_writer()

    # -- opening -----------------------------------------------------------------------------

    def _check_path(self) -> None:
        """Clear messages for the usual mistakes, before SQLite's "unable to open database
        file" (and before sqlite3.connect creates a file where it should not)."""
        path, parent = self.path, self.path.parent
        if not parent.is_dir():
            raise StoreConfigError(f"{path}: directory {parent} does not exist")
        if path.is_dir():
            raise StoreConfigError(f"{path}: is a directory, not a database file")
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            raise StoreConfigError(f"{path}: the database file is read-only for this user")
        if not os.access(parent, os.W_OK | os.X_OK):
            # WAL mode keeps <file>-wal and <file>-shm next to the database.
            raise StoreConfigError(
                f"{path}: directory {parent} is read-only (SQLite needs to create the "
                "database and its -wal and -shm files there)"
            )

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
        return sqlite3.connect(
            self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )

    def _check_integrity(self) -> None:
        """``PRAGMA quick_check`` of an existing file, on a read-only connection opened before
        the writer. Refusing must leave the damaged file as it was: a connection that may
        write checkpoints the WAL into the database file when it is the last to close (and
        deletes the -wal), so a writable connection closed on a corrupt file would copy the
        committed transactions of the WAL into it and remove the -wal on the way out."""
        if not self.path.exists():
            return  # a new store: nothing to check
        try:
            conn = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, timeout=self._timeout)
        except sqlite3.Error as e:
            raise self._open_error(e) from e
        try:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.Error as e:
            raise self._open_error(e) from e
        finally:
            conn.close()
        if problems != ["ok"]:
            # One line (a row may hold several): the message ends up in a log line.
            lines = (line.strip() for p in problems for line in str(p).splitlines())
            detail = "; ".join(line for line in lines if line)[:500]
            raise StoreConfigError(
                f"{self.path}: the SQLite database is corrupt (quick_check: {detail}); "
                f"restore it from a backup or move it aside {_WITH_SIDE_FILES}"
            )

    def _open_writer(self) -> sqlite3.Connection:
        self._check_integrity()
        try:
            conn = self._connect()
        except sqlite3.Error as e:
            raise self._open_error(e) from e
        try:
            conn.execute(f"PRAGMA page_size={_PAGE_BYTES}")  # no-op unless the file is new
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreConfigError(
                    f"{self.path}: cannot use WAL journal mode here (got {mode!r})"
                )
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            # Random event ids dirty about two index pages per event (the UNIQUE event_id and
            # the user index), and the WAL holds whole pages, so bytes written per commit grow
            # with the page size: 1 KiB pages (set before the first table; an existing file
            # keeps its own) and a checkpoint every ~40 MiB of WAL instead of every 4 MiB
            # gave +16% events/s at 50k stored events and +33% at 1M (docs/benchmarks.md).
            conn.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
            migrate(conn, "sqlite", self.url)
        except StoreError:
            conn.close()
            raise
        except sqlite3.Error as e:
            conn.close()
            raise self._open_error(e) from e
        return conn

    def _open_error(self, e: sqlite3.Error) -> StoreError:
        code = _code(e)
        if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR")):
            return self._unavailable(e, "open")  # transient: retrying may work
        if code == "SQLITE_NOTADB":
            what = "is not a SQLite database (or its header is damaged)"
        elif code.startswith("SQLITE_CORRUPT"):
            what = (
                "the SQLite database is corrupt; restore it from a backup or move it aside "
                f"{_WITH_SIDE_FILES}"
            )
        elif code.startswith("SQLITE_READONLY"):
            what = "the database is read-only"
        elif code.startswith("SQLITE_CANTOPEN"):
            what = "cannot open the database file"
        else:
            what = "cannot open the database"
        return StoreConfigError(f"{self.path}: {what} ({e}; {code})")

    def _unavailable(self, e: sqlite3.Error, doing: str) -> StoreUnavailable:
        code = _code(e)
        number = None
        if code.startswith("SQLITE_FULL"):
            number = errnos.ENOSPC
        elif code.startswith("SQLITE_IOERR"):
            number = errnos.EIO
        elif code.startswith("SQLITE_READONLY"):
            number = errnos.EROFS
        return StoreUnavailable(f"{self.path}: {doing} failed: {e} ({code})", number)

    # -- writing (writer thread) -------------------------------------------------------------

    def _write_batch(self, events: list[Event]) -> dict[str, int]:
        with self._write_lock:
            conn = self._conn
            if conn is None:
                raise StoreClosed(f"{self.url}: the store is closed")
            inserted: dict[str, int] = {}
            now = self.clock()
            try:
                self._rollback(conn)  # a rollback that failed last time
                conn.execute("BEGIN IMMEDIATE")
                for start in range(0, len(events), _ROWS_PER_INSERT):
                    chunk = events[start : start + _ROWS_PER_INSERT]
                    params = [
                        v
                        for e in chunk
                        for v in (
                            e.event_id,
                            e.user_id,
                            e.item_id,
                            e.event_type,
                            e.timestamp,
                            e.rating,
                            e.recommendation_id,
                            e.position,
                            now,
                        )
                    ]
                    rows = conn.execute(_insert_sql(len(chunk)), params).fetchall()
                    inserted.update((r[0], int(r[1])) for r in rows)
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                with contextlib.suppress(sqlite3.Error):  # retried before the next batch
                    self._rollback(conn)
                raise self._unavailable(e, "commit") from e
            return inserted

    def _write_items(self, changes: list[ItemChange]) -> list[ItemRecord | None]:
        now = self.clock()
        return self._transaction(
            lambda conn: items.write(conn.cursor(), "?", changes, now), "commit"
        )

    def _execute_many(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        def run(conn: sqlite3.Connection) -> None:
            for sql, params in statements:
                conn.execute(sql, params)

        self._transaction(run, "commit")

    def _execute_write(self, sql: str, params: Sequence[Any], check: Callable[[int], None]) -> int:
        def run(conn: sqlite3.Connection) -> int:
            count = conn.execute(sql, tuple(params)).rowcount
            check(count)
            return count

        return self._transaction(run, "write")

    def _transaction(self, work: Callable[[sqlite3.Connection], Any], what: str) -> Any:
        """``work`` in one immediate transaction on the writer connection, under its lock (one
        writer per process, as for appends); rolled back when anything fails."""
        with self._write_lock:
            conn = self._conn
            if conn is None:
                raise StoreClosed(f"{self.url}: the store is closed")
            try:
                self._rollback(conn)
                conn.execute("BEGIN IMMEDIATE")
                out = work(conn)
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                with contextlib.suppress(sqlite3.Error):
                    self._rollback(conn)
                raise self._unavailable(e, what) from e
            except BaseException:
                self._rollback(conn)
                raise
            return out

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    # -- reading (any thread) ----------------------------------------------------------------

    @contextlib.contextmanager
    def _reader(self, doing: str) -> Iterator[sqlite3.Connection]:
        with self._readers_lock:
            if self._closed:
                raise StoreClosed(f"{self.url}: the store is closed")
            conn = self._readers.pop() if self._readers else None
        try:
            if conn is None:
                conn = self._connect()
                conn.execute("PRAGMA query_only=ON")
            yield conn
        except sqlite3.Error as e:
            if conn is not None:
                conn.close()
            raise self._unavailable(e, doing) from e
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        with self._readers_lock:
            if not self._closed and len(self._readers) < _IDLE_READERS:
                self._readers.append(conn)
                return
        conn.close()

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._reader("read") as conn:
            return conn.execute(sql, tuple(params)).fetchall()

    def _frame(
        self, sql: str, params: Sequence[Any], schema: dict[str, pl.DataType]
    ) -> pl.DataFrame:
        with self._reader("read") as conn:
            return pl.read_database(
                sql,
                connection=conn,
                execute_options={"parameters": list(params)},
                schema_overrides=schema,
            )

    def _probe(self) -> None:
        # A read answers on a full disk too: without the free-space check, health would turn
        # back to SERVING between two failing writes (the watcher pings after each).
        super()._probe()
        try:
            fs = os.statvfs(self.path.parent)
        except OSError as e:
            raise StoreUnavailable(f"{self.path}: cannot stat its directory: {e}", e.errno) from e
        free = fs.f_bavail * fs.f_frsize
        if free < _MIN_FREE_BYTES:
            raise StoreUnavailable(
                f"{self.path}: only {free} bytes free on its filesystem", errnos.ENOSPC
            )

    # -- closing -----------------------------------------------------------------------------

    def _close(self) -> None:
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        with self._write_lock:
            if self._conn is not None:
                self._conn.close()  # the last connection to close checkpoints the WAL
                self._conn = None
