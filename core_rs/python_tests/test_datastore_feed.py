"""The change feed replicas follow each other by: the seq cursor with gaps, out-of-order
commits on PostgreSQL, one event_id stored once across two store objects, the catalogue's
change seq, and NOTIFY from other writers only."""

from __future__ import annotations

import asyncio
import threading

import psycopg
import pytest

from recsys_core.datastore import ItemChange, open_store
from recsys_core.datastore.feed import CHANNEL, Listener, SeqCursor, StoreFeed
from recsys_core.events import Event

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_dsn")


def ev(eid: str, user: str = "u", item: str = "i") -> Event:
    return Event(eid, user, item, "click", 1.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- SeqCursor -----------------------------------------------------------------------------


def test_cursor_keeps_passed_over_seqs_as_gaps_until_they_come():
    c = SeqCursor(10, clock=Clock())
    assert c.wanted() == (10, [])
    c.advance([11, 14, 15])
    assert (c.high, sorted(c.gaps)) == (15, [12, 13])
    assert [c.covered(s) for s in (11, 12, 13, 14, 16)] == [True, False, False, True, False]
    assert c.wanted() == (15, [12, 13])
    c.advance([13])  # a late commit fills one gap; the high mark stays
    assert (c.high, sorted(c.gaps)) == (15, [12])
    c.advance([])
    assert (c.high, sorted(c.gaps)) == (15, [12])


def test_cursor_marks_seqs_folded_elsewhere():
    c = SeqCursor(10, clock=Clock())
    c.mark(12)  # acknowledged here before the follower read it
    assert c.covered(12) and not c.covered(11)
    c.advance([13])  # 11 not read (not committed yet), 12 covered: only 11 is a gap
    assert (c.high, sorted(c.gaps), c.ahead) == (13, [11], set())
    c.mark(11)
    assert c.gaps == {} and c.covered(11)


def test_cursor_gives_up_on_gaps_after_gap_seconds():
    clock = Clock()
    c = SeqCursor(0, clock=clock, gap_seconds=30)
    c.advance([1, 3])
    clock.now = 29.0
    c.advance([4])
    assert sorted(c.gaps) == [2]
    clock.now = 31.0
    c.advance([])
    assert c.gaps == {} and c.abandoned == 1 and c.covered(2)


def test_cursor_from_a_rebuild_keeps_only_gaps_below_its_high_mark():
    c = SeqCursor(5, [2, 7], clock=Clock())
    assert sorted(c.gaps) == [2]


# -- reading the store ---------------------------------------------------------------------


def test_feed_reads_other_writers_events_and_item_changes(store_url):
    async def go():
        with open_store(store_url) as a, open_store(store_url) as b:
            feed = StoreFeed(b)
            r = await a.append([ev("e1"), ev("e2")])
            batch = feed.read((0, []), 0, 100)
            assert [x.event.event_id for x in batch.events] == ["e1", "e2"]
            assert [x.seq for x in batch.events] == r.seqs
            assert batch.head == max(r.seqs) and not batch.full
            assert all(at > 0 for at in batch.stored_at)
            assert feed.read((max(r.seqs), []), 0, 100).events == []
            assert feed.read((0, []), 0, 1).full

            (first,) = await a.change_items([ItemChange("x", True, title="X")])
            (second,) = await a.change_items([ItemChange("x", False, available=False)])
            assert 0 < first.seq < second.seq
            items = feed.read((0, []), 0, 100).items
            assert [(r.item_id, r.available, r.seq) for r in items] == [("x", False, second.seq)]
            assert feed.read((0, []), second.seq, 100).items == []
            await a.change_items([ItemChange("y", True, title="Y")])
            one = feed.read((max(r.seqs), []), 0, 1)  # at most one record: read on at once
            assert [x.item_id for x in one.items] == ["x"] and one.full
            rest = feed.read((max(r.seqs), []), one.items[-1].seq, 1)
            assert [x.item_id for x in rest.items] == ["y"]
            assert b.read_items()[0].seq == second.seq

    asyncio.run(go())


def test_one_event_id_is_stored_once_across_two_writers(store_url):
    async def go():
        with open_store(store_url) as a, open_store(store_url) as b:
            first = await a.append([ev("same")])
            again = await b.append([ev("same")])
            assert (len(first.recorded), first.duplicates) == (1, 0)
            assert (len(again.recorded), again.duplicates) == (0, 1)
            # at the same time, from both: exactly one of them stores it
            both = await asyncio.gather(a.append([ev("race")]), b.append([ev("race")]))
            assert sorted(len(r.recorded) for r in both) == [0, 1]
            assert a.count() == 2

    asyncio.run(go())


def test_a_lower_seq_committed_later_is_not_skipped(postgres_dsn):
    """Two writing transactions: the one holding the lower seq commits last. A reader that
    kept only ``seq > last`` would never see it; the cursor asks for its gap again."""
    with open_store(postgres_dsn) as store:
        feed = StoreFeed(store)
        cursor = SeqCursor(0)
        insert = (
            "INSERT INTO events (event_id, user_id, item_id, event_type, ts, stored_at) "
            "VALUES (%s, 'u', 'i', 'click', 1, 1) RETURNING seq"
        )
        with psycopg.connect(postgres_dsn) as slow, psycopg.connect(postgres_dsn) as fast:
            low = slow.execute(insert, ("slow",)).fetchone()[0]  # open: not committed
            high = fast.execute(insert, ("fast",)).fetchone()[0]
            fast.commit()
            assert low < high

            seen: list[str] = []

            def read() -> None:
                batch = feed.read(cursor.wanted(), 0, 100)
                seen.extend(x.event.event_id for x in batch.events)
                cursor.advance(x.seq for x in batch.events)

            read()
            assert seen == ["fast"] and sorted(cursor.gaps) == [low]
            read()
            assert seen == ["fast"]
            slow.commit()
            read()
            assert seen == ["fast", "slow"] and cursor.gaps == {} and cursor.high == high
            read()
            assert seen == ["fast", "slow"]  # each once


def test_listener_is_woken_by_other_writers_only(postgres_dsn):
    async def go():
        with open_store(postgres_dsn) as a, open_store(postgres_dsn) as b:
            calls: list[int] = []
            woke = threading.Event()

            def on_notify() -> None:
                calls.append(1)
                woke.set()

            listener = Listener(a, on_notify)
            try:
                assert woke.wait(30), "the listener never connected"
                woke.clear()
                calls.clear()
                await a.append([ev("mine")])  # committed first: delivered first, and skipped
                await a.change_items([ItemChange("x", True, title="X")])
                await b.append([ev("theirs")])
                assert woke.wait(30), "no notification for another writer's commit"
                assert calls == [1]
                woke.clear()
                await b.change_items([ItemChange("y", True, title="Y")])
                assert woke.wait(30), "no notification for another writer's catalogue change"
                # a notification nobody sent from a store is a wake-up too (payload unknown)
                with psycopg.connect(postgres_dsn, autocommit=True) as conn:
                    woke.clear()
                    conn.execute(f"NOTIFY {CHANNEL}, 'someone'")
                    assert woke.wait(30)
            finally:
                listener.stop()

    asyncio.run(go())


def test_a_lost_commit_is_read_back_without_another_writers_events(postgres_dsn):
    """A commit answered as failed though stored is read back after the next commit (as on
    one server), and with another replica writing meanwhile only this writer's own rows are
    (events.origin): the other's events are not handed out as recovered."""
    from recsys_core.datastore import StoreUnavailable

    async def go():
        with open_store(postgres_dsn) as a, open_store(postgres_dsn) as b:
            real = a._write_batch
            lose = True

            def flaky(events):
                nonlocal lose
                inserted = real(events)
                if lose:
                    lose = False
                    raise StoreUnavailable("connection lost after COMMIT")
                return inserted

            await a.append([ev("a0")])
            a._write_batch = flaky
            with pytest.raises(StoreUnavailable):
                await a.append([ev("a1"), ev("a2")])
            theirs = await b.append([ev("b1")])
            retry = await a.append([ev("a1"), ev("a2"), ev("a3")])
            assert [r.event.event_id for r in retry.recovered] == ["a1", "a2"]
            assert (len(retry.recorded), retry.duplicates) == (1, 2)
            assert theirs.recovered == []
            with psycopg.connect(postgres_dsn) as conn:
                origins = dict(conn.execute("SELECT event_id, origin FROM events").fetchall())
            assert {origins[i] for i in ("a0", "a1", "a2", "a3")} == {a.origin}
            assert origins["b1"] == b.origin != a.origin

    asyncio.run(go())
