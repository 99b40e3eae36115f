"""The impression recorder without a server: store failures are retried while the queue fills
and drops, a batch no backend can store is dropped and counted, shutdown counts what it could
not store, and the live crediting of events (`RecentImpressions`)."""

from __future__ import annotations

import threading

from srv_support import sqlite_url, wait_until

from recsys_core.datastore import Impression, StoreUnavailable, open_store
from recsys_core.events import Event
from recsys_server.impressions import ImpressionRecorder, RecentImpressions, new_id
from recsys_server.scoring import Answer, Scored


def answer(user: str, items=("i1", "i2"), experiment="exp", variant="a") -> Answer:
    scored = [Scored(i, 1.0 / (n + 1), 0.5, "", ()) for n, i in enumerate(items)]
    return Answer(user, scored, "hybrid", "v1", "personalized", experiment, variant)


class DownStore:
    """Fails every write with StoreUnavailable until ``up`` is set, then stores in memory."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.rows: list[Impression] = []
        self.attempts = 0

    def append_impressions(self, rows) -> None:
        self.attempts += 1
        if not self.up.is_set():
            raise StoreUnavailable("database down")
        self.rows.extend(rows)


def test_store_failures_are_retried_while_the_queue_fills_and_drops():
    store = DownStore()
    rec = ImpressionRecorder(store, capacity=3, linger=0)
    try:
        ids = [new_id() for _ in range(5)]
        assert [rec.add(i, answer(f"u{n}"), 100.0 + n) for n, i in enumerate(ids[:3])] == [
            True,
            True,
            True,
        ]
        wait_until(lambda: rec.store_errors >= 2, "the writer retries the failed batch")
        # The failed batch stays queued: the queue is full, new impressions are dropped.
        assert [rec.add(i, answer("late"), 200.0) for i in ids[3:]] == [False, False]
        assert (len(rec), rec.dropped, rec.stored) == (3, 2, 0)
        store.up.set()
        assert rec.flush(timeout=60)
        assert [r.recommendation_id for r in store.rows] == ids[:3]
        assert (rec.stored, rec.dropped) == (3, 2)
        r = store.rows[0]
        assert (r.user_id, r.experiment, r.variant, r.model, r.version, r.ts) == (
            "u0",
            "exp",
            "a",
            "hybrid",
            "v1",
            100.0,
        )
        assert r.item_ids == ("i1", "i2") and r.scores == (1.0, 0.5) and r.teams == ()
    finally:
        store.up.set()
        rec.stop(10)


def test_shutdown_stores_what_is_queued_or_counts_it(tmp_path):
    with open_store(sqlite_url(tmp_path / "s.db")) as store:
        rec = ImpressionRecorder(store, capacity=10)
        rec.pause()
        ids = [new_id() for _ in range(4)]
        for i in ids:
            assert rec.add(i, answer("u"), 1.0)
        assert rec.stop(timeout=60) == 0  # stored within the budget
        assert set(store.impressions("exp")["recommendation_id"]) == set(ids)
        assert not rec.add(new_id(), answer("u"), 2.0)  # stopped: dropped, counted
        assert rec.dropped == 1

    down = DownStore()
    rec = ImpressionRecorder(down, capacity=10)
    rec.pause()
    for _ in range(3):
        rec.add(new_id(), answer("u"), 1.0)
    assert rec.stop(timeout=0.1) == 3  # the store never came back: all three counted
    assert rec.dropped == 3 and down.rows == []


def test_what_no_backend_can_store_is_dropped_and_counted(tmp_path):
    with open_store(sqlite_url(tmp_path / "s.db")) as store:
        rec = ImpressionRecorder(store, capacity=10)
        rec.pause()
        good = new_id()
        rec.add(new_id(), answer("nul\x00user"), 1.0)  # PostgreSQL text cannot hold NUL
        rec.add(good, answer("fine"), 2.0)  # same batch: still stored
        rec.resume()
        assert rec.flush(timeout=60)
        assert (rec.stored, rec.dropped) == (1, 1)
        # A batch the store refuses as a whole (here: NUL in an item id) is dropped,
        # counted, and the writer goes on.
        bad = answer("odd")
        bad.items[0].item_id = "i\x00"
        rec.add(new_id(), bad, 3.0)
        assert rec.flush(timeout=60)
        assert (rec.stored, rec.dropped) == (1, 2)
        later = new_id()
        rec.add(later, answer("later"), 4.0)
        assert rec.flush(timeout=60)
        assert store.impressions("exp")["recommendation_id"].to_list() == [good, later]
        rec.stop(10)


def test_recent_impressions_credit_by_id_then_by_window():
    recent = RecentImpressions(max_ids=2, max_users=2, per_user=2)
    imp = [
        Impression("r1", "u1", "exp", "a", "m", "v", 100.0, ("i1", "i2"), (1.0, 0.5)),
        Impression("r2", "u1", "exp", "b", "m", "v", 200.0, ("i2",), (1.0,)),
    ]
    recent.add(imp)

    def credit(item, ts, rid=None, user="u1"):
        return recent.credit(Event("e", user, item, "click", ts, None, rid), window_s=50.0)

    assert credit("i9", 120.0, rid="r1") == ("exp", "a")  # the id wins, whatever the item
    assert credit("i2", 210.0) == ("exp", "b")  # the latest impression showing i2
    assert credit("i1", 120.0) == ("exp", "a")
    assert credit("i1", 151.0) is None  # after the window
    assert credit("i1", 99.0) is None  # before the impression
    assert credit("i1", 120.0, rid="r1", user="u2") is None  # another user's id, no window hit
    assert credit("i1", 120.0, rid="unknown") == ("exp", "a")  # unknown id: by window
    # Bounded: the oldest ids and users go first.
    recent.add(
        [
            Impression("r3", "u2", "", "", "m", "v", 300.0, ("i1",), (1.0,)),
            Impression("r4", "u3", "", "", "m", "v", 300.0, ("i1",), (1.0,)),
        ]
    )
    assert credit("i9", 210.0, rid="r2") is None and credit("i2", 210.0) is None
    assert recent.credit(Event("e", "u3", "i1", "click", 310.0, None, "r4"), 50.0) == ("", "")


def test_ids_are_128_bit_hex_and_never_handed_out_twice():
    """Ids come from a pool refilled from os.urandom: four threads drawing past several
    refills together get distinct 32-hex-digit ids."""
    got: list[list[str]] = [[] for _ in range(4)]

    def draw(out: list[str]) -> None:
        out.extend(new_id() for _ in range(2000))

    threads = [threading.Thread(target=draw, args=(out,)) for out in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for out in got for i in out]
    assert len(set(ids)) == len(ids) == 8000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
