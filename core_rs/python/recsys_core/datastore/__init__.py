"""The data store: what the server must not lose (behaviour events, catalogue records and
impressions; follower cursors and retention marks later), in SQLite on one box or PostgreSQL
when shared, chosen by URL.

    store = open_store("sqlite:///var/recsys/events.db")   # or postgresql://user@host/db
    result = await store.append(events)                    # acknowledged after COMMIT
    frame = store.events_frame(after_seq=cursor)

The interface and the group-commit writer are in `base`, the shared schema in `schema`.
"""

from __future__ import annotations

from typing import Any

from recsys_core.datastore.base import (
    AppendResult,
    DataStore,
    StoreClosed,
    StoreConfigError,
    StoreConflict,
    StoredEvent,
    StoreError,
    StoreUnavailable,
    parse_store_url,
    redact,
)
from recsys_core.datastore.impressions import Impression
from recsys_core.datastore.items import ItemChange, ItemRecord

__all__ = [
    "AppendResult",
    "DataStore",
    "Impression",
    "ItemChange",
    "ItemRecord",
    "StoreClosed",
    "StoreConfigError",
    "StoreConflict",
    "StoreError",
    "StoreUnavailable",
    "StoredEvent",
    "open_store",
    "parse_store_url",
    "redact",
]


def open_store(url: str, **opts: Any) -> DataStore:
    """Open (and migrate) the store at ``url``: ``sqlite:///relative.db``,
    ``sqlite:////absolute.db``, ``postgresql://…`` or ``postgres://…``. Blocking: from async
    code use ``await asyncio.to_thread(open_store, url)``. ``opts`` go to the backend
    (``max_batch``, ``clock``; SQLite ``synchronous``, ``busy_timeout_ms``; PostgreSQL
    ``pool_min``, ``pool_max``, ``connect_timeout``). StoreConfigError for a bad URL or
    database."""
    parsed = parse_store_url(url)
    if parsed.scheme == "sqlite":
        from recsys_core.datastore.sqlite import SQLiteStore

        return SQLiteStore(url, **opts)
    # Imported only here: psycopg is needed for PostgreSQL only.
    from recsys_core.datastore.postgres import PostgresStore

    return PostgresStore(url, **opts)
