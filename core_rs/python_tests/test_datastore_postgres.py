"""PostgreSQL-only behaviour of the data store: the server going away and coming back, and the
errors for a URL that cannot work. The contract every backend keeps is test_datastore.py.

These run a real server (the root conftest's ``postgres_server``); they stop and restart it.
"""

from __future__ import annotations

import asyncio
import socket
import time

import psycopg
import pytest

from recsys_core.datastore import StoreConfigError, StoreUnavailable, open_store, redact
from recsys_core.datastore.postgres import PostgresStore
from recsys_core.events import Event

# Short timeouts so an outage fails calls in about a second; the reconnect bound keeps the
# pool's backoff from outlasting the test's outage by much.
FAST = {"connect_timeout": 1, "reconnect_timeout": 2.0}


def event(n: int, user: str = "u1") -> Event:
    return Event(f"e{n}", user, f"i{n % 13}", "click", 1_700_000_000.0 + n)


async def until(what: str, check, limit: float = 60.0) -> None:
    """Waits until ``check()`` is true. The limit only keeps a broken store from hanging the
    run; no assertion depends on how long it took."""
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting for {what} after {limit:g} s")
        await asyncio.sleep(0.02)


def stored_ids(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT event_id FROM events").fetchall()}


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_server_stopped_and_restarted_under_load(postgres_server, postgres_dsn, mode):
    """Writers keep appending while the server is stopped (``fast``: connections terminated;
    ``immediate``: the server crashes) and started again. Every acknowledged event survives,
    a failed call stores none of its events, and the same store object commits again once the
    server is back."""
    store = PostgresStore(postgres_dsn, **FAST)
    acked: list[list[Event]] = []
    failed: list[list[Event]] = []

    async def writer(w: int, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            batch = [event(w * 1_000_000 + n + k, f"u{w}") for k in range(5)]
            n += 5
            try:
                result = await store.append(batch)
            except StoreUnavailable:
                failed.append(batch)
                await asyncio.sleep(0.05)
            else:
                assert result.duplicates == 0
                acked.append(batch)

    async def scenario() -> None:
        stop = asyncio.Event()
        writers = [asyncio.create_task(writer(w, stop)) for w in range(8)]
        await until("40 acknowledged appends", lambda: len(acked) >= 40)
        acked_before = len(acked)
        await asyncio.to_thread(postgres_server.stop, mode)
        await until("3 failed commits", lambda: store.commit_errors >= 3)
        assert store.state == "unavailable"
        assert store.url in store.last_error
        await asyncio.to_thread(postgres_server.start)
        # Writers recover on their own: wait for commits after the restart.
        recovered = store.commits
        await until("5 commits after the restart", lambda: store.commits >= recovered + 5)
        stop.set()
        await asyncio.gather(*writers)
        assert len(acked) > acked_before

    try:
        asyncio.run(scenario())
        assert store.state == "ok"
        assert failed, "no append failed while the server was down"
        ids = stored_ids(postgres_dsn)
        for batch in acked:
            assert {e.event_id for e in batch} <= ids
        # All or nothing: a failed call is never half-stored. It may be wholly stored: when
        # the connection dies during COMMIT, the server can have committed a transaction
        # whose acknowledgement never arrived (no client can know; a retry is safe).
        already = 0
        for batch in failed:
            present = {e.event_id for e in batch} & ids
            assert present in (set(), {e.event_id for e in batch})
            already += len(present)
        assert store.events_committed == 5 * len(acked)
        assert store.count() == len(ids) == 5 * len(acked) + already
        # Retrying every failed call is safe: what a failed call did store comes back as
        # duplicates, the rest is recorded.
        recorded, duplicates = asyncio.run(_retry_all(store, failed))
        assert (recorded, duplicates) == (5 * len(failed) - already, already)
        assert store.count() == 5 * (len(acked) + len(failed))
    finally:
        store.close_sync()


async def _retry_all(store: PostgresStore, calls: list[list[Event]]) -> tuple[int, int]:
    results = await asyncio.gather(*(store.append(batch) for batch in calls))
    return sum(len(r.recorded) for r in results), sum(r.duplicates for r in results)


def wait_for(what: str, check, limit: float = 60.0) -> None:
    """`until` for synchronous tests."""
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting for {what} after {limit:g} s")
        time.sleep(0.05)


def test_ping_and_reads_follow_the_server(postgres_server, postgres_dsn):
    store = PostgresStore(postgres_dsn, **FAST)
    try:
        asyncio.run(store.append([event(1), event(2)]))
        assert store.ping() and store.state == "ok"
        postgres_server.stop("fast")
        assert not store.ping()
        assert store.state == "unavailable"
        assert store.url in store.last_error
        for read in (store.count, store.max_seq, lambda: list(store.read_events())):
            with pytest.raises(StoreUnavailable):
                read()
        with pytest.raises(StoreUnavailable):
            store.events_frame()
        postgres_server.start()
        wait_for("a successful ping", store.ping)
        assert store.state == "ok"
        assert store.count() == 2
        assert [s.event.event_id for s in store.read_events()] == ["e1", "e2"]
    finally:
        store.close_sync()


def test_a_lock_timeout_fails_the_commit_and_stores_nothing(postgres_dsn):
    store = PostgresStore(postgres_dsn, lock_timeout_ms=200)
    try:
        with psycopg.connect(postgres_dsn) as blocker:
            blocker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(StoreUnavailable, match="lock timeout"):
                asyncio.run(store.append([event(1), event(2)]))
            assert store.state == "unavailable"
            assert (store.commits, store.commit_errors) == (0, 1)
            blocker.rollback()
        result = asyncio.run(store.append([event(1), event(2), event(3)]))
        assert [e.event_id for e in result.recorded] == ["e1", "e2", "e3"]
        assert store.state == "ok"
        assert (store.count(), store.commits, store.commit_errors) == (3, 1, 1)
    finally:
        store.close_sync()


def test_an_event_postgres_cannot_hold_fails_its_own_call_only(postgres_dsn):
    store = PostgresStore(postgres_dsn)

    async def both() -> list[object]:
        good = store.append([event(1)])
        bad = store.append([Event("e\x00nul", "u1", "i1", "click", 1.0)])
        return await asyncio.gather(good, bad, return_exceptions=True)

    try:
        good, bad = asyncio.run(both())
        assert isinstance(bad, ValueError) and "NUL" in str(bad)
        assert [e.event_id for e in good.recorded] == ["e1"]
        assert store.count() == 1 and store.commit_errors == 0
    finally:
        store.close_sync()


def test_postgres_scheme_alias_and_reopening(postgres_dsn):
    alias = "postgres://" + postgres_dsn.split("://", 1)[1]
    for opening in range(2):  # the second open finds the schema in place
        store = open_store(alias)
        try:
            assert isinstance(store, PostgresStore)
            assert asyncio.run(store.append([event(1)])).duplicates == opening
        finally:
            store.close_sync()
    assert stored_ids(postgres_dsn) == {"e1"}


def unused_port() -> socket.socket:
    """A loopback port bound but not listening: connections to it are refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


def test_urls_that_cannot_work_are_named_with_the_password_hidden(postgres_server):
    secret = "hunter2%2Fsecret"  # percent-encoded "/" in the password
    host = f"127.0.0.1:{postgres_server.port}"
    config_errors = {
        f"postgresql://recsys:{postgres_server.password}@{host}/no_such_db": "does not exist",
        f"postgresql://recsys:{secret}@{host}/postgres": "password authentication failed",
        f"postgresql://nobody:{secret}@{host}/postgres": "password authentication failed",
        f"postgresql://recsys:{secret}@127.0.0.1:port/postgres": "port",
        f"postgresql://recsys:{secret}@{host}/postgres?no_such_option=1": "no_such_option",
    }
    for url, reason in config_errors.items():
        with pytest.raises(StoreConfigError) as info:
            PostgresStore(url, connect_timeout=2)
        message = str(info.value)
        assert redact(url) in message, message
        assert reason in message, message
        assert "hunter2" not in message and postgres_server.password not in message, message
    with unused_port() as closed:
        url = f"postgresql://recsys:{secret}@127.0.0.1:{closed.getsockname()[1]}/postgres"
        with pytest.raises(StoreUnavailable) as info:
            PostgresStore(url, connect_timeout=2)
    assert redact(url) in str(info.value) and "hunter2" not in str(info.value)
    assert "refused" in str(info.value)
