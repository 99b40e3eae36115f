"""Moves the event log of a recsys-serve from before the data store into the store, once.

At start, when the old log directory (``--import-log``, default ``<artifacts>/../events``)
holds segments and its marker does not name this store, `import_old_log`:

1. takes the old writer's lock (an older server still writing there refuses the start) and
   runs the old log's recovery: a torn tail is set aside to ``<segment>.corrupt-<ms>``,
   never dropped;
2. appends every event in log order, in batches. ``event_id`` is UNIQUE in the store, so a
   rerun (after a crash half-way, or into a store that has some of them) stores nothing twice;
3. checks the counts: events read == records recovery found == stored + duplicates, and the
   store grew by exactly the stored ones. A mismatch refuses the start and writes no marker;
4. writes the marker ``IMPORTED.json`` into the directory (store, counts, time), so later
   starts do not read the log again. The old files stay; delete them once satisfied.

This module and `old_log` go once no deployment has an old log left.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from recsys_core.datastore import DataStore
from recsys_core.events import Event
from recsys_server import old_log

log = logging.getLogger(__name__)

MARKER = "IMPORTED.json"
BATCH = 1000  # events per append: the store's group commit takes up to 1000 in one transaction


class LogImportError(Exception):
    """The old log could not be imported completely; the server does not start."""


@dataclass
class ImportReport:
    directory: str
    store: str
    read: int = 0  # valid events in the log
    stored: int = 0  # newly stored by this import
    duplicates: int = 0  # already in the store (an earlier, interrupted import) or repeated
    set_aside: list[str] = field(default_factory=list)  # damaged bytes moved aside by recovery
    finished_at: float = 0.0


def read_marker(directory: Path) -> dict | None:
    try:
        data = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _take(events: Iterator[Event], n: int) -> list[Event]:
    return list(itertools.islice(events, n))


async def import_old_log(directory: Path, store: DataStore) -> ImportReport | None:
    """Import ``directory`` into ``store`` (see the module doc). None when there is nothing to
    do: no directory, no segments, or already imported into this store. Raises LogImportError,
    old_log.LogLockedError, StoreUnavailable (nothing is lost: the next start resumes)."""
    if not directory.is_dir() or not old_log.list_segments(directory):
        return None
    marker = read_marker(directory)
    if marker is not None and marker.get("store") == store.url:
        log.info("old event log %s: already imported into %s", directory, store.url)
        return None
    lock = await asyncio.to_thread(old_log.lock_directory, directory)
    try:
        report = await _import(directory, store)
    finally:
        os.close(lock)
    _write_marker(directory, report)
    return report


async def _import(directory: Path, store: DataStore) -> ImportReport:
    report = ImportReport(str(directory), store.url)
    log.info("importing the old event log %s into %s", directory, store.url)
    recovery = await asyncio.to_thread(old_log.recover, directory)
    report.set_aside = [str(p) for p in recovery.paths]
    before = await asyncio.to_thread(store.count)
    events = old_log.read_events(directory)
    while batch := await asyncio.to_thread(_take, events, BATCH):
        try:
            result = await store.append(batch)
        except ValueError as e:  # an event this backend cannot hold (PostgreSQL: a NUL)
            raise LogImportError(
                f"importing the old event log {directory} into {store.url}: {e}; nothing of "
                f"it after event {report.read} is stored, no marker written"
            ) from e
        report.read += len(batch)
        report.stored += len(result.recorded)
        report.duplicates += result.duplicates
    # The store grows only by this import here: the server does not serve before it ends.
    grown = await asyncio.to_thread(store.count) - before
    if problems := count_problems(report, recovery.records, grown):
        raise LogImportError(
            f"importing the old event log {directory} into {store.url}: counts do not match "
            f"({'; '.join(problems)}); no marker written, the next start imports again"
        )
    report.finished_at = time.time()
    log.info(
        "imported the old event log %s into %s: %d events read, %d stored, %d already there%s",
        directory,
        store.url,
        report.read,
        report.stored,
        report.duplicates,
        f"; damaged bytes set aside: {', '.join(report.set_aside)}" if report.set_aside else "",
    )
    return report


def count_problems(report: ImportReport, recovered: int, grown: int) -> list[str]:
    """What does not add up: every valid record read once, each either stored or already
    there, and the store grown by exactly the stored ones."""
    problems = []
    if report.read != recovered:
        problems.append(f"read {report.read} events but recovery found {recovered}")
    if report.read != report.stored + report.duplicates:
        problems.append(
            f"read {report.read} != stored {report.stored} + duplicates {report.duplicates}"
        )
    if grown != report.stored:
        problems.append(f"the store grew by {grown} events, the import stored {report.stored}")
    return problems


def _write_marker(directory: Path, report: ImportReport) -> None:
    """Atomically (temp file, fsync, rename). A directory that cannot be written only costs
    a re-read at the next start (the import is idempotent), so that is a warning."""
    tmp = directory / f".{MARKER}.tmp"
    try:
        with tmp.open("w") as f:
            json.dump(asdict(report), f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(directory / MARKER)
        old_log.fsync_dir(directory)
    except OSError as e:
        log.warning(
            "old event log %s: imported, but the marker cannot be written (%s); the log "
            "will be read again at the next start",
            directory,
            e,
        )
