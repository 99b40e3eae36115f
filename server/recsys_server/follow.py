"""The store follower: with several replicas on one PostgreSQL store, each folds the events
and catalogue changes the OTHERS stored into its own live state.

A replica folds what it acknowledges itself at once (`RecommenderCore.record`). The follower
reads the rest through a change feed (`recsys_core.datastore.feed`): events whose seq the
serving history's cursor does not cover yet (its own come back too and are skipped by seq),
and catalogue rows changed after the highest change seq held. It wakes when PostgreSQL
notifies a commit by another replica (LISTEN/NOTIFY), else every ``poll_seconds``.

Reads run in a worker thread; folding is a short step on the event loop, so Recommend never
waits for the follower. While the store is unavailable the follower only waits (the store
watch pings it back); on a model version swap it continues from the new history's cursor.
"""

from __future__ import annotations

import asyncio
import logging
import time

from recsys_core.datastore import DataStore, StoreUnavailable
from recsys_core.datastore.feed import ChangeFeed
from recsys_server.catalogue import Catalogue
from recsys_server.metrics import Metrics
from recsys_server.model_versions import ModelVersions

log = logging.getLogger(__name__)

READ_LIMIT = 2000
"""Events per read: bounds one fold step on the event loop (a backlog takes several)."""


class Follower:
    def __init__(
        self,
        store: DataStore,
        feed: ChangeFeed,
        versions: ModelVersions,
        catalogue: Catalogue,
        metrics: Metrics | None = None,
        *,
        poll_seconds: float = 1.0,
    ) -> None:
        self.store = store
        self.feed = feed
        self.versions = versions
        self.catalogue = catalogue
        self.metrics = metrics
        self.poll_seconds = poll_seconds
        self.folded = 0  # events of other replicas folded
        self.items = 0  # catalogue records of other replicas applied
        self.lag_seqs = 0
        self.caught_up_at = time.monotonic()
        self.caught_up = False
        if metrics is not None:
            metrics.follower(self)

    def lag_seconds(self) -> float:
        """0 when the last read found everything stored; else the time since one did."""
        return 0.0 if self.caught_up else time.monotonic() - self.caught_up_at

    async def run(self) -> None:
        """Runs until cancelled."""
        while True:
            try:
                more = await self.step()
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as e:  # the store watch reports it and pings it back
                log.debug("follower: %s", e)
                more = False
            except Exception:
                log.exception("follower step failed")
                more = False
            if more:
                await asyncio.sleep(0)  # a backlog: read on, letting requests in between
            else:
                await self.feed.wait(self.poll_seconds)

    async def step(self) -> bool:
        """One read and fold; True when there is more to read at once."""
        state = self.versions.state
        if state is None or self.store.state != "ok":
            self.caught_up = False
            return False
        wanted = state.live.cursor.wanted()
        item_seq = self.catalogue.max_seq
        batch = await asyncio.to_thread(self.feed.read, wanted, item_seq, READ_LIMIT)
        now = time.time()
        folded = self.versions.follow(batch.events)
        s = self.versions.state
        applied = self.catalogue.apply(batch.items, s.snapshot if s is not None else None)
        cursor = s.live.cursor if s is not None else state.live.cursor
        self.lag_seqs = max(0, batch.head - cursor.high) + len(cursor.gaps)
        self.folded += len(folded)
        self.items += applied
        if self.metrics is not None:
            ids = {id(e) for e in folded}
            delays = [
                max(0.0, now - at)
                for x, at in zip(batch.events, batch.stored_at, strict=True)
                if id(x.event) in ids
            ]
            self.metrics.followed(len(folded), applied, delays)
        if not batch.full:
            self.caught_up = True
            self.caught_up_at = time.monotonic()
        return batch.full
