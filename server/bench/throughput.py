"""Throughput at a fixed number of calls in flight: Recommend with explanations against the
same server's health Check (the transport's floor), measured in the same run.

    python server/bench/throughput.py --artifacts /work/art/artifacts [--inflight 8]

Starts one real `recsys-serve` (default configuration, its own SQLite store), then a client
process (grpc.aio, one channel, ``--inflight`` tasks each calling back to back). Rounds of
``--seconds`` alternate between the cases (health Check; Recommend hybrid k=10 explain for
known users drawn Zipf(1.1) as the load test draws them), so machine noise hits both alike.
The client keeps responses as bytes (a generic call without a deserializer): it is the load
generator and shares the 2 cores with the server, so it does as little as a client can; one
answer per case is parsed and checked at warm-up. ``--parse`` makes it parse every answer.

Prints calls/s per round, the mean per case, the ratio Recommend / health (target >= 0.8),
and the CPU per call of the server (all threads, and its event loop's thread alone) and of the
client (from /proc/<pid>/stat and /proc/<pid>/task/<tid>/stat over the round).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEALTH = "/grpc.health.v1.Health/Check"
RECOMMEND = "/recsys.v1.Recommender/Recommend"
TARGET = 0.8
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User + system CPU so far of a process (all its threads), or of one of its threads."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--inflight", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0, help="per round")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per case")
    ap.add_argument("--parse", action="store_true", help="the client parses every answer")
    ap.add_argument("--config", help="server configuration file (default: none)")
    ap.add_argument(
        "--only", choices=("health", "recommend"), help="one case only (e.g. under a profiler)"
    )
    ap.add_argument("--client", help=argparse.SUPPRESS)  # runs as the client process
    a = ap.parse_args()
    if a.client:
        return asyncio.run(client(a))
    with tempfile.TemporaryDirectory() as tmp:
        extra = ["--config", a.config] if a.config else []
        server = subprocess.Popen(
            [sys.executable, "-m", "recsys_server.app", "--artifacts", a.artifacts, "--port",
             "0", "--metrics-port", "0", "--store", f"sqlite:///{tmp}/events.db", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            assert server.stdout is not None
            m = re.search(r"listening on (\S+) ", server.stdout.readline())
            if m is None:
                raise SystemExit("server did not start")
            return drive(a, m.group(1), server.pid)
        finally:
            server.terminate()
            server.wait(30)


def drive(a, address: str, server_pid: int) -> int:
    args = [sys.executable, __file__, "--artifacts", a.artifacts, "--client", address,
            "--inflight", str(a.inflight), "--seconds", str(a.seconds),
            "--rounds", str(a.rounds)] + (["--parse"] if a.parse else [])  # fmt: skip
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    print(f"server pid {server_pid}, client pid {proc.pid}", flush=True)
    print(
        f"{a.inflight} calls in flight, {a.rounds} alternating rounds of {a.seconds:g} s per "
        f"case, client {'parsing' if a.parse else 'keeping bytes'}; load average "
        f"{os.getloadavg()[0]:.2f} at the start"
    )
    print(
        f"{'round':>5s} {'case':10s} {'calls/s':>9s} {'server us/call':>15s} "
        f"{'server loop us/call':>20s} {'client us/call':>15s}"
    )
    rows: dict[str, list[float]] = {"health": [], "recommend": []}
    cpu: dict[str, list[tuple[float, float, float]]] = {"health": [], "recommend": []}
    for line in proc.stdout:
        if line.startswith("ready"):
            break
    for r in range(a.rounds):
        order = ("health", "recommend") if r % 2 == 0 else ("recommend", "health")
        if a.only:
            order = (a.only,)
        for case in order:
            s0, m0 = cpu_seconds(server_pid), cpu_seconds(server_pid, server_pid)
            c0 = cpu_seconds(proc.pid)
            proc.stdin.write(case + "\n")
            proc.stdin.flush()
            got = json.loads(proc.stdout.readline())
            s1, m1 = cpu_seconds(server_pid), cpu_seconds(server_pid, server_pid)
            c1 = cpu_seconds(proc.pid)
            rate, per = got["calls"] / got["seconds"], 1e6 / got["calls"]
            su, mu, cu = (s1 - s0) * per, (m1 - m0) * per, (c1 - c0) * per
            rows[case].append(rate)
            cpu[case].append((su, mu, cu))
            print(f"{r:5d} {case:10s} {rate:9.0f} {su:15.0f} {mu:20.0f} {cu:15.0f}")
    proc.stdin.write("quit\n")
    proc.stdin.flush()
    proc.wait(30)
    if a.only:
        return 0
    mean = {k: sum(v) / len(v) for k, v in rows.items()}
    ratio = mean["recommend"] / mean["health"]
    for k in rows:
        su, mu, cu = (sum(x[n] for x in cpu[k]) / len(cpu[k]) for n in range(3))
        print(f"mean  {k:10s} {mean[k]:9.0f} {su:15.0f} {mu:20.0f} {cu:15.0f}")
    pairs = sorted(r / h for r, h in zip(rows["recommend"], rows["health"], strict=True))
    ok = ratio >= TARGET
    print(
        f"{'PASS' if ok else 'FAIL'}  Recommend hybrid explain {mean['recommend']:.0f} calls/s = "
        f"{ratio:.2f} x health Check {mean['health']:.0f} calls/s at {a.inflight} in flight "
        f"(target >= {TARGET}; per round {pairs[0]:.2f}..{pairs[-1]:.2f}, median "
        f"{pairs[len(pairs) // 2]:.2f}); load average {os.getloadavg()[0]:.2f} at the end"
    )
    return 0 if ok else 1


async def client(a) -> int:
    import grpc
    import numpy as np
    from grpc_health.v1 import health_pb2

    from recsys_core.artifacts import IDS_FILE, latest_version
    from recsys_proto.v1 import recommender_pb2 as pb

    version = latest_version(Path(a.artifacts))
    with np.load(Path(a.artifacts) / str(version) / IDS_FILE, allow_pickle=False) as z:
        users = z["user_ids"]
    rng = np.random.default_rng(7)
    ids = [str(x) for x in rng.permutation(users)]
    w = 1.0 / np.arange(1, len(ids) + 1) ** 1.1
    drawn = np.searchsorted(np.cumsum(w) / w.sum(), rng.random(100_000), side="right")
    requests = [
        pb.RecommendRequest(user_id=ids[min(i, len(ids) - 1)], k=10, explain=True)
        .SerializeToString()
        for i in drawn
    ]  # fmt: skip
    health = health_pb2.HealthCheckRequest().SerializeToString()
    parse = {
        "health": health_pb2.HealthCheckResponse.FromString if a.parse else None,
        "recommend": pb.RecommendResponse.FromString if a.parse else None,
    }
    async with grpc.aio.insecure_channel(a.client) as ch:
        calls = {
            "health": ch.unary_unary(HEALTH, response_deserializer=parse["health"]),
            "recommend": ch.unary_unary(RECOMMEND, response_deserializer=parse["recommend"]),
        }
        while True:  # the server answers SERVING once a version is loaded
            got = health_pb2.HealthCheckResponse.FromString(await calls["health"](health))
            if got.status == health_pb2.HealthCheckResponse.SERVING:
                break
            await asyncio.sleep(0.1)
        answer = pb.RecommendResponse.FromString(await ch.unary_unary(RECOMMEND)(requests[0]))
        assert len(answer.items) == 10 and answer.items[0].explanation.text, answer
        for case in calls:  # warm up
            await run(calls[case], case, health, requests, a.inflight, 1.0)
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        while True:
            case = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if case not in calls:
                return 0
            n, took = await run(calls[case], case, health, requests, a.inflight, a.seconds)
            print(json.dumps({"calls": n, "seconds": took}), flush=True)


async def run(call, case: str, health: bytes, requests: list[bytes], inflight: int, seconds):
    """Calls done by ``inflight`` tasks calling back to back for ``seconds``."""
    done = 0
    t0 = time.perf_counter()
    end = t0 + seconds

    async def worker(w: int) -> None:
        nonlocal done
        i = w
        while time.perf_counter() < end:
            await call(health if case == "health" else requests[i % len(requests)])
            done += 1
            i += inflight

    await asyncio.gather(*(worker(w) for w in range(inflight)))
    return done, time.perf_counter() - t0


if __name__ == "__main__":
    raise SystemExit(main())
