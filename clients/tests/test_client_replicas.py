"""The SDK against several replicas: real ``recsys-serve`` processes on free loopback ports (the
same small artifacts, a store each). Calls spread over the replicas by gRPC's round-robin; a call
one replica refuses with UNAVAILABLE is retried on the other; SIGKILL of one replica under load
fails no idempotent call. Each server's own request counter says who answered."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from recsys_client import Backoff, RecsysClient, RecsysError, Unavailable

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "server" / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "server" / "tests"))

from srv_support import (  # noqa: E402
    ServerProcess,
    metric,
    scrape,
    sqlite_url,
    trained,  # noqa: F401 (fixture)
    wait_until,
)

FAST = Backoff(initial=0.01, multiplier=2.0, maximum=0.05, jitter=0.0)


def answered(srv: ServerProcess, code: str = "OK") -> int:
    """Recommend calls the server counted with that status (its own metrics endpoint)."""
    text = scrape(srv.metrics_url)
    return int(metric(text, "recsys_requests_total", method="Recommend", code=code) or 0)


def port_of(srv: ServerProcess) -> int:
    return int(srv.address.rsplit(":", 1)[1])


@pytest.fixture
def start_replica(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """start_replica(artifacts): a recsys-serve process with a store of its own; killed after."""
    started: list[ServerProcess] = []

    def start(artifacts: Path, wait_serving: bool = True) -> ServerProcess:
        store = sqlite_url(tmp_path / f"store-{len(started)}.db")
        srv = ServerProcess("--artifacts", str(artifacts), "--store", store)
        started.append(srv)
        srv.start()
        if wait_serving:
            srv.wait_serving()
        return srv

    yield start
    for srv in started:
        srv.kill()


@pytest.fixture
def replicas(trained: Path, start_replica) -> list[ServerProcess]:  # noqa: F811
    return [start_replica(trained), start_replica(trained)]


def localhost_resolves() -> bool:
    try:
        infos = socket.getaddrinfo("localhost", 1, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return any(info[4][0] == "127.0.0.1" for info in infos)


def _warm_up(client: RecsysClient, servers: list[ServerProcess]) -> None:
    """Calls until every server has answered one (round-robin connects to all of them, but
    the first calls may go to whichever was ready first)."""
    wait_until(
        lambda: client.recommend("warm-up", k=3) and all(answered(s) for s in servers),
        "every replica answered",
    )


@pytest.mark.parametrize("form", ["list", "names"])
def test_calls_are_spread_over_both_replicas(replicas, form):
    a, b = replicas
    if form == "list":
        target: str | list[str] = [a.address, b.address]
    else:
        if not localhost_resolves():
            pytest.skip("localhost does not resolve to 127.0.0.1 here")
        target = f"localhost:{port_of(a)},localhost:{port_of(b)}"
    with RecsysClient(target, timeout=30) as client:
        _warm_up(client, replicas)
        before = [answered(a), answered(b)]
        for n in range(20):
            assert len(client.recommend(f"spread-{n}", k=5).items) == 5
        after = [answered(a), answered(b)]
    # Round-robin over two ready replicas alternates: ten calls each.
    assert [x - y for x, y in zip(after, before, strict=True)] == [10, 10]


def test_dns_target(replicas):
    if not localhost_resolves():
        pytest.skip("localhost does not resolve to 127.0.0.1 here")
    a, b = replicas
    with RecsysClient(f"dns:///localhost:{port_of(a)}", timeout=30) as client:
        for n in range(5):
            assert client.recommend(f"dns-{n}", k=3).items
        assert client.health() == "SERVING"
    assert (answered(a), answered(b)) == (5, 0)


def connect_both(client: RecsysClient) -> None:
    """Health calls until both the replica without a model (NOT_SERVING) and the one with
    (SERVING) have answered: the client is connected to both."""
    wait_until(lambda: {client.health() for _ in range(4)} == {"SERVING", "NOT_SERVING"}, "both")


def test_a_refused_call_is_retried_on_the_other_replica(trained, tmp_path, start_replica):  # noqa: F811
    empty = tmp_path / "no-artifacts"
    empty.mkdir()
    # Listening, but with no model it answers every Recommend UNAVAILABLE.
    down = start_replica(empty, wait_serving=False)
    up = start_replica(trained)
    with RecsysClient([down.address, up.address], timeout=30, retries=3, backoff=FAST) as c:
        connect_both(c)
        for n in range(20):
            assert len(c.recommend(f"retry-{n}", k=4).items) == 4
    assert answered(up) == 20
    assert answered(down, "UNAVAILABLE") >= 1  # some first attempts went there, then moved on
    assert answered(down) == 0

    # Without retries, the calls round-robin sends to the replica with no model fail.
    failed = 0
    with RecsysClient([down.address, up.address], timeout=30, retries=0) as c:
        connect_both(c)
        for n in range(20):
            try:
                c.recommend(f"no-retry-{n}", k=4)
            except Unavailable:
                failed += 1
    assert failed == 10  # round-robin alternates


def test_sigkill_of_one_replica_under_load_fails_no_call(replicas, retry_decisions):
    a, b = replicas
    failures: list[str] = []
    ok_after_kill = 0
    killed_at: list[float] = []  # set once a is dead
    lock = threading.Lock()
    stop = threading.Event()
    client = RecsysClient([a.address, b.address], timeout=5)

    def load(t: int) -> None:
        nonlocal ok_after_kill
        n = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                r = client.recommend(f"load-{t}-{n % 50}", k=10)
            except RecsysError as e:
                with lock:
                    failures.append(f"{type(e).__name__}: {e}")
            else:
                with lock:
                    if len(r.items) != 10:
                        failures.append(f"{len(r.items)} items")
                    if killed_at and started > killed_at[0]:
                        ok_after_kill += 1
            n += 1

    threads = [threading.Thread(target=load, args=(t,)) for t in range(3)]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: answered(a) >= 30 and answered(b) >= 30, "both replicas under load")
        b_before = answered(b)
        a.kill()  # SIGKILL, calls in flight
        with lock:
            killed_at.append(time.monotonic())
        wait_until(lambda: ok_after_kill >= 150, "calls answered after the kill")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        client.close()
    assert failures == []
    # Every call made after the kill was answered by the survivor.
    assert answered(b) - b_before >= ok_after_kill
    retried = sum(d is not None for d in retry_decisions)
    print(f"calls retried after the kill: {retried}; answered after it: {ok_after_kill}")
