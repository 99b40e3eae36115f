"""5. SIGTERM under load and 6. crash durability (SIGKILL, torn tails, a full disk)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest
from fsupport import ServerProcess, calls, loadgen, metric_value, report, summary
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys_proto.v1 import recommender_pb2 as pb
from recsys_proto.v1 import recommender_pb2_grpc as pb_grpc
from recsys_trainer.eventlog import list_segments, read_events

GRACE = 3.0


def events(prefix: str, n: int, start: int = 0):
    return [
        pb.Interaction(
            event_id=f"{prefix}-{i}", user_id=f"u{i % 600:03d}", item_id="i001", event_type="view"
        )
        for i in range(start, start + n)
    ]


def test_sigterm_under_load(trained, tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text(f"grace_seconds = {GRACE}\n")
    log_dir = tmp_path / "ev"
    srv = ServerProcess(
        "--artifacts", str(trained), "--log-dir", str(log_dir), "--config", str(cfg)
    ).start()
    try:
        srv.wait_serving()
        ch = grpc.insecure_channel(srv.address)
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(), timeout=30)
        seen: list[tuple[float, int]] = []
        threading.Thread(
            target=lambda: [seen.append((time.time(), r.status)) for r in watch], daemon=True
        ).start()
        out = tmp_path / "calls.json"
        gen = loadgen(srv.address, out, rate=200, duration=4, timeout=10)
        wout = tmp_path / "writes.json"
        wgen = loadgen(srv.address, wout, rate=100, duration=4, timeout=10, method="record")
        stub = pb_grpc.RecommenderStub(ch)
        slow = pb.RecommendBatchRequest(
            requests=[
                pb.RecommendRequest(user_id=f"u{i:03d}", k=20, explain=True) for i in range(1, 600)
            ]
        )
        time.sleep(2.0)
        inflight = [stub.RecommendBatch.future(slow, timeout=30) for _ in range(3)]
        acked = [
            stub.RecordInteractions.future(
                pb.RecordInteractionsRequest(events=events(f"term{j}", 200)), timeout=30
            )
            for j in range(5)
        ]
        time.sleep(0.05)
        t_term = time.time()
        srv.proc.send_signal(signal.SIGTERM)
        rc = srv.proc.wait(30)
        t_exit = time.time()
        gen.wait(30)
        wgen.wait(30)
        slow_codes = [f.exception().code().name if f.exception() else "OK" for f in inflight]
        ack_codes = [f.exception().code().name if f.exception() else "OK" for f in acked]
        not_serving = [t for t, st in seen if st == health_pb2.HealthCheckResponse.NOT_SERVING]
        # "Already started": sent at least 20 ms before the signal (a call still in the
        # socket when the server stops accepting is refused, which is allowed).
        cs = [c for c in calls(out, wout) if c[0] < t_term - 0.02]
        s = summary(cs)
        stored = Counter(e.event_id for e in read_events(log_dir))
        ok_ids = [f"term{j}-{i}" for j in range(5) if ack_codes[j] == "OK" for i in range(200)]
        figures = {
            **s,
            "failed_started_calls": [
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
        }
        report("sigterm", figures)
        assert rc == 0, srv.stderr[-2000:]
        assert s["codes"] == {"OK": len(cs)}, figures
        assert slow_codes == ["OK"] * 3 and ack_codes == ["OK"] * 5, figures
        assert not_serving and not_serving[0] - t_term < 0.1, figures
        assert t_exit - t_term <= GRACE + 1.0, figures
        assert figures["acknowledged_writes_stored_once"], figures
    finally:
        srv.kill()


def test_sigkill_keeps_every_acknowledged_event_once(trained, tmp_path):
    log_dir = tmp_path / "ev"
    args = ("--artifacts", str(trained), "--log-dir", str(log_dir))
    srv = ServerProcess(*args).start()
    srv.wait_serving()
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w: int) -> None:
        stub = pb_grpc.RecommenderStub(grpc.insecure_channel(srv.address))
        n = 0
        while not stop.is_set() and n < 2500:
            batch = events(f"k{w}", 25, n)
            try:
                stub.RecordInteractions(pb.RecordInteractionsRequest(events=batch), timeout=5)
            except grpc.RpcError:
                return
            with lock:
                acked.extend(e.event_id for e in batch)
            n += 25

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]  # 10,000 events
    for t in threads:
        t.start()
    while len(acked) < 5000:
        time.sleep(0.005)
    srv.proc.kill()  # SIGKILL in the middle of the writes
    stop.set()
    for t in threads:
        t.join(30)
    n_acked = len(acked)
    srv.proc.wait(10)

    # Damage the tail like a torn write would: half a record, then a corrupt one.
    seg = list_segments(log_dir)[-1]
    good_size = seg.stat().st_size
    with seg.open("ab") as f:
        f.write(b'\x40\x00\x00\x00\xde\xad\xbe\xef{"event_id": "torn')
    srv2 = ServerProcess(*args).start()
    try:
        srv2.wait_serving()
        stored = Counter(e.event_id for e in read_events(log_dir))
        tails = metric_value(srv2.metrics_url, "recsys_interaction_log_corrupt_tails_total")
        set_aside = sorted(p.name for p in log_dir.iterdir() if ".corrupt-" in p.name)
        figures = {
            "acknowledged": n_acked,
            "stored": len(stored),
            "acknowledged_missing": sum(1 for i in acked if stored[i] == 0),
            "acknowledged_duplicated": sum(1 for i in acked if stored[i] > 1),
            "segment_kept_bytes": seg.stat().st_size,
            "valid_prefix_bytes": good_size,
            "corrupt_tails_metric": tails,
            "set_aside": set_aside,
        }
        report("sigkill_durability", figures)
        assert figures["acknowledged_missing"] == 0 and figures["acknowledged_duplicated"] == 0
        assert seg.stat().st_size == good_size, figures
        assert tails == 1 and len(set_aside) == 1, figures
    finally:
        srv2.kill()


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


def test_full_disk(trained, tmp_path):
    with small_tmpfs(tmp_path / "tiny", "256k") as log_dir:
        srv = ServerProcess("--artifacts", str(trained), "--log-dir", str(log_dir)).start()
        try:
            srv.wait_serving()
            stub = pb_grpc.RecommenderStub(grpc.insecure_channel(srv.address))
            codes: Counter = Counter()
            acked: list[str] = []
            message = ""
            for n in range(0, 40_000, 100):
                batch = events("full", 100, n)
                try:
                    stub.RecordInteractions(pb.RecordInteractionsRequest(events=batch), timeout=10)
                    codes["OK"] += 1
                    acked += [e.event_id for e in batch]
                except grpc.RpcError as e:
                    codes[e.code().name] += 1
                    message = e.details()
                    if codes[e.code().name] >= 5:
                        break
            rec = stub.Recommend(pb.RecommendRequest(user_id="u001", k=5), timeout=5)
            errors = metric_value(srv.metrics_url, "recsys_interaction_log_errors_total")
        finally:
            srv.kill()
        stored = Counter(e.event_id for e in read_events(log_dir))
        figures = {
            "codes": dict(codes),
            "message": message,
            "recommend_items_while_full": len(rec.items),
            "log_errors_metric": errors,
            "acknowledged_missing": sum(1 for i in acked if stored[i] != 1),
        }
        report("full_disk", figures)
        assert set(codes) == {"OK", "RESOURCE_EXHAUSTED"}, figures
        assert "interaction log write failed" in message and "ENOSPC" in message, figures
        assert len(rec.items) == 5 and errors >= 5, figures
        assert figures["acknowledged_missing"] == 0, figures
