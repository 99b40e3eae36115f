"""Locust scenario for `recsys-serve`: a weighted mix of the Recommender RPCs.

    RECSYS_ARTIFACTS=/tmp/srv/artifacts locust -f load_tests/locustfile.py --headless \
        -u 20 -r 20 -t 30s --host 127.0.0.1:50051 RecsysUser

Environment:
  RECSYS_ARTIFACTS          artifacts dir (its latest version's ids.npz gives the ids); required
  RECSYS_LOAD_WEIGHTS       task weights, default "recommend=70,cold=8,anon=7,similar=8,
                            record=5,batch=2" (names not given keep their default; 0 disables)
  RECSYS_LOAD_RPS_PER_USER  target calls/s per user, default 10; 0 = no pacing (closed
                            loop, as fast as answers come)
  RECSYS_LOAD_ARRIVALS      steady (default: every 1/rps s, a random phase per user) or
                            poisson (exponential gaps)
  RECSYS_LOAD_ZIPF          Zipf exponent of the user/item popularity, default 1.1
  RECSYS_LOAD_SAMPLES       when set, every call's exact latency is written at the end to
                            the JSON file <this>.<pid> (one per Locust process; Locust's own
                            percentiles are rounded to whole ms)

`HealthUser` only calls grpc.health.v1 Check: the floor at the same concurrency.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import gevent
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from locust import events, task

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpc_user import GrpcUser

from recsys_core.artifacts import IDS_FILE, latest_version
from recsys_proto.v1 import recommender_pb2 as pb
from recsys_proto.v1 import recommender_pb2_grpc as pb_grpc

DEFAULT_WEIGHTS = {"recommend": 70, "cold": 8, "anon": 7, "similar": 8, "record": 5, "batch": 2}
EVENT_TYPES = ["view", "click", "add_to_cart", "purchase", "rating"]
EVENT_WEIGHTS = [60, 25, 8, 4, 3]


def parse_weights(text: str) -> dict[str, int]:
    weights = dict(DEFAULT_WEIGHTS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in weights or not value.strip().isdigit():
            raise ValueError(f"RECSYS_LOAD_WEIGHTS: bad entry {part!r} (keys: {list(weights)})")
        weights[key] = int(value)
    if not any(weights.values()):
        raise ValueError("RECSYS_LOAD_WEIGHTS: every weight is 0")
    return weights


def rps_per_user() -> float:
    return float(os.environ.get("RECSYS_LOAD_RPS_PER_USER", "10"))


def paced(user: GrpcUser) -> float:
    """Wait time of a user calling at RECSYS_LOAD_RPS_PER_USER on its own schedule: calls at
    ``phase + n / rps`` with a random phase per user (RECSYS_LOAD_ARRIVALS=steady, the default),
    or with exponential gaps (``poisson``: all users together then make a Poisson stream).

    Not Locust's constant_throughput: it anchors every user's schedule at its spawn time, and
    users spawn at a steady rate, so their calls line up (at 20 users/s and 10 calls/s each,
    every other user calls at the same instant): the load then arrives as bursts of 10
    simultaneous calls instead of a stream, which alone multiplied the median latency by 5.
    A late call is not made up for: a user never fires calls back to back to catch up."""
    rps = rps_per_user()
    if rps <= 0:
        return 0.0
    now = time.perf_counter()
    rng: random.Random = user.rng
    nxt = getattr(user, "next_call", None)
    if nxt is None:  # the first wait: a random phase
        nxt = now + rng.random() / rps
    elif os.environ.get("RECSYS_LOAD_ARRIVALS", "steady") == "poisson":
        nxt += rng.expovariate(rps)
    else:
        nxt += 1.0 / rps
    user.next_call = max(nxt, now)
    return user.next_call - now


def stagger(user: GrpcUser) -> None:
    """Waits for the user's first call slot (a random phase), see `paced`."""
    gevent.sleep(paced(user))


class ZipfIds:
    """Ids drawn long-tailed: rank r (over a fixed shuffle of the ids) has weight 1/r^s."""

    def __init__(self, ids: np.ndarray, s: float, seed: int) -> None:
        self.ids = [str(x) for x in np.random.default_rng(seed).permutation(ids)]
        w = 1.0 / np.arange(1, len(self.ids) + 1) ** s
        self.cdf = np.cumsum(w) / w.sum()

    def draw(self, rng: random.Random) -> str:
        i = int(np.searchsorted(self.cdf, rng.random(), side="right"))
        return self.ids[min(i, len(self.ids) - 1)]

    def draw_many(self, rng: random.Random, n: int) -> list[str]:
        return list(dict.fromkeys(self.draw(rng) for _ in range(n)))


def load_ids() -> tuple[ZipfIds, ZipfIds] | None:
    art = os.environ.get("RECSYS_ARTIFACTS")
    if not art:
        return None
    version = latest_version(Path(art))
    if version is None:
        raise SystemExit(f"RECSYS_ARTIFACTS={art}: no artifact version")
    with np.load(Path(art) / version / IDS_FILE, allow_pickle=False) as z:
        users, items = z["user_ids"], z["item_ids"]
    s = float(os.environ.get("RECSYS_LOAD_ZIPF", "1.1"))
    return ZipfIds(users, s, seed=1), ZipfIds(items, s, seed=2)


IDS = load_ids()
WEIGHTS = parse_weights(os.environ.get("RECSYS_LOAD_WEIGHTS", ""))

# Exact latencies per request name (only when RECSYS_LOAD_SAMPLES asks for them).
SAMPLES: dict[str, list[float]] = defaultdict(list)


@events.request.add_listener
def _sample(name: str, response_time: float, exception: object = None, **_: object) -> None:
    if os.environ.get("RECSYS_LOAD_SAMPLES") and exception is None:
        SAMPLES[name].append(response_time)


@events.quitting.add_listener
def _dump(**_: object) -> None:
    path = os.environ.get("RECSYS_LOAD_SAMPLES")
    if path:
        Path(f"{path}.{os.getpid()}").write_text(json.dumps(SAMPLES), encoding="utf-8")


class RecsysUser(GrpcUser):
    stub_class = pb_grpc.RecommenderStub
    wait_time = paced

    def on_start(self) -> None:
        if IDS is None:
            raise SystemExit("RecsysUser needs RECSYS_ARTIFACTS (the server's artifacts dir)")
        self.users, self.items = IDS
        self.rng = random.Random()
        self.session = uuid.uuid4().hex[:12]
        stagger(self)

    def _known(self, explain: bool = True) -> pb.RecommendRequest:
        return pb.RecommendRequest(user_id=self.users.draw(self.rng), k=10, explain=explain)

    @task(WEIGHTS["recommend"])
    def recommend(self) -> None:
        self.call("Recommend", self._known())

    @task(WEIGHTS["cold"])
    def recommend_cold_start(self) -> None:
        # A new user with a short history (below the hybrid's cold-start threshold).
        recent = self.items.draw_many(self.rng, self.rng.randint(1, 3))
        user = f"new-{uuid.uuid4().hex[:16]}"
        self.call(
            "Recommend",
            pb.RecommendRequest(user_id=user, k=10, explain=True, recent_item_ids=recent),
        )

    @task(WEIGHTS["anon"])
    def recommend_anonymous(self) -> None:
        # An anonymous session: only the session's recently viewed items.
        recent = self.items.draw_many(self.rng, self.rng.randint(2, 8))
        self.call(
            "Recommend",
            pb.RecommendRequest(
                user_id=f"anon-{self.session}", k=10, explain=True, recent_item_ids=recent
            ),
        )

    @task(WEIGHTS["similar"])
    def similar_items(self) -> None:
        model = "svd" if self.rng.random() < 0.2 else "item_cf"
        req = pb.SimilarItemsRequest(item_id=self.items.draw(self.rng), k=10, model=model)
        self.call("SimilarItems", req)

    @task(WEIGHTS["record"])
    def record_interactions(self) -> None:
        user = self.users.draw(self.rng)
        events_ = []
        for _ in range(self.rng.randint(1, 3)):
            kind = self.rng.choices(EVENT_TYPES, EVENT_WEIGHTS)[0]
            ev = pb.Interaction(
                event_id=uuid.uuid4().hex,
                user_id=user,
                item_id=self.items.draw(self.rng),
                event_type=kind,
            )
            if kind == "rating":
                ev.rating = float(self.rng.randint(1, 5))
            events_.append(ev)
        self.call("RecordInteractions", pb.RecordInteractionsRequest(events=events_))

    @task(WEIGHTS["batch"])
    def recommend_batch(self) -> None:
        n = self.rng.randint(5, 20)
        reqs = [self._known(explain=self.rng.random() < 0.5) for _ in range(n)]
        self.call("RecommendBatch", pb.RecommendBatchRequest(requests=reqs))


class HealthUser(GrpcUser):
    """Only grpc.health.v1 Check: the transport + server floor at the same concurrency."""

    stub_class = health_pb2_grpc.HealthStub
    wait_time = paced

    def on_start(self) -> None:
        self.rng = random.Random()
        stagger(self)

    @task
    def check(self) -> None:
        self.call("Check", health_pb2.HealthCheckRequest())
