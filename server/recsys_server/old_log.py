"""The event log of recsys-serve before the data store: read only, to import it (`log_import`).

Delete this module once no deployment has an old log left to import.

Layout: a directory of segment files ``events-000001.log``, ``events-000002.log``, ... in
order. Other files in the directory (the old writer's ``LOCK``, set-aside ``*.corrupt-*``
files, the import's marker) are ignored. One writer at a time held ``LOCK``
(`lock_directory`); the import takes it too, so it never runs beside an old server.

Record: ``<u32 payload length LE><u32 zlib.crc32(payload) LE><payload>``, where the payload is
one event as compact UTF-8 JSON. A record is valid when its header is complete, its payload
lies within the file, the CRC matches and the payload decodes to an `Event`.

Damage (a torn write at the tail after a crash, or a corrupt record anywhere) ends a segment:
reading stops at the first invalid record of a segment. `recover` makes that permanent: it
truncates the segment to its valid prefix and first copies the bytes it removes to
``<segment>.corrupt-<unix_ms>``, so nothing is silently dropped.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from recsys_core.events import Event

log = logging.getLogger(__name__)

HEADER = struct.Struct("<II")  # payload length, crc32(payload)
SEGMENT_RE = re.compile(r"^events-(\d{6,})\.log$")


def decode_payload(payload: bytes) -> Event:
    """One record's payload as an Event; ValueError (or TypeError) when it is not a valid event."""
    obj = json.loads(payload.decode("utf-8"))
    if not isinstance(obj, dict):
        raise ValueError("event payload is not a JSON object")
    return Event.from_dict(obj)


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
    """An old recsys-serve has the log directory open (its ``LOCK`` file is flocked)."""


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
        raise LogLockedError(
            f"{directory} is open by a writer (an older recsys-serve still running?)"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def recover(directory: str | Path) -> RecoveryReport:
    """Scan every segment and set aside damaged bytes so the log is valid again.

    In each segment, everything from the first invalid record on (normally a torn tail of the
    last segment after a crash; elsewhere it means real corruption, logged as an error) is
    copied to ``<segment>.corrupt-<unix_ms>`` (fsynced) and then the segment is truncated to
    its valid prefix (fsynced). A missing directory is an empty log.

    The caller holds the directory's lock (`lock_directory`): recovery beside a writer would
    cut off a record being written.
    """
    directory = Path(directory)
    if not directory.exists():
        return RecoveryReport()
    report = RecoveryReport()
    segments = list_segments(directory)
    report.segments = len(segments)
    for i, path in enumerate(segments):
        reader = SegmentReader(path)
        for _ in reader:
            pass
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
        (log.warning if last else log.error)("old event log recovery: %s", detail)
        report.corrupt_tails += 1
        report.bytes_set_aside += damaged
        report.paths.append(target)
        report.details.append(detail)
    return report
