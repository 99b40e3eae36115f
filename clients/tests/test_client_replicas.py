"""The SDK against several replicas: real ``recsys-serve`` processes on free loopback ports (the
same small artifacts, a store each). Calls spread over the replicas by gRPC's round-robin; a call
one replica refuses with UNAVAILABLE is retried on the other; SIGKILL of one replica under load
fails no idempotent call. Each server's own request counter says who answered."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from recsys_client import AsyncRecsysClient, Backoff, RecsysClient, RecsysError, Unavailable

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


class Load:
    """Recommend calls without pause from ``workers`` callers of one client (threads of a
    RecsysClient, or tasks of an AsyncRecsysClient on a loop in a thread), counting failures
    and the calls that started after ``mark()`` and were answered."""

    def __init__(self, flavour: str, target: list[str], workers: int = 3) -> None:
        self.failures: list[str] = []
        self.answered_after = 0
        self._mark: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if flavour == "sync":
            client = RecsysClient(target, timeout=5)
            self._threads = [
                threading.Thread(target=self._sync_worker, args=(client, w)) for w in range(workers)
            ]
            self._close = client.close
        else:
            self._threads = [
                threading.Thread(target=asyncio.run, args=(self._aio(target, workers),))
            ]
            self._close = lambda: None

    def _count(self, started: float, result: Any = None, error: Exception | None = None) -> None:
        with self._lock:
            if error is not None:
                self.failures.append(f"{type(error).__name__}: {error}")
            elif len(result.items) != 10:
                self.failures.append(f"{len(result.items)} items")
            elif self._mark is not None and started > self._mark:
                self.answered_after += 1

    def _sync_worker(self, client: RecsysClient, w: int) -> None:
        n = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._count(started, client.recommend(f"load-{w}-{n % 50}", k=10))
            except RecsysError as e:
                self._count(started, error=e)
            n += 1

    async def _aio(self, target: list[str], workers: int) -> None:
        async with AsyncRecsysClient(target, timeout=5) as client:

            async def worker(w: int) -> None:
                n = 0
                while not self._stop.is_set():
                    started = time.monotonic()
                    try:
                        self._count(started, await client.recommend(f"load-{w}-{n % 50}", k=10))
                    except RecsysError as e:
                        self._count(started, error=e)
                    n += 1

            await asyncio.gather(*(worker(w) for w in range(workers)))

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def mark(self) -> None:
        with self._lock:
            self._mark = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)
        self._close()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_sigkill_of_one_replica_under_load_fails_no_call(replicas, retry_decisions, flavour):
    a, b = replicas
    load = Load(flavour, [a.address, b.address])
    try:
        load.start()
        wait_until(lambda: answered(a) >= 30 and answered(b) >= 30, "both replicas under load")
        b_before = answered(b)
        a.kill()  # SIGKILL, calls in flight
        load.mark()
        wait_until(lambda: load.answered_after >= 150, "calls answered after the kill")
    finally:
        load.stop()
    assert load.failures == []
    # Every call made after the kill was answered by the survivor.
    assert answered(b) - b_before >= load.answered_after
    retried = sum(d is not None for d in retry_decisions)
    print(f"{flavour}: calls retried at the kill: {retried}; answered after: {load.answered_after}")
