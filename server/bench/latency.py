"""Single-client latency of a real `recsys-serve` process: health Check vs Recommend.

    python server/bench/latency.py --artifacts /tmp/srv/artifacts [--n 2000]

Starts the server on free ports, waits for SERVING, then sends the calls interleaved (so
machine noise hits every case alike) from one synchronous client and prints p50/p90/p99 and
the p50 ratio to the health check.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
import tempfile
import time

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys_proto.v1 import recommender_pb2 as pb
from recsys_proto.v1 import recommender_pb2_grpc as pb_grpc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--n", type=int, default=2000, help="calls per case")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [sys.executable, "-m", "recsys_server.app", "--artifacts", a.artifacts,
             "--port", "0", "--metrics-port", "0", "--log-dir", f"{tmp}/events"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            m = re.search(r"listening on (\S+)", proc.stdout.readline())
            if m is None:
                raise SystemExit("server did not start")
            return run(m.group(1), a.n)
        finally:
            proc.terminate()
            proc.wait(30)


def run(address: str, n: int) -> int:
    ch = grpc.insecure_channel(address)
    rec, health = pb_grpc.RecommenderStub(ch), health_pb2_grpc.HealthStub(ch)
    check = health_pb2.HealthCheckRequest()
    while health.Check(check).status != health_pb2.HealthCheckResponse.SERVING:
        time.sleep(0.1)
    n_users = 10_000  # the default synthetic data set's users are u0000..u9999

    def user(i: int) -> str:
        return f"u{(i * 7919) % n_users:04d}"

    cases = {
        "health Check": lambda i: health.Check(check),
        "Recommend popularity k=10": lambda i: rec.Recommend(
            pb.RecommendRequest(user_id="bench-nobody", k=10)
        ),
        "Recommend item_cf explain": lambda i: rec.Recommend(
            pb.RecommendRequest(user_id=user(i), k=10, model="item_cf", explain=True)
        ),
        "Recommend hybrid": lambda i: rec.Recommend(pb.RecommendRequest(user_id=user(i), k=10)),
        "Recommend hybrid explain": lambda i: rec.Recommend(
            pb.RecommendRequest(user_id=user(i), k=10, explain=True)
        ),
        "SimilarItems item_cf": lambda i: rec.SimilarItems(
            pb.SimilarItemsRequest(item_id=f"i{i % 4000:04d}", k=10)
        ),
    }
    for f in cases.values():  # warm up
        for i in range(100):
            with contextlib.suppress(grpc.RpcError):
                f(i)
    times: dict[str, list[float]] = {k: [] for k in cases}
    for i in range(n):
        for k, f in cases.items():
            t = time.perf_counter()
            with contextlib.suppress(grpc.RpcError):
                f(i)
            times[k].append(time.perf_counter() - t)
    base = float(np.percentile(times["health Check"], 50))
    print(f"{'case':28s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} {'p50/health':>10s}")
    for k, v in times.items():
        p50, p90, p99 = np.percentile(np.array(v) * 1e3, [50, 90, 99])
        print(f"{k:28s} {p50:8.3f} {p90:8.3f} {p99:8.3f} {p50 / base / 1e3:10.2f}")
    ch.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
