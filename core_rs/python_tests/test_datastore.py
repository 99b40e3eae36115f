"""The data store contract, run against every backend, plus SQLite's open-time checks.

Contract tests take the ``store_url`` / ``store`` fixtures, parametrised over `BACKENDS`. The
few things that need backend-specific SQL (hold the write lock from another connection, make
commits fail for real, tamper with schema_version) are the helpers below, one branch per
backend. No mocks: failures are real database errors (SQLite's ``max_page_count`` gives the
genuine SQLITE_FULL "database or disk is full").
"""

import asyncio
import contextlib
import errno
import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from recsys_core.datastore import (
    AppendResult,
    StoreClosed,
    StoreConfigError,
    StoreConflict,
    StoreUnavailable,
    open_store,
    parse_store_url,
    redact,
)
from recsys_core.datastore.schema import SCHEMA_VERSION
from recsys_core.datastore.sqlite import SQLiteStore
from recsys_core.events import Event

# PostgreSQL runs on a real server the repo-root conftest.py starts (``postgres_dsn``: a fresh
# database per test). It is requested with getfixturevalue, so when PostgreSQL is missing or
# cannot start, those tests FAIL with the reason; they never skip.
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/events.db"  # tmp_path is absolute: sqlite:////tmp/...
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_dsn")  # a fresh database per test
    raise AssertionError(f"unknown backend {request.param}")


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close_sync()


def ev(i: int, prefix: str = "e", *, user: str | None = None, rating: float | None = None):
    kind = "click" if rating is None else "rating"
    return Event(
        f"{prefix}{i}", user or f"u{i % 3}", f"i{i % 7}", kind, 1_700_000_000.0 + i, rating
    )


def ids(events) -> list[str]:
    return [e.event_id for e in events]


def stored_ids(store) -> list[str]:
    return [s.event.event_id for s in store.read_events()]


# -- backend-specific helpers ---------------------------------------------------------------


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def raw_execute(url: str, sql: str) -> list[tuple]:
    """Run one statement on a connection of its own, committed."""
    if is_sqlite(url):
        conn = sqlite3.connect(parse_store_url(url).path, isolation_level=None)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description else []


@contextlib.contextmanager
def hold_write_lock(url: str):
    """Hold the events table's write lock from another connection: the store's writer waits,
    so appends made meanwhile queue up and reach the database together on release."""
    if is_sqlite(url):
        conn = sqlite3.connect(parse_store_url(url).path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute("LOCK TABLE events IN SHARE MODE")  # blocks INSERT, not SELECT
        yield
        conn.rollback()


MARKER = Event("marker", "m", "m", "click", 0.0)


@contextlib.asynccontextmanager
async def one_commit(store, url: str):
    """Appends made inside the block are committed together, in one transaction, when it ends.

    Holds the write lock and appends `MARKER`; once the writer has taken the marker's call off
    the queue it is blocked in that commit, so the calls made meanwhile all wait in the queue
    and form the next batch (within max_batch). The marker is stored in its own commit."""
    with hold_write_lock(url):
        marker = asyncio.create_task(store.append([MARKER]))
        await asyncio.sleep(0)
        while store._writer._queue:  # not yet taken by the writer thread
            await asyncio.sleep(0.001)
        yield
        await asyncio.sleep(0)  # the calls made in the block have queued
    await marker


@contextlib.contextmanager
def poisoned(url: str, event_id: str):
    """A trigger that makes inserting ``event_id`` fail: a real error raised by the database
    in the middle of a transaction, at a row we choose."""
    if is_sqlite(url):
        raw_execute(
            url,
            f"CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.event_id = '{event_id}' "
            "BEGIN SELECT RAISE(ABORT, 'poisoned event'); END",
        )
        try:
            yield
        finally:
            raw_execute(url, "DROP TRIGGER poison")
        return
    raw_execute(
        url,
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'poisoned event'; END $$",
    )
    raw_execute(
        url,
        "CREATE TRIGGER poison BEFORE INSERT ON events FOR EACH ROW "
        f"WHEN (NEW.event_id = '{event_id}') EXECUTE FUNCTION poison()",
    )
    try:
        yield
    finally:
        raw_execute(url, "DROP TRIGGER poison ON events")
        raw_execute(url, "DROP FUNCTION poison()")


# -- appends and idempotency ----------------------------------------------------------------


def test_duplicates_within_a_call_and_across_calls(store):
    async def main():
        first = await store.append([ev(1), ev(2), ev(1), ev(3)])
        assert ids(first.recorded) == ["e1", "e2", "e3"] and first.duplicates == 1
        again = await store.append([ev(3), ev(4), ev(2), ev(4)])
        assert ids(again.recorded) == ["e4"] and again.duplicates == 3
        retry = await store.append([ev(1), ev(2), ev(3), ev(4)])
        assert retry == AppendResult([], 4, [])
        return first, again

    first, again = asyncio.run(main())
    assert stored_ids(store) == ["e1", "e2", "e3", "e4"]
    # Each recorded event comes with the seq it was stored at.
    seq_of = {s.event.event_id: s.seq for s in store.read_events()}
    for r in (first, again):
        assert r.seqs == [seq_of[e.event_id] for e in r.recorded]
    assert store.count() == 4 and store.events_committed == 4 and store.duplicates == 8


def test_a_repeated_id_keeps_the_first_stored_event(store):
    async def main():
        await store.append([ev(1, user="alice")])
        res = await store.append([ev(1, user="bob")])  # same id, other content: a retry
        assert res.recorded == [] and res.duplicates == 1

    asyncio.run(main())
    assert [s.event.user_id for s in store.read_events()] == ["alice"]


@pytest.mark.parametrize("same_commit", [True, False])
def test_concurrent_appends_of_one_id_store_it_once(store, store_url, same_commit):
    """Two tasks append the same events at once: each is stored once and exactly one call
    reports it recorded, whether the calls share a commit or not."""

    async def main():
        a_events = [ev(1), ev(2), ev(3)]
        b_events = [ev(3, user="bob"), ev(2, user="bob"), ev(4, user="bob")]  # same ids
        if same_commit:
            async with one_commit(store, store_url):
                a = asyncio.create_task(store.append(a_events))
                b = asyncio.create_task(store.append(b_events))
            ra, rb = await asyncio.gather(a, b)
        else:
            ra, rb = await asyncio.gather(store.append(a_events), store.append(b_events))
        recorded = ids(ra.recorded) + ids(rb.recorded)
        assert sorted(recorded) == ["e1", "e2", "e3", "e4"]  # each id in exactly one result
        assert ra.duplicates + rb.duplicates == 2
        return ra.recorded + rb.recorded, ra.seqs + rb.seqs

    recorded, seqs = asyncio.run(main())
    # The call that reports an event recorded is the one whose copy was stored, at that seq.
    assert {s.event for s in store.read_events()} - {MARKER} == set(recorded)
    stored = {(s.seq, s.event) for s in store.read_events() if s.event != MARKER}
    assert stored == set(zip(seqs, recorded, strict=True))


def test_many_same_id_callers_one_winner(store):
    async def main():
        results = await asyncio.gather(*[store.append([ev(7)]) for _ in range(50)])
        assert sum(len(r.recorded) for r in results) == 1
        assert sum(r.duplicates for r in results) == 49

    asyncio.run(main())
    assert stored_ids(store) == ["e7"]


def test_concurrent_appends_share_commits(store, store_url):
    """200 calls queued while the writer is busy go out in one commit."""

    async def main():
        async with one_commit(store, store_url):
            tasks = [asyncio.create_task(store.append([ev(i)])) for i in range(200)]
        results = await asyncio.gather(*tasks)
        assert all(len(r.recorded) == 1 for r in results)

    asyncio.run(main())
    assert store.count() == 201 and store.events_committed == 201
    assert store.commits == 2  # the marker's, and one for the 200 calls
    assert stored_ids(store) == ["marker"] + [f"e{i}" for i in range(200)]


def test_uncoordinated_concurrent_appends_share_commits(store):
    async def main():
        await asyncio.gather(*[store.append([ev(i), ev(i + 1000)]) for i in range(200)])

    asyncio.run(main())
    assert store.count() == 400 and store.events_committed == 400
    assert store.commits < 200  # the writer is never idle long enough to take one call a time


def test_max_batch_bounds_a_commit_but_never_splits_a_call(store_url):
    async def main(store):
        async with one_commit(store, store_url):
            tasks = [
                asyncio.create_task(store.append([ev(i, f"c{c}-") for i in range(4)]))
                for c in range(6)
            ]
            big = asyncio.create_task(store.append([ev(i, "big-") for i in range(25)]))
        await asyncio.gather(*tasks, big)

    store = open_store(store_url, max_batch=10)
    try:
        asyncio.run(main(store))
        assert store.count() == 1 + 6 * 4 + 25
        # The marker; two calls of 4 a commit (a third would make 12 > 10): 3 commits; then
        # the call of 25 alone, whole.
        assert store.commits == 1 + 3 + 1
    finally:
        store.close_sync()


def test_non_events_are_refused_before_anything_is_stored(store):
    async def main():
        with pytest.raises(TypeError, match="expected Event, got tuple"):
            await store.append([ev(1), ("e2", "u", "i", "click", 1.0)])
        assert await store.append([]) == AppendResult([], 0)

    asyncio.run(main())
    assert store.count() == 0 and store.commits == 0


# -- failures -------------------------------------------------------------------------------


def test_failed_commit_stores_nothing_and_the_store_recovers(store, store_url):
    """Three calls share a commit that fails at its very last row (750 rows: more than one
    INSERT statement): all three get StoreUnavailable, nothing of them is stored, reads keep
    working, and once the cause is gone the same appends succeed on the same store object."""
    batches = [[ev(i, f"c{c}-") for i in range(250)] for c in range(3)]

    async def main():
        await store.append([ev(0)])
        with poisoned(store_url, batches[-1][-1].event_id):
            async with one_commit(store, store_url):
                tasks = [asyncio.create_task(store.append(b)) for b in batches]
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for r in results:
                assert type(r) is StoreUnavailable and "poisoned event" in str(r), r
            assert len({id(r) for r in results}) == 3  # one exception object per call
            assert store.state == "unavailable" and store.last_error == str(results[0])
            assert store.commit_errors == 1 and store.commits == 2  # e0's and the marker's
            assert store.count() == 2 and stored_ids(store) == ["e0", "marker"]
            assert store.events_frame().height == 2
        results = await asyncio.gather(*[store.append(b) for b in batches])
        assert [len(r.recorded) for r in results] == [250, 250, 250]
        assert store.state == "ok"

    asyncio.run(main())
    assert store.count() == 752 and store.commit_errors == 1


def test_a_cancelled_caller_does_not_cancel_the_write(store, store_url):
    async def main():
        with hold_write_lock(store_url):
            task = asyncio.create_task(store.append([ev(1), ev(2)]))
            await asyncio.sleep(0)
            task.cancel()
            await asyncio.sleep(0)
        assert task.cancelled()
        # Calls commit in queue order: once this one returns, the cancelled one has committed.
        later = await store.append([ev(3)])
        assert ids(later.recorded) == ["e3"]
        retry = await store.append([ev(1), ev(2)])  # what a client would do: stored once
        assert retry.recorded == [] and retry.duplicates == 2

    asyncio.run(main())
    assert stored_ids(store) == ["e1", "e2", "e3"]


def test_close_commits_queued_appends_then_refuses(store_url):
    store = open_store(store_url)

    async def main():
        with hold_write_lock(store_url):
            tasks = [asyncio.create_task(store.append([ev(i)])) for i in range(50)]
            await asyncio.sleep(0)
            closing = asyncio.create_task(store.close())
            await asyncio.sleep(0.01)  # close has started (it waits for the queue)
        results = await asyncio.gather(*tasks)
        await closing
        assert all(len(r.recorded) == 1 for r in results)
        with pytest.raises(StoreClosed):
            await store.append([ev(99)])
        await store.close()  # idempotent

    asyncio.run(main())
    with pytest.raises(StoreClosed):
        store.count()
    with open_store(store_url) as again:
        assert again.count() == 50


# -- reads ----------------------------------------------------------------------------------


def fill(store, n: int, calls: int = 5) -> None:
    async def main():
        per = n // calls
        for c in range(calls):
            await store.append([ev(i) for i in range(c * per, (c + 1) * per)])

    asyncio.run(main())


def test_read_events_in_seq_order_with_cursors(store):
    fill(store, 25)
    stored = list(store.read_events())
    seqs = [s.seq for s in stored]
    assert [s.event for s in stored] == [ev(i) for i in range(25)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 25 and seqs[0] >= 1
    assert store.max_seq() == seqs[-1]
    assert list(store.read_events(batch=4)) == stored
    assert list(store.read_events(after_seq=seqs[9])) == stored[10:]
    assert list(store.read_events(after_seq=seqs[9], up_to_seq=seqs[14], batch=2)) == stored[10:15]
    assert list(store.read_events(after_seq=seqs[-1])) == []
    assert list(store.read_events(up_to_seq=0)) == []


def test_read_events_stops_at_the_max_seq_it_started_with(store):
    fill(store, 10)
    it = store.read_events(batch=3)
    first = next(it)
    asyncio.run(store.append([ev(100), ev(101)]))  # committed while the reader is paused
    rest = list(it)
    assert [s.event.event_id for s in [first, *rest]] == [f"e{i}" for i in range(10)]
    assert len(list(store.read_events(after_seq=rest[-1].seq))) == 2


def test_events_frame_columns_dtypes_and_values(store):
    events = [ev(1), ev(2, rating=4.5), Event("é-3", "üser", "itém", "view", 1.5)]
    asyncio.run(store.append(events))
    frame = store.events_frame()
    assert frame.schema == pl.Schema(
        {
            "seq": pl.Int64,
            "event_id": pl.String,
            "user_id": pl.String,
            "item_id": pl.String,
            "event_type": pl.String,
            "timestamp": pl.Float64,
            "rating": pl.Float64,
            "recommendation_id": pl.String,
            "position": pl.Int64,
        }
    )
    seqs = [s.seq for s in store.read_events()]
    assert frame["seq"].to_list() == seqs
    assert frame.drop("seq").rows() == [
        (e.event_id, e.user_id, e.item_id, e.event_type, e.timestamp, e.rating, None, None)
        for e in events
    ]
    assert store.events_frame(after_seq=seqs[0])["event_id"].to_list() == ["e2", "é-3"]
    assert store.events_frame(after_seq=seqs[0], up_to_seq=seqs[1])["event_id"].to_list() == ["e2"]
    empty = store.events_frame(after_seq=seqs[-1])
    assert empty.height == 0 and empty.schema == frame.schema


def test_user_history(store):
    async def main():
        await store.append([ev(i, user="alice") for i in range(5)])
        await store.append([ev(i, "b", user="bob") for i in range(3)])
        await store.append([ev(i, user="alice") for i in range(5, 8)])

    asyncio.run(main())
    history = store.user_history("alice")
    assert [h.event.event_id for h in history] == [f"e{i}" for i in range(8)]
    assert [h.seq for h in history] == sorted(h.seq for h in history)
    assert [h.event.event_id for h in store.user_history("alice", limit=3)] == ["e5", "e6", "e7"]
    assert store.user_history("alice", limit=0) == []
    assert store.user_history("carol") == []
    assert {h.event.user_id for h in store.user_history("bob")} == {"bob"}


def test_max_seq_and_count(store):
    assert store.max_seq() == 0 and store.count() == 0
    fill(store, 12, calls=3)
    assert store.count() == 12 and store.max_seq() >= 12
    assert store.ping() and store.state == "ok"


# -- retention: stored_at, bounded frames, checked deletes ----------------------------------


class Clock:
    """The store's clock (``stored_at``), set by the test: no waiting for time to pass."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def aged_store(url: str):
    """A store holding e0..e9: e0-e5 stored at t=1000, e6-e9 at t=2000 (three commits)."""
    clock = Clock(1000.0)
    store = open_store(url, clock=clock)

    async def main():
        await store.append([ev(i) for i in range(3)])
        await store.append([ev(i) for i in range(3, 6)])
        clock.now = 2000.0
        await store.append([ev(i) for i in range(6, 10)])

    asyncio.run(main())
    return store


def test_events_frame_with_stored_at_bounds_and_limit(store_url):
    with aged_store(store_url) as store:
        seqs = [s.seq for s in store.read_events()]
        full = store.events_frame(with_stored_at=True)
        assert list(full.schema) == [*store.events_frame().schema, "stored_at"]
        assert full.schema["stored_at"] == pl.Float64
        assert full["stored_at"].to_list() == [1000.0] * 6 + [2000.0] * 4
        assert full.drop("stored_at").equals(store.events_frame())
        old = store.events_frame(stored_before=1500.0)
        assert old["event_id"].to_list() == [f"e{i}" for i in range(6)]
        assert store.events_frame(stored_before=1000.0).height == 0
        both = store.events_frame(seqs[1], seqs[7], stored_before=2000.5, with_stored_at=True)
        assert both["seq"].to_list() == seqs[2:8]
        first = store.events_frame(up_to_seq=seqs[8], stored_before=1500.0, limit=4)
        assert first["event_id"].to_list() == ["e0", "e1", "e2", "e3"]
        assert store.events_frame(limit=0).height == 0
        with pytest.raises(ValueError):
            store.events_frame(limit=-1)
        assert store.min_seq() == seqs[0] and store.max_seq() == seqs[-1]


def test_delete_events_by_seq_range_and_stored_at(store_url):
    with aged_store(store_url) as store:
        seqs = [s.seq for s in store.read_events()]
        # Only the old rows within the range: e6..e9 are newer, e0 is below the range.
        assert store.delete_events(seqs[0], seqs[8], 1500.0) == 5
        assert stored_ids(store) == ["e0", "e6", "e7", "e8", "e9"]
        assert store.delete_events(seqs[0], seqs[8], 1500.0) == 0  # idempotent
        assert store.min_seq() == seqs[0] and store.count() == 5
        assert store.delete_events(0, seqs[-1], 9999.0) == 5
        assert store.count() == 0 and store.min_seq() == 0 and store.max_seq() == 0


def test_a_deleted_seq_is_never_handed_out_again(store_url):
    """Retention may delete the newest rows too: a new event still gets a higher seq, so a
    cursor recorded before the delete stays valid."""
    with aged_store(store_url) as store:
        top = store.max_seq()
        assert store.delete_events(0, top, 9999.0) == 10
    with open_store(store_url) as store:
        asyncio.run(store.append([ev(100)]))
        assert store.min_seq() > top


def test_delete_events_with_a_wrong_expectation_deletes_nothing(store_url):
    with aged_store(store_url) as store:
        seqs = [s.seq for s in store.read_events()]
        with pytest.raises(StoreConflict, match=r"6 events match .* expected 5; nothing deleted"):
            store.delete_events(0, seqs[-1], 1500.0, expect=5)
        assert store.count() == 10
        assert store.delete_events(0, seqs[-1], 1500.0, expect=6) == 6
        assert store.count() == 4
        asyncio.run(store.append([ev(20)]))  # the writer connection is usable afterwards
        assert store.count() == 5


def test_delete_events_on_a_closed_store_is_refused(store_url):
    store = aged_store(store_url)
    store.close_sync()
    with pytest.raises(StoreClosed):
        store.delete_events(0, 100, 9999.0)


def backend_class(url: str) -> type:
    if is_sqlite(url):
        return SQLiteStore
    from recsys_core.datastore.postgres import PostgresStore

    return PostgresStore


def test_open_from_async_code(store_url):
    async def main():
        store = await backend_class(store_url).open(store_url)
        async with store:
            await store.append([ev(1)])
            assert await asyncio.to_thread(store.count) == 1

    asyncio.run(main())


# -- schema ---------------------------------------------------------------------------------


def test_migrations_are_idempotent(store_url):
    with open_store(store_url) as first:
        fill(first, 10)
    for _ in range(2):
        with open_store(store_url) as again:
            assert again.count() == 10
    versions = raw_execute(store_url, "SELECT version FROM schema_version ORDER BY version")
    assert [v for (v,) in versions] == list(range(1, SCHEMA_VERSION + 1))


def test_a_newer_schema_is_refused(store_url):
    with open_store(store_url) as first:
        fill(first, 5)
    newer = SCHEMA_VERSION + 1
    raw_execute(
        store_url,
        "INSERT INTO schema_version (version, description, applied_at) "
        f"VALUES ({newer}, 'from the future', 0)",
    )
    with pytest.raises(StoreConfigError) as info:
        open_store(store_url)
    message = str(info.value)
    assert message == (
        f"{redact(store_url)}: schema version {newer} is newer than this recsys "
        f"(knows up to {SCHEMA_VERSION}); upgrade recsys"
    )
    # Refusing wrote nothing: the data and the version are as they were.
    assert raw_execute(store_url, "SELECT COUNT(*) FROM events") == [(5,)]
    assert raw_execute(store_url, "SELECT MAX(version) FROM schema_version") == [(newer,)]


# -- URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://x", "--store 'mysql://x': unsupported scheme 'mysql'; use sqlite:///PATH"),
        ("events.db", "--store 'events.db': not a URL"),
        ("sqlite://host/events.db", "--store 'sqlite://host/events.db': a SQLite URL has no host"),
        ("sqlite:///", "--store 'sqlite:///': no database path"),
        ("sqlite:///x.db?mode=ro", "--store 'sqlite:///x.db?mode=ro': SQLite URL options"),
        ("sqlite:///:memory:", "in-memory SQLite is not supported"),
        ("mysql://bob:hunter2@db/x", "--store 'mysql://bob:***@db/x': unsupported scheme"),
    ],
)
def test_bad_urls_are_named_in_the_message(url, message):
    with pytest.raises(StoreConfigError) as info:
        open_store(url)
    assert message in str(info.value)
    assert "hunter2" not in str(info.value)


def test_redact():
    assert redact("postgresql://u:p%40ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("postgresql://u:a/b@h/db") == "postgresql://u:***@h/db"
    assert redact("postgres://h/db?user=u&password=pw&x=1") == (
        "postgres://h/db?user=u&password=***&x=1"
    )
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact("sqlite:////var/x.db") == "sqlite:////var/x.db"


def test_sqlite_url_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///rel.db") as rel:
        assert rel.path == tmp_path / "rel.db" and rel.path.is_file()
        assert rel.url == "sqlite:///rel.db"
    with open_store(f"sqlite:///{tmp_path}/abs.db") as absolute:
        assert absolute.path == tmp_path / "abs.db"


def test_sqlite_file_settings(tmp_path):
    """New files get 1 KiB pages and WAL; a file made before keeps its page size."""
    with open_store(f"sqlite:///{tmp_path}/new.db"):
        pass
    conn = sqlite3.connect(tmp_path / "new.db")
    assert conn.execute("PRAGMA page_size").fetchone()[0] == 1024
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    old = sqlite3.connect(tmp_path / "old.db")
    old.execute("PRAGMA page_size=4096")
    old.execute("CREATE TABLE t (x)")
    old.close()
    with open_store(f"sqlite:///{tmp_path}/old.db") as store:
        asyncio.run(store.append([ev(1)]))
        assert store.count() == 1
    conn = sqlite3.connect(tmp_path / "old.db")
    assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096
    conn.close()


# -- SQLite: opening bad paths and files ---------------------------------------------------


def test_sqlite_missing_directory(tmp_path):
    path = tmp_path / "nope" / "events.db"
    with pytest.raises(StoreConfigError, match="does not exist") as info:
        open_store(f"sqlite:///{path}")
    assert str(path) in str(info.value)
    assert not path.parent.exists()


def test_sqlite_path_is_a_directory(tmp_path):
    with pytest.raises(StoreConfigError, match=f"{tmp_path}: is a directory"):
        open_store(f"sqlite:///{tmp_path}")


def test_sqlite_bad_options(tmp_path):
    with pytest.raises(StoreConfigError, match="synchronous='SOMETIMES'"):
        open_store(f"sqlite:///{tmp_path}/e.db", synchronous="SOMETIMES")


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory this process cannot write to, holding a valid store ``events.db``: by
    permissions for an ordinary user; root ignores those, so then a tmpfs remounted
    read-only (skipped where mounting is not permitted)."""
    if os.geteuid() != 0:
        directory = tmp_path / "ro"
        directory.mkdir()
        with open_store(f"sqlite:///{directory}/events.db") as s:
            fill(s, 5)
        directory.chmod(0o555)
        try:
            yield directory
        finally:
            directory.chmod(0o755)
        return
    directory = tmp_path / "mnt"
    directory.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("a read-only path for root needs mount(8)")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {proc.stderr.strip()}")
    try:
        with open_store(f"sqlite:///{directory}/events.db") as s:
            fill(s, 5)
        subprocess.run(["mount", "-o", "remount,ro", str(directory)], check=True)
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=False)


@pytest.mark.parametrize("name", ["events.db", "new.db"])
def test_sqlite_read_only_path(read_only_dir, name):
    path = read_only_dir / name
    with pytest.raises(StoreConfigError, match="read-only") as info:
        open_store(f"sqlite:///{path}")
    assert str(path) in str(info.value)


def test_sqlite_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "events.db"
    path.write_text("user,item\nalice,book\n" * 100)
    before = path.read_bytes()
    with pytest.raises(StoreConfigError, match="is not a SQLite database") as info:
        open_store(f"sqlite:///{path}")
    assert str(path) in str(info.value)
    assert path.read_bytes() == before  # refused without writing to it


def _closed_store_file(tmp_path: Path, n: int = 3000) -> Path:
    path = tmp_path / "events.db"
    with open_store(f"sqlite:///{path}") as s:
        asyncio.run(s.append([ev(i, "x" * 50) for i in range(n)]))
    assert not Path(f"{path}-wal").exists()  # the close checkpointed everything into the file
    return path


def test_sqlite_torn_file_is_refused(tmp_path):
    path = _closed_store_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a copy cut short, a disk that lost the tail
    with pytest.raises(StoreConfigError, match="corrupt") as info:
        open_store(f"sqlite:///{path}")
    assert str(path) in str(info.value)
    assert path.read_bytes() == data[: len(data) // 2]


def test_sqlite_corrupt_page_is_refused(tmp_path):
    path = _closed_store_file(tmp_path)
    data = bytearray(path.read_bytes())
    page = 4096
    middle = (len(data) // page // 2) * page
    data[middle : middle + page] = bytes(range(256)) * (page // 256)  # one page of garbage
    path.write_bytes(bytes(data))
    with pytest.raises(StoreConfigError, match="corrupt") as info:
        open_store(f"sqlite:///{path}")
    assert str(path) in str(info.value) and "restore it from a backup" in str(info.value)


def _crashed_store_file(tmp_path: Path) -> Path:
    """A closed store of 3,000 events, then 1,000 more committed by a process that was
    SIGKILLed: they are only in the -wal file, beside an -shm the dead process left."""
    path = _closed_store_file(tmp_path)
    child = (
        "import asyncio, os, signal, sys\n"
        "from recsys_core.datastore import open_store\n"
        "from recsys_core.events import Event\n"
        "s = open_store(sys.argv[1])\n"
        "async def main():\n"
        "    for b in range(5):\n"
        "        await s.append([Event(f'w{b}-{i}', 'u', 'i', 'view', 1.0, None)\n"
        "                        for i in range(200)])\n"
        "asyncio.run(main())\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", child, f"sqlite:///{path}"], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert Path(f"{path}-wal").stat().st_size > 0 and Path(f"{path}-shm").exists()
    return path


def _digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def test_sqlite_wal_left_by_a_crash_is_recovered(tmp_path):
    path = _crashed_store_file(tmp_path)
    with open_store(f"sqlite:///{path}") as s:
        assert s.count() == 4000
        assert {f"w{b}-{i}" for b in range(5) for i in range(200)} <= set(stored_ids(s))


@pytest.mark.parametrize("damage", ["torn", "corrupt_page"])
def test_sqlite_damaged_file_with_a_wal_is_refused_and_left_untouched(tmp_path, damage):
    """Refusing must not change the evidence: a writable connection checkpoints the WAL into
    the database file when it closes (and deletes the -wal), so the check runs read-only."""
    path = _crashed_store_file(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "torn":
        del data[len(data) // 2 :]
    else:
        middle = (len(data) // 4096 // 2) * 4096
        data[middle : middle + 4096] = bytes(range(256)) * 16
    path.write_bytes(bytes(data))
    wal = Path(f"{path}-wal")
    before = (_digest(path), _digest(wal))
    with pytest.raises(StoreConfigError, match="corrupt") as info:
        open_store(f"sqlite:///{path}")
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert (_digest(path), _digest(wal)) == before
    assert Path(f"{path}-shm").exists()


@contextlib.contextmanager
def sqlite_full(store: SQLiteStore):
    """The writer connection may not grow the file: SQLITE_FULL, "database or disk is full",
    what a full disk gives. max_page_count is per connection, so it is set on the store's own
    writer connection, under the lock the writer thread holds to write."""
    with store._write_lock:
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count = {pages}")
    try:
        yield
    finally:
        with store._write_lock:
            store._conn.execute("PRAGMA max_page_count = 1073741823")


def test_sqlite_database_full_is_enospc_and_recovers_without_reopening(tmp_path):
    url = f"sqlite:///{tmp_path}/events.db"
    store = open_store(url)
    batches = [[ev(i, f"c{c}-{'x' * 200}") for i in range(100)] for c in range(3)]

    async def main():
        await store.append([ev(0)])
        with sqlite_full(store):
            with hold_write_lock(url):
                tasks = [asyncio.create_task(store.append(b)) for b in batches]
                await asyncio.sleep(0)
            for r in await asyncio.gather(*tasks, return_exceptions=True):
                assert type(r) is StoreUnavailable and r.errno == errno.ENOSPC, r
                assert "database or disk is full" in str(r) and str(store.path) in str(r)
            assert store.state == "unavailable" and store.count() == 1
            with pytest.raises(StoreUnavailable):  # alone, still too big: fails again
                await store.append(batches[0])
        results = await asyncio.gather(*[store.append(b) for b in batches])
        assert [len(r.recorded) for r in results] == [100, 100, 100]
        assert store.state == "ok" and store.commit_errors == 2

    try:
        asyncio.run(main())
        assert store.count() == 301
    finally:
        store.close_sync()


def test_reads_run_while_another_connection_writes(store, store_url):
    fill(store, 5)
    if is_sqlite(store_url):
        conn = sqlite3.connect(store.path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
    else:
        import psycopg

        conn = psycopg.connect(store_url)  # not autocommit: the INSERT opens a transaction
    try:
        conn.execute(
            "INSERT INTO events (event_id, user_id, item_id, event_type, ts, stored_at) "
            "VALUES ('uncommitted', 'u', 'i', 'click', 1, 1)"
        )
        # Not blocked by the open write transaction, and not seeing it.
        assert store.count() == 5 and "uncommitted" not in stored_ids(store)
        conn.execute("COMMIT")
    finally:
        conn.close()
    assert store.count() == 6


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("real full-disk test needs root and mount(8) for a 512 KiB tmpfs")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_sqlite_real_full_disk(small_tmpfs):
    """A really full filesystem: no OK without a commit, reads keep serving, and writes
    recover without reopening once space returns."""
    store = open_store(f"sqlite:///{small_tmpfs}/events.db")
    filler = small_tmpfs / "filler"

    async def main():
        acknowledged: list[str] = []
        error = None
        filler.write_bytes(b"\0" * (300 * 1024))
        for start in range(0, 100_000, 25):
            batch = [ev(i, "full-" + "y" * 100) for i in range(start, start + 25)]
            try:
                res = await store.append(batch)
            except StoreUnavailable as e:
                error = e
                break
            acknowledged += ids(res.recorded)
        assert error is not None and error.errno == errno.ENOSPC, error
        assert acknowledged and store.state == "unavailable"
        assert stored_ids(store) == acknowledged  # every OK is stored, nothing else
        # Reads answer on a full disk; the ping still reports it (health does not flap).
        assert not store.ping() and "bytes free" in store.last_error, store.last_error
        filler.unlink()
        assert store.ping() and store.state == "ok"
        res = await store.append(batch)
        assert len(res.recorded) == 25 and store.state == "ok"
        return acknowledged + ids(res.recorded)

    try:
        expected = asyncio.run(main())
    finally:
        store.close_sync()
    with open_store(f"sqlite:///{small_tmpfs}/events.db") as again:
        assert stored_ids(again) == expected


def test_a_commit_answered_as_failed_is_read_back_after_the_next(store):
    """A commit that went through although it raised (the answer lost with the connection)
    is answered as failed; its events are handed out as ``recovered`` with the next append's
    result, once, with their seqs, and not as that call's own."""
    real = store._write_batch
    lose_answer = False

    def flaky(events):
        nonlocal lose_answer
        inserted = real(events)
        if lose_answer:
            lose_answer = False
            raise StoreUnavailable("connection lost after COMMIT")
        return inserted

    store._write_batch = flaky

    async def main():
        nonlocal lose_answer
        first = await store.append([ev(1), ev(2)])
        lose_answer = True
        with pytest.raises(StoreUnavailable):
            await store.append([ev(3), ev(4)])
        retry = await store.append([ev(3), ev(4), ev(5)])
        later = await store.append([ev(6)])
        return first, retry, later

    first, retry, later = asyncio.run(main())
    assert first.recovered == []
    assert ids(retry.recorded) == ["e5"] and retry.duplicates == 2
    assert [r.event for r in retry.recovered] == [ev(3), ev(4)]
    assert [r.seq for r in retry.recovered] == [first.seqs[-1] + 1, first.seqs[-1] + 2]
    assert len(retry.seqs) == 1 and retry.seqs[0] > retry.recovered[-1].seq  # seqs may skip
    assert later.recovered == [] and ids(later.recorded) == ["e6"]


def test_a_failed_read_back_is_retried_without_recovering_acknowledged_events(store):
    """The read-back after a lost answer fails once: the rows stay owed, and the next commit
    hands out exactly the lost ones, not the events acknowledged in between."""
    real_write, real_fetch = store._write_batch, store._fetch
    lose_answer = fail_read = False

    def flaky_write(events):
        nonlocal lose_answer
        inserted = real_write(events)
        if lose_answer:
            lose_answer = False
            raise StoreUnavailable("connection lost after COMMIT")
        return inserted

    def flaky_fetch(sql, params):
        nonlocal fail_read
        if fail_read and "seq > ?" in sql:
            fail_read = False
            raise StoreUnavailable("connection lost while reading back")
        return real_fetch(sql, params)

    store._write_batch, store._fetch = flaky_write, flaky_fetch

    async def main():
        nonlocal lose_answer, fail_read
        await store.append([ev(1)])
        lose_answer = True
        with pytest.raises(StoreUnavailable):
            await store.append([ev(2), ev(3)])
        fail_read = True
        between = await store.append([ev(4)])  # acknowledged; its read-back fails
        after = await store.append([ev(5)])
        return between, after

    between, after = asyncio.run(main())
    assert between.recovered == [] and ids(between.recorded) == ["e4"]
    assert [r.event for r in after.recovered] == [ev(2), ev(3)]
    assert ids(after.recorded) == ["e5"]
