"""9. The data store failing under a running server, and damaged at its start (issue 17): a
real `recsys-serve` each time. PostgreSQL stopped and started again under a write and read
load; a torn or corrupt SQLite file refused at start without being touched; a SQLite WAL left
by a SIGKILL recovered. (SIGTERM, SIGKILL and SQLite's full disk are in
test_shutdown_durability.py.)

Each scenario asserts what was counted (calls, rows, metrics, health changes) against what the
server promises; waits are hang limits only.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import socket
import sqlite3
import struct
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

import grpc
import psycopg
import pytest
from fsupport import ServerProcess, events, metric, report, scrape
from grpc_health.v1 import health_pb2, health_pb2_grpc
from srv_support import sqlite_url, stored_events, wait_until

from recsys_core.datastore import redact
from recsys_proto.v1 import recommender_pb2 as pb
from recsys_proto.v1 import recommender_pb2_grpc as pb_grpc
from recsys_server.core import STORE_WRITE_FAILED
from recsys_server.store_watch import STORE_SERVICE

HANG = 180.0  # bounds a hang only: every wait normally ends in a few seconds
STATUS = health_pb2.HealthCheckResponse.ServingStatus.Name

# --- PostgreSQL stopped and restarted under load ---------------------------------------------

WRITERS, BATCH = 4, 20
OK_EACH = 5  # OK calls each writer gets before the stop, and again after the restart
REFUSED_EACH = 2  # refusals each writer gets from calls it started while PostgreSQL was down
# The phases of the scenario, in order; each call records the phase it started and ended in.
UP, STOPPING, DOWN, STARTING, BACK = range(5)
PHASES = ("up", "stopping", "down", "starting", "back")


@dataclass
class Call:
    started: int  # phase
    ended: int
    code: str
    t_end: float  # time.monotonic()
    details: str = ""
    batch: list | None = None  # RecordInteractions: the events sent
    recorded: int = 0
    duplicates: int = 0


class Load:
    """WRITERS threads calling RecordInteractions with fresh batches back to back, one thread
    calling Recommend, and a Watch of the store's health service: each on its own channel."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.phase = UP
        self.halt = threading.Event()
        self.writes: list[list[Call]] = [[] for _ in range(WRITERS)]
        self.reads: list[Call] = []
        self.health: list[tuple[int, str]] = []  # (phase, status) as the Watch reported them
        self.channels = [grpc.insecure_channel(address) for _ in range(WRITERS + 2)]
        self.watch = health_pb2_grpc.HealthStub(self.channels[-1]).Watch(
            health_pb2.HealthCheckRequest(service=STORE_SERVICE), timeout=10 * HANG
        )
        self.threads = [
            threading.Thread(target=self._write, args=(w,), daemon=True) for w in range(WRITERS)
        ]
        self.threads += [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._follow, daemon=True),
        ]

    def start(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        if self.halt.is_set():
            return
        self.halt.set()
        self.watch.cancel()
        for t in self.threads:
            t.join(2 * HANG)
        for c in self.channels:
            c.close()

    def _write(self, w: int) -> None:
        stub = pb_grpc.RecommenderStub(self.channels[w])
        n = 0
        while not self.halt.is_set():
            batch = events(f"pg{w}", BATCH, n)
            n += BATCH
            started = self.phase
            try:
                r = stub.RecordInteractions(
                    pb.RecordInteractionsRequest(events=batch), timeout=HANG / 3
                )
                call = Call(
                    started, self.phase, "OK", time.monotonic(), "", batch, r.recorded, r.duplicates
                )
            except grpc.RpcError as e:
                call = Call(
                    started, self.phase, e.code().name, time.monotonic(), e.details() or "", batch
                )
            self.writes[w].append(call)

    def _read(self) -> None:
        stub = pb_grpc.RecommenderStub(self.channels[WRITERS])
        i = 0
        while not self.halt.is_set():
            i += 1
            started = self.phase
            try:
                stub.Recommend(pb.RecommendRequest(user_id=f"u{i % 600:03d}", k=5), timeout=30)
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name
            self.reads.append(Call(started, self.phase, code, time.monotonic()))
            self.halt.wait(0.005)  # pacing: leave the CPU to the writers and the server

    def _follow(self) -> None:
        with contextlib.suppress(grpc.RpcError):  # cancelled by stop()
            for r in self.watch:
                self.health.append((self.phase, STATUS(r.status)))

    # -- counts ----------------------------------------------------------------------------

    def ok(self, w: int, started: int | None = None) -> int:
        return sum(
            1
            for c in list(self.writes[w])
            if c.code == "OK" and (started is None or c.started == started)
        )

    def refused(self, w: int, started: int | None = None) -> int:
        return sum(
            1
            for c in list(self.writes[w])
            if c.code != "OK" and (started is None or c.started == started)
        )

    def health_status(self) -> str | None:
        return self.health[-1][1] if self.health else None


def table(dsn: str) -> Counter:
    """event_id -> rows, read from the events table directly (not through the data store)."""
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        rows = conn.execute("SELECT event_id, COUNT(*) FROM events GROUP BY event_id").fetchall()
    return Counter(dict(rows))


def changes(seen: list[tuple[int, str]]) -> list[str]:
    out: list[str] = []
    for _, status in seen:
        if not out or out[-1] != status:
            out.append(status)
    return out


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_stopped_and_restarted_under_load(trained, postgres_server, postgres_dsn, mode):
    """PostgreSQL stopped ("fast": connections closed, transactions rolled back; "immediate":
    killed, crash recovery at the next start) while four writers and a reader keep calling,
    then started again: no OK without a commit, every refusal UNAVAILABLE naming the store,
    Recommend answers throughout, health and metrics follow, and the same recsys-serve takes
    writes again; the refused batches, retried, are stored once."""
    srv = ServerProcess("--artifacts", str(trained), "--store", postgres_dsn).start()
    load = Load(srv.address)
    t: dict[str, float] = {}
    try:
        srv.wait_serving()
        load.start()
        wait_until(
            lambda: (
                all(load.ok(w) >= OK_EACH for w in range(WRITERS))
                and load.health_status() == "SERVING"
            ),
            "writes before the stop",
            HANG,
        )
        m_up = scrape(srv.metrics_url)
        port = postgres_server.port

        load.phase = STOPPING
        t["stop"] = time.monotonic()
        postgres_server.stop(mode)
        load.phase = DOWN
        t["down"] = time.monotonic()
        wait_until(
            lambda: (
                all(load.refused(w, started=DOWN) >= REFUSED_EACH for w in range(WRITERS))
                and load.health_status() == "NOT_SERVING"
            ),
            "each writer refused while PostgreSQL is down, store health NOT_SERVING",
            HANG,
        )
        m_down = scrape(srv.metrics_url)
        with grpc.insecure_channel(srv.address) as ch:
            overall = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(), timeout=30
            )

        load.phase = STARTING
        t["start"] = time.monotonic()
        postgres_server.start()
        assert postgres_server.port == port, "PostgreSQL came back on another port"
        load.phase = BACK
        t["back"] = time.monotonic()
        wait_until(
            lambda: (
                all(load.ok(w, started=BACK) >= OK_EACH for w in range(WRITERS))
                and load.health_status() == "SERVING"
            ),
            "writes again after the restart, store health SERVING",
            HANG,
        )
        t["recovered"] = time.monotonic()
        load.stop()
        assert srv.proc.poll() is None, "recsys-serve exited"  # the same process throughout

        writes = [c for w in load.writes for c in w]
        acked = [c for c in writes if c.code == "OK"]
        refused = [c for c in writes if c.code != "OK"]
        before = table(postgres_dsn)  # before the retries
        stub = pb_grpc.RecommenderStub(ch := grpc.insecure_channel(srv.address))
        retried = [
            stub.RecordInteractions(pb.RecordInteractionsRequest(events=c.batch), timeout=60)
            for c in refused
        ]
        ch.close()
        after = table(postgres_dsn)
        m_end = scrape(srv.metrics_url)
    finally:
        load.stop()
        srv.kill()
        postgres_server.start()

    def stored_before(c: Call) -> int:
        return sum(before[e.event_id] for e in c.batch)

    prefix = f"{STORE_WRITE_FAILED}: {redact(postgres_dsn)}"
    sent = [e.event_id for c in writes for e in c.batch]
    m_refused = metric(
        m_end, "recsys_requests_total", method="RecordInteractions", code="UNAVAILABLE"
    )
    figures = {
        "store": "postgresql",
        "stop_mode": mode,
        "calls": {
            PHASES[p]: dict(Counter(c.code for c in writes if c.started == p)) for p in range(5)
        },
        "acknowledged_events": len(acked) * BATCH,
        "acknowledged_missing": sum(1 for c in acked for e in c.batch if before[e.event_id] == 0),
        "acknowledged_not_fresh": sum(1 for c in acked if (c.recorded, c.duplicates) != (BATCH, 0)),
        "refused_calls": len(refused),
        "refused_codes": dict(Counter(c.code for c in refused)),
        "refused_messages": sorted({c.details.split(": ", 2)[-1][:120] for c in refused}),
        "refused_not_naming_the_store": sum(1 for c in refused if not c.details.startswith(prefix)),
        "refused_stored_before_retry": [stored_before(c) for c in refused if stored_before(c)],
        "refused_partly_stored": sum(1 for c in refused if 0 < stored_before(c) < BATCH),
        "retries": dict(Counter(f"{r.recorded}+{r.duplicates}" for r in retried)),
        "retries_disagreeing": sum(
            1
            for c, r in zip(refused, retried, strict=True)
            if (r.recorded, r.duplicates) != (BATCH - stored_before(c), stored_before(c))
        ),
        "rows": sum(after.values()),
        "rows_duplicated": sum(1 for n in after.values() if n > 1),
        "rows_never_sent": len(set(after) - set(sent)),
        "recommend": {
            PHASES[p]: dict(Counter(c.code for c in load.reads if c.started == p == c.ended))
            for p in range(5)
        },
        "recommend_not_ok": sum(1 for c in load.reads if c.code != "OK"),
        "store_health_changes": changes(load.health),
        "overall_health_while_down": STATUS(overall.status),
        "store_up": [metric(m, "recsys_store_up") for m in (m_up, m_down, m_end)],
        "commit_errors": [
            metric(m, "recsys_store_commit_errors_total") for m in (m_up, m_down, m_end)
        ],
        "server_refused": m_refused,
        "events_committed": metric(m_end, "recsys_store_events_committed_total"),
        "interactions_recorded": metric(m_end, "recsys_interactions_recorded_total"),
        "recorded_in_answers": sum(c.recorded for c in acked) + sum(r.recorded for r in retried),
        "down_s": round(t["start"] - t["down"], 2),
        "first_ok_after_restart_s": round(
            min(c.t_end for c in acked if c.ended == BACK) - t["back"], 2
        ),
        "refused_after_restart": sum(1 for c in refused if c.started == BACK),
        "recovered_after_restart_s": round(t["recovered"] - t["back"], 2),
        "server_tracebacks": srv.stderr.count("Traceback"),
    }
    report(f"store_restart_postgresql_{mode}", figures)
    # No OK without a commit: every acknowledged event is in the table, once, and each OK
    # answer recorded its whole fresh batch.
    assert figures["acknowledged_missing"] == 0 and figures["acknowledged_not_fresh"] == 0
    assert figures["rows_duplicated"] == 0 and figures["rows_never_sent"] == 0, figures
    # Refusals only once PostgreSQL went away, each UNAVAILABLE naming the store (redacted).
    assert not [c for c in refused if c.ended == UP], figures
    assert figures["refused_codes"].keys() == {"UNAVAILABLE"}, figures
    assert figures["refused_not_naming_the_store"] == 0, figures
    assert not [c for c in refused if "\n" in c.details], figures  # one line each
    assert not any(postgres_server.password in c.details for c in refused)
    # A refused call is all or nothing (a commit whose answer was lost may have stored it:
    # then its retry reports every event a duplicate, and nothing is stored twice).
    assert figures["refused_partly_stored"] == 0 and figures["retries_disagreeing"] == 0
    assert set(after) == set(sent) and len(sent) == len(set(sent)), figures
    # Reads answered throughout, also while PostgreSQL was down.
    assert figures["recommend_not_ok"] == 0 and figures["recommend"]["down"].get("OK", 0) > 0
    # Health: the store went NOT_SERVING (not before the stop) and back to SERVING; the
    # recommender stayed in rotation.
    health = figures["store_health_changes"]
    assert health[0] == health[-1] == "SERVING" and "NOT_SERVING" in health, figures
    assert not [p for p, st in load.health if st == "NOT_SERVING" and p == UP], figures
    assert figures["overall_health_while_down"] == "SERVING", figures
    # Metrics: the store was up, down, up; no commit failed before the stop; every failed
    # commit failed at least one call, and the server's refusals are the clients'.
    assert figures["store_up"] == [1, 0, 1], figures
    errors = figures["commit_errors"]
    assert errors[0] == 0 and 1 <= errors[1] <= errors[2] <= len(refused), figures
    assert m_refused == len(refused), figures
    # The server's counters agree with the answers: every newly stored event it counted is
    # one an answer reported recorded (a lost answer's commit is in the table, not in these).
    assert figures["events_committed"] == figures["recorded_in_answers"], figures
    assert figures["interactions_recorded"] == figures["recorded_in_answers"], figures
    lost_answers = sum(figures["refused_stored_before_retry"])
    assert figures["rows"] == figures["recorded_in_answers"] + lost_answers, figures
    # Every failure was an expected one (an unmapped error is logged with its traceback).
    assert figures["server_tracebacks"] == 0, srv.stderr[-3000:]


# --- PostgreSQL: the connection lost around COMMIT ---------------------------------------------


class CuttingProxy:
    """A TCP proxy in front of PostgreSQL that, once armed, cuts one connection at a chosen
    point of an event write: after the server executed the INSERT but before COMMIT
    (``"insert"``: the transaction dies with the connection), or after the server committed,
    before its answer reaches the client (``"commit"``: stored, but the client only sees the
    connection drop). Reads and the pool's checks pass untouched: only a connection that sent
    ``INSERT INTO events`` is cut."""

    INSERT = b"INSERT INTO events"
    COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"  # psycopg sends COMMIT as a simple query
    # What the server answers once it has done it (CommandComplete), by cut point.
    DONE: ClassVar[dict[str, bytes]] = {"insert": b"INSERT 0 ", "commit": b"COMMIT\x00"}

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed: str | None = None
        self.cut = 0
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, at: str) -> None:
        assert at in self.DONE
        with self.lock:
            self.armed = at

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.upstream)
                self.sockets += [client, server]
                link = {"inserted": False, "cutting": None}
                threading.Thread(target=self._up, args=(client, server, link), daemon=True).start()
                threading.Thread(
                    target=self._down, args=(server, client, link), daemon=True
                ).start()

    def _up(self, client: socket.socket, server: socket.socket, link: dict) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(1 << 16):
                if self.INSERT in data:
                    link["inserted"] = True
                with self.lock:
                    at = self.armed
                    hit = link["inserted"] and (
                        (at == "insert" and self.INSERT in data)
                        or (at == "commit" and self.COMMIT in data)
                    )
                    if hit:
                        self.armed, link["cutting"] = None, at
                if self.COMMIT in data:
                    link["inserted"] = False
                server.sendall(data)  # the server gets it and acts on it

    def _down(self, server: socket.socket, client: socket.socket, link: dict) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(1 << 16):
                at = link["cutting"]
                if at is not None and self.DONE[at] in data:
                    self.cut += 1  # the server's answer is dropped with the connection
                    for s in (client, server):
                        s.shutdown(socket.SHUT_RDWR)
                        s.close()
                    return
                client.sendall(data)


@pytest.mark.parametrize("at", ["insert", "commit"])
def test_postgres_connection_lost_around_commit(trained, postgres_dsn, at):
    """The connection to PostgreSQL drops in the middle of a write: after the INSERT ran but
    before COMMIT, the transaction is rolled back and nothing is stored; after the COMMIT, the
    events are stored although the answer was lost. Either way the client is answered
    UNAVAILABLE (never OK), and its retry stores nothing twice: in the second case it reports
    every event a duplicate, and the server, reading back what the failed commit stored,
    folds them into the live histories. The same recsys-serve then takes writes as before."""
    url = urlsplit(postgres_dsn)
    proxy = CuttingProxy(url.port)
    proxied = postgres_dsn.replace(f":{url.port}/", f":{proxy.port}/", 1)
    srv = ServerProcess("--artifacts", str(trained), "--store", proxied).start()
    try:
        srv.wait_serving()
        with grpc.insecure_channel(srv.address) as ch:
            stub = pb_grpc.RecommenderStub(ch)
            health = health_pb2_grpc.HealthStub(ch)

            def write(batch):
                req = pb.RecordInteractionsRequest(events=batch)
                return stub.RecordInteractions(req, timeout=60)

            first = write(events("cut", BATCH, 0))
            proxy.arm(at)
            with pytest.raises(grpc.RpcError) as lost:
                write(events("cut", BATCH, BATCH))
            stored_at_once = table(postgres_dsn)
            m_lost = scrape(srv.metrics_url)
            retry = write(events("cut", BATCH, BATCH))
            after = write(events("cut", BATCH, 2 * BATCH))
            wait_until(
                lambda: (
                    health.Check(
                        health_pb2.HealthCheckRequest(service=STORE_SERVICE), timeout=30
                    ).status
                    == health_pb2.HealthCheckResponse.SERVING
                ),
                "store health SERVING again",
                HANG,
            )
        m_end = scrape(srv.metrics_url)
    finally:
        srv.kill()
        proxy.close()
    rows = table(postgres_dsn)
    cut_ids = [e.event_id for e in events("cut", BATCH, BATCH)]
    figures = {
        "cut": at,
        "connections_cut": proxy.cut,
        "code": lost.value.code().name,
        "message": lost.value.details(),
        "stored_when_refused": sum(stored_at_once[i] for i in cut_ids),
        "retry": (retry.recorded, retry.duplicates),
        "answers": [(r.recorded, r.duplicates) for r in (first, after)],
        "rows": sum(rows.values()),
        "rows_duplicated": sum(1 for n in rows.values() if n > 1),
        "commit_errors": [metric(m, "recsys_store_commit_errors_total") for m in (m_lost, m_end)],
        "events_committed": metric(m_end, "recsys_store_events_committed_total"),
        "recovered": metric(m_end, "recsys_interactions_recovered_total"),
        "live_events": metric(m_end, "recsys_interactions_since_training"),
    }
    report(f"store_connection_cut_at_{at}_postgresql", figures)
    assert proxy.cut == 1 and figures["answers"] == [(BATCH, 0)] * 2, figures
    assert figures["code"] == "UNAVAILABLE", figures
    assert figures["message"].startswith(f"{STORE_WRITE_FAILED}: {redact(proxied)}"), figures
    assert "\n" not in figures["message"], figures
    stored = BATCH if at == "commit" else 0
    assert figures["stored_when_refused"] == stored, figures
    assert figures["retry"] == (BATCH - stored, stored), figures
    assert figures["rows"] == 3 * BATCH and figures["rows_duplicated"] == 0, figures
    assert figures["commit_errors"] == [1, 1], figures
    # Counted as committed: what the answers reported recorded (the lost answer's commit is
    # in the table only).
    assert figures["events_committed"] == 3 * BATCH - stored, figures
    # The lost answer's events are read back after the next commit and folded: the live
    # histories hold all three batches, not only the two acknowledged as recorded.
    assert figures["recovered"] == stored and figures["live_events"] == 3 * BATCH, figures


# --- SQLite: damaged at start, or recovering a WAL -------------------------------------------

N_CLOSED, N_CRASHED, SQL_BATCH = 3000, 1000, 100


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def write_through_server(srv: ServerProcess, prefix: str, n: int) -> list[str]:
    """``n`` events in calls of SQL_BATCH, each acknowledged; their ids."""
    with grpc.insecure_channel(srv.address) as ch:
        stub = pb_grpc.RecommenderStub(ch)
        acked = []
        for start in range(0, n, SQL_BATCH):
            batch = events(prefix, SQL_BATCH, start)
            r = stub.RecordInteractions(pb.RecordInteractionsRequest(events=batch), timeout=60)
            assert (r.recorded, r.duplicates) == (SQL_BATCH, 0)
            acked += [e.event_id for e in batch]
    return acked


def wal_pages(wal: Path) -> set[int]:
    """The page numbers of the frames in a WAL file (a 32-byte header, then frames of a
    24-byte header, whose first field is the page number, and one page)."""
    data = wal.read_bytes() if wal.exists() else b""
    if len(data) < 32:
        return set()
    page_size = struct.unpack(">I", data[8:12])[0]
    frame = 24 + page_size
    return {
        struct.unpack(">I", data[off : off + 4])[0]
        for off in range(32, len(data) - frame + 1, frame)
    }


@pytest.fixture(scope="module")
def sqlite_stores(trained, tmp_path_factory):
    """Two store directories written by a real recsys-serve: "closed" holds N_CLOSED events
    and was stopped by SIGTERM (the close checkpoints: everything is in the file, no -wal);
    "crashed" is a copy that another server then wrote N_CRASHED more acknowledged events to
    before a SIGKILL: those are in its -wal only. {name: (directory, acknowledged ids)}."""
    root = tmp_path_factory.mktemp("sqlite-stores")
    closed = root / "closed"
    closed.mkdir()
    srv = ServerProcess("--artifacts", str(trained), "--store", sqlite_url(closed / "events.db"))
    srv.start().wait_serving()
    try:
        acked = write_through_server(srv, "closed", N_CLOSED)
        assert srv.terminate(60) == 0, srv.stderr[-2000:]
    finally:
        srv.kill()
    assert sorted(p.name for p in closed.iterdir()) == ["events.db"]
    crashed = root / "crashed"
    shutil.copytree(closed, crashed)
    srv = ServerProcess("--artifacts", str(trained), "--store", sqlite_url(crashed / "events.db"))
    srv.start().wait_serving()
    try:
        acked_wal = write_through_server(srv, "crashed", N_CRASHED)
    finally:
        srv.kill()  # SIGKILL
    assert srv.proc.returncode == -9
    # The main file alone (a copy, read without its WAL) still holds only the first events.
    alone = root / "alone.db"
    shutil.copyfile(crashed / "events.db", alone)
    with contextlib.closing(sqlite3.connect(f"{alone.as_uri()}?immutable=1", uri=True)) as c:
        assert c.execute("SELECT COUNT(*) FROM events").fetchone()[0] == N_CLOSED
    alone.unlink()
    return {"closed": (closed, acked), "crashed": (crashed, acked + acked_wal)}


def copy_store(stores: dict, name: str, tmp_path: Path) -> Path:
    directory = tmp_path / name
    shutil.copytree(stores[name][0], directory)
    return directory / "events.db"


def damage(path: Path, how: str) -> str:
    """Tears the file (cut in the middle of a page) or overwrites one page in its middle that
    the WAL (if any) does not hold a newer copy of. What was done, for the report."""
    data = bytearray(path.read_bytes())
    page_size = struct.unpack(">H", data[16:18])[0] or 65536
    pages = len(data) // page_size
    if how == "torn":
        cut = (pages // 2) * page_size + page_size // 2
        path.write_bytes(bytes(data[:cut]))
        return f"cut to {cut} of {len(data)} bytes"
    newer = wal_pages(Path(f"{path}-wal"))
    page = next(p for p in range(pages // 2, pages) if p not in newer)  # 1-based numbers
    offset = (page - 1) * page_size
    data[offset : offset + page_size] = (bytes(range(256)) * (page_size // 256 + 1))[:page_size]
    path.write_bytes(bytes(data))
    return f"page {page} of {pages} ({page_size} bytes) overwritten"


@pytest.mark.parametrize("base", ["closed", "crashed"])
@pytest.mark.parametrize("how", ["torn", "corrupt_page"])
def test_damaged_sqlite_store_is_refused_at_start(trained, sqlite_stores, tmp_path, how, base):
    """A torn or corrupt store file (also one whose -wal holds committed transactions): the
    server exits 1 at once, naming the file and saying it is corrupt, on one line; the file
    and its -wal keep every byte, and no file beside it is removed."""
    path = copy_store(sqlite_stores, base, tmp_path)
    done = damage(path, how)
    wal = Path(f"{path}-wal")
    files = {p.name for p in path.parent.iterdir()}
    before = {"db": digest(path), "wal": digest(wal)}
    args = ServerProcess("--artifacts", str(trained), "--store", sqlite_url(path)).args
    t0 = time.monotonic()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=HANG)
    elapsed = time.monotonic() - t0
    after = {"db": digest(path), "wal": digest(wal)}
    message = next(
        (line for line in proc.stderr.splitlines() if line.startswith("recsys-serve: error:")), ""
    )
    figures = {
        "base": base,
        "damage": done,
        "wal_bytes": wal.stat().st_size if wal.exists() else None,
        "exit_code": proc.returncode,
        "exit_after_s": round(elapsed, 2),
        "message": message[:300],
        "file_unchanged": after["db"] == before["db"],
        "wal_unchanged": after["wal"] == before["wal"],
        "files_removed": sorted(files - {p.name for p in path.parent.iterdir()}),
        "files_added": sorted({p.name for p in path.parent.iterdir()} - files),
    }
    report(f"sqlite_{how}_{base}_refused", figures)
    assert proc.returncode == 1 and "listening" not in proc.stdout, figures
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert message.startswith(
        f"recsys-serve: error: cannot open the data store: {path}: the SQLite database is corrupt"
    ), figures
    assert "restore it from a backup" in message, figures
    assert figures["file_unchanged"] and figures["files_removed"] == [], figures
    if base == "crashed":
        assert before["wal"] is not None  # the scenario really had committed WAL frames
        assert figures["wal_unchanged"] and figures["files_added"] == [], figures
    else:
        # Reading a WAL-mode file creates SQLite's side files if they are missing (the check
        # is read-only, so nothing removes them): an empty -wal and its index, no data.
        assert set(figures["files_added"]) <= {"events.db-wal", "events.db-shm"}, figures
        assert figures["wal_bytes"] in (None, 0), figures


def test_sqlite_wal_left_by_sigkill_is_recovered_at_start(trained, sqlite_stores, tmp_path):
    """The store a SIGKILLed server left (its last N_CRASHED acknowledged events only in the
    -wal) is not refused: the next server starts on it, keeps every acknowledged event once,
    answers a retry of the last acknowledged call with duplicates, and takes new writes."""
    path = copy_store(sqlite_stores, "crashed", tmp_path)
    acked = sqlite_stores["crashed"][1]
    wal = Path(f"{path}-wal")
    wal_bytes, frames = wal.stat().st_size, len(wal_pages(wal))
    srv = ServerProcess("--artifacts", str(trained), "--store", sqlite_url(path)).start()
    try:
        srv.wait_serving()
        with grpc.insecure_channel(srv.address) as ch:
            stub = pb_grpc.RecommenderStub(ch)
            last = events("crashed", SQL_BATCH, N_CRASHED - SQL_BATCH)
            retry = stub.RecordInteractions(pb.RecordInteractionsRequest(events=last), timeout=60)
            new = write_through_server(srv, "after", SQL_BATCH)
        rc = srv.terminate(60)
    finally:
        srv.kill()
    stored = Counter(e.event_id for e in stored_events(sqlite_url(path)))
    figures = {
        "wal_bytes": wal_bytes,
        "wal_pages": frames,
        "acknowledged": len(acked),
        "acknowledged_missing": sum(1 for i in acked if stored[i] == 0),
        "duplicated": sum(1 for n in stored.values() if n > 1),
        "retry_of_last_acknowledged": (retry.recorded, retry.duplicates),
        "stored": sum(stored.values()),
        "exit_code": rc,
    }
    report("sqlite_wal_after_sigkill_recovered", figures)
    assert wal_bytes > 32 and frames > 0, figures
    assert figures["acknowledged_missing"] == 0 and figures["duplicated"] == 0, figures
    assert figures["retry_of_last_acknowledged"] == (0, SQL_BATCH), figures
    assert set(stored) == set(acked) | set(new), figures
    assert rc == 0, figures
