"""Versioned schema shared by every backend: one list of migrations, one ``schema_version`` table.

`migrate` runs on every open. It applies, in one transaction, the migrations newer than the
database's version, so it is idempotent and two processes opening the same database at once
migrate it once. A database whose version is newer than `SCHEMA_VERSION` was written by a
newer recsys: it is refused rather than misread.

Adding a table (retention marks) or a column is one more
`Migration` at the end of `MIGRATIONS`, with the SQL for each dialect. Never edit a migration
that has shipped: databases out there have already run it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from recsys_core.datastore.base import StoreConfigError

Dialect = Literal["sqlite", "postgres"]

# Any constant works: it names the lock concurrent PostgreSQL migrators queue on.
_PG_MIGRATION_LOCK = 0x72656373  # "recs"


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sqlite: tuple[str, ...]  # statements, run in order
    postgres: tuple[str, ...]

    def statements(self, dialect: Dialect) -> tuple[str, ...]:
        return self.sqlite if dialect == "sqlite" else self.postgres


def _events_table(seq: str) -> str:
    return f"""
CREATE TABLE events (
    seq        {seq},
    event_id   TEXT NOT NULL UNIQUE,
    user_id    TEXT NOT NULL,
    item_id    TEXT NOT NULL,
    event_type TEXT NOT NULL,
    ts         DOUBLE PRECISION NOT NULL,
    rating     DOUBLE PRECISION NULL,
    stored_at  DOUBLE PRECISION NOT NULL
)"""


_PG_SEQ = "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
_EVENT_INDEXES = (
    "CREATE INDEX events_user_seq ON events (user_id, seq)",
    "CREATE INDEX events_ts ON events (ts)",
)

# One row per item changed through the API (recsys_core.datastore.items); categories and
# attributes as JSON text; title NULL: only the availability was ever set.
_ITEMS_TABLE = """
CREATE TABLE items (
    item_id    TEXT PRIMARY KEY,
    title      TEXT NULL,
    categories TEXT NOT NULL,
    attributes TEXT NOT NULL,
    available  {available} NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
)"""

# One row per recommendation answer (recsys_core.datastore.impressions). The list (item ids,
# scores, teams) is JSON text in the row, not a child table: an answer is written with one
# INSERT and read back whole (reports load an experiment's impressions and explode them in
# polars), so a row per item would multiply rows and index updates by k for no query we run.
_IMPRESSIONS_TABLE = """
CREATE TABLE impressions (
    recommendation_id TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL,
    experiment        TEXT NOT NULL,
    variant           TEXT NOT NULL,
    model             TEXT NOT NULL,
    version           TEXT NOT NULL,
    ts                DOUBLE PRECISION NOT NULL,
    item_ids          TEXT NOT NULL,
    scores            TEXT NOT NULL,
    teams             TEXT NOT NULL,
    stored_at         DOUBLE PRECISION NOT NULL
)"""
_IMPRESSIONS = (
    _IMPRESSIONS_TABLE,
    "CREATE INDEX impressions_experiment_ts ON impressions (experiment, ts)",
    "CREATE INDEX impressions_user_ts ON impressions (user_id, ts)",
    # The answer an event came from, and the item's 1-based position in it (NULL: not given).
    "ALTER TABLE events ADD COLUMN recommendation_id TEXT NULL",
    "ALTER TABLE events ADD COLUMN position INTEGER NULL",
)

# A change cursor for the catalogue: every write of an item row takes the next change_seq, so
# replicas sharing the store find the rows changed since they last looked (the follower,
# recsys_server.follow). PostgreSQL draws it from a sequence (several writers); SQLite's one
# writer takes MAX + 1 inside its write transaction.
_ITEMS_CHANGE_SEQ = "CREATE INDEX items_change_seq ON items (change_seq)"
# Which store object wrote an event (PostgreSQL; NULL on SQLite, which has one writer): after
# a commit whose answer was lost, a replica reads back its own rows only (base.DataStore._write).
_EVENTS_ORIGIN = "ALTER TABLE events ADD COLUMN origin TEXT NULL"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "events table",
        # AUTOINCREMENT: a seq is never reused, even after retention deletes the newest rows,
        # so a follower's cursor stays valid.
        sqlite=(_events_table("INTEGER PRIMARY KEY AUTOINCREMENT"), *_EVENT_INDEXES),
        # Identity values are handed out at insert, not commit: with concurrent writer
        # transactions a lower seq can commit after a higher one. One writer per process
        # (the group committer) is fine for one server; multi-writer followers are issue 19.
        postgres=(_events_table(_PG_SEQ), *_EVENT_INDEXES),
    ),
    Migration(
        2,
        "items table (the live catalogue)",
        sqlite=(_ITEMS_TABLE.format(available="INTEGER"),),
        postgres=(_ITEMS_TABLE.format(available="SMALLINT"),),
    ),
    Migration(
        3,
        "impressions table; events.recommendation_id and position",
        sqlite=_IMPRESSIONS,
        postgres=_IMPRESSIONS,
    ),
    Migration(
        4,
        "items.change_seq (the catalogue's change cursor); events.origin",
        sqlite=(
            "ALTER TABLE items ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0",
            _ITEMS_CHANGE_SEQ,
            _EVENTS_ORIGIN,
        ),
        postgres=(
            "CREATE SEQUENCE items_change_seq_gen",
            "ALTER TABLE items ADD COLUMN change_seq BIGINT NOT NULL DEFAULT 0",
            _ITEMS_CHANGE_SEQ,
            _EVENTS_ORIGIN,
        ),
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at  DOUBLE PRECISION NOT NULL
)"""


def newer_schema_error(name: str, found: int) -> StoreConfigError:
    return StoreConfigError(
        f"{name}: schema version {found} is newer than this recsys (knows up to "
        f"{SCHEMA_VERSION}); upgrade recsys"
    )


def migrate(conn: Any, dialect: Dialect, name: str) -> int:
    """Bring the database behind DB-API connection ``conn`` to `SCHEMA_VERSION` in one
    transaction; return the version it was at before. ``name`` (the redacted URL or the path)
    is used in the StoreConfigError raised when the database is newer than this code.

    SQLite: ``conn`` must be in autocommit mode (``isolation_level=None``); the transaction is
    ``BEGIN IMMEDIATE`` so a second process waits instead of migrating too. PostgreSQL (psycopg
    3): ``conn`` must not be in autocommit mode; a transaction-scoped advisory lock does the
    same. Driver errors propagate (the backend maps them); the transaction is rolled back.
    """
    param = "?" if dialect == "sqlite" else "%s"
    cur = conn.cursor()
    try:
        if dialect == "sqlite":
            cur.execute("BEGIN IMMEDIATE")
        else:
            cur.execute(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
        cur.execute(_VERSION_TABLE)
        cur.execute("SELECT MAX(version) FROM schema_version")
        row = cur.fetchone()
        current = int(row[0]) if row and row[0] is not None else 0
        if current > SCHEMA_VERSION:
            raise newer_schema_error(name, current)
        for m in MIGRATIONS:
            if m.version <= current:
                continue
            for statement in m.statements(dialect):
                cur.execute(statement)
            cur.execute(
                f"INSERT INTO schema_version (version, description, applied_at) "
                f"VALUES ({param}, {param}, {param})",
                (m.version, m.description, time.time()),
            )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        cur.close()
    return current
