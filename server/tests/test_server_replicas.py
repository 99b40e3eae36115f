"""Two `recsys-serve` processes on one PostgreSQL store and one artifacts directory: each
folds the other's events and catalogue changes (the follower, recsys_server.follow), a
retried event is stored once whichever replica it reaches, and SIGKILL of one replica during
a burst of writes loses none it acknowledged."""

from __future__ import annotations

import contextlib
import threading
import time

import grpc
import psycopg
import pytest
from srv_support import (  # noqa: F401 (fixtures)
    Client,
    ServerProcess,
    event,
    metric,
    scrape,
    trained,
    wait_until,
)

from recsys_core import artifacts
from recsys_core.datastore import open_store
from recsys_proto.v1 import recommender_pb2 as pb

POPULARITY = pb.FALLBACK_TIER_POPULARITY


@pytest.fixture(scope="module")
def known_items(trained):  # noqa: F811
    loaded = artifacts.load_version(trained / artifacts.latest_version(trained))
    return [str(i) for i in loaded.item_ids]


@pytest.fixture
def replicas(trained, postgres_dsn):  # noqa: F811
    """Replicas A and B (processes) on one fresh PostgreSQL database, serving, with clients."""
    args = ["--artifacts", str(trained), "--store", postgres_dsn, "--poll-seconds", "3600"]
    procs = [ServerProcess(*args), ServerProcess(*args)]
    clients: list[Client] = []
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.wait_serving()
            clients.append(Client(p.address))
        yield procs, clients
    finally:
        for c in clients:
            c.close()
        for p in procs:
            p.kill()


def folded(proc: ServerProcess) -> float:
    return metric(scrape(proc.metrics_url), "recsys_follower_events_folded_total") or 0.0


def stored_ids(dsn: str) -> list[str]:
    with open_store(dsn) as store:
        return [s.event.event_id for s in store.read_events()]


def test_an_event_acknowledged_by_a_changes_b_answer(replicas, known_items):
    (pa, pb_), (a, b) = replicas
    before = b.Recommend(pb.RecommendRequest(user_id="newcomer", k=5))
    assert before.fallback_tier == POPULARITY  # B knows nothing of this user
    clicked = known_items[:3]
    events = [event(f"n-{n}", "newcomer", item, "purchase") for n, item in enumerate(clicked)]
    r = a.RecordInteractions(pb.RecordInteractionsRequest(events=events))
    assert (r.recorded, r.duplicates) == (3, 0)

    after = wait_until(
        lambda: (
            x
            if (x := b.Recommend(pb.RecommendRequest(user_id="newcomer", k=5))).fallback_tier
            != POPULARITY
            else None
        ),
        "B's answer for the user A recorded",
    )
    # B now answers from the user's history (A's purchases), not from popularity.
    assert after.fallback_tier != POPULARITY
    assert [i.item_id for i in after.items] != [i.item_id for i in before.items]
    assert folded(pb_) == 3  # by B's follower, each once
    assert folded(pa) == 0  # A's own events come back to its follower and are skipped


def test_one_event_id_sent_to_a_and_b_is_stored_once(replicas, known_items, postgres_dsn):
    (_, pb_), (a, b) = replicas
    e = event("retried-1", "retry-user", known_items[0], "click")
    ra = a.RecordInteractions(pb.RecordInteractionsRequest(events=[e]))
    rb = b.RecordInteractions(pb.RecordInteractionsRequest(events=[e]))
    assert (ra.recorded, ra.duplicates) == (1, 0)
    assert (rb.recorded, rb.duplicates) == (0, 1)  # B acknowledges it as a duplicate
    assert stored_ids(postgres_dsn).count("retried-1") == 1

    # B folds it once, through its follower (the duplicate acknowledgement folds nothing).
    wait_until(lambda: folded(pb_) >= 1, "B folded A's event")
    marker = event("marker-1", "retry-user", known_items[1], "click")
    a.RecordInteractions(pb.RecordInteractionsRequest(events=[marker]))
    wait_until(lambda: folded(pb_) >= 2, "B folded the marker")
    assert folded(pb_) == 2
    text = scrape(pb_.metrics_url)
    assert metric(text, "recsys_interactions_recorded_total") == 0.0

    # The same id sent to both at once: still one row, one of them acknowledges it recorded.
    both = event("retried-2", "retry-user", known_items[2], "click")
    got: list = []
    threads = [
        threading.Thread(
            target=lambda c=c: got.append(
                c.RecordInteractions(pb.RecordInteractionsRequest(events=[both]))
            )
        )
        for c in (a, b)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted((r.recorded, r.duplicates) for r in got) == [(0, 1), (1, 0)]
    assert stored_ids(postgres_dsn).count("retried-2") == 1


def test_sigkill_of_a_during_a_burst_loses_no_acknowledged_event(
    replicas, known_items, postgres_dsn
):
    (pa, pb_), _ = replicas
    acked: list[tuple[str, list[str]]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def burst(t: int) -> None:
        c = Client(pa.address)
        n = 0
        try:
            while not stop.is_set():
                user = f"burst-{t}-{n}"
                ids = [f"{user}-{j}" for j in range(4)]
                events = [
                    event(eid, user, known_items[(t * 17 + n * 4 + j) % len(known_items)], "click")
                    for j, eid in enumerate(ids)
                ]
                try:
                    r = c.RecordInteractions(pb.RecordInteractionsRequest(events=events), timeout=5)
                except grpc.RpcError:
                    return  # A is gone
                assert r.recorded == 4
                with lock:
                    acked.append((user, ids))
                n += 1
        finally:
            c.close()

    threads = [threading.Thread(target=burst, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    wait_until(lambda: len(acked) >= 60, "acknowledged writes on A")
    pa.kill()  # SIGKILL in the middle of the burst
    stop.set()
    for t in threads:
        t.join(30)

    stored = set(stored_ids(postgres_dsn))
    missing = [eid for _, ids in acked for eid in ids if eid not in stored]
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {missing[:3]}"
    # B, still serving, has them all in its live state.
    n_acked = sum(len(ids) for _, ids in acked)
    wait_until(lambda: folded(pb_) >= n_acked, "B folded every acknowledged event")
    b = Client(pb_.address)
    try:
        for user, _ids in acked[:: max(1, len(acked) // 20)]:
            r = b.Recommend(pb.RecommendRequest(user_id=user, k=5))
            assert r.fallback_tier != POPULARITY, user
    finally:
        b.close()


def test_a_catalogue_change_on_a_is_honoured_by_b(replicas):
    (_, pb_), (a, b) = replicas
    top = b.Recommend(pb.RecommendRequest(user_id="cat-user", k=5)).items[0].item_id
    r = a.SetItemAvailability(pb.SetItemAvailabilityRequest(item_ids=[top], available=False))
    assert r.changed == 1

    def gone():
        items = [i.item_id for i in b.Recommend(pb.RecommendRequest(user_id="cat-user", k=5)).items]
        return items if top not in items else None

    assert top not in wait_until(gone, "B stops recommending the item A made unavailable")
    assert b.GetItem(pb.GetItemRequest(item_id=top)).item.available is False
    text = scrape(pb_.metrics_url)
    assert metric(text, "recsys_follower_items_applied_total") == 1.0

    # and back, plus a new item upserted on B is seen by A
    b.SetItemAvailability(pb.SetItemAvailabilityRequest(item_ids=[top], available=True))
    b.UpsertItems(pb.UpsertItemsRequest(items=[pb.Item(item_id="brand-new", title="Brand new")]))
    wait_until(
        lambda: a.GetItem(pb.GetItemRequest(item_id=top)).item.available, "A sees it available"
    )

    def found():
        with contextlib.suppress(grpc.RpcError):
            return a.GetItem(pb.GetItemRequest(item_id="brand-new")).item.title
        return None

    assert wait_until(found, "A sees B's new item") == "Brand new"


def test_both_follow_by_polling_a_write_nobody_announced(replicas, known_items, postgres_dsn):
    """A row committed without NOTIFY (another tool writing the table) is found by the poll:
    a notification is only a wake-up, never the only way to see a change."""
    (pa, pb_), (a, b) = replicas
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute(
            "INSERT INTO events (event_id, user_id, item_id, event_type, ts, stored_at) "
            "VALUES ('quiet-1', 'quiet-user', %s, 'purchase', %s, %s)",
            (known_items[5], time.time(), time.time()),
        )
    wait_until(lambda: folded(pa) == 1 and folded(pb_) == 1, "both replicas polled it in")
    for c in (a, b):
        r = c.Recommend(pb.RecommendRequest(user_id="quiet-user", k=5))
        assert r.fallback_tier != POPULARITY
