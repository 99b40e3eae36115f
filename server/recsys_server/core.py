"""The serving core behind the gRPC servicer (KServe style: the servicer only converts messages).
Everything here speaks plain Python types and raises `recsys_server.errors`."""

from __future__ import annotations

import asyncio
import errno
import json
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from recsys_core.datastore import DataStore, ItemChange, StoreUnavailable
from recsys_core.events import Event
from recsys_server import catalogue, history, scoring
from recsys_server.catalogue import Catalogue
from recsys_server.config import Experiment, ServerConfig
from recsys_server.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from recsys_server.experiments import report
from recsys_server.impressions import ImpressionRecorder, new_id
from recsys_server.live import EVENT_TYPES
from recsys_server.metrics import Metrics
from recsys_server.model_versions import ModelVersions, ReloadResult, State
from recsys_server.scoring import Answer, Query, SimilarAnswer

MAX_BATCH = 1000
MAX_EVENTS = 1000
MAX_EVENT_ID = 128
MAX_RECOMMENDATION_ID = 128
STORE_WRITE_FAILED = "data store write failed"


@dataclass(slots=True)
class Interaction:
    event_id: str
    user_id: str
    item_id: str
    event_type: str
    timestamp: float | None = None
    """Unix seconds; None: now."""
    rating: float = 0.0
    recommendation_id: str = ""
    """The RecommendResponse.recommendation_id the event came from ("": not given)."""
    position: int = 0
    """The item's 1-based position in that answer (0: not given)."""


@dataclass(slots=True)
class ModelInfo:
    name: str
    version: str
    trained_at: datetime
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class ModelsAnswer:
    models: list[ModelInfo]
    version: str
    default_model: str


def check_interaction(e: Interaction, prefix: str) -> None:
    if not e.event_id:
        raise InvalidArgument(prefix + "event_id", "must not be empty")
    if len(e.event_id) > MAX_EVENT_ID:
        raise InvalidArgument(prefix + "event_id", f"longer than {MAX_EVENT_ID} characters")
    scoring.check_id(e.user_id, prefix + "user_id")
    scoring.check_id(e.item_id, prefix + "item_id")
    for name in ("event_id", "user_id", "item_id"):
        if "\x00" in getattr(e, name):  # PostgreSQL text cannot hold it: refused everywhere
            raise InvalidArgument(prefix + name, "must not contain NUL (\\x00)")
    if e.event_type not in EVENT_TYPES:
        raise InvalidArgument(
            prefix + "event_type", f"must be one of {', '.join(EVENT_TYPES)}, got {e.event_type!r}"
        )
    if e.event_type == "rating":
        if not (math.isfinite(e.rating) and e.rating > 0):
            raise InvalidArgument(
                prefix + "rating", f"a rating event needs a positive rating, got {e.rating}"
            )
    elif e.rating != 0:
        raise InvalidArgument(prefix + "rating", "only rating events carry a rating")
    if e.timestamp is not None and not (math.isfinite(e.timestamp) and e.timestamp >= 0):
        raise InvalidArgument(prefix + "timestamp", "must be a time after 1970")
    if len(e.recommendation_id) > MAX_RECOMMENDATION_ID:
        raise InvalidArgument(
            prefix + "recommendation_id", f"longer than {MAX_RECOMMENDATION_ID} characters"
        )
    if "\x00" in e.recommendation_id:
        raise InvalidArgument(prefix + "recommendation_id", "must not contain NUL (\\x00)")
    if e.position < 0:
        raise InvalidArgument(prefix + "position", f"must be >= 0 (0: not given), got {e.position}")


def _flat(params: Any, prefix: str = "") -> dict[str, str]:
    """Nested parameters as ``a.b -> str(value)``."""
    out: dict[str, str] = {}
    if isinstance(params, dict):
        for k, v in params.items():
            out.update(_flat(v, f"{prefix}{k}."))
    elif isinstance(params, list):  # e.g. the tuner's trials: one JSON value
        out[prefix[:-1]] = json.dumps(params, sort_keys=True)
    else:
        out[prefix[:-1]] = str(params)
    return out


class RecommenderCore:
    def __init__(
        self,
        config: ServerConfig,
        versions: ModelVersions,
        datastore: DataStore | None,
        metrics: Metrics | None = None,
        catalogue: Catalogue | None = None,
        impressions: ImpressionRecorder | None = None,
    ) -> None:
        self.config = config
        self.impressions = impressions
        """Records each answer's impression (None: impression_queue = 0, no ids either)."""
        self.catalogue = catalogue if catalogue is not None else Catalogue()
        self.versions = versions
        self.datastore = datastore
        self.metrics = metrics
        self._reports: dict[str, asyncio.Future] = {}
        """Experiment reports being built, by experiment (shared by concurrent calls)."""
        if metrics is not None:  # the drift and freshness gauges read these at scrape time
            metrics.watch(lambda: versions.snapshot, versions.events_since_training)

    def state(self) -> State:
        s = self.versions.state
        if s is None:
            raise Unavailable("no model loaded yet; try again shortly")
        return s

    # -- reads -------------------------------------------------------------------------------

    def recommend(self, q: Query) -> Answer:
        scoring.check_query(q)
        s = self.state()
        a = scoring.recommend(s.snapshot, s.live, self.config.experiments, q, self.catalogue)
        if self.metrics is not None:
            self.metrics.served(a.model, a.experiment, a.variant, a.tier, a.items)
        self.impress(a)
        return a

    def impress(self, a: Answer) -> None:
        """Give ``a`` its recommendation_id and queue its impression (no I/O here)."""
        if self.impressions is not None:
            a.recommendation_id = new_id()
            self.impressions.add(a.recommendation_id, a, time.time())

    async def recommend_batch(
        self, queries: Sequence[Query], deadline: float | None = None
    ) -> list[Answer]:
        """Every query answered in one version. ``deadline`` (a ``time.monotonic()`` instant,
        the caller's): the worker stops at it by itself, however late the event loop learns
        that the call is over, so work is never done for an answer nobody will read."""
        if len(queries) > MAX_BATCH:
            raise InvalidArgument("requests", f"at most {MAX_BATCH}, got {len(queries)}")
        for n, q in enumerate(queries):
            scoring.check_query(q, f"requests[{n}].")
        s = self.state()  # one version for the whole batch
        exps = self.config.experiments
        cat = self.catalogue

        stop = threading.Event()  # set when the caller gave up (deadline, cancel)
        gate = threading.Lock()  # orders the start of the work against the caller giving up
        began = False

        def abandoned() -> None:
            if self.metrics is not None:
                self.metrics.abandoned.labels("RecommendBatch").inc()

        def run() -> list[Answer]:
            nonlocal began
            with gate:
                if stop.is_set():  # gave up before the work began: counted below
                    return []
                began = True
            out = []
            for n, q in enumerate(queries):
                if stop.is_set():  # nobody waits for the answer: stop working for it
                    abandoned()
                    return out
                if deadline is not None and time.monotonic() >= deadline:
                    abandoned()
                    raise DeadlineExceeded(
                        f"deadline passed after {n} of {len(queries)} requests; nothing returned"
                    )
                out.append(scoring.recommend(s.snapshot, s.live, exps, q, cat))
            return out

        try:
            answers = await asyncio.to_thread(run) if len(queries) > 1 else run()
        except asyncio.CancelledError:
            with gate:
                stop.set()
                if not began:  # still waiting for a worker thread: it will do nothing
                    abandoned()
            raise
        for a in answers:
            if self.metrics is not None:
                self.metrics.served(a.model, a.experiment, a.variant, a.tier, a.items)
            self.impress(a)
        return answers

    def similar(self, item_id: str, k: int, model: str = "") -> SimilarAnswer:
        scoring.check_id(item_id, "item_id")
        scoring.check_k(k)
        return scoring.similar(self.state().snapshot, item_id, k, model, self.catalogue)

    def models(self) -> ModelsAnswer:
        snap = self.state().snapshot
        all_metrics = snap.manifest.get("metrics") or {}
        entries = snap.manifest.get("models") or {}
        out = []
        for name in snap.models:
            raw = all_metrics.get(name) if isinstance(all_metrics, dict) else None
            metrics = {
                k: float(v)
                for k, v in (raw or {}).items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            }
            entry = entries.get(name) if isinstance(entries, dict) else None
            # what the fit built (e.g. svd's index.scoring) is shown with the parameters
            params = (
                _flat(entry.get("params", {})) | _flat(entry.get("info") or {})
                if isinstance(entry, dict)
                else {}
            )
            out.append(ModelInfo(name, snap.version, snap.trained_at, metrics, params))
        return ModelsAnswer(out, snap.version, snap.default_model)

    # -- writes ------------------------------------------------------------------------------

    async def record(self, interactions: Sequence[Interaction]) -> tuple[int, int]:
        """Durably appends the events (idempotent by event_id), then folds the newly recorded
        ones into the live histories. Returns (recorded, duplicates)."""
        if len(interactions) > MAX_EVENTS:
            raise InvalidArgument("events", f"at most {MAX_EVENTS}, got {len(interactions)}")
        now = time.time()
        events = []
        for n, i in enumerate(interactions):
            check_interaction(i, f"events[{n}].")
            events.append(
                Event(
                    i.event_id,
                    i.user_id,
                    i.item_id,
                    i.event_type,
                    now if i.timestamp is None else i.timestamp,
                    i.rating if i.event_type == "rating" else None,
                    i.recommendation_id or None,
                    i.position or None,
                )
            )
        if not events:
            return 0, 0
        if self.datastore is None:
            raise Unavailable("the data store is not open")
        try:
            result = await self.datastore.append(events)
        except StoreUnavailable as e:
            # Not acknowledged (normally not stored either); a retry is safe: stored ids come
            # back as duplicates.
            raise write_failed(e) from e
        # Recovered: stored by an earlier call that was answered UNAVAILABLE.
        rec = result.recovered
        self.versions.fold(
            [r.event for r in rec] + result.recorded, [r.seq for r in rec] + result.seqs
        )
        if self.metrics is not None:
            self.metrics.recovered.inc(len(rec))
            self.metrics.recorded.inc(len(result.recorded))
            self.count_outcomes(result.recorded)
        return len(result.recorded), result.duplicates

    def count_outcomes(self, events: Sequence[Event]) -> None:
        """``recsys_outcomes_total``: each newly recorded outcome event credited to the
        experiment and variant of the recent impression it is attributed to (when known in
        memory; the report attributes from the store)."""
        if self.impressions is None or self.metrics is None:
            return
        o = self.config.outcomes
        window = self.config.attribution_hours * 3600.0
        for e in events:
            kinds = o.kinds(e.event_type)
            if not kinds:
                continue
            hit = self.impressions.recent.credit(e, window)
            if hit is not None:
                for kind in kinds:
                    # A value event is worth its rating when it carries one, else 1.
                    worth = e.rating if kind == "value" and e.rating is not None else 1.0
                    self.metrics.outcome(hit[0], hit[1], kind, worth)

    async def change_items(self, changes: Sequence[ItemChange]) -> tuple[int, int]:
        """Durably applies catalogue changes (validated first: all or nothing), then serves
        them. Returns (changed, unchanged)."""
        if self.datastore is None:
            raise Unavailable("the data store is not open")
        try:
            stored = await self.datastore.change_items(changes)
        except StoreUnavailable as e:
            raise write_failed(e) from e
        # No await between the commit's answer and this: callers resume in commit order (the
        # writer settles a batch's calls in queue order and the next batch only after they
        # resumed), so the in-memory catalogue follows the store's last-write-wins order.
        s = self.versions.state
        self.catalogue.apply(stored, s.snapshot if s is not None else None)
        changed = sum(r is not None for r in stored)
        return changed, len(stored) - changed

    async def upsert_items(self, changes: Sequence[ItemChange]) -> tuple[int, int]:
        catalogue.check_upserts(changes)
        return await self.change_items(changes)

    async def set_availability(self, item_ids: Sequence[str], available: bool) -> tuple[int, int]:
        catalogue.check_ids(item_ids)
        snap = self.state().snapshot
        for n, i in enumerate(item_ids):
            if not self.catalogue.known(snap, i):
                raise NotFound(f"item_ids[{n}]: item {i!r} is not in the catalogue")
        return await self.change_items(
            [ItemChange(i, False, available=available) for i in item_ids]
        )

    def get_item(self, item_id: str) -> catalogue.ItemView:
        scoring.check_id(item_id, "item_id")
        return self.catalogue.get(self.state().snapshot, item_id)

    def list_items(
        self, page_size: int, page_token: str, available: bool | None
    ) -> tuple[list[catalogue.ItemView], str]:
        return self.catalogue.page(self.state().snapshot, page_size, page_token, available)

    async def user_history(self, user_id: str, limit: int) -> history.UserHistory:
        scoring.check_id(user_id, "user_id")
        if not 0 <= limit <= history.MAX_EVENTS:
            raise InvalidArgument("limit", f"must be in 0..{history.MAX_EVENTS}, got {limit}")
        snap = self.state().snapshot
        stored = []
        if self.datastore is not None:
            try:
                stored = await asyncio.to_thread(
                    self.datastore.user_history, user_id, limit or history.DEFAULT_EVENTS
                )
            except StoreUnavailable as e:
                raise Unavailable(f"data store read failed: {e}") from e
        return history.build(snap, self.catalogue, user_id, stored)

    async def experiment_report(self, name: str) -> report.Report:
        """The report of the configured experiment ``name`` from the stored impressions and
        events (read and computed off the event loop). Calls for an experiment whose report
        is being built share that build: a dashboard polling from many tabs costs one."""
        if not name:
            raise InvalidArgument("experiment", "must not be empty")
        exps = self.config.experiments
        exp = next((e for e in exps if e.name == name), None)
        if exp is None:
            known = ", ".join(repr(e.name) for e in exps) or "none"
            raise NotFound(f"experiment {name!r} is not configured; configured: {known}")
        if self.datastore is None:
            raise Unavailable("the data store is not open")
        building = self._reports.get(name)
        if building is None:
            building = asyncio.ensure_future(self._build_report(exp))
            self._reports[name] = building
            building.add_done_callback(lambda t: self._report_done(name, t))
        # Shielded: one caller giving up does not cancel the build the others wait for.
        return await asyncio.shield(building)

    def _report_done(self, name: str, t: asyncio.Future) -> None:
        if self._reports.get(name) is t:
            del self._reports[name]
        if not t.cancelled():
            t.exception()  # retrieved even when every caller gave up (no "never retrieved")

    async def _build_report(self, exp: Experiment) -> report.Report:
        store = self.datastore
        assert store is not None

        def read() -> tuple[Any, Any]:
            return store.impressions(exp.name), store.experiment_events(exp.name)

        try:
            impressions, events = await asyncio.to_thread(read)
        except StoreUnavailable as e:
            raise Unavailable(f"data store read failed: {e}") from e
        dropped = self.impressions.dropped if self.impressions is not None else 0
        window = self.config.attribution_hours * 3600.0
        outcomes = self.config.outcomes
        return await asyncio.to_thread(
            report.build, exp, outcomes, window, impressions, events, dropped
        )

    async def reload(self) -> ReloadResult:
        return await self.versions.refresh()


def write_failed(e: StoreUnavailable) -> ResourceExhausted | Unavailable:
    """A failed store write as the caller sees it: RESOURCE_EXHAUSTED when the disk is full,
    else UNAVAILABLE; the store's message names it (file or redacted URL)."""
    msg = f"{STORE_WRITE_FAILED}: {e}"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted(msg)
    return Unavailable(msg)
