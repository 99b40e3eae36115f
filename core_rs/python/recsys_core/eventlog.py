"""On-disk format of the interaction (behaviour event) log, shared by the server and the trainer.

The server appends user behaviour events through ``recsys_server.interaction_log``; the trainer
refreshes from the data store instead (`events_to_interactions` of its `events_frame`).

Layout: a directory of segment files ``events-000001.log``, ``events-000002.log``, ... in
order; a writer starts a new segment once the current one would exceed `SEGMENT_BYTES`.
Other files in the directory (the writer's ``LOCK``, set-aside ``*.corrupt-*`` files) are
ignored by readers. Readers take no lock; one writer at a time holds ``LOCK`` (`lock_directory`).

Record: ``<u32 payload length LE><u32 zlib.crc32(payload) LE><payload>``, where the payload is
one event as compact UTF-8 JSON. A record is valid when its header is complete, its payload
lies within the file, the CRC matches and the payload decodes to an `Event`.

Damage (a torn write at the tail after a crash, or a corrupt record anywhere) ends a segment:
readers stop reading that segment at the first invalid record. `recover` makes that
permanent: it truncates the segment to its valid prefix and first copies the bytes it removes
to ``<segment>.corrupt-<unix_ms>``, so nothing is silently dropped.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recsys_core.data import EventWeights

log = logging.getLogger(__name__)

SEGMENT_BYTES = 64 * 1024 * 1024  # writers rotate to a new segment beyond this size
HEADER = struct.Struct("<II")  # payload length, crc32(payload)
SEGMENT_RE = re.compile(r"^events-(\d{6,})\.log$")
_FIELDS = ("event_id", "user_id", "item_id", "event_type", "timestamp", "rating")


@dataclass(frozen=True)
class Event:
    """One user behaviour event. ``event_id`` is unique: writers drop repeated ids.

    ``timestamp`` is unix seconds; ``rating`` is the explicit rating of rating events (else
    None). Ints are accepted for the numbers and stored as floats; non-finite numbers and empty
    ids are rejected (ValueError), as are non-string ids (TypeError).
    """

    event_id: str
    user_id: str
    item_id: str
    event_type: str
    timestamp: float
    rating: float | None = None

    def __post_init__(self) -> None:
        for name in ("event_id", "user_id", "item_id", "event_type"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"Event.{name} must be a str, got {type(value).__name__}")
            if not value:
                raise ValueError(f"Event.{name} must not be empty")
        object.__setattr__(self, "timestamp", _number("timestamp", self.timestamp))
        if self.rating is not None:
            object.__setattr__(self, "rating", _number("rating", self.rating))

    def to_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def from_dict(cls, obj: dict[str, object]) -> Event:
        """An event from its JSON object (unknown keys are ignored; ``rating`` may be absent)."""
        missing = [k for k in _FIELDS[:5] if k not in obj]
        if missing:
            raise ValueError(f"event is missing {', '.join(missing)}")
        return cls(**{k: obj[k] for k in _FIELDS if k in obj})  # type: ignore[arg-type]


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"Event.{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"Event.{name} must be finite, got {value}")
    return value


def encode_payload(event: Event) -> bytes:
    """The event as compact UTF-8 JSON (ValueError when not encodable, e.g. lone surrogates)."""
    try:
        return json.dumps(
            event.to_dict(), separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"event {event.event_id!r} is not valid UTF-8: {e}") from e


def decode_payload(payload: bytes) -> Event:
    """Inverse of `encode_payload`; ValueError (or TypeError) when it is not a valid event."""
    obj = json.loads(payload.decode("utf-8"))
    if not isinstance(obj, dict):
        raise ValueError("event payload is not a JSON object")
    return Event.from_dict(obj)


def encode_record(event: Event) -> bytes:
    """One framed record: header + payload."""
    payload = encode_payload(event)
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def segment_name(index: int) -> str:
    return f"events-{index:06d}.log"


def segment_index(path: Path) -> int:
    m = SEGMENT_RE.match(path.name)
    if m is None:
        raise ValueError(f"not a segment file name: {path.name}")
    return int(m.group(1))


def list_segments(directory: str | Path) -> list[Path]:
    """The directory's segment files in order (FileNotFoundError when it does not exist)."""
    directory = Path(directory)
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := SEGMENT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


class SegmentReader:
    """Iterates the valid records of one segment, stopping at the first invalid one.

    After iteration ``valid_end`` is the byte offset where the valid prefix ends, ``size`` the
    file size read, and ``error`` a description of the damage at ``valid_end`` (None when the
    whole file was valid). The file is only read; a writer appending concurrently is fine (the
    size is fixed when iteration starts, so a record being written may look torn).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.valid_end = 0
        self.size = 0
        self.records = 0
        self.error: str | None = None

    def __iter__(self) -> Iterator[Event]:
        with self.path.open("rb") as f:
            self.size = size = os.fstat(f.fileno()).st_size
            pos = 0
            while pos < size:
                header = f.read(HEADER.size)
                if len(header) < HEADER.size:
                    self.error = f"short header ({len(header)} of {HEADER.size} bytes)"
                    return
                length, crc = HEADER.unpack(header)
                if length > size - pos - HEADER.size:
                    self.error = f"record length {length} runs past the end of the file"
                    return
                payload = f.read(length)
                if len(payload) < length:  # the file shrank under us
                    self.error = f"short payload ({len(payload)} of {length} bytes)"
                    return
                if zlib.crc32(payload) != crc:
                    self.error = "CRC mismatch"
                    return
                try:
                    event = decode_payload(payload)
                except (ValueError, TypeError) as e:  # JSON/UTF-8 errors are ValueErrors
                    self.error = f"undecodable payload: {e}"
                    return
                pos += HEADER.size + length
                self.valid_end = pos
                self.records += 1
                yield event


def read_events(directory: str | Path) -> Iterator[Event]:
    """Valid events of all segments, in log order. Read-only: damage is skipped, not repaired.

    A segment is read up to its first invalid record (a torn tail while a writer is active, or
    damage that `recover` has not set aside yet; logged as a warning for non-last segments).
    """
    segments = list_segments(directory)
    for i, path in enumerate(segments):
        reader = SegmentReader(path)
        yield from reader
        if reader.error is not None and i < len(segments) - 1:
            log.warning(
                "%s: %s at offset %d; skipped %d bytes (run recover() to set them aside)",
                path,
                reader.error,
                reader.valid_end,
                reader.size - reader.valid_end,
            )


@dataclass
class RecoveryReport:
    """What `recover` found. ``corrupt_tails`` counts damaged regions (at most one a segment);
    ``paths`` are the files the damaged bytes were set aside to; ``details`` describe each."""

    records: int = 0
    segments: int = 0
    corrupt_tails: int = 0
    bytes_set_aside: int = 0
    paths: list[Path] = field(default_factory=list)
    details: list[str] = field(default_factory=list)


def fsync_dir(directory: str | Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _set_aside(path: Path, start: int) -> Path:
    """Copy ``path[start:]`` to a new ``<path>.corrupt-<unix_ms>`` file, fsynced."""
    stamp = int(time.time() * 1000)
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 0
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    with path.open("rb") as src, target.open("xb") as dst:
        src.seek(start)
        while chunk := src.read(1 << 20):
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    fsync_dir(path.parent)
    return target


class LogLockedError(RuntimeError):
    """A writer has the log directory open (its ``LOCK`` file is flocked)."""


def lock_directory(directory: str | Path) -> int:
    """Take the exclusive writer lock of ``directory`` (created if missing): an open fd whose
    ``flock`` is released when it is closed (or the process dies). LogLockedError when held."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LogLockedError(f"{directory} is open by a writer") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def recover(
    directory: str | Path,
    *,
    on_event: Callable[[Event], None] | None = None,
    lock: bool = True,
) -> RecoveryReport:
    """Scan every segment and set aside damaged bytes so the log is valid again.

    In each segment, everything from the first invalid record on (normally a torn tail of the
    last segment after a crash; elsewhere it means real corruption, logged as an error) is
    copied to ``<segment>.corrupt-<unix_ms>`` (fsynced) and then the segment is truncated to
    its valid prefix (fsynced). ``on_event`` is called with every valid event, in order (the
    writer uses it to load its event ids without a second pass). A missing directory is an
    empty log.

    Recovery must not run while a writer has the log open (it would cut off a record being
    written): it takes the writer lock and raises LogLockedError when a writer holds it.
    ``lock=False`` is for the writer itself, which already holds the lock.
    """
    directory = Path(directory)
    if not directory.exists():
        return RecoveryReport()
    lock_fd = lock_directory(directory) if lock else -1
    try:
        return _recover(directory, on_event)
    finally:
        if lock_fd >= 0:
            os.close(lock_fd)


def _recover(directory: Path, on_event: Callable[[Event], None] | None) -> RecoveryReport:
    report = RecoveryReport()
    segments = list_segments(directory)
    report.segments = len(segments)
    for i, path in enumerate(segments):
        reader = SegmentReader(path)
        for event in reader:
            if on_event is not None:
                on_event(event)
        report.records += reader.records
        if reader.error is None:
            continue
        damaged = reader.size - reader.valid_end
        target = _set_aside(path, reader.valid_end)
        with path.open("r+b") as f:
            f.truncate(reader.valid_end)
            f.flush()
            os.fsync(f.fileno())
        last = i == len(segments) - 1
        where = "tail of the last segment" if last else "NOT the last segment"
        detail = (
            f"{path.name}: {reader.error} at offset {reader.valid_end} ({where}); "
            f"{damaged} bytes set aside to {target.name}"
        )
        (log.warning if last else log.error)("interaction log recovery: %s", detail)
        report.corrupt_tails += 1
        report.bytes_set_aside += damaged
        report.paths.append(target)
        report.details.append(detail)
    return report


def events_to_interactions(
    events: pl.DataFrame, event_weights: EventWeights | None = None
) -> pl.DataFrame:
    """The events of `DataStore.events_frame` (columns event_id, user_id, item_id, event_type,
    timestamp, rating) as rows ``user, item, event, weight, timestamp`` (the columns of
    `Interactions.to_frame` and `from_frame`'s defaults), to append to the trainer's base data.

    Event types are matched like `EventWeights` (stripped, lower-cased) and ``event`` holds the
    normalized name. Rating events take their ``rating`` as weight; other events their type's
    weight. Timestamps become whole unix seconds (floored). An unknown event type, a rating
    event without a rating, or a negative rating raises ValueError naming the first such event.
    """
    event_weights = event_weights or EventWeights()
    table = event_weights.normalized()
    rating_event = (event_weights.rating_event or "").strip().lower() or None
    kind = pl.col("event_type").str.strip_chars().str.to_lowercase()
    frame = events.with_columns(kind.alias("event"))
    is_rating = pl.col("event") == (rating_event or "")
    known = sorted(set(table) | ({rating_event} if rating_event else set()))
    problems = (
        (~pl.col("event").is_in(known), "unknown event type {type!r} (known: {known})"),
        (is_rating & pl.col("rating").is_null(), "rating event without a rating"),
        (is_rating & (pl.col("rating") < 0), "negative rating {rating}"),
    )
    for condition, message in problems:
        bad = frame.filter(condition).head(1)
        if bad.height:
            row = bad.row(0, named=True)
            text = message.format(type=row["event_type"], known=", ".join(known), **row)
            raise ValueError(f"event {row['event_id']!r}: {text}")
    weight = (
        pl.when(is_rating)
        .then(pl.col("rating"))
        .otherwise(pl.col("event").replace_strict(table, default=None, return_dtype=pl.Float64))
    )
    return frame.select(
        pl.col("user_id").cast(pl.String).alias("user"),
        pl.col("item_id").cast(pl.String).alias("item"),
        pl.col("event").cast(pl.String),
        weight.cast(pl.Float32).alias("weight"),
        pl.col("timestamp").floor().cast(pl.Int64).alias("timestamp"),
    )
