"""Impressions and the events' attribution fields in the data store (migration 3), on every
backend: append_impressions, impressions(experiment), experiment_events(experiment), and a
database of schema 2 migrated with its events intact."""

import asyncio
import contextlib
import sqlite3

import polars as pl
import pytest

from recsys_core.datastore import Impression, StoreUnavailable, open_store, parse_store_url
from recsys_core.datastore.impressions import EXPERIMENT_EVENTS_SCHEMA, IMPRESSION_SCHEMA
from recsys_core.datastore.schema import MIGRATIONS, SCHEMA_VERSION
from recsys_core.events import Event

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/events.db"
    return request.getfixturevalue("postgres_dsn")


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close_sync()


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


@contextlib.contextmanager
def connection(url: str):
    """A plain DB-API connection of its own (autocommit), for what the store does not do."""
    if is_sqlite(url):
        conn = sqlite3.connect(parse_store_url(url).path, isolation_level=None)
        try:
            yield conn, "?"
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        yield conn, "%s"


def imp(rid: str, user: str = "u1", exp: str = "exp", variant: str = "a", ts: float = 100.0,
        items=("i1", "i2"), scores=(0.9, 0.5), teams=()) -> Impression:  # fmt: skip
    return Impression(rid, user, exp, variant, "hybrid", "v1", ts, items, scores, teams)


def test_impressions_round_trip_with_columns_and_dtypes(store):
    rows = [
        imp("r1", items=("i1", "i2", "ï3"), scores=(0.9, 0.5, float("nan"))),
        imp("r2", user="u2", variant="b", ts=101.5, items=("i4",), scores=(2.0,), teams=(1,)),
        imp("r3", exp="", variant="", ts=99.0),
    ]
    store.append_impressions(rows)
    got = store.impressions("exp")
    assert got.schema == pl.Schema(IMPRESSION_SCHEMA)
    assert list(got.columns) == [
        "recommendation_id", "user_id", "experiment", "variant", "model", "version", "ts",
        "item_ids", "scores", "teams",
    ]  # fmt: skip
    assert got.rows() == [
        ("r1", "u1", "exp", "a", "hybrid", "v1", 100.0, ["i1", "i2", "ï3"], [0.9, 0.5, None], []),
        ("r2", "u2", "exp", "b", "hybrid", "v1", 101.5, ["i4"], [2.0], [1]),
    ]
    assert store.impressions("")["recommendation_id"].to_list() == ["r3"]
    empty = store.impressions("nothing")
    assert empty.height == 0 and empty.schema == got.schema


def test_append_impressions_is_idempotent_by_recommendation_id(store):
    store.append_impressions([imp("r1"), imp("r2", ts=101.0)])
    # A retry of a batch that was stored (e.g. answered as failed after its COMMIT) and a
    # repeat within one batch: the first stored row stays.
    store.append_impressions([imp("r1", user="other"), imp("r3", ts=102.0), imp("r3", ts=103.0)])
    got = store.impressions("exp")
    assert got["recommendation_id"].to_list() == ["r1", "r2", "r3"]
    assert got["user_id"].to_list() == ["u1", "u1", "u1"]
    assert got["ts"].to_list() == [100.0, 101.0, 102.0]
    store.append_impressions([])  # nothing to do


def test_append_impressions_refuses_what_no_backend_can_store(store):
    with pytest.raises(TypeError, match="expected Impression"):
        store.append_impressions([imp("r1"), ("r2",)])
    with pytest.raises(ValueError, match="NUL"):
        store.append_impressions([imp("r1"), imp("r2", user="u\x00")])
    with pytest.raises(ValueError, match="differ in length"):
        store.append_impressions([imp("r1", scores=(1.0,))])
    assert store.impressions("exp").height == 0  # checked before the transaction


def test_a_failed_batch_stores_nothing_and_a_retry_stores_it(store_url):
    # The table is locked by another connection: the store's transaction gives up after its
    # (shortened) lock wait and rolls back.
    opts = {"busy_timeout_ms": 50} if is_sqlite(store_url) else {"lock_timeout_ms": 50}
    with open_store(store_url, **opts) as store, connection(store_url) as (conn, _):
        store.append_impressions([imp("r0", ts=1.0)])
        if is_sqlite(store_url):
            conn.execute("BEGIN IMMEDIATE")
        else:
            conn.execute("BEGIN")
            conn.execute("LOCK TABLE impressions IN SHARE MODE")
        batch = [imp("r1"), imp("r2", ts=101.0)]
        with pytest.raises(StoreUnavailable):
            store.append_impressions(batch)
        conn.execute("ROLLBACK")
        assert store.impressions("exp")["recommendation_id"].to_list() == ["r0"]
        store.append_impressions(batch)
        assert store.impressions("exp")["recommendation_id"].to_list() == ["r0", "r1", "r2"]


def test_events_keep_recommendation_id_and_position_on_every_read_path(store):
    events = [
        Event("e1", "u1", "i1", "click", 100.0, None, "r1", 2),
        Event("e2", "u1", "i2", "purchase", 101.0, None, "unknown-id"),
        Event("e3", "u1", "i3", "rating", 102.0, 4.0),
    ]
    result = asyncio.run(store.append(events))
    assert result.recorded == events
    assert [s.event for s in store.read_events()] == events
    assert [s.event for s in store.user_history("u1")] == events
    frame = store.events_frame()
    assert frame.select("event_id", "recommendation_id", "position").rows() == [
        ("e1", "r1", 2),
        ("e2", "unknown-id", None),
        ("e3", None, None),
    ]
    archive = store.events_frame(with_stored_at=True)
    assert archive["recommendation_id"].to_list() == ["r1", "unknown-id", None]


def test_experiment_events_are_the_experiments_users_from_its_first_impression(store):
    store.append_impressions(
        [
            imp("r1", user="u1", ts=100.0),
            imp("r2", user="u2", ts=200.0, variant="b"),
            imp("r3", user="u3", exp="other", ts=50.0),
            imp("r4", user="u2", exp="", ts=210.0, variant=""),  # u2 outside any experiment
        ]
    )
    events = [
        Event("before", "u1", "i1", "click", 99.0),  # before the first impression
        Event("at", "u1", "i1", "click", 100.0, None, "r1", 1),
        Event("u2-early", "u2", "i1", "view", 150.0),  # u2's own impression is later: kept
        Event("u2", "u2", "i4", "purchase", 250.0, None, "zzz"),
        Event("rated", "u2", "i4", "rating", 251.0, 3.5),
        Event("other-answer", "u2", "i5", "click", 260.0, None, "r4", 2),
        Event("their-id", "u2", "i6", "click", 261.0, None, "r1"),  # u1's id: not u2's answer
        Event("not-in-it", "u3", "i1", "click", 300.0),
    ]
    asyncio.run(store.append(events))
    got = store.experiment_events("exp")
    assert got.schema == pl.Schema(EXPERIMENT_EVENTS_SCHEMA)
    assert got.rows() == [
        ("at", "u1", "i1", "click", 100.0, None, "r1", 1, "exp"),
        ("u2-early", "u2", "i1", "view", 150.0, None, None, None, None),
        ("u2", "u2", "i4", "purchase", 250.0, None, "zzz", None, None),
        ("rated", "u2", "i4", "rating", 251.0, 3.5, None, None, None),
        ("other-answer", "u2", "i5", "click", 260.0, None, "r4", 2, ""),
        ("their-id", "u2", "i6", "click", 261.0, None, "r1", None, None),
    ]
    empty = store.experiment_events("nothing")
    assert empty.height == 0 and empty.schema == got.schema


def test_a_schema_2_database_is_migrated_with_its_events(store_url):
    dialect = "sqlite" if is_sqlite(store_url) else "postgres"
    with connection(store_url) as (conn, p):
        conn.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description TEXT NOT "
            "NULL, applied_at DOUBLE PRECISION NOT NULL)"
        )
        for m in MIGRATIONS[:2]:
            for statement in m.statements(dialect):
                conn.execute(statement)
            conn.execute(
                f"INSERT INTO schema_version VALUES ({p}, {p}, 0)", (m.version, m.description)
            )
        conn.execute(
            "INSERT INTO events (event_id, user_id, item_id, event_type, ts, rating, stored_at) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}, NULL, 0)",
            ("old", "u1", "i1", "click", 5.0),
        )
    assert SCHEMA_VERSION >= 3  # migrated through 3 and anything after
    with open_store(store_url) as store:
        assert [s.event for s in store.read_events()] == [Event("old", "u1", "i1", "click", 5.0)]
        asyncio.run(store.append([Event("new", "u1", "i1", "click", 6.0, None, "r1", 1)]))
        store.append_impressions([imp("r1", ts=1.0)])
        assert store.events_frame()["position"].to_list() == [None, 1]
        assert store.experiment_events("exp")["event_id"].to_list() == ["old", "new"]


def test_event_serialized_forms_old_and_new():
    old = {"event_id": "e", "user_id": "u", "item_id": "i", "event_type": "click",
           "timestamp": 1.0, "rating": None}  # fmt: skip
    e = Event.from_dict(old)
    assert e.recommendation_id is None and e.position is None
    assert e.to_dict() == old  # unchanged form for events without the new fields
    new = Event("e", "u", "i", "click", 1.0, None, "r1", 3)
    assert new.to_dict() == {**old, "recommendation_id": "r1", "position": 3}
    assert Event.from_dict(new.to_dict()) == new
    with pytest.raises(ValueError, match="position"):
        Event("e", "u", "i", "click", 1.0, None, "r1", 0)
    with pytest.raises(ValueError, match="recommendation_id"):
        Event("e", "u", "i", "click", 1.0, None, "")
    with pytest.raises(TypeError, match="position"):
        Event("e", "u", "i", "click", 1.0, None, "r1", 1.5)
