"""A Recommend answer written straight to protobuf wire bytes.

The same bytes `RecommendResponse.SerializeToString` gives for `service.answer_pb` (a test
checks them equal), without building the message: no ``items.add`` per item, and an
explanation kept serialised (`explained`) is copied in as it is instead of being parsed into
the message and encoded again. The fixed part of an item (its id, title and categories) is
encoded once per item and kept (`ItemHeads`).

Wire format (proto3, fields in number order, defaults left out):
RecommendResponse: user_id=1, items=2 (ScoredItem), model=3, model_version=4,
fallback_tier=5 (varint), experiment=6, variant=7, recommendation_id=8.
ScoredItem: item_id=1, score=2 (fixed32), confidence=3 (fixed32), title=4, categories=5,
explanation=6.
"""

from __future__ import annotations

import struct
import threading

from recsys_server.explain_pb import serialized

_F32 = struct.Struct("<f")
_ZERO = b"\x00\x00\x00\x00"
_VARINT1 = [bytes([n]) for n in range(128)]


def varint(n: int) -> bytes:
    if n < 128:
        return _VARINT1[n]
    out = bytearray()
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(tag: bytes, text: str) -> bytes:
    """A string field, or nothing for "" (proto3 leaves defaults out)."""
    if not text:
        return b""
    data = text.encode()
    return tag + varint(len(data)) + data


def each(tag: bytes, text: str) -> bytes:
    """One entry of a repeated string field (written even when "")."""
    data = text.encode()
    return tag + varint(len(data)) + data


def message(tag: bytes, data: bytes) -> bytes:
    """An embedded message field (written even when empty: it is set)."""
    return tag + varint(len(data)) + data


def f32(tag: bytes, x: float) -> bytes:
    """A float field as upb writes it: rounded to float32, left out when all its bits are 0."""
    try:
        data = _F32.pack(x)
    except OverflowError:  # beyond float32: upb's cast gives +-inf
        data = _F32.pack(float("inf") if x > 0 else float("-inf"))
    return b"" if data == _ZERO else tag + data


class ItemHeads:
    """Per item id: (title, categories, bytes of item_id) and (bytes of title and categories),
    the parts of a ScoredItem that do not change from one answer to the next. Kept while the
    title and categories are the very objects they were made from (a catalogue change gives
    new ones). Bounded: cleared when full."""

    def __init__(self, max_items: int = 200_000) -> None:
        self.max_items = max_items
        self._kept: dict[str, tuple[str, tuple[str, ...], bytes, bytes]] = {}
        self._lock = threading.Lock()

    def parts(self, item_id: str, title: str, categories: tuple[str, ...]) -> tuple[bytes, bytes]:
        got = self._kept.get(item_id)
        if got is not None and got[0] is title and got[1] is categories:
            return got[2], got[3]
        head = field(b"\x0a", item_id)
        tail = field(b"\x22", title) + b"".join(each(b"\x2a", c) for c in categories)
        with self._lock:
            if len(self._kept) >= self.max_items:
                self._kept.clear()
            self._kept[item_id] = (title, categories, head, tail)
        return head, tail


HEADS = ItemHeads()


def scored_item(s, heads: ItemHeads = HEADS) -> bytes:
    """A `scoring.Scored` as the bytes of one ``items`` entry (tag, length, ScoredItem)."""
    head, tail = heads.parts(s.item_id, s.title, s.categories)
    body = head + f32(b"\x15", s.score) + f32(b"\x1d", s.confidence) + tail
    reason = s.reason
    if reason is not None:
        if not isinstance(reason, bytes):
            reason = serialized(reason)
        body += message(b"\x32", reason)
    return message(b"\x12", body)


def recommend_response(a, tier: int) -> bytes:
    """The RecommendResponse of a `scoring.Answer`; ``tier``: its FallbackTier number."""
    return b"".join(
        (
            field(b"\x0a", a.user_id),
            *[scored_item(s) for s in a.items],
            field(b"\x1a", a.model),
            field(b"\x22", a.version),
            b"\x28" + varint(tier) if tier else b"",
            field(b"\x32", a.experiment),
            field(b"\x3a", a.variant),
            field(b"\x42", a.recommendation_id),
        )
    )
