"""The data store's catalogue records (`recsys_core.datastore.items`) on every backend:
changes committed through the group-commit writer, idempotent, last-write-wins, read back
after reopening, and all or nothing."""

import asyncio

import pytest

from recsys_core.datastore import ItemChange, ItemRecord, StoreUnavailable, open_store
from recsys_core.events import Event

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    return request.getfixturevalue("postgres_dsn")


def upsert(item, title="T", cats=("a",), attrs=None, available=None) -> ItemChange:
    return ItemChange(item, True, title, tuple(cats), dict(attrs or {}), available)


def avail(item, available: bool) -> ItemChange:
    return ItemChange(item, False, available=available)


def run(coro):
    return asyncio.run(coro)


def test_upsert_is_stored_idempotent_and_read_back(store_url):
    async def go():
        s = open_store(store_url, clock=lambda: 100.0)
        try:
            first = await s.change_items([upsert("i1", attrs={"brand": "x"}), upsert("i2")])
            again = await s.change_items([upsert("i1", attrs={"brand": "x"})])
            return first, again
        finally:
            await s.close()

    first, again = run(go())
    assert first == [  # each write takes the next change seq (replicas follow by it)
        ItemRecord("i1", "T", ("a",), {"brand": "x"}, True, 100.0, 1),
        ItemRecord("i2", "T", ("a",), {}, True, 100.0, 2),
    ]
    assert again == [None]  # the same record: nothing written
    with open_store(store_url) as s:  # reopened: durable
        assert s.read_items() == first


def test_availability_is_last_write_wins_and_kept_by_a_later_upsert(store_url):
    async def go():
        s = open_store(store_url, clock=lambda: 5.0)
        try:
            await s.change_items([upsert("i1")])
            # Two calls queued together: one commit, applied in queue order.
            a, b = await asyncio.gather(
                s.change_items([avail("i1", False)]), s.change_items([avail("i1", True)])
            )
            c = await s.change_items([avail("i1", False)])
            d = await s.change_items([upsert("i1", title="T2")])  # available not given
            e = await s.change_items([avail("ghost", False)])  # availability only
            return a, b, c, d, e
        finally:
            await s.close()

    a, b, c, d, e = run(go())
    assert a[0].available is False and b[0].available is True and c[0].available is False
    assert [a[0].seq, b[0].seq, c[0].seq] == [2, 3, 4]  # in queue order
    assert d[0] == ItemRecord("i1", "T2", ("a",), {}, False, 5.0, 5)
    assert e[0] == ItemRecord("ghost", None, (), {}, False, 5.0, 6)
    with open_store(store_url) as s:
        got = {r.item_id: r for r in s.read_items()}
    assert got["i1"].available is False and got["i1"].title == "T2"
    assert got["ghost"].title is None


def test_items_and_events_share_the_writer(store_url):
    async def go():
        s = open_store(store_url)
        try:
            ev = Event("e1", "u1", "i1", "view", 1.0)
            r1, r2 = await asyncio.gather(s.append([ev]), s.change_items([upsert("i1")]))
            return r1, r2, s.commits
        finally:
            await s.close()

    r1, r2, commits = run(go())
    assert len(r1.recorded) == 1 and r2[0].item_id == "i1"
    assert commits == 2  # one batch per kind


def test_a_failed_commit_applies_nothing(store_url):
    async def go():
        s = open_store(store_url)
        try:
            await s.change_items([upsert("i1")])
            real = s._writer._write_items
            # A real database error after the writes, before COMMIT.
            s._writer._write_items = lambda changes: _fail_inside(s, changes)
            with pytest.raises(StoreUnavailable):
                await s.change_items([avail("i1", False), upsert("i2")])
            s._writer._write_items = real
            return s.read_items()
        finally:
            await s.close()

    got = run(go())
    assert [(r.item_id, r.available) for r in got] == [("i1", True)]


def _fail_inside(store, changes):
    """Runs the backend's item transaction with a statement that fails after the writes."""
    from recsys_core.datastore import items

    real_write = items.write

    def write_then_fail(cur, param, cs, now):
        out = real_write(cur, param, cs, now)
        cur.execute("SELECT * FROM no_such_table")
        return out

    items.write = write_then_fail
    try:
        return store._write_items(changes)
    finally:
        items.write = real_write
