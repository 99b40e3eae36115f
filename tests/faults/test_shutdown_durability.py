"""5. SIGTERM under load and 6. crash durability (SIGKILL, retries, a full disk), against the
data store: the server-level durability scenarios run on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest
from fsupport import ServerProcess, calls, events, loadgen, metric_value, report, summary
from grpc_health.v1 import health_pb2, health_pb2_grpc
from srv_support import (  # noqa: F401 (fixture)
    InProcessServer,
    server_config,
    sqlite_url,
    store_url,
    stored_events,
    wait_until,
)

from recsys_proto.v1 import recommender_pb2 as pb
from recsys_proto.v1 import recommender_pb2_grpc as pb_grpc
from recsys_server.service import SERVICE_NAME

# The server's promise at SIGTERM (docs/serving.md, "Shutdown"): every call it accepted before
# health turned NOT_SERVING completes; every later call is refused with UNAVAILABLE while the
# port stays open (drain_seconds); none ends CANCELLED. The drain here does not end early on a
# quiet spell (drain_quiet_seconds = DRAIN): a load generator starved of CPU for a moment must
# not look like a client that went away. RECSYS_SIGTERM_RUNS=20 repeats the scenario.
GRACE, DRAIN = 4.0, 3.0
RUNS = int(os.environ.get("RECSYS_SIGTERM_RUNS", "1"))
REFUSAL = "server is shutting down"


def shutdown_counts(stderr: str) -> dict:
    """The counts the server logs as its last act (`Running.stop`)."""
    lines = re.findall(r"shutdown counts (\{.*\})", stderr)
    assert lines, f"no shutdown counts in the server log:\n{stderr[-3000:]}"
    return json.loads(lines[-1])


def outcome(f) -> str:
    e = f.exception()
    if e is None:
        return "OK"
    return (
        "REFUSED"
        if e.code() == grpc.StatusCode.UNAVAILABLE and REFUSAL in e.details()
        else e.code().name
    )


def wait_answered(srv: ServerProcess, method: str) -> None:
    deadline = time.monotonic() + 60
    while metric_value(srv.metrics_url, "recsys_requests_total", method=method, code="OK") == 0:
        assert time.monotonic() < deadline, f"no {method} call answered in 60 s"
        time.sleep(0.02)


def wait_inflight(srv: ServerProcess, n: int) -> None:
    """Until the server counts ``n`` calls in flight (the batches it has accepted), so the
    signal meets them running rather than after a guessed sleep."""
    deadline = time.monotonic() + 30
    while metric_value(srv.metrics_url, "recsys_inflight_requests") < n:
        assert time.monotonic() < deadline, f"fewer than {n} calls in flight after 30 s"
        time.sleep(0.005)


def held_batch(stub, total_s: float = 1.0, batches: int = 6) -> pb.RecommendBatchRequest:
    """A RecommendBatch sized so that ``batches`` of them take about ``total_s`` on this
    machine and these models: measured with one small batch first, so the batches are still
    running at the signal but end well inside the grace period however slow the machine or
    the explanations are."""
    probe = [pb.RecommendRequest(user_id=f"u{i:03d}", k=20, explain=True) for i in range(1, 41)]
    # timed warm (the second call): the batches' users are answered warm too, and a cold
    # probe sized them too small to still be running at the signal
    stub.RecommendBatch(pb.RecommendBatchRequest(requests=probe), timeout=30)
    t0 = time.perf_counter()
    stub.RecommendBatch(pb.RecommendBatchRequest(requests=probe), timeout=30)
    per_user = (time.perf_counter() - t0) / len(probe)
    # at most 300 users: an answer of k=20 explained is ~9 kB, and the client takes 4 MB
    n = int(min(max(total_s / batches / per_user, 10), 300))
    return pb.RecommendBatchRequest(
        requests=[
            pb.RecommendRequest(user_id=f"u{i:03d}", k=20, explain=True) for i in range(1, n + 1)
        ]
    )


@pytest.mark.parametrize("run", range(RUNS))
def test_sigterm_under_load(trained, tmp_path, run, store_url):  # noqa: F811
    cfg = tmp_path / "s.toml"
    # No admission limit: on a starved machine the six batches hold the loop while the load
    # piles up past 256 in flight, and the refusals (RESOURCE_EXHAUSTED) are the overload
    # scenario's subject (test_overload_deadlines), not this one's.
    cfg.write_text(
        f"grace_seconds = {GRACE}\ndrain_seconds = {DRAIN}\ndrain_quiet_seconds = {DRAIN}\n"
        "max_concurrent_rpcs = 100000\n"
    )
    srv = ServerProcess(
        "--artifacts", str(trained), "--store", store_url, "--config", str(cfg)
    ).start()
    try:
        srv.wait_serving()
        ch = grpc.insecure_channel(srv.address)
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(), timeout=30)
        seen: list[tuple[float, int]] = []

        def follow() -> None:
            with contextlib.suppress(grpc.RpcError):  # the stream ends with the server
                for r in watch:
                    seen.append((time.time(), r.status))

        threading.Thread(target=follow, daemon=True).start()
        # Two kinds of client: one balances on the server's health (its calls stop at
        # NOT_SERVING, failing locally with UNAVAILABLE), one keeps sending regardless until
        # about 1 s after the signal, inside the drain window. Each is known to be sending
        # once the server has answered it (not a guess at its start-up time).
        out = tmp_path / "calls.json"
        gen = loadgen(srv.address, out, rate=200, duration=6, timeout=10, health_check=SERVICE_NAME)
        wait_answered(srv, "Recommend")
        wout = tmp_path / "writes.json"
        wgen = loadgen(srv.address, wout, rate=100, duration=2.0, timeout=10, method="record")
        wait_answered(srv, "RecordInteractions")
        stub = pb_grpc.RecommenderStub(ch)
        slow = held_batch(stub)
        time.sleep(0.7)
        # Six batches hold the server for about a second; the signal is sent once the server
        # counts them in flight; the writes race it. Each ends OK, or UNAVAILABLE when it
        # reached the server only after NOT_SERVING; the server's counts say which were
        # accepted.
        inflight = [stub.RecommendBatch.future(slow, timeout=30) for _ in range(6)]
        wait_inflight(srv, len(inflight))
        acked = [
            stub.RecordInteractions.future(
                pb.RecordInteractionsRequest(events=events(f"term{j}", 200)), timeout=30
            )
            for j in range(5)
        ]
        t_term = time.time()
        srv.proc.send_signal(signal.SIGTERM)
        rc = srv.proc.wait(60)
        t_exit = time.time()
        gen.wait(60)
        wgen.wait(60)
        slow_codes = [outcome(f) for f in inflight]
        ack_codes = [outcome(f) for f in acked]
        not_serving = [t for t, st in seen if st == health_pb2.HealthCheckResponse.NOT_SERVING]
        cs = calls(out, wout)
        server = shutdown_counts(srv.stderr)
        refused = [c for c in cs if c[2] == "UNAVAILABLE" and REFUSAL in c[4]]
        stored = Counter(e.event_id for e in stored_events(store_url))
        ok_ids = [f"term{j}-{i}" for j in range(5) if ack_codes[j] == "OK" for i in range(200)]
        refused_ids = [f"term{j}-0" for j in range(5) if ack_codes[j] == "REFUSED"]
        figures = {
            **summary(cs),
            "server": server,
            "codes_after_signal": dict(Counter(c[2] for c in cs if c[0] + c[1] >= t_term)),
            "client_refused_while_draining": len(refused),
            "not_ok_calls": [
                [round(c[0] - t_term, 3), round(c[1], 3), c[2], c[4]] for c in cs if c[2] != "OK"
            ][:10],
            "exit_code": rc,
            "exit_after_s": round(t_exit - t_term, 2),
            "grace_s": GRACE,
            "not_serving_after_ms": round((not_serving[0] - t_term) * 1e3, 1)
            if not_serving
            else None,
            "inflight_batches": slow_codes,
            "inflight_writes": ack_codes,
            "acknowledged_writes_stored_once": all(stored[i] == 1 for i in ok_ids),
            "refused_writes_stored": sum(stored[i] for i in refused_ids),
        }
        report(f"sigterm_{store_url.split(':', 1)[0]}", figures)
        assert rc == 0, srv.stderr[-2000:]
        # What the server counted: nothing it accepted was cancelled; the refusals it counted
        # are the ones the clients saw.
        assert server["cancelled"] == 0, figures
        assert server["refused"] > 0, figures  # the refusal path ran
        # (the refusals of the loadgen clients, and of the batches and writes sent here)
        here = (slow_codes + ack_codes).count("REFUSED")
        assert server["refused"] == len(refused) + here, figures
        # What the clients saw of the shutdown: every call that ended after the signal is OK
        # or UNAVAILABLE (refused while draining, or withheld by the health-checking client),
        # never CANCELLED. (Calls that ended before it cannot have met the shutdown; on a
        # machine starved for seconds grpc may refuse some of those as overload, which the
        # overload scenario covers.)
        assert set(figures["codes_after_signal"]) <= {"OK", "UNAVAILABLE"}, figures
        assert set(slow_codes + ack_codes) <= {"OK", "REFUSED"} and "OK" in slow_codes, figures
        assert server["completed"] > 0, figures  # calls in flight at the signal finished
        assert not_serving, figures
        assert figures["acknowledged_writes_stored_once"], figures
        assert figures["refused_writes_stored"] == 0, figures
    finally:
        srv.kill()


def test_drain_refuses_new_calls_then_ends_when_quiet(trained, tmp_path):
    """In process: while draining, a new call is refused with UNAVAILABLE and counted; the
    drain ends once no call has arrived for drain_quiet_seconds, long before drain_seconds."""
    srv = InProcessServer(
        server_config(
            trained, tmp_path, grace_seconds=120.0, drain_seconds=120.0, drain_quiet_seconds=3.0
        )
    )
    srv.wait_serving()
    ch = grpc.insecure_channel(srv.address)
    stub = pb_grpc.RecommenderStub(ch)
    assert stub.Recommend(pb.RecommendRequest(user_id="u001", k=3), timeout=30).items
    stopping = asyncio.run_coroutine_threadsafe(srv.running.stop(), srv.loop)
    deadline = time.monotonic() + 30
    while not srv.running.observe.draining:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(grpc.RpcError) as refused:
        stub.Recommend(pb.RecommendRequest(user_id="u001", k=3), timeout=30)
    counts = stopping.result(120)
    ch.close()
    srv.loop.call_soon_threadsafe(srv.loop.stop)
    srv.thread.join(10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "server is shutting down" in refused.value.details()
    assert (counts["completed"], counts["cancelled"], counts["refused"]) == (0, 0, 1), counts
    assert 3.0 <= counts["drain_seconds"] < 120.0, counts


def test_sigkill_keeps_every_acknowledged_event_once(trained, store_url):  # noqa: F811
    """SIGKILL while four clients write (at least 5,000 events acknowledged): after a restart
    every acknowledged event is stored exactly once, and the clients' retries (of the calls
    that got no answer, and of acknowledged ones) store nothing twice."""
    args = ("--artifacts", str(trained), "--store", store_url)
    srv = ServerProcess(*args).start()
    srv.wait_serving()
    acked: list[str] = []
    in_flight: list[list] = []  # the call each writer had open when the server died
    lock = threading.Lock()

    def writer(w: int) -> None:
        # Writes until its 2,500 events are sent or a call fails: after the kill, each writer
        # not yet done ends on one call that got no answer (in_flight).
        stub = pb_grpc.RecommenderStub(grpc.insecure_channel(srv.address))
        n = 0
        while n < 2500:
            batch = events(f"k{w}", 25, n)
            try:
                stub.RecordInteractions(pb.RecordInteractionsRequest(events=batch), timeout=30)
            except grpc.RpcError:
                with lock:
                    in_flight.append(batch)
                return
            with lock:
                acked.extend(e.event_id for e in batch)
            n += 25

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]  # 10,000 events
    for t in threads:
        t.start()
    # Polled often so the kill lands soon after the 5,000th acknowledgement, far from the end
    # of the 10,000; the limit only bounds a hang (e.g. writers that all failed).
    wait_until(
        lambda: len(acked) >= 5000 or not any(t.is_alive() for t in threads),
        "5,000 events acknowledged",
        300,
        every=0.002,
    )
    srv.proc.kill()  # SIGKILL in the middle of the writes
    for t in threads:
        t.join(30)
    n_acked = len(acked)
    srv.proc.wait(10)

    stored = Counter(e.event_id for e in stored_events(store_url))
    srv2 = ServerProcess(*args).start()
    try:
        srv2.wait_serving()
        stub = pb_grpc.RecommenderStub(grpc.insecure_channel(srv2.address))
        retried = [
            stub.RecordInteractions(pb.RecordInteractionsRequest(events=b), timeout=30)
            for b in [*in_flight, events("k0", 25, 0)]  # the last: acknowledged before
        ]
        after = Counter(e.event_id for e in stored_events(store_url))
    finally:
        srv2.kill()
    sent = set(acked) | {e.event_id for b in in_flight for e in b}
    figures = {
        "store": store_url.split(":", 1)[0],
        "acknowledged": n_acked,
        "stored_after_kill": sum(stored.values()),
        "acknowledged_missing": sum(1 for i in acked if stored[i] == 0),
        "acknowledged_duplicated": sum(1 for i in acked if stored[i] > 1),
        "unanswered_calls": len(in_flight),
        "unanswered_events_stored": sum(stored[e.event_id] for b in in_flight for e in b),
        "retries": [(r.recorded, r.duplicates) for r in retried],
        "stored_after_retries": sum(after.values()),
    }
    report(f"sigkill_durability_{figures['store']}", figures)
    assert n_acked >= 5000, figures
    # The kill came during the burst: writers still had events to send.
    assert len(in_flight) >= 1, figures
    assert figures["acknowledged_missing"] == 0 and figures["acknowledged_duplicated"] == 0
    # A retry answers for every event: new ones recorded, the ones stored before duplicates.
    assert all(r.recorded + r.duplicates == 25 for r in retried), figures
    assert retried[-1].duplicates == 25, figures
    assert set(after) == sent and set(after.values()) == {1}, figures


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.fail(f"the full-disk scenario needs to mount a tmpfs (root): {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """A file taking every free byte of ``directory``'s filesystem."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 512)
    return filler


def test_full_disk(trained, tmp_path):
    """SQLite on a full disk: no OK without a commit (RESOURCE_EXHAUSTED naming the file),
    reads keep serving, and once space returns the same server takes writes again."""
    with small_tmpfs(tmp_path / "tiny", "1m") as directory:
        path = directory / "events.db"
        srv = ServerProcess("--artifacts", str(trained), "--store", sqlite_url(path)).start()
        try:
            srv.wait_serving()
            stub = pb_grpc.RecommenderStub(grpc.insecure_channel(srv.address))
            first = events("full", 100, 0)
            stub.RecordInteractions(pb.RecordInteractionsRequest(events=first), timeout=10)
            filler = fill(directory)
            codes: Counter = Counter()
            acked = [e.event_id for e in first]
            refused: list = []
            message = ""
            for n in range(100, 40_000, 100):
                batch = events("full", 100, n)
                try:
                    stub.RecordInteractions(pb.RecordInteractionsRequest(events=batch), timeout=10)
                    codes["OK"] += 1
                    acked += [e.event_id for e in batch]
                except grpc.RpcError as e:
                    codes[e.code().name] += 1
                    message = e.details()
                    refused.append(batch)
                    if len(refused) >= 5:
                        break
            rec = stub.Recommend(pb.RecommendRequest(user_id="u001", k=5), timeout=5)
            errors = metric_value(srv.metrics_url, "recsys_store_commit_errors_total")
            filler.unlink()  # space returns: the same server, no restart
            retried = [
                stub.RecordInteractions(pb.RecordInteractionsRequest(events=b), timeout=10)
                for b in refused
            ]
        finally:
            srv.kill()
        stored = Counter(e.event_id for e in stored_events(sqlite_url(path)))
        figures = {
            "codes": dict(codes),
            "message": message,
            "recommend_items_while_full": len(rec.items),
            "commit_errors_metric": errors,
            "retried_after_space_returned": [(r.recorded, r.duplicates) for r in retried],
            "acknowledged_missing": sum(1 for i in acked if stored[i] != 1),
            "refused_then_retried_missing": sum(
                1 for b in refused for e in b if stored[e.event_id] != 1
            ),
        }
        report("full_disk", figures)
        assert codes["RESOURCE_EXHAUSTED"] == 5 and set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}
        assert message.startswith("data store write failed: ") and str(path) in message, figures
        assert "SQLITE_FULL" in message, figures
        assert len(rec.items) == 5 and errors >= 5, figures
        assert all(r.recorded + r.duplicates == 100 for r in retried), figures
        assert figures["acknowledged_missing"] == 0, figures
        assert figures["refused_then_retried_missing"] == 0, figures
