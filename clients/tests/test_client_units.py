"""Unit tests of the pieces both clients share: backoff/retry decisions, error mapping,
conversion and validation, the health messages and the packaging."""

from __future__ import annotations

import random
import subprocess
import sys
import tomllib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from grpc_health.v1 import health_pb2

from recsys_client import (
    Backoff,
    DeadlineExceeded,
    Interaction,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RecsysClient,
    RecsysError,
    ResourceExhausted,
    ServerError,
    Unauthenticated,
    Unavailable,
    _convert,
    _core,
    _health,
)
from recsys_client.errors import error_for_code, from_rpc_error
from recsys_proto.v1 import recommender_pb2 as pb

CLIENTS = Path(__file__).resolve().parent.parent


class FakeRpcError(grpc.RpcError):
    def __init__(self, code, details="boom"):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


# --- backoff and retry decisions --------------------------------------------------------------


def test_backoff_defaults_and_growth():
    b = Backoff()
    assert (b.initial, b.multiplier, b.maximum) == (0.05, 2.0, 1.0)
    assert [b.base_delay(n) for n in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert b.base_delay(10_000) == 1.0  # no overflow


def test_backoff_jitter_bounds():
    b = Backoff(initial=0.2, multiplier=2.0, maximum=1.0, jitter=0.5)
    rng = random.Random(7)
    delays = [b.delay(1, rng) for _ in range(2000)]
    assert all(0.2 <= d <= 0.4 for d in delays)
    assert max(delays) - min(delays) > 0.15  # actually jittered
    assert Backoff(jitter=0.0).delay(3, rng) == 0.4


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": -1}, {"multiplier": 0.5}, {"initial": 2.0, "maximum": 1.0}, {"jitter": 1.5}],
)
def test_backoff_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        Backoff(**kwargs)


NO_JITTER = Backoff(jitter=0.0)


def _attempt(idempotent=True, retries=3, timeout=None, backoff=NO_JITTER):
    return _core.Attempt(
        idempotent=idempotent,
        retries=retries,
        backoff=backoff,
        rng=random.Random(1),
        timeout=timeout,
    )


def test_attempt_retries_only_unavailable_a_bounded_number_of_times():
    a = _attempt(retries=3)
    unavailable = FakeRpcError(grpc.StatusCode.UNAVAILABLE)
    assert [a.retry_delay(unavailable) for _ in range(4)] == [0.05, 0.1, 0.2, None]
    for code in grpc.StatusCode:
        if code != grpc.StatusCode.UNAVAILABLE:
            assert _attempt().retry_delay(FakeRpcError(code)) is None


def test_attempt_never_retries_non_idempotent_calls():
    a = _attempt(idempotent=False, retries=10)
    assert a.retry_delay(FakeRpcError(grpc.StatusCode.UNAVAILABLE)) is None


def test_attempt_respects_the_deadline(monkeypatch):
    now = [1000.0]  # the clock Attempt reads, moved by hand: no race with the real one
    monkeypatch.setattr(_core, "time", SimpleNamespace(monotonic=lambda: now[0]))
    a = _attempt(timeout=0.12, backoff=Backoff(initial=0.1, jitter=0.0))
    assert a.timeout() == pytest.approx(0.12)
    now[0] += 0.01
    assert a.timeout() == pytest.approx(0.11)
    assert a.retry_delay(FakeRpcError(grpc.StatusCode.UNAVAILABLE)) == 0.1
    # the next one (0.2 s) would end past the deadline
    assert a.retry_delay(FakeRpcError(grpc.StatusCode.UNAVAILABLE)) is None
    now[0] += 1.0  # past the deadline: a last attempt still gets a (tiny) timeout
    assert a.timeout() == 0.001
    assert _attempt().timeout() is None


def test_only_reload_models_is_not_idempotent():
    event = Interaction.create("u", "i", "view")
    calls = {
        "recommend": _core.recommend("u", 1),
        "batch": _core.recommend_batch(["u"]),
        "similar": _core.similar_items("i", 1, None),
        "record": _core.record_interactions([event]),
        "models": _core.list_models(),
        "health": _core.health(""),
        "reload": _core.reload_models(),
    }
    assert {name for name, call in calls.items() if not call.idempotent} == {"reload"}
    paths = {call.path for call in calls.values()}
    assert "/recsys.v1.Recommender/RecordInteractions" in paths
    assert "/grpc.health.v1.Health/Check" in paths


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded),
        (grpc.StatusCode.INTERNAL, ServerError),
        (grpc.StatusCode.UNKNOWN, ServerError),
        (grpc.StatusCode.UNIMPLEMENTED, ServerError),
        (grpc.StatusCode.FAILED_PRECONDITION, ServerError),
        (grpc.StatusCode.DATA_LOSS, ServerError),
        (grpc.StatusCode.CANCELLED, ServerError),
    ],
)
def test_error_mapping(code, cls):
    err = from_rpc_error(FakeRpcError(code, "why"))
    assert type(err) is cls and isinstance(err, RecsysError)
    assert (err.code, err.details, str(err)) == (code, "why", f"{code.name}: why")
    assert type(error_for_code(code)) is cls


def test_error_mapping_of_odd_errors():
    class Bare(grpc.RpcError):
        pass

    err = from_rpc_error(Bare())
    assert type(err) is ServerError and err.code == grpc.StatusCode.UNKNOWN
    assert str(from_rpc_error(FakeRpcError(grpc.StatusCode.NOT_FOUND, None))) == "NOT_FOUND"
    assert InvalidArgument("bad k").code == grpc.StatusCode.INVALID_ARGUMENT


# --- conversion -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds", "nanos"),
    [
        (0, 0, 0),
        (1_700_000_000, 1_700_000_000, 0),
        (1.5, 1, 500_000_000),
        (-1.5, -2, 500_000_000),
        (2.9999999999, 3, 0),
        (datetime(2024, 1, 1, tzinfo=UTC), 1_704_067_200, 0),
        (datetime(2024, 1, 1), 1_704_067_200, 0),  # naive is UTC
        (datetime(2024, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))), 1_704_067_200, 0),
    ],
)
def test_to_timestamp(value, seconds, nanos):
    ts = _convert.to_timestamp(value)
    assert (ts.seconds, ts.nanos) == (seconds, nanos)


@pytest.mark.parametrize("value", ["2024-01-01", None, True, float("nan"), float("inf")])
def test_to_timestamp_rejects(value):
    with pytest.raises(InvalidArgument):
        _convert.to_timestamp(value)


def test_integer_like_ids_and_k():
    np = pytest.importorskip("numpy")
    msg = _convert.recommend_request(np.int64(42), np.int32(5), recent=[np.int64(7), "i8"])
    assert (msg.user_id, msg.k, list(msg.recent_item_ids)) == ("42", 5, ["7", "i8"])
    for bad in (True, 5.0, "5"):
        with pytest.raises(InvalidArgument):
            _convert.check_k(bad)


def test_interaction_create_defaults():
    a, b = Interaction.create("u", "i", "click"), Interaction.create("u", "i", "click")
    assert a.event_id != b.event_id and len(a.event_id) == 32
    assert isinstance(a.timestamp, float) and a.rating is None
    fixed = Interaction.create("u", "i", "rating", timestamp=5.0, rating=4, event_id="x")
    msg = _convert.interaction_to_proto(fixed)
    assert (msg.event_id, msg.timestamp.seconds, msg.rating, msg.event_type) == (
        "x",
        5,
        4.0,
        "rating",
    )


def test_unknown_enum_and_empty_fields_convert_safely():
    msg = pb.RecommendResponse(user_id="u", fallback_tier=0)
    msg.items.add(item_id="i1")
    result = _convert.recommend_result(msg)
    assert result.fallback_tier == "unspecified"
    assert result.items[0].explanation is None and result.items[0].categories == []
    empty = _convert.explanation_from_proto(pb.Explanation(text="t"))
    assert (empty.similar_users, empty.latent_factors, empty.trending) == (None, None, None)
    assert empty.items == [] and empty.components == []
    assert (
        _convert.explanation_from_proto(
            pb.Explanation(trending=pb.Trending(rank=1))
        ).trending.window_start
        is None
    )


def test_batch_answer_with_the_wrong_count_is_an_error():
    call = _core.recommend_batch(["a", "b"])
    with pytest.raises(ServerError):
        call.convert(pb.RecommendBatchResponse(responses=[pb.RecommendResponse()]))


# --- health messages ----------------------------------------------------------------------


def test_private_health_messages_match_the_real_ones():
    mine = _health.HealthCheckRequest(service="svc").SerializeToString()
    assert mine == health_pb2.HealthCheckRequest(service="svc").SerializeToString()
    for number, name in enumerate(_health.STATUSES):
        wire = health_pb2.HealthCheckResponse(status=number).SerializeToString()
        assert _health.status_name(_health.HealthCheckResponse.FromString(wire)) == name
        assert health_pb2.HealthCheckResponse.ServingStatus.Name(number) == name


# --- settings and packaging -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target": ""},
        {"token": ""},
        {"token": "a\nb"},
        {"retries": -1},
        {"timeout": 0},
        {"timeout": -2.0},
        {"backoff": (1.0, 0.5)},
    ],
)
def test_client_settings_are_validated(kwargs):
    target = kwargs.pop("target", "127.0.0.1:1")
    with pytest.raises(ValueError):
        RecsysClient(target, **kwargs)


def test_missing_root_cert_file():
    with pytest.raises(OSError):
        RecsysClient("127.0.0.1:1", tls_root_cert="/nonexistent/ca.pem")


def _dep_names(meta: dict) -> set[str]:
    return {d.split(">")[0].split("=")[0].split("<")[0].strip() for d in meta["dependencies"]}


def test_sdk_needs_only_grpcio_and_protobuf():
    meta = tomllib.loads((CLIENTS / "pyproject.toml").read_text())["project"]
    # The generated code is its own distribution (proto/pyproject.toml), itself only on the
    # gRPC runtime.
    assert _dep_names(meta) == {"recsys-proto", "grpcio", "protobuf"}
    proto_meta = tomllib.loads((CLIENTS.parent / "proto" / "pyproject.toml").read_text())
    assert _dep_names(proto_meta["project"]) == {"grpcio", "protobuf"}
    assert meta["scripts"] == {
        "recsys": "recsys_client.cli:main",
        "recsys-dashboard": "recsys_dashboard.launcher:main",
    }
    # The dashboard's own dependencies stay in its extra.
    assert set(meta["optional-dependencies"]["dashboard"]) >= {"streamlit>=1.67"}
    # ... and imports without grpcio-health-checking (nor anything else from the dev venv).
    code = (
        "import sys\n"
        "for m in ('grpc_health', 'grpc_status', 'grpc_reflection', 'pytest', 'numpy'):\n"
        "    sys.modules[m] = None\n"
        "import recsys_client, recsys_client.aio, recsys_client.cli\n"
        "import recsys_proto.v1.recommender_pb2_grpc\n"
        "print(recsys_client.__version__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "0.1.0"
