"""Catalogue records in the data store: the ``items`` table (one row per item changed through
the API) and how a batch of changes is applied to it, shared by every backend.

A change either upserts an item (title, categories, attributes, and availability when given)
or sets its availability only. Changes are applied in store order (the group-commit writer's
queue order), so availability is last-write-wins; a change that leaves the row exactly as it
was writes nothing (idempotent). A row whose ``title`` is NULL was never upserted: only its
availability was set, and its other fields come from the model version's catalogue.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

_PG_ITEMS_LOCK = 0x6974656D  # "item": any constant, distinct from the schema's migration lock

ITEM_COLUMNS = "item_id, title, categories, attributes, available, updated_at, change_seq"


@dataclass(frozen=True)
class ItemRecord:
    item_id: str
    title: str | None
    """None: only availability was ever stored (fields from the version's catalogue)."""
    categories: tuple[str, ...] = ()
    attributes: dict[str, str] = field(default_factory=dict)
    available: bool = True
    updated_at: float = 0.0
    seq: int = 0
    """The row's change_seq: higher for a later write of the row (0: written before it was
    kept). A replica applies a record only when it is newer than the one it holds."""

    def same_as(self, other: ItemRecord) -> bool:
        """Equal but for ``updated_at`` and ``seq``."""
        return replace(self, updated_at=0.0, seq=0) == replace(other, updated_at=0.0, seq=0)


@dataclass(frozen=True)
class ItemChange:
    item_id: str
    upsert: bool
    """True: set title, categories and attributes; False: availability only."""
    title: str = ""
    categories: tuple[str, ...] = ()
    attributes: dict[str, str] = field(default_factory=dict)
    available: bool | None = None
    """None (upsert only): unchanged, or True for an item not stored yet."""


def apply(current: ItemRecord | None, c: ItemChange, now: float) -> ItemRecord:
    """The record after ``c``."""
    if c.upsert:
        available = c.available
        if available is None:
            available = True if current is None else current.available
        return ItemRecord(
            c.item_id, c.title, tuple(c.categories), dict(c.attributes), available, now
        )
    base = current or ItemRecord(c.item_id, None)
    return replace(base, available=bool(c.available), updated_at=now)


def record_of(row: Sequence[Any]) -> ItemRecord:
    item_id, title, categories, attributes, available, updated_at, seq = row
    return ItemRecord(
        item_id,
        title,
        tuple(json.loads(categories)) if categories else (),
        dict(json.loads(attributes)) if attributes else {},
        bool(available),
        float(updated_at),
        int(seq),
    )


def _next_seqs(cur: Any, param: str, n: int) -> list[int]:
    """``n`` new change_seqs, increasing. PostgreSQL (``%s``): from its sequence, safe with
    several writers; SQLite: MAX + 1.., safe because its write transaction holds the file."""
    if param == "%s":
        cur.execute("SELECT nextval('items_change_seq_gen') FROM generate_series(1, %s)", (n,))
        return sorted(int(r[0]) for r in cur.fetchall())
    cur.execute("SELECT COALESCE(MAX(change_seq), 0) FROM items")
    top = int(cur.fetchone()[0])
    return list(range(top + 1, top + 1 + n))


def write(
    cur: Any, param: str, changes: Sequence[ItemChange], now: float
) -> list[ItemRecord | None]:
    """Inside the caller's transaction on DB-API cursor ``cur`` (placeholder ``param``): apply
    ``changes`` in order; return, per change, the record it stored, or None when it changed
    nothing."""
    if param == "%s":
        # PostgreSQL with several replicas writing: one catalogue writer at a time, so the
        # rows read below are the latest committed and change_seq follows commit order (a
        # follower never sees a row's older write after a newer one). Catalogue writes are
        # rare; the lock is released at commit.
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_ITEMS_LOCK,))
    ids = list(dict.fromkeys(c.item_id for c in changes))
    state: dict[str, ItemRecord] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join([param] * len(chunk))
        cur.execute(f"SELECT {ITEM_COLUMNS} FROM items WHERE item_id IN ({marks})", chunk)
        for row in cur.fetchall():
            state[row[0]] = record_of(row)
    out: list[ItemRecord | None] = []
    dirty: dict[str, ItemRecord] = {}
    for c in changes:
        old = state.get(c.item_id)
        new = apply(old, c, now)
        if old is not None and new.same_as(old):
            out.append(None)
            continue
        state[c.item_id] = dirty[c.item_id] = new
        out.append(new)
    if dirty:
        # Each change gets its seq in order, so a later change of one item has a higher one.
        seqs = iter(_next_seqs(cur, param, sum(r is not None for r in out)))
        out = [None if r is None else replace(r, seq=next(seqs)) for r in out]
        for r in out:
            if r is not None:
                dirty[r.item_id] = r
        p = param
        cur.executemany(
            f"INSERT INTO items ({ITEM_COLUMNS}) VALUES ({p},{p},{p},{p},{p},{p},{p}) "
            "ON CONFLICT (item_id) DO UPDATE SET title = excluded.title, "
            "categories = excluded.categories, attributes = excluded.attributes, "
            "available = excluded.available, updated_at = excluded.updated_at, "
            "change_seq = excluded.change_seq",
            [
                (
                    r.item_id,
                    r.title,
                    json.dumps(list(r.categories), ensure_ascii=False),
                    json.dumps(r.attributes, ensure_ascii=False, sort_keys=True),
                    1 if r.available else 0,
                    r.updated_at,
                    r.seq,
                )
                for r in dirty.values()
            ],
        )
    return out
