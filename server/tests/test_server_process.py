"""The server as a process: durability across SIGKILL and graceful SIGTERM on both data store
backends, startup failures (a bad store among them), TLS, the concurrency limit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2
from srv_support import (  # noqa: F401 (fixtures)
    Client,
    ServerProcess,
    code_of,
    event,
    serving,
    sqlite_url,
    store_url,
    stored_events,
    trained,
    wait_until,
)

from recsys_core import artifacts
from recsys_core.datastore import redact
from recsys_proto.v1 import recommender_pb2 as pb
from recsys_proto.v1 import recommender_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def known_items(trained):  # noqa: F811
    loaded = artifacts.load_version(trained / artifacts.latest_version(trained))
    return [str(i) for i in loaded.item_ids]


def test_acknowledged_events_survive_sigkill(trained, known_items, store_url):  # noqa: F811
    args = ["--artifacts", str(trained), "--store", store_url]
    srv = ServerProcess(*args).start()
    srv.wait_serving()
    acked: list[tuple[str, list[str]]] = []  # (user, event ids) of acknowledged batches
    lock = threading.Lock()
    stop = threading.Event()

    def burst(t: int) -> None:
        c = Client(srv.address)
        b = 0
        try:
            while not stop.is_set():
                user = f"dur-{t}-{b}"
                ids = [f"{user}-{n}" for n in range(8)]
                events = [
                    event(eid, user, known_items[(t * 31 + b * 8 + n) % len(known_items)], "click")
                    for n, eid in enumerate(ids)
                ]
                try:
                    r = c.RecordInteractions(pb.RecordInteractionsRequest(events=events), timeout=5)
                except grpc.RpcError:
                    return  # the server is gone
                assert r.recorded == 8
                with lock:
                    acked.append((user, ids))
                b += 1
        finally:
            c.close()

    threads = [threading.Thread(target=burst, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    srv.kill()  # SIGKILL in the middle of the burst
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acked) >= 40

    stored = {e.event_id for e in stored_events(store_url)}
    missing = [eid for _, ids in acked for eid in ids if eid not in stored]
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {missing[:3]}"

    srv2 = ServerProcess(*args).start()
    try:
        srv2.wait_serving()
        c = Client(srv2.address)
        try:
            for user, _ids in acked[:: max(1, len(acked) // 25)]:
                r = c.Recommend(pb.RecommendRequest(user_id=user, k=5))
                # 8 replayed clicks (some may share an item): more than popularity.
                assert r.fallback_tier != pb.FALLBACK_TIER_POPULARITY, user
            user, ids = acked[0]
            again = [event(eid, user, known_items[0], "click") for eid in ids]
            r = c.RecordInteractions(pb.RecordInteractionsRequest(events=again))
            assert (r.recorded, r.duplicates) == (0, 8)
        finally:
            c.close()
    finally:
        srv2.kill()


def test_sigterm_is_graceful(trained, store_url):  # noqa: F811
    args = ("--artifacts", str(trained), "--store", store_url)
    srv = ServerProcess(*args).start()
    srv.wait_serving()
    c = Client(srv.address)
    c.RecordInteractions(pb.RecordInteractionsRequest(events=[event("t-1", "t", "x")]))
    c.close()
    t0 = time.monotonic()
    assert srv.terminate() == 0
    assert time.monotonic() - t0 < 15
    assert "shutting down" in srv.stderr and "stopped" in srv.stderr
    assert [e.event_id for e in stored_events(store_url)] == ["t-1"]
    # A new server opens the same store.
    srv2 = ServerProcess(*args).start()
    srv2.kill()


def test_stop_reports_not_serving_before_draining(trained, tmp_path):  # noqa: F811
    srv_cm = serving(trained, tmp_path, grace_seconds=5.0)
    srv = srv_cm.__enter__()
    try:
        running = srv.running
        core = running.core
        order: list[str] = []
        real_stop = running.server.stop

        async def spy_stop(grace):
            r = await running.health.Check(health_pb2.HealthCheckRequest(service=""), None)
            order.append(f"stop with health {r.status}")
            return await real_stop(grace)

        running.server.stop = spy_stop
        real_batch = core.recommend_batch
        entered = threading.Event()

        async def slow_batch(queries, deadline=None):
            # In flight until the shutdown has begun (health NOT_SERVING), however slow the
            # machine: the call is certainly one the shutdown must let finish.
            entered.set()
            request = health_pb2.HealthCheckRequest(service="")
            not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
            while (await running.health.Check(request, None)).status != not_serving:
                await asyncio.sleep(0.01)
            return await real_batch(queries, deadline)

        core.recommend_batch = slow_batch
        ch = grpc.insecure_channel(srv.address)
        stub = pb_grpc.RecommenderStub(ch)
        fut = stub.RecommendBatch.future(
            pb.RecommendBatchRequest(requests=[pb.RecommendRequest(user_id="x", k=2)]), timeout=30
        )
        assert entered.wait(30)  # in flight
        counts = srv.run(running.stop())
        assert order == [f"stop with health {health_pb2.HealthCheckResponse.NOT_SERVING}"]
        assert len(fut.result().responses) == 1  # the in-flight call finished in the grace
        assert (counts["completed"], counts["cancelled"]) == (1, 0), counts
        ch.close()
    finally:
        with contextlib.suppress(Exception):
            srv_cm.__exit__(None, None, None)


def _busy_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


@pytest.mark.parametrize("which", ["--port", "--metrics-port"])
def test_port_in_use_exits_with_a_clear_message(trained, tmp_path, which):  # noqa: F811
    busy = _busy_port()
    try:
        port = str(busy.getsockname()[1])
        args = ["--artifacts", str(trained), "--store", sqlite_url(tmp_path / "ev.db")]
        srv = ServerProcess(*args)
        srv.args += [which, port]  # the last flag wins over the free port
        proc = subprocess.run(srv.args, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1
        assert "recsys-serve: error:" in proc.stderr
        assert port in proc.stderr
        assert "in use" in proc.stderr or "Address already in use" in proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        busy.close()


def _serve_fails(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(ServerProcess(*args).args, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "recsys-serve: error:" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("mysql://h/recsys", "unsupported scheme 'mysql'"),
        ("/var/recsys/events.db", "not a URL"),
        ("sqlite://host/events.db", "a SQLite URL has no host"),
    ],
)
def test_malformed_store_url_exits_2_naming_it(trained, url, needle):  # noqa: F811
    proc = _serve_fails("--artifacts", str(trained), "--store", url)
    assert proc.returncode == 2 and needle in proc.stderr and url in proc.stderr


def test_store_in_a_missing_directory_exits_naming_it(trained, tmp_path):  # noqa: F811
    path = tmp_path / "no-such-dir" / "events.db"
    proc = _serve_fails("--artifacts", str(trained), "--store", sqlite_url(path))
    assert proc.returncode == 1 and "cannot open the data store" in proc.stderr
    assert f"directory {path.parent} does not exist" in proc.stderr
    assert not path.parent.exists()


def test_missing_postgres_database_exits_naming_it(trained, postgres_dsn):  # noqa: F811
    url = postgres_dsn.rsplit("/", 1)[0] + "/no_such_database"
    proc = _serve_fails("--artifacts", str(trained), "--store", url)
    assert proc.returncode == 1 and "cannot open the data store" in proc.stderr
    assert redact(url) in proc.stderr and "does not exist" in proc.stderr


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory this process cannot write to: by permissions for an ordinary user; root
    ignores those, so then a tmpfs mounted read-only (the test fails if it cannot mount)."""
    directory = tmp_path / "ro"
    directory.mkdir()
    if os.geteuid() != 0:
        directory.chmod(0o555)
        yield directory
        directory.chmod(0o755)
        return
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(directory)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.fail(f"a read-only path for root needs to mount a tmpfs: {proc.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def test_read_only_store_path_exits_naming_it(trained, read_only_dir):  # noqa: F811
    path = read_only_dir / "events.db"
    proc = _serve_fails("--artifacts", str(trained), "--store", sqlite_url(path))
    assert proc.returncode == 1 and "read-only" in proc.stderr and str(path) in proc.stderr


def test_log_dir_flag_points_to_its_replacements(trained, tmp_path):  # noqa: F811
    proc = _serve_fails("--artifacts", str(trained), "--log-dir", str(tmp_path / "ev"))
    assert proc.returncode == 2 and "--store" in proc.stderr and "--import-log" in proc.stderr


def test_bad_config_exits_2(tmp_path):
    cfg = tmp_path / "server.toml"
    cfg.write_text('default_model = "nope"\n')
    proc = subprocess.run(
        ServerProcess("--artifacts", str(tmp_path), "--config", str(cfg)).args,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "default_model" in proc.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_tls(trained, tmp_path):  # noqa: F811
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    with serving(trained, tmp_path, tls_cert=cert, tls_key=key) as srv:
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(srv.address, creds) as ch:
            r = pb_grpc.RecommenderStub(ch).Recommend(
                pb.RecommendRequest(user_id="x", k=2), timeout=10
            )
            assert len(r.items) == 2
        with grpc.insecure_channel(srv.address) as ch:
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.RecommenderStub(ch).Recommend(
                    pb.RecommendRequest(user_id="x", k=2), timeout=5
                )
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_concurrency_limit_is_resource_exhausted(trained, tmp_path):  # noqa: F811
    with serving(trained, tmp_path, max_concurrent_rpcs=2) as srv:
        core = srv.running.core
        real = core.recommend_batch
        entered: list[int] = []
        release = threading.Event()

        async def slow(queries, deadline=None):
            # In flight until the test has made its third call, however slow the machine.
            entered.append(1)
            while not release.is_set():
                await asyncio.sleep(0.01)
            return await real(queries, deadline)

        core.recommend_batch = slow
        with grpc.insecure_channel(srv.address) as ch:
            stub = pb_grpc.RecommenderStub(ch)
            req = pb.RecommendBatchRequest(requests=[pb.RecommendRequest(user_id="x", k=1)])
            slow_calls = [stub.RecommendBatch.future(req, timeout=60) for _ in range(2)]
            try:
                wait_until(lambda: len(entered) == 2, "both slow calls in flight")
                with pytest.raises(grpc.RpcError) as info:
                    stub.Recommend(pb.RecommendRequest(user_id="x", k=1), timeout=10)
            finally:
                release.set()
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert all(len(f.result().responses) == 1 for f in slow_calls)
            assert stub.Recommend(pb.RecommendRequest(user_id="x", k=1), timeout=10).items
