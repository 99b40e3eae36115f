"""Retention: the data store's hot table keeps what serving may still replay.

An event is archived (written to a Parquet file, then deleted from the table) when

* its ``seq`` is at most the smallest store cursor of ALL versions kept in the artifacts
  directory (`artifacts.version_cursors`; a version without one counts as 0, so nothing is
  archived while it is kept): every version the server could load has folded it in and
  replays only events after its own cursor, so the server never reads it again; and
* its ``stored_at`` (the server's clock at commit) is older than ``now - window``.

Archive first, durably: a file (``events-<first seq>-<last seq>.parquet``, every column) is
written to a temp name, fsynced, renamed and the directory fsynced; only then are exactly its
rows deleted, in one transaction, by the same predicate (seq range and ``stored_at`` bound,
kept in the file's metadata), checked against the row count. A run that stopped between the
two steps is completed by the next one: a file whose range still has rows in the table gets
them deleted (after checking the file holds every one), never rewritten. docs/trainer.md,
"Retention", has the rule and why it is safe.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from recsys_core.artifacts import fsync_path, version_cursors
from recsys_core.datastore import DataStore
from recsys_core.datastore.base import ARCHIVE_SCHEMA
from recsys_trainer.config import DURATION_UNITS, duration_seconds

FILE_RE = re.compile(r"^events-(\d+)-(\d+)\.parquet$")
STORED_BEFORE = "recsys.stored_before"  # the file's delete predicate (Parquet metadata)
LOCK = ".lock"
MAX_ROWS = 100_000
"""Events per file, and so per delete transaction: bounds how long SQLite's write lock is held
(the server's commits wait for it, up to their busy timeout)."""


class RetentionError(Exception):
    """The archive and the hot table disagree, or a file cannot be read; nothing was deleted."""


def parse_window(text: str) -> float:
    """The live window in seconds: '7d', '12h', '30m', '90s', '2w', plain seconds; 'off' or
    0 is 0 (retention disabled)."""
    t = str(text).strip().lower()
    if t in ("off", "none", "no", "false"):
        return 0.0
    try:
        return duration_seconds(t)
    except ValueError:
        raise RetentionError(
            f"retention window {text!r}: expected a duration such as 7d or off"
        ) from None


def default_archive(artifacts: Path) -> Path:
    """``<artifacts>/../events-archive``: beside the artifacts directory (inside it the server
    would report a directory that is not a version) and beside the default SQLite store."""
    return Path(artifacts).absolute().parent / "events-archive"


# -- the files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveFile:
    path: Path
    first: int  # seq range of its rows
    last: int


def archive_files(directory: Path) -> list[ArchiveFile]:
    """The finished archive files (temp files are dot-named and skipped), by first seq."""
    found = []
    if Path(directory).is_dir():
        for p in Path(directory).iterdir():
            m = FILE_RE.match(p.name)
            if m and p.is_file():
                found.append(ArchiveFile(p, int(m.group(1)), int(m.group(2))))
    return sorted(found, key=lambda f: (f.first, f.last))


def read_archive(directory: Path) -> pl.DataFrame:
    """Every archived event (`ARCHIVE_SCHEMA`), in seq order; empty without files."""
    frames = []
    for f in archive_files(directory):
        try:
            frame = pl.read_parquet(f.path)
            # Files written before events had recommendation_id and position: null there.
            missing = [k for k in ARCHIVE_SCHEMA if k not in frame.columns]
            frame = frame.with_columns(pl.lit(None, ARCHIVE_SCHEMA[k]).alias(k) for k in missing)
            frames.append(frame.select(list(ARCHIVE_SCHEMA)))
        except (OSError, pl.exceptions.PolarsError) as e:
            raise RetentionError(f"{f.path}: cannot read the archive file: {e}") from e
    if not frames:
        return pl.DataFrame(schema=ARCHIVE_SCHEMA)
    return pl.concat(frames).cast(ARCHIVE_SCHEMA).sort("seq")


def _write(directory: Path, frame: pl.DataFrame, stored_before: float) -> Path:
    first, last = int(frame["seq"][0]), int(frame["seq"][-1])
    path = directory / f"events-{first:012d}-{last:012d}.parquet"
    if path.exists():  # its rows were deleted when this run started: someone else is here
        raise RetentionError(f"{path}: already exists; is another refresh archiving?")
    tmp = directory / f".{path.name}.tmp"
    frame.write_parquet(tmp, metadata={STORED_BEFORE: repr(stored_before)})
    fsync_path(tmp)
    if pl.scan_parquet(tmp).select(pl.len()).collect().item() != frame.height:
        raise RetentionError(f"{tmp}: read back a different row count; nothing deleted")
    os.rename(tmp, path)
    fsync_path(directory)
    return path


def _finish(store: DataStore, f: ArchiveFile) -> int:
    """Delete the rows of ``f`` still in the hot table; 0 when they are gone already."""
    try:
        meta = pl.read_parquet_metadata(f.path)
        stored_before = float(meta[STORED_BEFORE])
        archived = pl.read_parquet(f.path, columns=["seq", "event_id"])
    except (OSError, KeyError, ValueError, pl.exceptions.PolarsError) as e:
        raise RetentionError(f"{f.path}: not a readable archive file ({e!r})") from e
    hot = store.events_frame(f.first - 1, f.last, stored_before=stored_before)
    if hot.height == 0:
        return 0
    missing = hot.select("seq", "event_id").join(archived, on=["seq", "event_id"], how="anti")
    if missing.height:
        kept = archived.join(hot, on=["seq", "event_id"], how="semi").height == archived.height
        hint = "; every event of the file is still in the table: move it aside" if kept else ""
        raise RetentionError(
            f"{f.path}: the hot table holds {missing.height} events in its range that the file "
            f"lacks (first: seq {missing['seq'][0]}); nothing deleted{hint}"
        )
    return store.delete_events(f.first - 1, f.last, stored_before, expect=hot.height)


# -- the rule --------------------------------------------------------------------------------


@dataclass
class Report:
    window: float
    archive: Path
    files: list[Path] = field(default_factory=list)
    archived: int = 0  # events moved by this run
    first_seq: int = 0
    last_seq: int = 0
    completed: int = 0  # events deleted for files an interrupted run had written
    cursor: int = 0  # the smallest cursor of the kept versions
    cutoff: float = 0.0  # now - window: archived events were stored before it
    blocked: str = ""  # why nothing could be archived
    hot: int = 0  # events in the hot table afterwards

    def line(self) -> str:
        parts = []
        if self.completed:
            parts.append(f"completed an interrupted run: deleted {self.completed} archived events")
        if self.archived:
            where = (
                str(self.files[0])
                if len(self.files) == 1
                else f"{len(self.files)} files in {self.archive}"
            )
            parts.append(
                f"archived {self.archived} events seq {self.first_seq}..{self.last_seq} to {where}"
            )
        elif self.blocked:
            parts.append(f"nothing archived: {self.blocked}")
        else:
            before = datetime.fromtimestamp(self.cutoff, UTC).isoformat(timespec="seconds")
            parts.append(
                f"nothing to archive (no event with seq <= {self.cursor} stored before "
                f"{before}, {_duration(self.window)} ago)"
            )
        return f"retention: {'; '.join(parts)}, hot table now {self.hot}"


def _duration(seconds: float) -> str:
    for unit in ("d", "h", "m"):
        if seconds >= DURATION_UNITS[unit] and seconds % DURATION_UNITS[unit] == 0:
            return f"{seconds / DURATION_UNITS[unit]:g}{unit}"
    return f"{seconds:g}s"


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[bool]:
    """An exclusive lock on the archive directory; yields False when another process holds
    it. The rule is safe without it (the checked delete), but two runs would only race."""
    with (directory / LOCK).open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def apply(
    store: DataStore,
    artifacts: Path,
    archive: Path,
    window: float,
    now: float,
    max_rows: int = MAX_ROWS,
) -> Report:
    """Run the rule once (see the module doc) and say what it did. ``window`` in seconds,
    > 0; ``now`` on the server's clock (``stored_at``). Blocking. RetentionError when the
    archive and the table disagree; StoreError when the store fails (a file written before
    the failure is completed by the next run)."""
    if not window > 0:
        raise ValueError("window must be > 0 (0 disables retention: do not call apply)")
    report = Report(window, Path(archive), cutoff=now - window)
    report.archive.mkdir(parents=True, exist_ok=True)
    with _locked(report.archive) as mine:
        if not mine:
            report.blocked = f"another process is archiving into {report.archive}"
        else:
            _run(store, Path(artifacts), report, max_rows)
    report.hot = store.count()
    return report


def _run(store: DataStore, artifacts: Path, report: Report, limit: int) -> None:
    cutoff = report.cutoff
    for tmp in report.archive.glob(".events-*.parquet.tmp"):
        tmp.unlink()  # a run stopped before its rename: those rows are still in the table
    low = store.min_seq()
    for f in archive_files(report.archive):
        if low and f.last >= low:
            report.completed += _finish(store, f)
    cursors = version_cursors(artifacts)
    if not cursors:
        report.blocked = f"no model version in {artifacts}"
        return
    report.cursor = min(cursors.values())
    if report.cursor == 0:
        name = next(n for n, c in cursors.items() if c == 0)
        report.blocked = f"version {name} has no store cursor (trained without the store)"
        return
    while True:
        frame = store.events_frame(
            up_to_seq=report.cursor, stored_before=cutoff, limit=limit, with_stored_at=True
        )
        if frame.height == 0:
            break
        path = _write(report.archive, frame, cutoff)
        first, last = int(frame["seq"][0]), int(frame["seq"][-1])
        store.delete_events(first - 1, last, cutoff, expect=frame.height)
        report.files.append(path)
        report.archived += frame.height
        report.first_seq = report.first_seq or first
        report.last_seq = last
