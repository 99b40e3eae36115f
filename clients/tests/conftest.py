"""A real gRPC server on a free loopback port with a scripted recsys.v1.Recommender servicer.

Behaviour is chosen by the ids in the request, so every test gets what it asks for:

- user/item ``fail:CODE`` aborts with that status code (details "scripted failure");
- user/item ``flaky:N:tag`` answers UNAVAILABLE to the first N calls for that id, then normally;
- user/item ``sleep:S`` sleeps S seconds (while the call is alive) before answering;
- user ``cold:...`` / ``new:...`` answer from the cold-start / popularity tier, ``ab:...`` is in
  experiment "exp1" variant "B";
- ``FakeRecommender.script[method]``: status codes the next calls of that method fail with;
- GetExperimentReport: ``blend`` (A/B, 2 variants, one with too few users for intervals),
  ``skewed`` (A/B with a sample-ratio mismatch), ``duel`` (interleaving); others NOT_FOUND.

An interceptor records the method and metadata of every call (health checks included).
"""

from __future__ import annotations

import asyncio
import inspect
import shutil
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from recsys_client import AsyncRecsysClient, Backoff, RecsysClient, _core
from recsys_proto.v1 import recommender_pb2 as pb
from recsys_proto.v1 import recommender_pb2_grpc as pb_grpc

CATALOG = [f"i{n}" for n in range(1, 31)]
KINDS = [
    "because_you_interacted",
    "similar_users",
    "latent_factors",
    "trending",
    "blend",
    "content",
]
#: Backoff for tests: fast and without jitter.
FAST = Backoff(initial=0.01, multiplier=2.0, maximum=0.05, jitter=0.0)


@dataclass
class Seen:
    method: str
    request: Any
    time_remaining: float | None
    at: float


@dataclass
class Intercepted:
    method: str
    metadata: dict[str, str]


def _ts(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def _explanation(kind: str, rank: int, recent: list[str]) -> pb.Explanation:
    e = pb.Explanation(kind=kind)
    if kind == "because_you_interacted":
        source = recent[0] if recent else "i99"
        e.text = f"Because you watched Item {source}"
        e.items.add(item_id=source, title=f"Item {source}", similarity=0.5, contribution=0.25)
    elif kind == "similar_users":
        e.text = "3 of your 10 nearest neighbours chose it"
        e.similar_users.CopyFrom(
            pb.SimilarUsers(count=3, neighbours=10, mean_similarity=0.5, max_similarity=0.75)
        )
    elif kind == "latent_factors":
        e.text = "Close to Item i7 in taste space"
        e.latent_factors.CopyFrom(
            pb.LatentFactors(
                factors=[2, 5],
                contributions=[0.5, 0.25],
                shares=[0.625, 0.375],
                closest_item_id="i7",
                closest_item_title="Item i7",
                closest_similarity=0.875,
            )
        )
    elif kind == "trending":
        e.text = f"Trending: #{rank} this week"
        e.trending.CopyFrom(
            pb.Trending(
                rank=rank,
                half_life_days=7.0,
                window_start=_ts(1_700_000_000),
                window_end=_ts(1_700_604_800),
            )
        )
    elif kind == "content":
        e.text = "Matches your interest in Drama (new to you: just added)"
        e.content.categories.append("Drama")
        e.content.items.add(item_id="i3", title="Item i3", similarity=1.0)
        e.new_item = True
    else:
        e.text = "A blend of item_cf and svd"
        e.components.add(model="item_cf", share=0.75, contribution=0.5)
        e.components.add(model="svd", share=0.25, contribution=0.125)
    return e


class FakeRecommender(pb_grpc.RecommenderServicer):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[Seen] = []
        self.flaky: Counter[str] = Counter()
        self.script: dict[str, list[grpc.StatusCode]] = defaultdict(list)
        self.stored: dict[str, pb.Interaction] = {}
        # RecordInteractions stores the events, then answers UNAVAILABLE this many times
        # (an answer lost on the way back).
        self.lose_record_acks = 0
        self.version = "v1"

    # --- helpers ----------------------------------------------------------------------------

    def calls_of(self, method: str) -> list[Seen]:
        with self.lock:
            return [c for c in self.calls if c.method == method]

    def _enter(self, method: str, request: Any, context: grpc.ServicerContext) -> None:
        with self.lock:
            self.calls.append(Seen(method, request, context.time_remaining(), time.monotonic()))
            code = self.script[method].pop(0) if self.script[method] else None
        if code is not None:
            context.abort(code, f"scripted {code.name}")

    def _by_id(self, key: str, context: grpc.ServicerContext) -> None:
        if key.startswith("fail:"):
            context.abort(grpc.StatusCode[key.split(":")[1]], "scripted failure")
        if key.startswith("flaky:"):
            limit = int(key.split(":")[1])
            with self.lock:
                self.flaky[key] += 1
                n = self.flaky[key]
            if n <= limit:
                context.abort(grpc.StatusCode.UNAVAILABLE, f"flaky {n}/{limit}")
        if key.startswith("sleep:"):
            end = time.monotonic() + float(key.split(":")[1])
            while time.monotonic() < end and context.is_active():
                time.sleep(0.005)

    def _items(self, req: pb.RecommendRequest) -> list[pb.ScoredItem]:
        excluded = set(req.exclude_item_ids)
        allowed = set(req.allow_item_ids)
        pool = [i for i in CATALOG if i not in excluded and (not allowed or i in allowed)]
        out = []
        for rank, item in enumerate(pool[: req.k], 1):
            s = pb.ScoredItem(
                item_id=item,
                score=1.0 - 0.03125 * rank,
                confidence=0.5 + 0.015625 * (rank % 8),
                title=f"Item {item}",
                categories=["Drama"] if rank % 2 else ["Comedy", "Drama"],
            )
            if req.explain:
                kind = KINDS[(rank - 1) % len(KINDS)]
                s.explanation.CopyFrom(_explanation(kind, rank, list(req.recent_item_ids)))
            out.append(s)
        return out

    def _recommend(self, req: pb.RecommendRequest, context: grpc.ServicerContext):
        self._by_id(req.user_id, context)
        tier = pb.FALLBACK_TIER_PERSONALIZED
        if req.user_id.startswith("cold:"):
            tier = pb.FALLBACK_TIER_COLD_START
        elif req.user_id.startswith("new:"):
            tier = pb.FALLBACK_TIER_POPULARITY
        ab = req.user_id.startswith("ab:")
        return pb.RecommendResponse(
            user_id=req.user_id,
            items=self._items(req),
            model=req.model or "hybrid",
            model_version=self.version,
            fallback_tier=tier,
            experiment="exp1" if ab else "",
            variant="B" if ab else "",
            recommendation_id=f"rec-{req.user_id}",
        )

    # --- RPCs -------------------------------------------------------------------------------

    def Recommend(self, request, context):
        self._enter("Recommend", request, context)
        return self._recommend(request, context)

    def RecommendBatch(self, request, context):
        self._enter("RecommendBatch", request, context)
        return pb.RecommendBatchResponse(
            responses=[self._recommend(r, context) for r in request.requests]
        )

    def SimilarItems(self, request, context):
        self._enter("SimilarItems", request, context)
        self._by_id(request.item_id, context)
        if request.item_id == "missing":
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown item {request.item_id!r}")
        items = [i for i in CATALOG if i != request.item_id][: request.k]
        return pb.SimilarItemsResponse(
            item_id=request.item_id,
            items=[
                pb.ScoredItem(item_id=i, score=1.0 - 0.0625 * r, title=f"Item {i}")
                for r, i in enumerate(items, 1)
            ],
            model=request.model or "item_cf",
            model_version=self.version,
        )

    def RecordInteractions(self, request, context):
        self._enter("RecordInteractions", request, context)
        recorded = duplicates = 0
        with self.lock:
            for e in request.events:
                if e.event_id in self.stored:
                    duplicates += 1
                else:
                    self.stored[e.event_id] = e
                    recorded += 1
            lose = self.lose_record_acks > 0
            self.lose_record_acks -= lose
        if lose:
            context.abort(grpc.StatusCode.UNAVAILABLE, "answer lost")
        return pb.RecordInteractionsResponse(recorded=recorded, duplicates=duplicates)

    def ListModels(self, request, context):
        self._enter("ListModels", request, context)
        return pb.ListModelsResponse(
            models=[
                pb.ModelInfo(
                    name="item_cf",
                    version=self.version,
                    trained_at=_ts(1_717_243_200),  # 2024-06-01 12:00:00Z
                    metrics={"ndcg@10": 0.3125, "recall@10": 0.25},
                    params={"neighbours": "50"},
                ),
                pb.ModelInfo(name="popularity", version=self.version, metrics={}),
            ],
            version=self.version,
            default_model="item_cf",
        )

    def GetExperimentReport(self, request, context):
        self._enter("GetExperimentReport", request, context)
        report = EXPERIMENT_REPORTS.get(request.experiment)
        if report is None:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"experiment {request.experiment!r} is not configured; configured: 'blend'",
            )
        return report

    def ReloadModels(self, request, context):
        self._enter("ReloadModels", request, context)
        old, self.version = self.version, "v2"
        return pb.ReloadModelsResponse(
            version=self.version, changed=old != self.version, message=f"{old} -> v2"
        )


def _blend_report() -> pb.GetExperimentReportResponse:
    r = pb.GetExperimentReportResponse(
        experiment="blend",
        kind="ab",
        control="control",
        generated_at=_ts(1_717_243_200),
        attribution_hours=24.0,
        impressions_dropped=2,
    )
    r.variants.add(
        variant="control",
        model="hybrid",
        share=0.5,
        users=200,
        impressions=800,
        clicks=96,
        conversions=20,
        value=45.5,
        ctr=0.012,
        conversions_per_user=0.1,
        value_per_user=0.2275,
    )
    r.variants.add(
        variant="more-svd",
        model="hybrid",
        share=0.5,
        users=1,
        impressions=3,
        clicks=0,
        conversions=0,
        value=0.0,
        ctr=0.0,
        conversions_per_user=0.0,
        value_per_user=0.0,
    )
    r.comparisons.add(
        metric="ctr",
        variant="more-svd",
        control_value=0.012,
        variant_value=0.015,
        difference=0.003,
        relative_difference=0.25,
        ci95=pb.Interval(low=0.001, high=0.005),
        always_valid=pb.Interval(low=-0.0005, high=0.0065),
        p_value=0.0125,
        significant=False,
        mde_relative=0.375,
    )
    nan = float("nan")
    r.comparisons.add(
        metric="value_per_user",
        variant="more-svd",
        control_value=0.2275,
        variant_value=0.0,
        difference=-0.2275,
        relative_difference=-1.0,
        ci95=pb.Interval(low=nan, high=nan),
        always_valid=pb.Interval(low=nan, high=nan),
        p_value=nan,
        significant=False,
        mde_relative=nan,
    )
    r.sample_ratio.CopyFrom(
        pb.SampleRatio(observed=[200, 1], expected_shares=[0.5, 0.5], chi_square=0.5, p_value=0.5)
    )
    return r


def _skewed_report() -> pb.GetExperimentReportResponse:
    r = _blend_report()
    r.experiment = "skewed"
    r.sample_ratio.p_value, r.sample_ratio.mismatch = 0.00025, True
    return r


def _duel_report() -> pb.GetExperimentReportResponse:
    r = pb.GetExperimentReportResponse(
        experiment="duel", kind="interleave", control="a", attribution_hours=1.5
    )
    r.variants.add(variant="a", model="svd", share=0.5, users=10, impressions=30, clicks=7)
    r.variants.add(variant="b", model="item_cf", share=0.5, users=10, impressions=30, clicks=3)
    r.interleaving.CopyFrom(
        pb.InterleavingResult(
            model_a="svd",
            model_b="item_cf",
            wins_a=6,
            wins_b=2,
            ties=1,
            preference_a=0.75,
            ci95=pb.Interval(low=0.5, high=1.0),
            always_valid=pb.Interval(low=0.375, high=1.125),
            p_value=0.03125,
        )
    )
    return r


EXPERIMENT_REPORTS = {"blend": _blend_report(), "skewed": _skewed_report(), "duel": _duel_report()}


class Recorder(grpc.ServerInterceptor):
    """Records every call; ``script["Check"]`` etc.: codes the next calls of a method (by its
    last path segment, any service) fail with before reaching the servicer."""

    def __init__(self) -> None:
        self.seen: list[Intercepted] = []
        self.script: dict[str, list[grpc.StatusCode]] = defaultdict(list)

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        self.seen.append(
            Intercepted(method, {m.key: m.value for m in handler_call_details.invocation_metadata})
        )
        planned = self.script[method.rsplit("/", 1)[1]]
        if planned:
            code = planned.pop(0)

            def abort(request, context):
                context.abort(code, f"intercepted {code.name}")

            return grpc.unary_unary_rpc_method_handler(abort)
        return continuation(handler_call_details)

    def count(self, method: str) -> int:
        return sum(s.method.endswith(f"/{method}") for s in self.seen)


@dataclass
class FakeServer:
    address: str
    servicer: FakeRecommender
    recorder: Recorder
    health: health.HealthServicer
    extra: dict[str, Any] = field(default_factory=dict)


def start_server(
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.Server, FakeServer]:
    servicer, recorder = FakeRecommender(), Recorder()
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("recsys.v1.Recommender", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("draining", health_pb2.HealthCheckResponse.NOT_SERVING)
    server = grpc.server(ThreadPoolExecutor(max_workers=16), interceptors=[recorder])
    pb_grpc.add_RecommenderServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    assert port, "could not bind a loopback port"
    server.start()
    return server, FakeServer(f"127.0.0.1:{port}", servicer, recorder, health_servicer)


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server, info = start_server()
    try:
        yield info
    finally:
        server.stop(None).wait(5)


@pytest.fixture
def fake_2() -> Iterator[FakeServer]:
    """A second fake server (another replica)."""
    server, info = start_server()
    try:
        yield info
    finally:
        server.stop(None).wait(5)


@pytest.fixture
def dead_address() -> str:
    """A loopback address nobody listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


# --- one test body for both clients ---------------------------------------------------------


class SyncOverAsync:
    """Drives an AsyncRecsysClient from synchronous test code, in one event loop per client."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self.client = AsyncRecsysClient(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        def run(*args: Any, **kwargs: Any) -> Any:
            return self._loop.run_until_complete(attr(*args, **kwargs))

        return run

    def close(self) -> None:
        try:
            self._loop.run_until_complete(self.client.close())
        finally:
            self._loop.close()


@pytest.fixture(params=["sync", "async"])
def make_client(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """make_client(target, **kwargs): a RecsysClient, or an AsyncRecsysClient behind a
    synchronous facade; closed after the test. Tests run once per flavour."""
    made: list[Any] = []

    def make(target: str, **kwargs: Any) -> Any:
        kwargs.setdefault("backoff", FAST)
        client = RecsysClient(target, **kwargs) if request.param == "sync" else None
        if client is None:
            client = SyncOverAsync(target, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


# --- TLS --------------------------------------------------------------------------------------


@pytest.fixture
def retry_decisions(monkeypatch: pytest.MonkeyPatch) -> list[float | None]:
    """What the clients decided after each failed attempt, in order: the backoff (seconds)
    before the next attempt, or None to give up. The client's own count, not a clock's."""
    decided: list[float | None] = []
    real = _core.Attempt.retry_delay

    def recording(self: _core.Attempt, err: grpc.RpcError) -> float | None:
        delay = real(self, err)
        decided.append(delay)
        return delay

    monkeypatch.setattr(_core.Attempt, "retry_delay", recording)
    return decided


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost and its key (needs openssl)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    args = "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2"
    args += " -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1"
    subprocess.run(
        [openssl, *args.split(), "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_fake(tls_files: tuple[Path, Path]) -> Iterator[FakeServer]:
    cert, key = tls_files
    creds = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    server, info = start_server(creds)
    info.extra["cert"] = cert
    try:
        yield info
    finally:
        server.stop(None).wait(5)


@pytest.fixture
def tls_fake_2(tls_fake: FakeServer) -> Iterator[FakeServer]:
    """A second TLS fake with the same certificate (a replica of ``tls_fake``)."""
    cert = tls_fake.extra["cert"]
    key = cert.with_name("key.pem")
    creds = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    server, info = start_server(creds)
    info.extra["cert"] = cert
    try:
        yield info
    finally:
        server.stop(None).wait(5)
