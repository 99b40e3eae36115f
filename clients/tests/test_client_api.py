"""RecsysClient and AsyncRecsysClient against a real gRPC server (see conftest.py).

Every test here runs twice, once per client flavour, through the ``make_client`` fixture.
"""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime

import grpc
import pytest

from recsys_client import (
    Backoff,
    DeadlineExceeded,
    Interaction,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RecommendRequest,
    RecsysError,
    ResourceExhausted,
    ServerError,
    Unauthenticated,
    Unavailable,
    __version__,
)

# --- results --------------------------------------------------------------------------------


def test_recommend_converts_the_response(fake, make_client):
    client = make_client(fake.address)
    result = client.recommend("u1", k=5)
    assert result.user_id == "u1"
    assert result.item_ids == ["i1", "i2", "i3", "i4", "i5"]
    assert (result.model, result.model_version) == ("hybrid", "v1")
    assert result.fallback_tier == "personalized"
    assert result.experiment is None and result.variant is None
    first = result.items[0]
    assert first.title == "Item i1"
    assert first.score == pytest.approx(0.96875)
    assert first.confidence == pytest.approx(0.515625)
    assert first.categories == ["Drama"]
    assert result.items[1].categories == ["Comedy", "Drama"]
    assert all(r.explanation is None for r in result.items)
    scores = [r.score for r in result.items]
    assert scores == sorted(scores, reverse=True)


def test_recommend_sends_every_argument(fake, make_client):
    client = make_client(fake.address)
    result = client.recommend(
        "u1",
        k=3,
        model="item_cf",
        exclude=["i1", "i2"],
        allow=("i2", "i3", "i5", "i8"),
        recent=iter(["i7", "i9"]),
        explain=True,
        diversity=0.25,
    )
    (seen,) = fake.servicer.calls_of("Recommend")
    req = seen.request
    assert (req.user_id, req.k, req.model, req.explain) == ("u1", 3, "item_cf", True)
    assert req.diversity == 0.25
    assert list(req.exclude_item_ids) == ["i1", "i2"]
    assert list(req.allow_item_ids) == ["i2", "i3", "i5", "i8"]
    assert list(req.recent_item_ids) == ["i7", "i9"]
    assert result.item_ids == ["i3", "i5", "i8"]
    assert result.model == "item_cf"


def test_recommend_defaults_and_int_ids(fake, make_client):
    client = make_client(fake.address)
    result = client.recommend(42)
    (seen,) = fake.servicer.calls_of("Recommend")
    assert seen.request.user_id == "42" and seen.request.k == 10
    assert seen.request.model == "" and not seen.request.explain
    assert len(result.items) == 10 and result.user_id == "42"


def test_explanations_of_every_kind(fake, make_client):
    client = make_client(fake.address)
    items = client.recommend("u1", k=6, explain=True, recent=["i7"]).items
    kinds = [r.explanation.kind for r in items]
    assert kinds == [
        "because_you_interacted",
        "similar_users",
        "latent_factors",
        "trending",
        "blend",
        "content",
    ]
    cf, users, factors, trending, blend, content = (r.explanation for r in items)

    assert cf.text == "Because you watched Item i7"
    assert [(c.item_id, c.title) for c in cf.items] == [("i7", "Item i7")]
    assert cf.items[0].similarity == pytest.approx(0.5)
    assert cf.items[0].contribution == pytest.approx(0.25)
    assert cf.similar_users is None and cf.latent_factors is None and cf.trending is None
    assert cf.components == [] and cf.content is None and not cf.new_item

    s = users.similar_users
    assert (s.count, s.neighbours) == (3, 10)
    assert (s.mean_similarity, s.max_similarity) == (0.5, 0.75)

    f = factors.latent_factors
    assert f.factors == [2, 5]
    assert f.contributions == [0.5, 0.25] and f.shares == [0.625, 0.375]
    assert (f.closest_item_id, f.closest_item_title) == ("i7", "Item i7")
    assert f.closest_similarity == 0.875

    t = trending.trending
    assert (t.rank, t.half_life_days) == (4, 7.0)
    assert t.window_start == datetime.fromtimestamp(1_700_000_000, UTC)
    assert t.window_end == datetime.fromtimestamp(1_700_604_800, UTC)
    assert t.window_start.tzinfo is not None

    assert [(c.model, c.share, c.contribution) for c in blend.components] == [
        ("item_cf", 0.75, 0.5),
        ("svd", 0.25, 0.125),
    ]

    assert content.new_item and content.content.categories == ["Drama"]
    assert [(c.item_id, c.similarity) for c in content.content.items] == [("i3", 1.0)]


@pytest.mark.parametrize(
    ("user", "tier", "experiment"),
    [
        ("u1", "personalized", (None, None)),
        ("cold:u2", "cold_start", (None, None)),
        ("new:u3", "popularity", (None, None)),
        ("ab:u4", "personalized", ("exp1", "B")),
    ],
)
def test_fallback_tier_and_experiment(fake, make_client, user, tier, experiment):
    result = make_client(fake.address).recommend(user, k=1)
    assert result.fallback_tier == tier
    assert (result.experiment, result.variant) == experiment


def test_recommend_batch_keeps_order_and_applies_defaults(fake, make_client):
    client = make_client(fake.address)
    results = client.recommend_batch(
        ["a", RecommendRequest("b", k=2, exclude=["i1"], explain=True, diversity=0.5), 7],
        k=3,
        model="svd",
        diversity=0.25,
    )
    assert [r.user_id for r in results] == ["a", "b", "7"]
    assert [len(r.items) for r in results] == [3, 2, 3]
    assert results[0].model == "svd" and results[1].model == "hybrid"
    assert results[1].item_ids == ["i2", "i3"]
    assert results[1].items[0].explanation is not None
    assert results[0].items[0].explanation is None
    (seen,) = fake.servicer.calls_of("RecommendBatch")
    assert [r.k for r in seen.request.requests] == [3, 2, 3]
    assert [r.diversity for r in seen.request.requests] == [0.25, 0.5, 0.25]


def test_empty_batch_makes_no_call(fake, make_client):
    assert make_client(fake.address).recommend_batch([]) == []
    assert fake.servicer.calls_of("RecommendBatch") == []


def test_similar_items(fake, make_client):
    client = make_client(fake.address)
    result = client.similar_items("i1", k=4)
    assert (result.item_id, result.model, result.model_version) == ("i1", "item_cf", "v1")
    assert result.item_ids == ["i2", "i3", "i4", "i5"]
    assert result.items[0].title == "Item i2"
    assert client.similar_items("i1", 2, "svd").model == "svd"
    with pytest.raises(NotFound) as err:
        client.similar_items("missing")
    assert err.value.details == "unknown item 'missing'"


def test_record_interactions_is_idempotent_by_event_id(fake, make_client):
    client = make_client(fake.address)
    when = datetime(2024, 6, 1, 12, 30, 15, 250_000, tzinfo=UTC)
    events = [
        Interaction("e1", "u1", "i1", "click", when),
        Interaction("e2", "u1", "i2", "rating", 1_717_245_015.5, rating=4.5),
        Interaction.create(7, 9, "view"),
    ]
    first = client.record_interactions(events)
    assert (first.recorded, first.duplicates) == (3, 0)
    stored = fake.servicer.stored
    assert stored["e1"].timestamp.ToDatetime(tzinfo=UTC) == when
    assert stored["e1"].event_type == "click" and stored["e1"].rating == 0
    assert (stored["e2"].timestamp.seconds, stored["e2"].timestamp.nanos) == (
        1_717_245_015,
        500_000_000,
    )
    assert stored["e2"].rating == 4.5
    created = stored[events[2].event_id]
    assert (created.user_id, created.item_id) == ("7", "9")
    assert abs(created.timestamp.ToDatetime(tzinfo=UTC).timestamp() - time.time()) < 60

    again = client.record_interactions([events[0], Interaction.create("u1", "i3", "purchase")])
    assert (again.recorded, again.duplicates) == (1, 1)
    assert len(stored) == 4


def test_record_nothing_makes_no_call(fake, make_client):
    result = make_client(fake.address).record_interactions([])
    assert (result.recorded, result.duplicates) == (0, 0)
    assert fake.servicer.calls_of("RecordInteractions") == []


def test_record_retry_after_a_lost_answer_stores_once(fake, make_client):
    fake.servicer.lose_record_acks = 1
    events = [Interaction.create("u1", "i1", "click"), Interaction.create("u1", "i2", "view")]
    result = make_client(fake.address).record_interactions(events)
    # The first attempt stored both; the retry finds them already there.
    assert (result.recorded, result.duplicates) == (0, 2)
    assert len(fake.servicer.stored) == 2
    attempts = fake.servicer.calls_of("RecordInteractions")
    assert len(attempts) == 2
    assert attempts[0].request == attempts[1].request


def test_list_models(fake, make_client):
    result = make_client(fake.address).list_models()
    assert (result.version, result.default_model) == ("v1", "item_cf")
    assert [m.name for m in result.models] == ["item_cf", "popularity"]
    item_cf = result.get("item_cf")
    assert item_cf.trained_at == datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    assert item_cf.metrics == {"ndcg@10": 0.3125, "recall@10": 0.25}
    assert item_cf.params == {"neighbours": "50"}
    assert result.get("popularity").trained_at is None
    assert result.get("svd") is None


def test_reload_models(fake, make_client):
    result = make_client(fake.address).reload_models()
    assert (result.version, result.changed, result.message) == ("v2", True, "v1 -> v2")


def test_health(fake, make_client):
    client = make_client(fake.address)
    assert client.health() == "SERVING"
    assert client.health("recsys.v1.Recommender") == "SERVING"
    assert client.health("draining") == "NOT_SERVING"
    assert client.health("no.such.Service") == "SERVICE_UNKNOWN"
    fake.health.set("", 2)  # NOT_SERVING
    assert client.health() == "NOT_SERVING"


# --- metadata ---------------------------------------------------------------------------------


def _exercise(client) -> None:
    client.recommend("u1", k=1)
    client.recommend_batch(["u1"], k=1)
    client.similar_items("i1", k=1)
    client.record_interactions([Interaction.create("u1", "i1", "click")])
    client.list_models()
    client.reload_models()
    client.health()


def test_token_is_sent_as_bearer_metadata_on_every_call(fake, make_client):
    _exercise(make_client(fake.address, token="s3cret"))
    methods = [s.method.rsplit("/", 1)[1] for s in fake.recorder.seen]
    assert methods == [
        "Recommend",
        "RecommendBatch",
        "SimilarItems",
        "RecordInteractions",
        "ListModels",
        "ReloadModels",
        "Check",
    ]
    assert all(s.metadata.get("authorization") == "Bearer s3cret" for s in fake.recorder.seen)
    assert all(
        f"recsys-client/{__version__}" in s.metadata["user-agent"] for s in fake.recorder.seen
    )


def test_no_token_no_authorization_header(fake, make_client):
    _exercise(make_client(fake.address))
    assert len(fake.recorder.seen) == 7
    assert all("authorization" not in s.metadata for s in fake.recorder.seen)


# --- errors -----------------------------------------------------------------------------------

EXPECTED = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


@pytest.mark.parametrize(
    "code", [c for c in grpc.StatusCode if c != grpc.StatusCode.OK], ids=lambda c: c.name
)
def test_every_status_code_maps_to_its_error(fake, make_client, code):
    client = make_client(fake.address, retries=3)
    with pytest.raises(RecsysError) as err:
        client.recommend(f"fail:{code.name}")
    assert type(err.value) is EXPECTED.get(code, ServerError)
    assert err.value.code == code
    assert err.value.details == "scripted failure"
    assert str(err.value) == f"{code.name}: scripted failure"
    assert isinstance(err.value.__cause__, grpc.RpcError)
    # Only UNAVAILABLE is retried.
    attempts = len(fake.servicer.calls_of("Recommend"))
    assert attempts == (4 if code == grpc.StatusCode.UNAVAILABLE else 1)


@pytest.mark.parametrize(
    "bad_call",
    [
        lambda c: c.recommend("u1", k=0),
        lambda c: c.recommend("u1", k=1001),
        lambda c: c.recommend("u1", k=2.5),
        lambda c: c.recommend(""),
        lambda c: c.recommend(None),
        lambda c: c.recommend("u1", exclude="i1"),
        lambda c: c.recommend("u1", recent=["i1", ""]),
        lambda c: c.recommend("u1", timeout=0),
        lambda c: c.recommend("u1", diversity=1.5),
        lambda c: c.recommend("u1", diversity=-0.1),
        lambda c: c.recommend("u1", diversity=float("nan")),
        lambda c: c.recommend("u1", diversity="0.5"),
        lambda c: c.recommend_batch(["u1"], diversity=2),
        lambda c: c.recommend_batch([f"u{n}" for n in range(1001)]),
        lambda c: c.recommend_batch("u1"),
        lambda c: c.similar_items("i1", k=-1),
        lambda c: c.record_interactions([Interaction.create("u1", "i1", "click", rating=3.0)]),
        lambda c: c.record_interactions([Interaction.create("u1", "i1", "rating")]),
        lambda c: c.record_interactions([Interaction.create("u1", "", "click")]),
        lambda c: c.record_interactions([Interaction("e1", "u1", "i1", "click", "yesterday")]),
        lambda c: c.record_interactions([Interaction("e1", "u1", "i1", "click", 1.0)] * 2),
        lambda c: c.record_interactions([("u1", "i1", "click")]),
    ],
)
def test_invalid_arguments_are_refused_before_sending(fake, make_client, bad_call):
    client = make_client(fake.address)
    with pytest.raises(InvalidArgument) as err:
        bad_call(client)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fake.recorder.seen == []


# --- retries --------------------------------------------------------------------------------


def test_unavailable_is_retried_until_success(fake, make_client):
    client = make_client(fake.address, retries=3)
    result = client.recommend("flaky:3:a", k=2)
    assert result.item_ids == ["i1", "i2"]
    assert len(fake.servicer.calls_of("Recommend")) == 4


def test_retries_are_bounded(fake, make_client):
    client = make_client(fake.address, retries=2)
    with pytest.raises(Unavailable) as err:
        client.recommend("flaky:100:b")
    assert err.value.details == "flaky 3/100"
    assert len(fake.servicer.calls_of("Recommend")) == 3


def test_retries_zero_means_one_attempt(fake, make_client):
    with pytest.raises(Unavailable):
        make_client(fake.address, retries=0).recommend("flaky:1:c")
    assert len(fake.servicer.calls_of("Recommend")) == 1


@pytest.mark.parametrize(
    ("method", "call"),
    [
        ("Recommend", lambda c: c.recommend("u1")),
        ("RecommendBatch", lambda c: c.recommend_batch(["u1"])),
        ("SimilarItems", lambda c: c.similar_items("i1")),
        ("RecordInteractions", lambda c: c.record_interactions([Interaction.create(1, 2, "view")])),
        ("ListModels", lambda c: c.list_models()),
    ],
)  # fmt: skip
def test_idempotent_calls_are_retried(fake, make_client, method, call):
    fake.servicer.script[method] = [grpc.StatusCode.UNAVAILABLE] * 2
    call(make_client(fake.address, retries=3))
    assert len(fake.servicer.calls_of(method)) == 3


def test_reload_models_is_never_retried(fake, make_client):
    fake.servicer.script["ReloadModels"] = [grpc.StatusCode.UNAVAILABLE]
    client = make_client(fake.address, retries=5)
    with pytest.raises(Unavailable):
        client.reload_models()
    assert len(fake.servicer.calls_of("ReloadModels")) == 1
    assert fake.servicer.version == "v1"
    assert client.reload_models().version == "v2"


def test_health_is_retried(fake, make_client):
    fake.recorder.script["Check"] = [grpc.StatusCode.UNAVAILABLE] * 2
    assert make_client(fake.address, retries=3).health() == "SERVING"
    assert fake.recorder.count("Check") == 3


def test_missing_health_service_is_an_error_not_a_status(fake, make_client):
    fake.recorder.script["Check"] = [grpc.StatusCode.UNIMPLEMENTED]
    with pytest.raises(ServerError) as err:
        make_client(fake.address).health()
    assert err.value.code == grpc.StatusCode.UNIMPLEMENTED


def test_backoff_grows_exponentially_up_to_the_maximum(fake, make_client, retry_decisions):
    backoff = Backoff(initial=0.04, multiplier=2.0, maximum=0.1, jitter=0.0)
    client = make_client(fake.address, retries=4, backoff=backoff, timeout=30)
    client.recommend("flaky:4:d")
    # The waits the client chose, and that it waited at least that long between attempts
    # (how much longer is the machine's business).
    assert retry_decisions == [0.04, 0.08, 0.1, 0.1]
    times = [c.at for c in fake.servicer.calls_of("Recommend")]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 4
    for gap, want in zip(gaps, retry_decisions, strict=True):
        assert gap >= want - 0.005


def test_jittered_backoff_stays_in_its_range(fake, make_client, retry_decisions):
    backoff = Backoff(initial=0.1, multiplier=1.0, maximum=0.1, jitter=0.5)
    client = make_client(fake.address, retries=3, backoff=backoff, timeout=30)
    client.recommend("flaky:3:e")
    assert len(retry_decisions) == 3
    assert all(0.05 <= d <= 0.1 for d in retry_decisions), retry_decisions
    times = [c.at for c in fake.servicer.calls_of("Recommend")]
    for (a, b), want in zip(itertools.pairwise(times), retry_decisions, strict=True):
        assert b - a >= want - 0.005


def test_unreachable_server_is_unavailable(dead_address, make_client, retry_decisions):
    client = make_client(dead_address, retries=2, timeout=60)
    start = time.monotonic()
    with pytest.raises(Unavailable):
        client.recommend("u1")
    # Each attempt failed at once, not at its deadline: both retries made, then given up.
    assert retry_decisions == [0.01, 0.02, None]
    assert time.monotonic() - start < 30


# --- deadlines ------------------------------------------------------------------------------


def test_slow_call_hits_the_client_timeout(fake, make_client):
    # The server would answer after 60 s; the 0.2 s deadline ends the call long before.
    client = make_client(fake.address, timeout=0.2)
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded) as err:
        client.recommend("sleep:60")
    assert 0.15 < time.monotonic() - start < 30
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    (seen,) = fake.servicer.calls_of("Recommend")  # not retried
    assert seen.time_remaining <= 0.25  # the deadline the server was given


def test_per_call_timeout_overrides_the_default(fake, make_client):
    # The server would answer after 20 s, within the default timeout: only the per-call one
    # ends the call.
    client = make_client(fake.address, timeout=60.0)
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        client.similar_items("sleep:20", timeout=0.2)
    assert time.monotonic() - start < 15
    (seen,) = fake.servicer.calls_of("SimilarItems")
    assert seen.time_remaining <= 0.25  # the deadline the server was given
    assert client.recommend("sleep:0.05", k=1).item_ids == ["i1"]


def test_deadline_reaches_the_server(fake, make_client):
    make_client(fake.address).recommend("u1")  # default timeout 2.0
    make_client(fake.address, timeout=None).recommend("u2")
    make_client(fake.address).list_models(timeout=7.5)
    default, unlimited = fake.servicer.calls_of("Recommend")
    # (gRPC rounds the timeout it puts on the wire up a little; the lower bounds leave a
    # second or more for the call to reach the server, which takes milliseconds)
    assert 1.0 < default.time_remaining <= 2.05
    assert unlimited.time_remaining is None or unlimited.time_remaining > 1e6  # no deadline
    (models,) = fake.servicer.calls_of("ListModels")
    assert 5.0 < models.time_remaining <= 7.55


def connect_both(client, *servers) -> None:
    """Health calls until every server has had one: round-robin connects to all addresses,
    but uses only those connected (right after start, maybe one)."""
    while not all(s.recorder.count("Check") for s in servers):
        client.health()


def test_calls_alternate_between_replicas(fake, fake_2, make_client):
    client = make_client(f"{fake.address},{fake_2.address}")
    connect_both(client, fake, fake_2)
    for n in range(10):
        client.recommend(f"u{n}", k=1)
    assert len(fake.servicer.calls_of("Recommend")) == 5
    assert len(fake_2.servicer.calls_of("Recommend")) == 5


def test_a_retry_goes_to_the_other_replica(fake, fake_2, make_client):
    fake.recorder.script["Recommend"] = [grpc.StatusCode.UNAVAILABLE] * 10
    client = make_client([fake.address, fake_2.address], retries=1)
    connect_both(client, fake, fake_2)
    for n in range(10):
        assert client.recommend(f"u{n}", k=1).item_ids == ["i1"]
    # Every call answered by fake_2, those first sent to fake after one retry.
    assert len(fake_2.servicer.calls_of("Recommend")) == 10
    assert fake.recorder.count("Recommend") >= 1


def test_deadline_covers_the_retries(fake, make_client, retry_decisions):
    # The first backoff (20 s) would end after the deadline (10 s): give up at once.
    backoff = Backoff(initial=20.0, multiplier=2.0, maximum=40.0, jitter=0.0)
    client = make_client(fake.address, timeout=10.0, retries=3, backoff=backoff)
    start = time.monotonic()
    with pytest.raises(Unavailable):
        client.recommend("flaky:100:f")
    assert retry_decisions == [None]
    assert time.monotonic() - start < 10.0  # no backoff slept, nor the deadline waited out
    assert len(fake.servicer.calls_of("Recommend")) == 1


def test_retry_attempts_share_the_deadline(fake, make_client, retry_decisions):
    # (gRPC sends a longer timeout with less precision: 29.8 s goes out as 30 s, so the
    # deadline stays a few seconds; the 2.5 s it leaves for the calls takes milliseconds.)
    backoff = Backoff(initial=0.5, multiplier=1.0, maximum=0.5, jitter=0.0)
    client = make_client(fake.address, timeout=3.5, retries=3, backoff=backoff)
    client.recommend("flaky:2:g")
    assert retry_decisions == [0.5, 0.5]
    first, _, third = fake.servicer.calls_of("Recommend")
    assert third.time_remaining < first.time_remaining - 0.95


# --- TLS --------------------------------------------------------------------------------------


def test_tls_with_a_root_cert_path_or_bytes(tls_fake, make_client):
    cert = tls_fake.extra["cert"]
    assert make_client(tls_fake.address, tls_root_cert=cert).health() == "SERVING"
    by_str = make_client(tls_fake.address, tls_root_cert=str(cert), token="t")
    assert by_str.recommend("u1", k=1).item_ids == ["i1"]
    assert tls_fake.recorder.seen[-1].metadata["authorization"] == "Bearer t"
    by_bytes = make_client(tls_fake.address, tls_root_cert=cert.read_bytes())
    assert by_bytes.list_models().default_model == "item_cf"


def test_plaintext_client_cannot_talk_to_a_tls_server(tls_fake, make_client):
    with pytest.raises(Unavailable):
        make_client(tls_fake.address, retries=0).health()


def test_tls_to_several_replicas_checks_the_host_name(tls_fake, tls_fake_2, make_client):
    # Resolved to 127.0.0.1 addresses; the certificate is still checked for "localhost".
    ports = [a.rsplit(":", 1)[1] for a in (tls_fake.address, tls_fake_2.address)]
    target = ",".join(f"localhost:{p}" for p in ports)
    client = make_client(target, tls_root_cert=tls_fake.extra["cert"])
    for n in range(10):
        assert client.recommend(f"u{n}", k=1).item_ids == ["i1"]
    assert tls_fake.servicer.calls_of("Recommend") and tls_fake_2.servicer.calls_of("Recommend")
