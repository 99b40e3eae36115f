"""Durable, idempotent, group-committed writer of the interaction (behaviour event) log.

The format (segments, framing, recovery) lives in `recsys_core.eventlog`, shared with the
trainer. This module adds the server side:

* Open: take an exclusive ``flock`` on ``<dir>/LOCK`` (one writer per directory), run
  `recover` (torn tails are set aside, never dropped) and load every stored event id.
* `InteractionLog.append` returns only once its events are written and fsynced. Appends made
  while a write is in flight queue up and go out together in the next write + one fsync
  (group commit), at most ``max_batch`` records per write (one append is never split).
* Idempotency by ``event_id``: ids already stored, repeated within a call, or in flight in
  another call are not written again and count as duplicates. A call that shares ids with an
  in-flight call waits for that call's write, so success always means every event of the call
  is durable.
* On an OSError (ENOSPC, EIO, ...) the segment is truncated back to its size before the failed
  write, nothing of the batch counts as recorded, and every append of the batch raises
  `LogWriteError`. Retrying the same events is safe: ids that did reach the disk are
  deduplicated.

The blocking I/O runs on one dedicated thread, so the event loop keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from recsys_core.eventlog import (
    SEGMENT_BYTES,
    Event,
    LogLockedError,
    RecoveryReport,
    encode_record,
    fsync_dir,
    list_segments,
    lock_directory,
    recover,
    segment_index,
    segment_name,
)

__all__ = [
    "AppendResult",
    "Event",
    "InteractionLog",
    "LogClosedError",
    "LogLockedError",
    "LogWriteError",
]

_fdatasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


class LogWriteError(Exception):
    """The events of an append may not be durable (retry them: appends are idempotent).

    ``errno`` is the underlying OSError's errno (e.g. ``errno.ENOSPC``), or None.
    """

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class LogClosedError(LogWriteError):
    """Append on a log that is closed or closing."""


@dataclass(frozen=True)
class AppendResult:
    recorded: list[Event]  # events this call wrote, in call order
    duplicates: int  # events of the call not written (already stored or repeated)


@dataclass
class _Entry:  # one append's new records, waiting for the writer
    data: bytes
    ids: list[str]
    done: asyncio.Future[None]


def _write_error(e: OSError) -> LogWriteError:
    name = errno.errorcode.get(e.errno or 0, "")
    msg = f"interaction log write failed: {e.strerror or e}" + (f" ({name})" if name else "")
    return LogWriteError(msg, e.errno)


class InteractionLog:
    """Append-only event log in ``directory``. Create it once at startup (recovery and id loading
    block; use `InteractionLog.open` from async code), then ``await append(...)`` from the event
    loop and ``await close()`` at shutdown.

    ``fsync=False`` skips fsyncs (tests, benchmarks); appends then survive a process crash but
    not a power loss. Counters (plain ints, for metrics): ``records_written``,
    ``bytes_written``, ``fsyncs`` (every file and directory fsync), ``batches`` (successful
    writes), ``write_errors`` (failed writes), ``duplicates``, ``recovered_corrupt_tails``.

    ``rotate_bytes`` is the segment size limit; ``_write(fd, data) -> int`` and ``_fsync(fd)``
    are test seams (default `os.write` and `os.fdatasync`).
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        fsync: bool = True,
        max_batch: int = 1000,
        rotate_bytes: int = SEGMENT_BYTES,
        _write: Callable[[int, memoryview], int] = os.write,
        _fsync: Callable[[int], None] = _fdatasync,
    ) -> None:
        if max_batch < 1 or rotate_bytes < 1:
            raise ValueError("max_batch and rotate_bytes must be >= 1")
        self.directory = Path(directory)
        self._fsync_enabled = fsync
        self._max_batch = max_batch
        self._rotate_bytes = rotate_bytes
        self._write = _write
        self._fsync = _fsync

        self.records_written = 0
        self.bytes_written = 0
        self.fsyncs = 0
        self.batches = 0
        self.write_errors = 0
        self.duplicates = 0

        self._lock = threading.Lock()  # ids, pending, counters (shared with the I/O thread)
        self._io_lock = threading.Lock()  # file state: fd, size, segment
        self._ids: set[str] = set()  # durably stored event ids
        self._pending: dict[str, asyncio.Future[None]] = {}  # in-flight id -> its write
        self._queue: deque[_Entry] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._close_task: asyncio.Future[None] | None = None
        self._needs_repair = False  # a failed write could not be rolled back yet

        self._lock_fd = lock_directory(self.directory)  # LogLockedError if another writer
        try:
            self.recovery: RecoveryReport = recover(
                self.directory, on_event=lambda e: self._ids.add(e.event_id), lock=False
            )
            self.recovered_corrupt_tails = self.recovery.corrupt_tails
            segments = list_segments(self.directory)
            if segments:
                self._segment = segment_index(segments[-1])
                self._fd = os.open(segments[-1], os.O_WRONLY)
                self._size = os.lseek(self._fd, 0, os.SEEK_END)
            else:
                self._segment = 0
                self._fd = self._create_segment(1)
                self._segment = 1
                self._size = 0
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="interaction-log")

    @classmethod
    async def open(cls, directory: str | Path, **kwargs: object) -> InteractionLog:
        """Like the constructor, with recovery run in a thread."""
        return await asyncio.to_thread(cls, directory, **kwargs)  # type: ignore[arg-type]

    async def __aenter__(self) -> InteractionLog:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def stored_events(self) -> int:
        """Number of distinct events stored."""
        return len(self._ids)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    # -- appending ---------------------------------------------------------------------------

    async def append(self, events: Sequence[Event]) -> AppendResult:
        """Write the call's new events durably; see the module doc for the guarantees.

        Raises LogWriteError (I/O failure: nothing of this call's batch is recorded; retry),
        LogClosedError, TypeError for a non-Event and ValueError for an unencodable event
        (then nothing of the call is written).
        """
        if self._closing:
            raise LogClosedError("interaction log is closed")
        events = list(events)
        encoded: list[bytes] = []
        for e in events:
            if not isinstance(e, Event):
                raise TypeError(f"expected Event, got {type(e).__name__}")
            encoded.append(encode_record(e))
        loop = asyncio.get_running_loop()
        recorded: list[Event] = []
        parts: list[bytes] = []
        waits: set[asyncio.Future[None]] = set()
        seen: set[str] = set()
        duplicates = 0
        done: asyncio.Future[None] = loop.create_future()
        # Retrieve a failure nobody awaits any more (a cancelled caller) to avoid a warning.
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        with self._lock:
            for e, record in zip(events, encoded, strict=True):
                eid = e.event_id
                if eid in seen or eid in self._ids:
                    duplicates += 1
                    continue
                seen.add(eid)
                owner = self._pending.get(eid)
                if owner is not None:  # in flight in another call: wait for its outcome
                    waits.add(owner)
                    duplicates += 1
                    continue
                self._pending[eid] = done
                recorded.append(e)
                parts.append(record)
            self.duplicates += duplicates
        if recorded:
            self._queue.append(_Entry(b"".join(parts), [e.event_id for e in recorded], done))
            if self._flusher is None or self._flusher.done():
                self._flusher = loop.create_task(self._flush_loop(), name="interaction-log-flush")
            # Shielded: a cancelled caller does not cancel the write (its events may still be
            # stored; a retry is deduplicated).
            await asyncio.shield(done)
        if waits:
            await asyncio.wait(waits)
            if any(w.cancelled() or w.exception() is not None for w in waits):
                raise LogWriteError(
                    "interaction log write failed for events appended concurrently by another "
                    "call; retry"
                )
        return AppendResult(recorded, duplicates)

    async def _flush_loop(self) -> None:
        """Drain the queue: each round writes everything queued (<= max_batch records)."""
        loop = asyncio.get_running_loop()
        while self._queue:
            batch = [self._queue.popleft()]
            n = len(batch[0].ids)
            while self._queue and n + len(self._queue[0].ids) <= self._max_batch:
                n += len(self._queue[0].ids)
                batch.append(self._queue.popleft())
            data = b"".join(e.data for e in batch)
            ids = [i for e in batch for i in e.ids]
            try:
                await loop.run_in_executor(self._executor, self._commit, data, ids)
            except LogWriteError as e:
                for entry in batch:
                    entry.done.set_exception(LogWriteError(str(e), e.errno))
            except BaseException:  # cancelled (loop shutdown) or a bug: outcome unknown
                for entry in batch:
                    if not entry.done.done():
                        entry.done.set_exception(
                            LogWriteError("interaction log writer stopped; outcome unknown")
                        )
                raise
            else:
                for entry in batch:
                    entry.done.set_result(None)

    # -- I/O thread --------------------------------------------------------------------------

    def _commit(self, data: bytes, ids: list[str]) -> None:
        """Write + fsync one batch, or roll back and raise LogWriteError. Runs on the I/O thread;
        does the id bookkeeping itself so it stays right even if the awaiting task is gone."""
        with self._io_lock:
            try:
                if self._fd is None:
                    raise LogClosedError("interaction log is closed")
                if self._needs_repair:
                    self._truncate(self._size)
                    self._needs_repair = False
                if self._size > 0 and self._size + len(data) > self._rotate_bytes:
                    self._rotate()
                start = self._size
                try:
                    os.lseek(self._fd, start, os.SEEK_SET)
                    view = memoryview(data)
                    while view:
                        n = self._write(self._fd, view)
                        if n <= 0:
                            raise OSError(errno.EIO, "write made no progress")
                        view = view[n:]
                    if self._fsync_enabled:
                        self._fsync(self._fd)
                        self.fsyncs += 1
                except OSError:
                    try:
                        self._truncate(start)
                    except OSError:
                        self._needs_repair = True  # retried before the next write
                    raise
                self._size = start + len(data)
            except (OSError, LogWriteError) as e:
                with self._lock:
                    self.write_errors += 1
                    for i in ids:
                        self._pending.pop(i, None)
                if isinstance(e, LogWriteError):
                    raise
                raise _write_error(e) from e
            with self._lock:
                self._ids.update(ids)
                for i in ids:
                    self._pending.pop(i, None)
                self.records_written += len(ids)
                self.bytes_written += len(data)
                self.batches += 1

    def _truncate(self, size: int) -> None:
        assert self._fd is not None
        os.ftruncate(self._fd, size)
        if self._fsync_enabled:
            self._fsync(self._fd)
            self.fsyncs += 1

    def _create_segment(self, index: int) -> int:
        path = self.directory / segment_name(index)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            if self._fsync_enabled:
                fsync_dir(self.directory)
                self.fsyncs += 1
        except OSError:
            os.close(fd)
            raise
        return fd

    def _rotate(self) -> None:
        fd = self._create_segment(self._segment + 1)
        assert self._fd is not None
        os.close(self._fd)  # its data was fsynced by the batch that wrote it
        self._fd, self._segment, self._size = fd, self._segment + 1, 0

    # -- closing -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Wait for queued appends, fsync and close. Safe to call more than once."""
        if self._closed:
            return
        self._closing = True
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close())
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            await asyncio.wait([self._flusher])
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close_files)
        finally:
            self._executor.shutdown(wait=False)
            self._closed = True

    def _close_files(self) -> None:
        with self._io_lock:
            try:
                if self._fd is not None:
                    try:
                        if self._needs_repair:
                            self._truncate(self._size)
                        self._fsync(self._fd)  # even with fsync=False: a clean close is durable
                        self.fsyncs += 1
                    except OSError as e:
                        raise _write_error(e) from e
                    finally:
                        os.close(self._fd)
                        self._fd = None
            finally:
                if self._lock_fd >= 0:
                    os.close(self._lock_fd)  # releases the flock
                    self._lock_fd = -1
