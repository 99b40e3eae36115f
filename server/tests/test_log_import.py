"""The first start with an old event log: imported into the data store once, idempotent, counts
checked, marked; a version trained on the old log keeps its cursor; a log still open by an old
server refuses the start."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from srv_support import (  # noqa: F401 (fixtures)
    Client,
    artifacts_copy,
    republish,
    server_config,
    serving,
    store_url,
    stored_events,
    trained,
    write_old_segment,
)

from recsys_core import artifacts
from recsys_core.datastore import open_store
from recsys_core.events import Event
from recsys_proto.v1 import recommender_pb2 as pb
from recsys_server.log_import import MARKER, ImportReport, count_problems
from recsys_server.old_log import lock_directory
from recsys_server.server import StartupError, start


@pytest.fixture(scope="module")
def items(trained):  # noqa: F811
    loaded = artifacts.load_version(trained / artifacts.latest_version(trained))
    return [str(i) for i in loaded.item_ids[20:26]]


def old_log(directory, items, torn: bytes = b"") -> list[Event]:
    """Two segments of an old server's log: 1,200 events of many users, then six purchases of
    ``old-user``, and ``torn`` (a torn tail) at the end."""
    bulk = [Event(f"b-{n}", f"bulk-{n % 50}", items[n % 6], "view", 1.7e9 + n) for n in range(1200)]
    mine = [Event(f"o-{n}", "old-user", it, "purchase", 1.8e9 + n) for n, it in enumerate(items)]
    write_old_segment(directory, 1, bulk)
    write_old_segment(directory, 2, mine, tail=torn)
    return bulk + mine


def marker(directory) -> dict:
    return json.loads((directory / MARKER).read_text())


def test_first_start_imports_once_in_log_order_and_replays_it(
    artifacts_copy,  # noqa: F811
    tmp_path,
    items,
    store_url,  # noqa: F811
):
    log_dir = tmp_path / "events"  # the default: beside the artifacts, where it always was
    torn = b"\x40\x00\x00\x00\xde\xad"
    events = old_log(log_dir, items, torn=torn)
    with serving(artifacts_copy, tmp_path, store=store_url) as srv:
        assert srv.config.import_log_dir == log_dir
        state = srv.running.core.versions.state
        assert len(state.live.get("old-user")) == 6 and state.live.seen == 1206  # replayed
        c = Client(srv.address)
        r = c.Recommend(pb.RecommendRequest(user_id="old-user", k=5))
        assert r.fallback_tier != pb.FALLBACK_TIER_POPULARITY
        c.close()
    assert stored_events(store_url) == events  # every valid event, in log order
    done = marker(log_dir)
    assert (done["read"], done["stored"], done["duplicates"]) == (1206, 1206, 0)
    assert done["store"] in srv.running.datastore.url
    # The torn tail was set aside, not dropped.
    [aside] = done["set_aside"]
    assert Path(aside).read_bytes() == torn

    # The next start does not read the log again: events added to it now are not imported.
    write_old_segment(log_dir, 3, [Event("late", "old-user", items[0], "view", 1.9e9)])
    with serving(artifacts_copy, tmp_path, store=store_url):
        pass
    assert len(stored_events(store_url)) == 1206

    # Without the marker the import runs again and stores nothing twice (UNIQUE event_id).
    (log_dir / MARKER).unlink()
    with serving(artifacts_copy, tmp_path, store=store_url):
        pass
    again = marker(log_dir)
    assert (again["read"], again["stored"], again["duplicates"]) == (1207, 1, 1206)
    assert [e.event_id for e in stored_events(store_url)][-2:] == ["o-5", "late"]


def test_a_version_trained_on_the_old_log_keeps_its_cursor(
    artifacts_copy,  # noqa: F811
    tmp_path,
    items,
):
    """Its manifest counts log records (``event_log_records``); the import stores record n as
    seq n, so exactly the records after that count are replayed."""
    events = old_log(tmp_path / "events", items)
    republish(artifacts_copy, params={"event_log_records": len(events) - 2})
    with serving(artifacts_copy, tmp_path) as srv:
        state = srv.running.core.versions.state
        assert state.snapshot.store_seq == 1204
        index = state.snapshot.item_index
        assert state.live.get("old-user").keys() == {index[items[4]], index[items[5]]}
        assert state.live.seen == 2


def test_an_old_log_still_open_by_an_old_server_refuses_the_start(
    trained,  # noqa: F811
    tmp_path,
    items,
):
    old_log(tmp_path / "old", items)
    fd = lock_directory(tmp_path / "old")
    try:
        cfg = server_config(trained, tmp_path, import_log=tmp_path / "old")
        with pytest.raises(StartupError, match=r"cannot import the old event log.*open by"):
            asyncio.run(start(cfg, poll=False))
    finally:
        os.close(fd)
    assert not (tmp_path / "old" / MARKER).exists()
    with open_store(cfg.store_url) as store:
        assert store.count() == 0


def test_count_checks():
    ok = ImportReport("d", "s", read=10, stored=7, duplicates=3)
    assert count_problems(ok, recovered=10, grown=7) == []
    assert count_problems(ok, recovered=11, grown=7) == ["read 10 events but recovery found 11"]
    assert count_problems(ok, recovered=10, grown=8) == [
        "the store grew by 8 events, the import stored 7"
    ]
    lost = ImportReport("d", "s", read=10, stored=7, duplicates=2)
    assert count_problems(lost, recovered=10, grown=7) == ["read 10 != stored 7 + duplicates 2"]
