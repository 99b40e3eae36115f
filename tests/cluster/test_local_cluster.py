"""The local cluster (deploy/local/cluster.sh) as real processes: PostgreSQL, two recsys-serve
replicas on one artifacts directory, nginx in front and the trainer's refresh loop.

The tests run in file order on one cluster: balancing, version convergence, SIGKILL of a
replica under a stream of calls, then `down`. The cluster is torn down (and its state
deleted) whatever happens."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from recsys_client import RecsysClient
from recsys_client.errors import RecsysError
from recsys_core.artifacts import latest_version
from recsys_proto.v1 import recommender_pb2 as pb
from recsys_proto.v1 import recommender_pb2_grpc as pb_grpc
from recsys_trainer import cli

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "local" / "cluster.sh"
N_USERS = 600
REFRESH_EVERY = "20s"


@dataclass
class Cluster:
    dir: Path
    nginx: str
    replicas: list[str]
    metrics: list[str]

    @classmethod
    def read(cls, state: Path) -> Cluster:
        ports = (state / "ports").read_text().split()
        n = (len(ports) - 2) // 2
        return cls(
            state,
            f"127.0.0.1:{ports[0]}",
            [f"127.0.0.1:{ports[2 * i]}" for i in range(1, n + 1)],
            [f"http://127.0.0.1:{ports[2 * i + 1]}/metrics" for i in range(1, n + 1)],
        )

    def pid(self, name: str) -> int:
        return int((self.dir / "run" / f"{name}.pid").read_text().split()[0])

    @property
    def artifacts(self) -> Path:
        return self.dir / "artifacts"


def script(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RECSYS_PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Cluster:
    base = tmp_path_factory.mktemp("cluster")
    data = base / "data" / "interactions.tsv"
    gen = ["generate", "--out", str(data), "--users", str(N_USERS), "--items", "300"]
    assert cli.main([*gen, "--interactions", "15000"]) == 0
    state = base / "state"
    try:
        up = script(
            "up", "--dir", str(state), "--replicas", "2", "--port-base", "0",
            "--data", str(data), "--train-args", "--no-tune",
            "--refresh-every", REFRESH_EVERY, "--poll-seconds", "1",
        )  # fmt: skip
        assert up.returncode == 0, f"cluster.sh up failed:\n{up.stdout}\n{up.stderr}"
        assert "2 replica(s) SERVING" in up.stdout
        yield Cluster.read(state)
    finally:
        down = script("down", "--dir", str(state), "--purge", timeout=120)
        print(down.stdout, down.stderr)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def ok_recommends(url: str) -> float:
    ok = r'^recsys_requests_total\{code="OK",method="Recommend"\} (\S+)$'
    m = re.search(ok, scrape(url), re.M)
    return float(m.group(1)) if m else 0.0


def served_version(url: str) -> str | None:
    m = re.search(r'^recsys_model_info\{version="([^"]+)"\} 1\.0$', scrape(url), re.M)
    return m.group(1) if m else None


def wait_until(condition, what: str, limit: float):
    give_up = time.monotonic() + limit
    while not (got := condition()):
        if time.monotonic() > give_up:
            raise AssertionError(f"{what}: still not the case after {limit:g} s")
        time.sleep(0.2)
    return got


def test_recommend_through_nginx_reaches_every_replica(cluster):
    before = [ok_recommends(u) for u in cluster.metrics]
    with grpc.insecure_channel(cluster.nginx) as ch:
        stub = pb_grpc.RecommenderStub(ch)
        for i in range(60):
            r = stub.Recommend(pb.RecommendRequest(user_id=f"u{i:03d}", k=5), timeout=10)
            assert len(r.items) == 5
    after = [ok_recommends(u) for u in cluster.metrics]
    counted = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(counted) == 60
    assert all(c > 0 for c in counted), f"calls per replica {counted}"


def test_every_replica_converges_on_the_newest_version(cluster):
    """The refresh loop publishes into the shared directory; each replica's
    recsys_model_info names the newest version within its poll interval (plus the load)."""
    first = latest_version(cluster.artifacts)
    assert first is not None
    newer = wait_until(
        lambda: (v := latest_version(cluster.artifacts)) != first and v,
        "the refresh loop publishes a new version",
        limit=300,
    )
    assert newer > first  # version names sort by publication time

    def converged():
        newest = latest_version(cluster.artifacts)
        served = [served_version(u) for u in cluster.metrics]
        return newest if served == [newest] * len(served) and newest >= newer else None

    version = wait_until(converged, "every replica serves the newest version", limit=120)
    print(f"\n[cluster] every replica serves {version} (first {first})")


def test_sigkill_of_one_replica_under_a_stream_of_calls(cluster):
    """Calls through nginx keep succeeding while replica 1 is SIGKILLed: nginx sends calls it
    has not passed on to the survivor; a call replica 1 had received fails with UNAVAILABLE
    (nginx cannot resend gRPC bodies), and the SDK's retry turns that into a success."""
    stop = threading.Event()
    raw: list[str] = []
    sdk: list[str] = []
    lock = threading.Lock()

    def raw_stream(k: int) -> None:
        with grpc.insecure_channel(cluster.nginx) as ch:
            stub = pb_grpc.RecommenderStub(ch)
            i = 0
            while not stop.is_set():
                i += 1
                req = pb.RecommendRequest(user_id=f"u{(k * 97 + i) % N_USERS:03d}", k=10)
                try:
                    stub.Recommend(req, timeout=10)
                    got = "OK"
                except grpc.RpcError as e:
                    got = e.code().name
                with lock:
                    raw.append(got)

    def sdk_stream(k: int) -> None:
        with RecsysClient(cluster.nginx, retries=3, timeout=10) as client:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    client.recommend(f"u{(k * 89 + i) % N_USERS:03d}", k=10)
                    got = "OK"
                except RecsysError as e:
                    got = type(e).__name__
                with lock:
                    sdk.append(got)

    threads = [threading.Thread(target=raw_stream, args=(k,)) for k in range(4)]
    threads += [threading.Thread(target=sdk_stream, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()

    def done() -> tuple[int, int]:
        with lock:
            return len(raw), len(sdk)

    # Counted calls, not seconds, decide when to kill and when to stop (a busy machine is slow).
    try:
        wait_until(lambda: min(done()) >= 50, "50 calls of each kind before the kill", 120)
        survivor_before = ok_recommends(cluster.metrics[1])
        at_kill = done()
        os.kill(cluster.pid("replica1"), signal.SIGKILL)
        wait_until(
            lambda: min(n - k for n, k in zip(done(), at_kill, strict=True)) > 200,
            "200 calls of each kind after the kill",
            120,
        )
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    survivor_after = ok_recommends(cluster.metrics[1])
    raw_codes, sdk_codes = Counter(raw), Counter(sdk)
    print(
        f"\n[cluster] SIGKILL of replica1 under load: plain gRPC {dict(raw_codes)} "
        f"(before the kill {at_kill[0]}), SDK with retries {dict(sdk_codes)} "
        f"(before {at_kill[1]}); survivor answered {survivor_after - survivor_before:.0f} "
        "Recommend calls after the kill"
    )
    assert at_kill[0] > 0 and at_kill[1] > 0
    assert sdk_codes == {"OK": len(sdk)}, "the SDK with retries saw failures"
    # Only calls replica 1 held when it died fail (one per stream holding one; seen: 2-4 of 4
    # streams); a failover that does not work fails every other call instead.
    assert raw_codes["OK"] >= len(raw) - 2 * 4
    assert set(raw_codes) <= {"OK", "UNAVAILABLE"}
    assert len(raw) - at_kill[0] > 100 and len(sdk) - at_kill[1] > 100
    assert survivor_after - survivor_before > 100


def pgids(pids: list[int]) -> list[int]:
    """Processes whose process group is one the script started (its children too)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in pids:
            out.append(int(stat.parent.name))
    return out


def test_down_stops_everything_and_is_idempotent(cluster):
    names = [p.stem for p in (cluster.dir / "run").glob("*.pid")]
    assert {"postgres", "nginx", "refresh", "replica1", "replica2"} <= set(names)
    pids = [cluster.pid(n) for n in names]
    assert pgids(pids), "nothing was running"
    down = script("down", "--dir", str(cluster.dir), timeout=120)
    assert down.returncode == 0, down.stderr
    assert pgids(pids) == []
    assert list((cluster.dir / "run").glob("*.pid")) == []
    again = script("down", "--dir", str(cluster.dir), timeout=60)
    assert again.returncode == 0, again.stderr
