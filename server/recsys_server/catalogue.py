"""The live catalogue: the loaded version's catalogue with the data store's item records on
top (`recsys_core.datastore.items`), kept in memory and rebuilt from the store at start.

It answers GetItem and ListItems, validates UpsertItems and SetItemAvailability, and gives
every ranking its deny list: the version's indices of the unavailable items, a sorted int32
array made once per (version, availability change) and merged with the request's exclusions
inside the Rust top-K, so lists still hold k items when k are eligible.

New items (stored, not in the version's item index) are vectorised here for the version's
``content`` model, once per catalogue change; `new_items` ranks and explains them.
"""

from __future__ import annotations

import base64
import bisect
import heapq
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from recsys_core.datastore import DataStore, ItemChange, ItemRecord
from recsys_server.errors import InvalidArgument, NotFound
from recsys_server.snapshot import Snapshot

MAX_ITEMS = 1000
"""Items per UpsertItems call and ids per SetItemAvailability call."""
MAX_ID = 256
MAX_TITLE = 512
MAX_CATEGORIES = 64
MAX_CATEGORY = 128
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_KEY = 128
MAX_ATTRIBUTE_VALUE = 1024
DEFAULT_PAGE = 100
MAX_PAGE = 1000
ATTRIBUTE_KEY = re.compile(r"[A-Za-z0-9_.:-]+")
_TOKEN_PREFIX = "v1:"


@dataclass(frozen=True, slots=True)
class ItemView:
    """One item as GetItem and ListItems show it."""

    item_id: str
    title: str
    categories: tuple[str, ...]
    attributes: dict[str, str] = field(default_factory=dict)
    available: bool = True
    in_model: bool = False
    updated_at: float | None = None


# -- validation --------------------------------------------------------------------------------


def _text(value: str, name: str, most: int, empty_ok: bool) -> None:
    if not value and not empty_ok:
        raise InvalidArgument(name, "must not be empty")
    if len(value) > most:
        raise InvalidArgument(name, f"longer than {most} characters ({len(value)})")
    if "\x00" in value:
        raise InvalidArgument(name, "must not contain NUL (\\x00)")


def check_upserts(changes: Sequence[ItemChange]) -> None:
    """INVALID_ARGUMENT naming the first bad field (``items[3].title``); nothing is applied."""
    if not changes:
        raise InvalidArgument("items", "at least one item is needed")
    if len(changes) > MAX_ITEMS:
        raise InvalidArgument("items", f"at most {MAX_ITEMS} per call, got {len(changes)}")
    seen: dict[str, int] = {}
    for n, c in enumerate(changes):
        p = f"items[{n}]."
        _text(c.item_id, p + "item_id", MAX_ID, False)
        if c.item_id in seen:
            raise InvalidArgument(p + "item_id", f"repeats items[{seen[c.item_id]}].item_id")
        seen[c.item_id] = n
        _text(c.title, p + "title", MAX_TITLE, True)
        if len(c.categories) > MAX_CATEGORIES:
            raise InvalidArgument(p + "categories", f"at most {MAX_CATEGORIES}")
        for j, cat in enumerate(c.categories):
            _text(cat, f"{p}categories[{j}]", MAX_CATEGORY, False)
        if len(c.attributes) > MAX_ATTRIBUTES:
            raise InvalidArgument(p + "attributes", f"at most {MAX_ATTRIBUTES}")
        for key, value in c.attributes.items():
            name = f"{p}attributes[{key!r}]"
            if len(key) > MAX_ATTRIBUTE_KEY or not ATTRIBUTE_KEY.fullmatch(key):
                raise InvalidArgument(
                    name, f"keys are 1..{MAX_ATTRIBUTE_KEY} characters of [A-Za-z0-9_.:-]"
                )
            _text(value, name, MAX_ATTRIBUTE_VALUE, True)


def check_ids(ids: Sequence[str], name: str = "item_ids") -> None:
    if not ids:
        raise InvalidArgument(name, "at least one id is needed")
    if len(ids) > MAX_ITEMS:
        raise InvalidArgument(name, f"at most {MAX_ITEMS} per call, got {len(ids)}")
    seen: dict[str, int] = {}
    for n, i in enumerate(ids):
        _text(i, f"{name}[{n}]", MAX_ID, False)
        if i in seen:
            raise InvalidArgument(f"{name}[{n}]", f"repeats {name}[{seen[i]}]")
        seen[i] = n


def encode_token(item_id: str) -> str:
    return base64.urlsafe_b64encode((_TOKEN_PREFIX + item_id).encode()).decode()


def decode_token(token: str) -> str:
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeError):
        text = ""
    if not text.startswith(_TOKEN_PREFIX):
        raise InvalidArgument("page_token", "not a token from ListItems")
    return text[len(_TOKEN_PREFIX) :]


# -- the catalogue -----------------------------------------------------------------------------


class Catalogue:
    """The store's item records by id, and what is derived from them per model version.

    Written only on the event loop (`apply`, after the store acknowledged); read from scoring
    threads through attributes replaced whole (copy-on-write), never mutated in place."""

    def __init__(self, records: Iterable[ItemRecord] = ()) -> None:
        self.records: dict[str, ItemRecord] = {r.item_id: r for r in records}
        self.max_seq = max((r.seq for r in self.records.values()), default=0)
        """The highest change seq held: the follower reads the records changed after it."""
        self.generation = 0
        self._unavailable = frozenset(i for i, r in self.records.items() if not r.available)
        self._sorted_ids: list[str] | None = None
        # (snapshot, generation, deny indices): swapped whole, read without a lock
        self._deny: tuple[Snapshot | None, int, np.ndarray] = (None, -1, np.empty(0, np.int32))
        self._lock = threading.Lock()  # only so two threads do not both rebuild a derived value
        self._new: tuple[Snapshot | None, int, list[ItemRecord], object] = (None, -1, [], None)

    @classmethod
    def load(cls, store: DataStore | None) -> Catalogue:
        """Every stored record (blocking: run in a thread). StoreUnavailable when unreadable."""
        return cls(store.read_items() if store is not None else ())

    def apply(self, stored: Iterable[ItemRecord | None], snap: Snapshot | None) -> int:
        """Takes in records the store acknowledged (or the follower read: another replica's
        changes); the deny list for ``snap`` is rebuilt now, so the next request already
        excludes a newly unavailable item. A record older than the one held (a lower change
        seq: the follower read it before a later write arrived here, or this replica's own
        write read back) is ignored; returns how many records were taken in."""
        records = dict(self.records)
        changed = 0
        for r in stored:
            if r is not None:
                held = records.get(r.item_id)
                if held is not None and r.seq and held.seq >= r.seq:
                    continue
                records[r.item_id] = r
                self.max_seq = max(self.max_seq, r.seq)
                changed += 1
        if not changed:
            return 0
        self.records = records
        self._unavailable = frozenset(i for i, r in records.items() if not r.available)
        self._sorted_ids = None
        self.generation += 1
        if snap is not None:
            self.deny(snap)
        return changed

    # -- reads -------------------------------------------------------------------------------

    def deny(self, snap: Snapshot) -> np.ndarray | None:
        """The sorted indices of the unavailable items ``snap`` knows (None when none)."""
        s, gen, arr = self._deny
        if s is not snap or gen != self.generation:
            with self._lock:
                gen = self.generation
                index = snap.item_index
                arr = np.array(
                    sorted(i for i in map(index.get, self._unavailable) if i is not None),
                    np.int32,
                )
                self._deny = (snap, gen, arr)
        return arr if len(arr) else None

    def is_available(self, item_id: str) -> bool:
        return item_id not in self._unavailable

    @property
    def unavailable(self) -> frozenset[str]:
        return self._unavailable

    def known(self, snap: Snapshot, item_id: str) -> bool:
        return item_id in self.records or item_id in snap.item_index

    def view(self, snap: Snapshot, item_id: str) -> ItemView | None:
        r = self.records.get(item_id)
        i = snap.item_index.get(item_id)
        if r is None and i is None:
            return None
        in_model = i is not None
        if r is not None and r.title is not None:
            return ItemView(
                item_id, r.title, r.categories, r.attributes, r.available, in_model, r.updated_at
            )
        title = snap.titles[i] if i is not None else ""
        cats = snap.categories[i] if i is not None else ()
        if r is None:
            return ItemView(item_id, title, cats, {}, True, in_model)
        return ItemView(item_id, title, cats, {}, r.available, in_model, r.updated_at)

    def get(self, snap: Snapshot, item_id: str) -> ItemView:
        v = self.view(snap, item_id)
        if v is None:
            raise NotFound(f"item {item_id!r} is not in the catalogue")
        return v

    def page(
        self, snap: Snapshot, size: int, token: str, available: bool | None
    ) -> tuple[list[ItemView], str]:
        """One page in item id order after ``token``'s id, and the next token ('' at the end).
        Keyset paging: items added or changed meanwhile never shift a page."""
        if size < 0 or size > MAX_PAGE:
            raise InvalidArgument("page_size", f"must be in 0..{MAX_PAGE}, got {size}")
        size = size or DEFAULT_PAGE
        after = decode_token(token) if token else None
        out: list[ItemView] = []
        last = None
        for item_id in self._ids_after(snap, after):
            v = self.view(snap, item_id)
            if v is None or (available is not None and v.available != available):
                continue
            if len(out) == size:
                return out, encode_token(last)
            out.append(v)
            last = item_id
        return out, ""

    def _ids_after(self, snap: Snapshot, after: str | None):
        """Every item id (version and store) in order, each once, after ``after``."""
        version_ids = _sorted_version_ids(snap)
        store_ids = self._sorted_ids
        if store_ids is None:
            store_ids = self._sorted_ids = sorted(self.records)
        lo_v = 0 if after is None else bisect.bisect_right(version_ids, after)
        lo_s = 0 if after is None else bisect.bisect_right(store_ids, after)
        prev = None
        for item_id in heapq.merge(
            (version_ids[i] for i in range(lo_v, len(version_ids))),
            (store_ids[i] for i in range(lo_s, len(store_ids))),
        ):
            if item_id != prev:
                yield item_id
            prev = item_id

    # -- new items ---------------------------------------------------------------------------

    def new_items(self, snap: Snapshot) -> tuple[list[ItemRecord], object]:
        """The available stored items ``snap`` does not know, and their content vectors (None
        without a content model), made once per (version, catalogue change)."""
        s, gen, items, vectors = self._new
        if s is snap and gen == self.generation:
            return items, vectors
        with self._lock:
            gen = self.generation
            items = [
                r
                for r in self.records.values()
                if r.available and r.title is not None and r.item_id not in snap.item_index
            ]
            vectors = None
            content = snap.models.get("content")
            if items and content is not None and hasattr(content, "vectorize"):
                vectors = content.vectorize(
                    [r.title for r in items],
                    [list(r.categories) for r in items],
                    [dict(r.attributes) for r in items],
                )
            self._new = (snap, gen, items, vectors)
        return items, vectors


def _sorted_version_ids(snap: Snapshot) -> list[str]:
    got = getattr(snap, "_sorted_item_ids", None)
    if got is None:
        got = sorted(snap.item_ids)
        snap._sorted_item_ids = got  # derived once per version
    return got
