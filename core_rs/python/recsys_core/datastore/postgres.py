"""The PostgreSQL backend: psycopg 3 with a psycopg_pool connection pool.

The group commit, duplicate bookkeeping and error fan-out are the shared writer's (base.py);
this module supplies one transaction per batch (``INSERT … ON CONFLICT (event_id) DO NOTHING
RETURNING event_id``) and the reads.

Down and back: every connection gets a connect timeout, TCP keepalives and statement and lock
timeouts, so a lost server fails a commit (StoreUnavailable) instead of hanging it. The pool
checks a connection before handing it out and replaces broken ones in the background with
backoff, so once the server is back the next append succeeds on the same store object.

``seq`` comes from an identity column, handed out at insert rather than at commit: with
concurrent writing transactions a lower seq can become visible after a higher one. The one
writer thread per process makes that impossible for a single server; with several replicas
writing, readers that follow the table keep the missing seqs as gaps (`feed.SeqCursor`).
Each commit that stored events or catalogue records sends ``NOTIFY recsys_changes`` with the
store object's ``origin``, so the other replicas' followers read at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

import polars as pl
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from recsys_core.datastore import items
from recsys_core.datastore.base import (
    AppendResult,
    DataStore,
    StoreClosed,
    StoreConfigError,
    StoreError,
    StoreUnavailable,
    parse_store_url,
)
from recsys_core.datastore.feed import CHANNEL
from recsys_core.datastore.items import ItemChange, ItemRecord
from recsys_core.datastore.schema import migrate
from recsys_core.events import Event

__all__ = ["PostgresStore"]

_FRAME_BATCH = 50_000  # rows per fetch from the server-side cursor: bounds the client's memory

# One statement per batch: the arrays are unnested in order (ORDER BY n), so seq follows the
# order the calls were queued in. RETURNING names the rows this transaction inserted, with their
# seqs. Ids already stored are filtered out before the insert (a row that reaches ON CONFLICT
# has already drawn a seq, so retries of stored events would leave gaps); ON CONFLICT still
# settles a race with another process inserting the same id.
_INSERT = """
INSERT INTO events (event_id, user_id, item_id, event_type, ts, rating, recommendation_id,
                    position, stored_at, origin)
SELECT t.event_id, t.user_id, t.item_id, t.event_type, t.ts, t.rating, t.recommendation_id,
       t.position, %s, %s
FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::float8[], %s::float8[],
            %s::text[], %s::int4[])
     WITH ORDINALITY AS t(event_id, user_id, item_id, event_type, ts, rating,
                          recommendation_id, position, n)
WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = t.event_id)
ORDER BY t.n
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id, seq
"""

_NOTIFY = f"SELECT pg_notify('{CHANNEL}', %s)"

# Connection failures that waiting will not fix: the URL or the server's setup is wrong.
_CONFIG_FAILURES = (
    "does not exist",
    "password authentication failed",
    "no password supplied",
    "authentication failed",
    "no pg_hba.conf entry",
    "is not permitted to log in",
    "permission denied",
    "failed to resolve host",
    "could not translate host name",
    "for connection option",
    "invalid uri",
    "invalid connection option",
)


class PostgresStore(DataStore):
    """The data store in a PostgreSQL database (``postgresql://`` or ``postgres://`` URL in
    libpq's syntax). The constructor connects and migrates: StoreConfigError for a bad URL, a
    missing database, refused credentials or a schema newer than the code; StoreUnavailable
    when the server cannot be reached."""

    def __init__(
        self,
        url: str,
        *,
        max_batch: int = 1000,
        pool_min: int = 1,
        pool_max: int = 4,
        connect_timeout: float = 5,
        statement_timeout_ms: int = 30_000,
        lock_timeout_ms: int = 5_000,
        reconnect_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        parsed = parse_store_url(url)
        if parsed.scheme != "postgresql":
            raise StoreConfigError(f"--store {parsed.redacted!r}: not a PostgreSQL URL")
        super().__init__(url, max_batch=max_batch, clock=clock)
        self._writes_origin = True
        self._connect_timeout = connect_timeout
        self._password = _url_password(url)
        self._conninfo = self._conninfo_with_timeouts(
            url, connect_timeout, statement_timeout_ms, lock_timeout_ms
        )
        with self._open_error_mapping(), psycopg.connect(self._conninfo) as conn:
            migrate(conn, "postgres", self.url)
        # check: a connection broken while idle in the pool (server restarted) is replaced
        # before it is handed out, so the first commit after a restart does not fail on it.
        # reconnect_timeout bounds the pool's reconnect backoff (it doubles from 1 s): after
        # it the pool gives up, and the next request starts a fresh attempt at once.
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            self._conninfo,
            min_size=pool_min,
            max_size=pool_max,
            open=False,
            check=ConnectionPool.check_connection,
            timeout=connect_timeout,
            reconnect_timeout=reconnect_timeout,
            reconnect_failed=self._reconnect_failed,
            name="recsys-datastore",
        )
        self._pool.open()

    def _conninfo_with_timeouts(
        self, url: str, connect_timeout: float, statement_ms: int, lock_ms: int
    ) -> str:
        try:
            given = conninfo_to_dict(url)
        except psycopg.ProgrammingError as e:
            raise StoreConfigError(f"--store {self.url!r}: {self._scrub(e)}") from None
        # A URL's own settings win; ours only fill what it leaves out.
        extra: dict[str, Any] = {
            "connect_timeout": max(1, round(connect_timeout)),
            "application_name": "recsys",
            # Keepalives and tcp_user_timeout: a server that vanished without closing the
            # socket (host down, network cut) fails the connection instead of hanging it.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": 30_000,
        }
        extra = {k: v for k, v in extra.items() if k not in given}
        timeouts = (
            f"-c statement_timeout={statement_ms} -c lock_timeout={lock_ms} "
            "-c idle_in_transaction_session_timeout=60000"
        )
        extra["options"] = f"{given['options']} {timeouts}" if given.get("options") else timeouts
        return make_conninfo(url, **extra)

    # -- errors ------------------------------------------------------------------------------

    def _scrub(self, error: BaseException | str) -> str:
        """The error's text without the password (libpq may echo parts of the URL), on one
        line (libpq's run over several, indented with tabs; they end up in a log line and in
        the client's error details)."""
        text = " ".join(str(error).split())
        if self._password:
            text = text.replace(self._password, "***").replace(unquote(self._password), "***")
        return text

    @contextmanager
    def _open_error_mapping(self) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except psycopg.OperationalError as e:
            message = self._scrub(e)
            if any(marker in message.lower() for marker in _CONFIG_FAILURES):
                raise StoreConfigError(f"{self.url}: {message}") from None
            raise StoreUnavailable(f"{self.url}: cannot connect: {message}") from None
        except psycopg.Error as e:  # e.g. no right to create the tables
            raise StoreConfigError(f"{self.url}: {self._scrub(e)}") from None

    def _unavailable(self, e: Exception) -> StoreUnavailable:
        if isinstance(e, PoolTimeout):
            # The pool's own connection errors are in its log (logger psycopg.pool).
            reason = (
                f"no database connection within {self._connect_timeout:g} s: the server is "
                "down or unreachable (reconnecting with backoff)"
            )
        else:
            reason = self._scrub(e)
        return StoreUnavailable(f"{self.url}: {reason}")

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in a transaction (committed on exit, rolled back on error);
        connection failures become StoreUnavailable and mark the store unavailable."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolClosed:
            raise StoreClosed(f"{self.url}: the store is closed") from None
        except (psycopg.OperationalError, PoolTimeout) as e:
            error = self._unavailable(e)
            self._mark_unavailable(error)
            raise error from e

    def _reconnect_failed(self, pool: ConnectionPool[Any]) -> None:
        self._mark_unavailable(StoreUnavailable(f"{self.url}: reconnecting failed; retrying"))

    # -- writing -----------------------------------------------------------------------------

    def _write_batch(self, events: list[Event]) -> dict[str, int]:
        columns = (
            [e.event_id for e in events],
            [e.user_id for e in events],
            [e.item_id for e in events],
            [e.event_type for e in events],
            [e.timestamp for e in events],
            [e.rating for e in events],
            [e.recommendation_id for e in events],
            [e.position for e in events],
        )
        try:
            with self._connection() as conn:
                rows = conn.execute(_INSERT, (self.clock(), self.origin, *columns)).fetchall()
                if rows:  # delivered at COMMIT, only if it commits: wakes the other replicas
                    conn.execute(_NOTIFY, (self.origin,))
        except StoreClosed:
            raise
        except psycopg.Error as e:  # not a connection failure, e.g. a NUL in a string
            raise StoreUnavailable(f"{self.url}: commit failed: {self._scrub(e)}") from None
        return {r[0]: int(r[1]) for r in rows}

    def _write_items(self, changes: list[ItemChange]) -> list[ItemRecord | None]:
        try:
            with self._connection() as conn, conn.cursor() as cur:
                out = items.write(cur, "%s", changes, self.clock())
                if any(r is not None for r in out):
                    cur.execute(_NOTIFY, (self.origin,))
                return out
        except StoreClosed:
            raise
        except psycopg.Error as e:
            raise StoreUnavailable(f"{self.url}: commit failed: {self._scrub(e)}") from None

    def _execute_many(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        try:
            with self._connection() as conn, conn.cursor() as cur:
                for sql, params in statements:
                    cur.execute(sql.replace("?", "%s"), params)
        except StoreClosed:
            raise
        except psycopg.Error as e:
            raise StoreUnavailable(f"{self.url}: commit failed: {self._scrub(e)}") from None

    def _execute_write(self, sql: str, params: Sequence[Any], check: Callable[[int], None]) -> int:
        try:
            # The pooled connection commits on a clean exit and rolls back when check raises.
            with self._connection() as conn:
                count = conn.execute(sql.replace("?", "%s"), tuple(params)).rowcount
                check(count)
        except StoreClosed:
            raise
        except psycopg.Error as e:
            raise StoreUnavailable(f"{self.url}: write failed: {self._scrub(e)}") from None
        return count

    async def append(self, events: Sequence[Event]) -> AppendResult:
        # PostgreSQL text cannot hold NUL: refuse such an event in its own call rather than
        # fail the whole shared transaction with it.
        events = list(events)
        for e in events:
            if isinstance(e, Event) and any(
                "\x00" in s
                for s in (e.event_id, e.user_id, e.item_id, e.event_type, e.recommendation_id or "")
            ):
                raise ValueError(f"event {e.event_id!r}: PostgreSQL text cannot hold NUL (\\x00)")
        return await super().append(events)

    # -- reading -----------------------------------------------------------------------------

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            return conn.execute(sql.replace("?", "%s"), tuple(params)).fetchall()

    def _fetch_many(self, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        # One pool checkout (which pings the connection) for all of them.
        with self._connection() as conn:
            return [
                conn.execute(sql.replace("?", "%s"), tuple(params)).fetchall()
                for sql, params in queries
            ]

    def _frame(
        self, sql: str, params: Sequence[Any], schema: dict[str, pl.DataType]
    ) -> pl.DataFrame:
        with self._connection() as conn, conn.cursor(name="recsys_events_frame") as cur:
            # A server-side cursor: polars fetches the rows in batches instead of all at once.
            frames = list(
                pl.read_database(
                    sql.replace("?", "%s"),
                    cur,
                    iter_batches=True,
                    batch_size=_FRAME_BATCH,
                    schema_overrides=schema,
                    execute_options={"params": tuple(params)},
                )
            )
        if not frames:
            return pl.DataFrame(schema=schema)
        return pl.concat(frames, rechunk=True)

    # -- closing -----------------------------------------------------------------------------

    def _close(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()


def _url_password(url: str) -> str | None:
    """The password in ``scheme://user:PASSWORD@host…`` as written (None without one)."""
    rest = url.partition("://")[2]
    head = rest.split("?", 1)[0].split("#", 1)[0]
    userinfo, at, _ = head.rpartition("@")
    password = userinfo.partition(":")[2] if at else ""
    return password or None
