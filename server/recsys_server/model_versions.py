"""ModelVersions: which model version serves, and hot reload.

The serving state (`State`: an immutable `Snapshot` plus the live histories that go with it)
is one attribute; a request reads it once at its start and keeps using that object, so a swap
(a single assignment) never changes a request's version half-way. A new version is loaded,
validated (checksums, shapes, id maps), warmed up and measured in a worker thread while the old
one keeps serving. A version that fails is refused and counted; it is tried again only once its
directory changes (any file's size or mtime).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys_core.artifacts import (
    LATEST,
    MANIFEST,
    ArtifactError,
    is_version_name,
    latest_version,
)
from recsys_core.datastore import DataStore, StoredEvent, StoreUnavailable
from recsys_core.events import Event
from recsys_server import scoring
from recsys_server.config import ServerConfig
from recsys_server.live import LiveHistory
from recsys_server.metrics import Metrics
from recsys_server.snapshot import Snapshot, build, with_experiments

log = logging.getLogger(__name__)

WARMUP_USERS = 3


@dataclass(frozen=True, slots=True)
class State:
    snapshot: Snapshot
    live: LiveHistory


@dataclass(frozen=True, slots=True)
class ReloadResult:
    version: str
    changed: bool
    message: str


class WarmupError(Exception):
    pass


def dir_signature(path: Path) -> tuple:
    """(name, size, mtime) of every file: changes when anything in the directory is rewritten."""
    entries = []
    try:
        for p in path.rglob("*"):
            st = p.stat()
            entries.append((p.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns))
    except OSError:
        return ()
    return tuple(sorted(entries))


PREBUILT_ROWS = 100_000
EXPLAINED_K = 10
"""How many of a precomputed user's items are explained when the version loads (the usual k;
a longer list explains the rest on its first request)."""


def warm_up(snap: Snapshot, config: ServerConfig) -> None:
    """A few real requests per route (known users, an unknown user with session items), with
    explanations, so the first user request finds everything initialised."""
    known = [str(u) for u in snap.user_ids[:WARMUP_USERS].tolist()]
    recent = snap.item_ids[:3]
    for model in ["", *snap.models]:
        for user in [*known, "\x00warmup-unknown-user"]:
            q = scoring.Query(user, 10, model, recent_item_ids=recent, explain=True)
            scoring.recommend(snap, None, config.experiments, q)
    for name in scoring.SIMILAR_MODELS:
        if name in snap.models and snap.item_ids:
            scoring.similar(snap, snap.item_ids[0], 10, name)
    # Every known user's training row as a ready 1-row matrix (about 70 us each to build, so
    # it is done here, off the request path; beyond PREBUILT_ROWS users rows are built lazily).
    for user in range(min(len(snap.user_ids), PREBUILT_ROWS)):
        snap.user_row(user)
    snap.explained.max_users = config.explained_users
    precompute(snap, config.precompute_users)
    if config.warmup_seconds > 0:  # real requests for known users, within the time budget
        end = time.perf_counter() + config.warmup_seconds
        routes = ["", *snap.models]
        for user in snap.user_ids.tolist():
            for model in routes:
                q = scoring.Query(str(user), 10, model, explain=True)
                scoring.recommend(snap, None, config.experiments, q)
            if time.perf_counter() >= end:
                break


def precompute(snap: Snapshot, n_users: int) -> None:
    """Ranks the ``n_users`` most active known users on every hybrid route now, off the
    request path (`RankingCache.precompute`): about 0.15 ms and 1.5 KB per user and route; and
    explains the top EXPLAINED_K of as many of them as `Snapshot.explained` keeps (about
    0.7 ms and 5 KB per user)."""
    caches = list(snap.caches.values())
    if not caches or n_users <= 0:
        return
    active = np.argsort(-np.diff(snap.history.indptr), kind="stable")[:n_users]
    for c in caches:  # room for users who record events, then are ranked anew
        c.keep = 2 * n_users
    for user in active.tolist():
        row = snap.user_row(user)
        for c in caches:
            c.precompute(user, row)
    # and the explanations of their top 10 (as many users as `explained` keeps): a reason
    # depends only on the user's row, so their first request with explain reads them too
    ahead = active[: snap.explained.max_users // len(caches)].tolist()  # none when 0
    for c in caches:
        for user in ahead:
            row = snap.user_row(user)
            rec = snap.rank(c.model, user, row, EXPLAINED_K, None, None)
            scoring.kept_reasons(c.model, user, row, rec.items, snap, {})


def unloadable(root: Path) -> dict[str, tuple[tuple, str, str]]:
    """Entries of the artifacts directory that look like versions but can never be loaded
    (`latest_version` skips them silently): name -> (signature, reason, message). Dot-names
    (a publisher's temp dirs) and plain files are not versions and are left alone."""
    found: dict[str, tuple[tuple, str, str]] = {}
    real_root = root.resolve()
    try:
        entries = list(root.iterdir())
    except OSError:
        return found
    for p in entries:
        name = p.name
        if name.startswith(".") or name.startswith(LATEST):
            continue
        try:
            st = p.lstat()
            if p.is_symlink():
                target = p.resolve()
                reason = "bad_name" if target.is_relative_to(real_root) else "outside_root"
                found[name] = ((st.st_mtime_ns,), reason, f"{p}: a symlink to {target}")
            elif not p.is_dir():
                continue
            elif not is_version_name(name):
                found[name] = (dir_signature(p), "bad_name", f"{p}: not a version name")
            elif not any(p.iterdir()):
                found[name] = ((st.st_mtime_ns,), "empty", f"{p}: an empty directory")
            elif not (p / MANIFEST).is_file():
                found[name] = (dir_signature(p), "missing_manifest", f"{p}: no {MANIFEST}")
        except OSError as e:
            found[name] = ((), "error", f"{p}: {e}")
    return found


class ModelVersions:
    """The serving `State` and its reloads. ``datastore`` holds the recorded events that are
    replayed as live history on top of each version (None: no live history from before)."""

    def __init__(
        self,
        config: ServerConfig,
        metrics: Metrics | None = None,
        on_swap: Callable[[Snapshot], None] | None = None,
        datastore: DataStore | None = None,
    ) -> None:
        if config.artifacts is None:
            raise ValueError("config.artifacts is required")
        self.config = config
        self.datastore = datastore
        self.root = config.artifacts
        self.metrics = metrics
        self.on_swap = on_swap
        self.state: State | None = None
        self._lock = asyncio.Lock()
        self._refused: dict[str, tuple[tuple, str]] = {}  # version -> (dir signature, reason)
        self._unloadable: dict[str, tuple] = {}  # counted damaged entries -> their signature
        self._capture: list[tuple[int, Event]] | None = None  # (seq, event) while loading
        self._missing_warned = False
        self.following = False
        """A follower reads the store (`recsys_server.follow`): folds are deduplicated by seq."""

    @property
    def snapshot(self) -> Snapshot | None:
        s = self.state
        return None if s is None else s.snapshot

    def events_since_training(self) -> float:
        """Stored events after those the serving version was trained on (NaN: no version)."""
        s = self.state
        return math.nan if s is None else float(s.live.seen)

    def fold(self, events: list[Event], seqs: list[int]) -> list[Event]:
        """Folds durably recorded events, stored at ``seqs``, into the live histories (called
        on the event loop); returns those folded. ``following`` (replicas share the store):
        an event is folded once whether the acknowledgement or the follower brings it."""
        s = self.state
        folded = events
        if s is not None:
            if self.following:
                folded = s.live.fold_stored(seqs, events)
            else:
                s.live.fold(events)
        if self._capture is not None:  # a version is loading: its rebuilt histories need them
            self._capture.extend(zip(seqs, events, strict=True))
        return folded if s is not None else []

    def follow(self, stored: list[StoredEvent]) -> list[Event]:
        """Folds what the follower read (another replica's events, or this one's again:
        skipped) and moves the serving history's cursor past it; returns those folded."""
        folded = self.fold([x.event for x in stored], [x.seq for x in stored])
        s = self.state
        if s is not None:
            s.live.cursor.advance(x.seq for x in stored)
        return folded

    async def refresh(self) -> ReloadResult:
        """Loads the newest version if it is new and not refused; never raises for a bad
        version (the old one keeps serving)."""
        async with self._lock:
            return await self._refresh()

    async def _refresh(self) -> ReloadResult:
        current = self.snapshot
        cur_name = current.version if current else ""
        await self._audit(cur_name)
        name = await asyncio.to_thread(latest_version, self.root)
        if name is None:
            if not self._missing_warned:
                log.warning("no model version in %s yet", self.root)
                self._missing_warned = True
            return ReloadResult(cur_name, False, f"no model version in {self.root}")
        if name == cur_name:
            return ReloadResult(cur_name, False, f"already serving {name}")
        path = self.root / name
        sig = await asyncio.to_thread(dir_signature, path)
        refused = self._refused.get(name)
        if refused is not None and refused[0] == sig:
            return ReloadResult(
                cur_name,
                False,
                f"version {name} was refused ({refused[1]}); still serving {cur_name or 'nothing'}",
            )
        store = self.datastore
        if store is not None and store.state != "ok":
            # Its live history cannot be read: wait (the store watch pings it back to "ok")
            # rather than build and warm up a version on every poll only to fail at the replay.
            return ReloadResult(
                cur_name,
                False,
                f"version {name} waits: the data store is unavailable ({store.last_error})",
            )
        t0 = time.perf_counter()
        self._capture = []
        try:
            snap, live, _ = await asyncio.to_thread(self._load, path)
        except StoreUnavailable as e:
            # Not the version's fault: it is tried again at the next poll or reload.
            log.warning("version %s not loaded yet: %s; still serving %s", name, e, cur_name)
            return ReloadResult(
                cur_name,
                False,
                f"version {name} not loaded: the data store is unavailable ({e}); retrying",
            )
        except Exception as e:
            reason = (
                e.reason
                if isinstance(e, ArtifactError)
                else ("warmup_failed" if isinstance(e, WarmupError) else "error")
            )
            self._refused[name] = (sig, reason)
            if self.metrics is not None:
                self.metrics.load_failures.labels(reason).inc()
            log.error(
                "refused model version %s (%s): %s; still serving %s",
                name,
                reason,
                e,
                cur_name or "nothing",
                exc_info=not isinstance(e, ArtifactError),
            )
            return ReloadResult(cur_name, False, f"version {name} refused ({reason}): {e}"[:1000])
        finally:
            pending, self._capture = self._capture, None
        # Events recorded or followed while loading that the store read did not see yet: by
        # the rebuilt history's cursor (above its high mark, or in its gaps), not by a set of
        # the ids read (it would grow with the events replayed).
        live.fold_stored([seq for seq, _ in pending], [e for _, e in pending])
        self.state = State(snap, live)  # the swap: one assignment
        self._refused.pop(name, None)
        seconds = time.perf_counter() - t0
        if self.metrics is not None:
            self.metrics.swapped(snap.version, snap.trained_at.timestamp(), seconds)
        log.info(
            "serving model version %s (%s) after %.2f s; %d live events replayed",
            snap.version,
            ", ".join(snap.models),
            seconds,
            live.events,
        )
        if self.on_swap is not None:
            self.on_swap(snap)
        return ReloadResult(snap.version, True, f"loaded {snap.version} (was {cur_name or 'none'})")

    async def reconfigure(self, config: ServerConfig) -> None:
        """Serves ``config``'s experiments from now on (a configuration reload): the serving
        version's variant routes are rebuilt off the event loop, then swapped in. Under the
        reload lock: a version loading meanwhile is finished first, one loaded later is built
        for the new experiments."""
        async with self._lock:
            s = self.state
            if s is not None and s.snapshot.experiments != config.experiments:
                snap = await asyncio.to_thread(with_experiments, s.snapshot, config.experiments)
                self.state = State(snap, s.live)  # the swap: one assignment
            self.config = config

    async def _audit(self, cur_name: str) -> None:
        """Counts each damaged directory once per state (refused with its reason, like a
        version that fails to load), instead of skipping it without a trace."""
        found = await asyncio.to_thread(unloadable, self.root)
        for name, (sig, reason, message) in found.items():
            if self._unloadable.get(name) == sig:
                continue
            self._unloadable[name] = sig
            if self.metrics is not None:
                self.metrics.load_failures.labels(reason).inc()
            log.error("refused %s (%s): %s; still serving %s", name, reason, message, cur_name)
        for name in set(self._unloadable) - set(found):
            del self._unloadable[name]

    def _load(self, path: Path) -> tuple[Snapshot, LiveHistory, int]:
        snap = build(path, self.config.experiments, self.config.default_model, self.config.verbs)
        try:
            warm_up(snap, self.config)
        except Exception as e:
            raise WarmupError(f"{type(e).__name__}: {e}") from e
        live, read_up_to = LiveHistory.from_store(self.datastore, snap.store_seq, snap.item_index)
        return snap, live, read_up_to

    async def poll_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("model poll failed")
            await asyncio.sleep(self.config.poll_seconds)
