"""Load generator for the fault suite: one process, grpc.aio, run as a script so that its CPU
and event loop are not the test's (or the server's).

    python loadgen.py --target 127.0.0.1:50051 --rate 200 --duration 30 --out calls.json
    python loadgen.py --target ... --closed 16 --duration 5 --out calls.json   # capacity

Open loop (``--rate``): a call is started every 1/rate s whatever the earlier ones are doing,
so a slow server sees a growing backlog instead of a politely slowing client. Closed loop
(``--closed N``): N workers each send the next call when the last one answered (what a
capacity measurement needs). Every call is recorded as [wall-clock start, seconds, status code
name, model_version, error details], written as JSON at the end. Users come from ``--users``
(comma-separated; unknown users are fine: they get the popularity tier). ``--health-check
SERVICE`` makes the channels watch the server's health like a client-side balancer.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sys
import time

import grpc

from recsys_proto.v1 import recommender_pb2 as pb
from recsys_proto.v1 import recommender_pb2_grpc as pb_grpc


def request_for(method: str, users: list[str], rnd: random.Random, seq: int):
    user = rnd.choice(users)
    if method == "batch":
        return pb.RecommendBatchRequest(
            requests=[pb.RecommendRequest(user_id=rnd.choice(users), k=10) for _ in range(20)]
        )
    if method == "record":
        return pb.RecordInteractionsRequest(
            events=[
                pb.Interaction(
                    event_id=f"lg-{rnd.getrandbits(64):016x}-{seq}",
                    user_id=user,
                    item_id="i001",
                    event_type="view",
                )
            ]
        )
    return pb.RecommendRequest(user_id=user, k=10, explain=rnd.random() < 0.5)


async def run(args: argparse.Namespace) -> list[list]:
    users = args.users.split(",")
    rnd = random.Random(args.seed)
    options = [("grpc.max_concurrent_streams", 1 << 20)]
    if args.health_check:
        # Client-side health checking, as a balancer in front of replicas does it: once the
        # server turns NOT_SERVING, calls fail here with UNAVAILABLE and are not sent.
        config = {
            "loadBalancingConfig": [{"round_robin": {}}],
            "healthCheckConfig": {"serviceName": args.health_check},
        }
        options.append(("grpc.service_config", json.dumps(config)))
    channels = [grpc.aio.insecure_channel(args.target, options=options) for _ in range(4)]
    stubs = [pb_grpc.RecommenderStub(c) for c in channels]
    method = {"recommend": "Recommend", "batch": "RecommendBatch", "record": "RecordInteractions"}[
        args.method
    ]
    meta = (("authorization", f"Bearer {args.token}"),) if args.token else None
    calls: list[list] = []
    seq = 0

    async def one() -> None:
        nonlocal seq
        seq += 1
        stub = stubs[seq % len(stubs)]
        req = request_for(args.method, users, rnd, seq)
        wall, t0 = time.time(), time.perf_counter()
        version = detail = ""
        try:
            resp = await getattr(stub, method)(req, timeout=args.timeout, metadata=meta)
            code = "OK"
            if args.method == "recommend":
                version = resp.model_version
            elif args.method == "batch" and resp.responses:
                version = resp.responses[0].model_version
        except grpc.aio.AioRpcError as e:
            code, detail = e.code().name, (e.details() or "")[:100]
        calls.append([wall, time.perf_counter() - t0, code, version, detail])

    for c in channels:
        await c.channel_ready()
    start = time.perf_counter()
    end = start + args.duration
    if args.closed:

        async def worker() -> None:
            while time.perf_counter() < end:
                await one()

        await asyncio.gather(*(worker() for _ in range(args.closed)))
    else:
        tasks: set[asyncio.Task] = set()
        n = 0
        while True:
            due = start + n / args.rate
            if due >= end:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t = asyncio.create_task(one())
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            n += 1
        if tasks:
            await asyncio.wait(tasks)
    for c in channels:
        await c.close()
    return calls


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--rate", type=float, default=200.0, help="calls/s (open loop)")
    p.add_argument("--closed", type=int, default=0, help="closed loop with N workers")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--method", default="recommend", choices=["recommend", "batch", "record"])
    p.add_argument("--users", default="u001,u002,u003,u004,u005,u006,u007,u008,u009,u010")
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--token", default="")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--health-check", default="", metavar="SERVICE", help="client-side health checking"
    )
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    # Hundreds of thousands of recorded calls make every full collection slower; the pauses
    # (seconds, after ~20 s at 4,000 calls/s) then show up as latency of the calls in flight.
    # This process lives for one run and makes no reference cycles worth collecting.
    gc.disable()
    calls = asyncio.run(run(args))
    with open(args.out, "w") as f:
        json.dump(calls, f)
    print(f"loadgen: {len(calls)} calls", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
