"""Follows the data store's state for health and logs, and pings the store back to life.

The store's ``state`` turns "unavailable" when a commit, read or ping fails and "ok" after the
next success (`DataStore.state`). While it is unavailable no write may come to prove it is
back, so `watch` pings it with backoff (``first`` seconds, doubling up to ``most``); a ping
that answers makes it "ok" again. Each change of state is passed to ``on_change`` (the server
sets the health status of `STORE_SERVICE` from it). Recommend never waits for any of this.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from recsys_core.datastore import DataStore

log = logging.getLogger(__name__)

STORE_SERVICE = "recsys.datastore"
"""gRPC health service name reporting the data store: SERVING while it answers."""


async def watch(
    store: DataStore,
    on_change: Callable[[str], None],
    *,
    every: float = 0.5,
    first: float = 0.5,
    most: float = 30.0,
) -> None:
    """Runs until cancelled; ``every``: how often the state is looked at while it is ok."""
    reported = store.state
    delay = first
    while True:
        if store.state != "ok":
            await asyncio.to_thread(store.ping)
        state = store.state
        if state != reported:
            if state == "ok":
                log.info("data store %s answers again", store.url)
            else:
                log.warning("data store %s unavailable: %s", store.url, store.last_error)
            on_change(state)
            reported = state
        if state == "ok":
            delay = first
            await asyncio.sleep(every)
        else:
            await asyncio.sleep(delay)
            delay = min(2 * delay, most)
