"""Shared helpers for the server tests: small trained artifacts (built once per session), an
in-process server on a free loopback port, and a `recsys-serve` subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys_core import artifacts
from recsys_core.datastore import open_store
from recsys_proto.v1 import recommender_pb2 as pb
from recsys_proto.v1 import recommender_pb2_grpc as pb_grpc
from recsys_server import old_log
from recsys_server.config import ServerConfig
from recsys_server.server import Running, start
from recsys_trainer import cli

N_USERS, N_ITEMS, N_EVENTS = 600, 300, 15_000
LISTENING = re.compile(r"listening on (\S+) .*metrics (http://\S+/metrics)")


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """A trained artifacts root (one version, all five models, catalog, offline metrics).
    Tests that change artifacts work on a copy (`artifacts_copy`)."""
    root = tmp_path_factory.mktemp("trained")
    data = root / "data.tsv"
    cli.main(
        [
            "generate",
            "--out",
            str(data),
            "--users",
            str(N_USERS),
            "--items",
            str(N_ITEMS),
            "--interactions",
            str(N_EVENTS),
        ]
    )
    assert cli.main(["train", "--interactions", str(data), "--out", str(root / "artifacts")]) == 0
    return root / "artifacts"


@pytest.fixture
def artifacts_copy(trained, tmp_path) -> Path:
    dst = tmp_path / "artifacts"
    shutil.copytree(trained, dst)
    return dst


def republish(root: Path, **overrides) -> Path:
    """Publishes the latest version's models again as a new version (e.g. with other params)."""
    loaded = artifacts.load_version(root / artifacts.latest_version(root))
    kw = {
        "out": root,
        "user_ids": loaded.user_ids,
        "item_ids": loaded.item_ids,
        "catalog": loaded.catalog,
        "data_fingerprint": loaded.manifest["data_fingerprint"],
        "metrics": loaded.manifest["metrics"],
        "params": loaded.manifest.get("params", {}),
        "history": loaded.history,
        "keep": 10,
    }
    kw.update(overrides)
    return artifacts.publish(loaded.models, **kw)


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format (labels must match exactly)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if m is None or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if got == labels:
            return float(m.group(3))
    return None


class Client:
    """Generated stubs on one channel, plus helpers."""

    def __init__(self, address: str, token: str | None = None) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.RecommenderStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None

    def __getattr__(self, name: str):
        method = getattr(self.stub, name)

        def call(request, **kw):
            if self.metadata is not None:
                kw.setdefault("metadata", self.metadata)
            kw.setdefault("timeout", 30)
            return method(request, **kw)

        return call

    def status(self, service: str = "") -> int:
        return self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status

    def close(self) -> None:
        self.channel.close()


def wait_until(condition, what: str, limit: float = 60.0, every: float = 0.01):
    """Polls ``condition()`` until it returns something truthy, and returns that. ``limit`` only
    bounds a hang (far above what the condition normally takes): past it, AssertionError."""
    give_up = time.monotonic() + limit
    while True:
        got = condition()
        if got:
            return got
        if time.monotonic() > give_up:
            raise AssertionError(f"{what}: still not the case after {limit:g} s")
        time.sleep(every)


def code_of(fn, *args, **kw) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kw)
    return info.value.code(), info.value.details()


def event(eid: str, user: str, item: str, kind: str = "view", rating: float = 0.0, ts=None):
    e = pb.Interaction(event_id=eid, user_id=user, item_id=item, event_type=kind, rating=rating)
    if ts is not None:
        e.timestamp.FromSeconds(int(ts))
    return e


class InProcessServer:
    """`recsys_server.server.start` on a background event loop."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.running: Running = self.run(start(config))

    def run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def address(self) -> str:
        return self.running.address

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.running.metrics_port}/metrics"

    def wait_serving(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.running.core.versions.state is None:
            if time.monotonic() > deadline:
                raise TimeoutError("no model loaded")
            time.sleep(0.05)

    def reload(self):
        return self.run(self.running.core.reload())

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.running.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """A fresh, empty data store of each backend: a SQLite file in ``tmp_path``, or a new
    database on the test PostgreSQL server (the test fails when that cannot start)."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "store.db")
    return request.getfixturevalue("postgres_dsn")


def stored_events(url: str) -> list:
    """Every event in the data store at ``url``, in seq order (opened beside the server)."""
    with open_store(url) as store:
        return [s.event for s in store.read_events()]


def server_config(artifacts_root: Path, tmp: Path, **kw) -> ServerConfig:
    base = {
        "artifacts": artifacts_root,
        "port": 0,
        "metrics_port": 0,
        "store": sqlite_url(tmp / "events.db"),
        "poll_seconds": 3600.0,  # tests reload explicitly unless they say otherwise
        "grace_seconds": 1.0,
    }
    base.update(kw)
    return ServerConfig(**base)


@contextlib.contextmanager
def serving(artifacts_root: Path, tmp: Path, wait: bool = True, **kw):
    srv = InProcessServer(server_config(artifacts_root, tmp, **kw))
    try:
        if wait:
            srv.wait_serving()
        yield srv
    finally:
        srv.stop()


class ServerProcess:
    """``python -m recsys_server.app`` with a free port; parses the address it prints."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = [
            sys.executable,
            "-m",
            "recsys_server.app",
            "--port",
            "0",
            "--metrics-port",
            "0",
            *args,
        ]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.address = ""
        self.metrics_url = ""
        # A file, not a pipe: a pipe nobody reads could fill up and block the server.
        self._err = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed with the object)

    @property
    def stderr(self) -> str:
        self._err.seek(0)
        return self._err.read()

    def start(self, timeout: float = 60) -> ServerProcess:
        self.proc = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            env=self.env,
        )
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = LISTENING.search(line)
            if m:
                self.address, self.metrics_url = m.group(1), m.group(2)
                return self
        self.proc.kill()
        out, _ = self.proc.communicate(timeout=10)
        raise RuntimeError(f"server did not start: {out}\n{self.stderr}")

    def wait_serving(self, timeout: float = 60) -> None:
        c = Client(self.address)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                with contextlib.suppress(grpc.RpcError):
                    if c.status() == health_pb2.HealthCheckResponse.SERVING:
                        return
                time.sleep(0.1)
        finally:
            c.close()
        raise TimeoutError("server never became SERVING")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.communicate(timeout=timeout)
        return self.proc.returncode


def old_record(e) -> bytes:
    """One record of the event log from before the data store (`recsys_server.old_log`)."""
    payload = json.dumps(e.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()
    return old_log.HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def write_old_segment(directory: Path, index: int, events, tail: bytes = b"") -> Path:
    """An old log segment holding ``events`` (then ``tail``, e.g. a torn record)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"events-{index:06d}.log"
    path.write_bytes(b"".join(old_record(e) for e in events) + tail)
    return path
