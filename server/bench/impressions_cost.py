"""What recording impressions costs Recommend: two real `recsys-serve` processes on the same
artifacts, one with ``impression_queue = 0`` (no ids, nothing recorded: the baseline) and one
with the default queue (an id per answer, its impression stored in the server's SQLite store).

    python server/bench/impressions_cost.py --artifacts /work/art/artifacts [--rounds 20 --n 200]

One synchronous client per server; the rounds alternate between the servers (and which goes
first), ``n`` Recommend calls (hybrid, k=10, known users) each, so machine noise hits both
alike. Prints the client-observed p50/p90/p99 of each, the p50 ratio (target <= 1.05), the
server-side mean handling time (``recsys_request_duration_seconds``: sum / count, exact), and
how many impressions the recording server stored and dropped. Then, with ``--load-seconds``,
throughput at saturation: ``--clients`` threads call each server as fast as they can, in
alternating rounds of ``--load-seconds`` (informational; no target).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys_proto.v1 import recommender_pb2 as pb
from recsys_proto.v1 import recommender_pb2_grpc as pb_grpc

N_USERS = 10_000  # the default synthetic data set's users are u0000..u9999
TARGET = 1.05


def user(i: int) -> str:
    return f"u{(i * 7919) % N_USERS:04d}"


@contextlib.contextmanager
def server(artifacts: str, tmp: Path, name: str, queue: int | None):
    config = tmp / f"{name}.toml"
    config.write_text("" if queue is None else f"impression_queue = {queue}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "recsys_server.app", "--artifacts", artifacts, "--config",
         str(config), "--port", "0", "--metrics-port", "0", "--store",
         f"sqlite:///{tmp}/{name}.db"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        m = re.search(r"listening on (\S+) .*metrics (http://\S+/metrics)", proc.stdout.readline())
        if m is None:
            raise SystemExit(f"{name}: server did not start")
        yield m.group(1), m.group(2)
    finally:
        proc.terminate()
        proc.wait(30)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def total(text: str, name: str, method: str | None = None) -> float:
    """The sum of a metric's samples (only ``method``'s when given)."""
    out = 0.0
    for line in text.splitlines():
        mine = method is None or f'method="{method}"' in line
        if line.startswith(name) and line[len(name)] in " {" and mine:
            out += float(line.rsplit(" ", 1)[1])
    return out


def connect(address: str):
    ch = grpc.insecure_channel(address)
    health = health_pb2_grpc.HealthStub(ch)
    while True:
        with contextlib.suppress(grpc.RpcError):
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                break
        time.sleep(0.1)
    return ch, pb_grpc.RecommenderStub(ch)


def saturate(address: str, clients: int, seconds: float) -> float:
    """Calls per second of ``clients`` threads calling Recommend back to back."""
    chans = [connect(address) for _ in range(clients)]
    done = [0] * clients
    stop = time.monotonic() + seconds

    def work(k: int) -> None:
        stub, i = chans[k][1], k
        while time.monotonic() < stop:
            stub.Recommend(pb.RecommendRequest(user_id=user(i), k=10))
            i += clients
            done[k] += 1

    threads = [threading.Thread(target=work, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ch, _ in chans:
        ch.close()
    return sum(done) / seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--n", type=int, default=200, help="calls per server per round")
    ap.add_argument("--clients", type=int, default=6, help="threads of the throughput rounds")
    ap.add_argument("--load-seconds", type=float, default=0.0, help="per throughput round")
    ap.add_argument("--load-rounds", type=int, default=4)
    a = ap.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        server(a.artifacts, Path(tmp), "off", 0) as off,
        server(a.artifacts, Path(tmp), "on", None) as on,
    ):
        servers = {"impression_queue=0": off, "default (10000)": on}
        stubs = {k: connect(addr) for k, (addr, _) in servers.items()}
        for _, stub in stubs.values():  # warm up
            for i in range(300):
                stub.Recommend(pb.RecommendRequest(user_id=user(i), k=10))
        before = {k: scrape(url) for k, (_, url) in servers.items()}
        times: dict[str, list[float]] = {k: [] for k in servers}
        round_p50: dict[str, list[float]] = {k: [] for k in servers}
        ids: set[str] = set()
        order = list(servers)
        for r in range(a.rounds):
            for k in order if r % 2 == 0 else order[::-1]:
                stub = stubs[k][1]
                got_times = []
                for i in range(a.n):
                    req = pb.RecommendRequest(user_id=user(r * a.n + i), k=10)
                    t = time.perf_counter()
                    got = stub.Recommend(req)
                    got_times.append(time.perf_counter() - t)
                    if got.recommendation_id:
                        ids.add(got.recommendation_id)
                times[k].extend(got_times)
                round_p50[k].append(float(np.median(got_times)))
        time.sleep(0.5)  # let the writer store the last batch before the scrape
        after = {k: scrape(url) for k, (_, url) in servers.items()}
        for ch, _ in stubs.values():
            ch.close()
        rps: dict[str, list[float]] = {k: [] for k in servers}
        loaded = ""
        if a.load_seconds > 0:
            for r in range(a.load_rounds):
                for k in order if r % 2 == 0 else order[::-1]:
                    rps[k].append(saturate(servers[k][0], a.clients, a.load_seconds))
            time.sleep(0.5)
            loaded = scrape(servers[order[1]][1])

    print(
        f"Recommend hybrid k=10, {a.rounds} interleaved rounds x {a.n} calls per server, "
        "one synchronous client"
    )
    print(f"{'server':22s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} {'server mean ms':>15s}")
    p50 = {}
    for k, v in times.items():
        p50[k], p90, p99 = np.percentile(np.array(v) * 1e3, [50, 90, 99])
        s = total(after[k], "recsys_request_duration_seconds_sum", "Recommend") - total(
            before[k], "recsys_request_duration_seconds_sum", "Recommend"
        )
        n = total(after[k], "recsys_request_duration_seconds_count", "Recommend") - total(
            before[k], "recsys_request_duration_seconds_count", "Recommend"
        )
        print(f"{k:22s} {p50[k]:8.3f} {p90:8.3f} {p99:8.3f} {s / max(n, 1) * 1e3:15.3f}")
    off_key, on_key = servers
    stored = total(after[on_key], "recsys_impressions_total")
    dropped = total(after[on_key], "recsys_impressions_dropped_total")
    print(
        f"ids: {len(ids)} distinct of {len(times[on_key])} answers; impressions stored "
        f"{stored:.0f} (incl. warm-up), dropped {dropped:.0f}"
    )
    ratio = p50[on_key] / p50[off_key]
    # Per round: the two servers' p50s measured back to back, so a load change on the shared
    # machine between rounds cancels out; the median over rounds.
    per_round = float(np.median(np.array(round_p50[on_key]) / np.array(round_p50[off_key])))
    ok = ratio <= TARGET
    print(f"median over rounds of the per-round p50 ratio: {per_round:.3f}")
    print(
        f"{'PASS' if ok else 'FAIL'}  p50 ratio recording / off = {ratio:.3f} (target <= {TARGET})"
    )
    if a.load_seconds > 0:
        print(
            f"\nthroughput, {a.clients} client threads, {a.load_rounds} alternating rounds of "
            f"{a.load_seconds:g} s (calls/s per round)"
        )
        for k, v in rps.items():
            print(f"{k:22s} " + " ".join(f"{x:6.0f}" for x in v) + f"   mean {np.mean(v):6.0f}")
        dropped = total(loaded, "recsys_impressions_dropped_total")
        print(
            f"throughput ratio recording / off = {np.mean(rps[on_key]) / np.mean(rps[off_key]):.3f}"
            f"; impressions dropped in all: {dropped:.0f}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
