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

ITEM_COLUMNS = "item_id, title, categories, attributes, available, updated_at"


@dataclass(frozen=True)
class ItemRecord:
    item_id: str
    title: str | None
    """None: only availability was ever stored (fields from the version's catalogue)."""
    categories: tuple[str, ...] = ()
    attributes: dict[str, str] = field(default_factory=dict)
    available: bool = True
    updated_at: float = 0.0

    def same_as(self, other: ItemRecord) -> bool:
        """Equal but for ``updated_at``."""
        return replace(self, updated_at=0.0) == replace(other, updated_at=0.0)


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
    item_id, title, categories, attributes, available, updated_at = row
    return ItemRecord(
        item_id,
        title,
        tuple(json.loads(categories)) if categories else (),
        dict(json.loads(attributes)) if attributes else {},
        bool(available),
        float(updated_at),
    )


def write(
    cur: Any, param: str, changes: Sequence[ItemChange], now: float
) -> list[ItemRecord | None]:
    """Inside the caller's transaction on DB-API cursor ``cur`` (placeholder ``param``): apply
    ``changes`` in order; return, per change, the record it stored, or None when it changed
    nothing."""
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
        p = param
        cur.executemany(
            f"INSERT INTO items ({ITEM_COLUMNS}) VALUES ({p},{p},{p},{p},{p},{p}) "
            "ON CONFLICT (item_id) DO UPDATE SET title = excluded.title, "
            "categories = excluded.categories, attributes = excluded.attributes, "
            "available = excluded.available, updated_at = excluded.updated_at",
            [
                (
                    r.item_id,
                    r.title,
                    json.dumps(list(r.categories), ensure_ascii=False),
                    json.dumps(r.attributes, ensure_ascii=False, sort_keys=True),
                    1 if r.available else 0,
                    r.updated_at,
                )
                for r in dirty.values()
            ],
        )
    return out
