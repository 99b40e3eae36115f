"""What the sync and async clients share: settings, the per-RPC call specs and the retry policy.

A client method builds a :class:`Call` (validated request, response conversion, whether it may be
retried) and hands it to the client's ``_invoke``, which differs between sync and async only in
how it calls and sleeps; every decision about retrying is made by :class:`Attempt`.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc

from recsys_client import _convert, _health, _target
from recsys_client._version import __version__
from recsys_client.errors import InvalidArgument, ServerError, from_rpc_error
from recsys_client.types import (
    ExperimentReport,
    Interaction,
    Item,
    ItemsPage,
    ItemsResult,
    ModelsResult,
    RecommendResult,
    RecordResult,
    ReloadResult,
    SimilarItemsResult,
    UserHistory,
)
from recsys_proto.v1 import recommender_pb2 as pb

T = TypeVar("T")

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 2.0
REPORT_TIMEOUT = 60.0
"""The default deadline of an experiment report: it reads every impression of the experiment
(seconds for a large one)."""
DEFAULT_RETRIES = 3
SERVICE = pb.DESCRIPTOR.services_by_name["Recommender"].full_name  # "recsys.v1.Recommender"


# --- retry policy ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff between retries: the n-th retry (0-based) waits
    ``min(maximum, initial * multiplier**n)`` seconds, less a random fraction of up to
    ``jitter`` of it (``jitter=0.5``: uniformly between half and all of it)."""

    initial: float = 0.05
    multiplier: float = 2.0
    maximum: float = 1.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not (0 <= self.initial <= self.maximum and self.multiplier >= 1):
            raise ValueError("Backoff needs 0 <= initial <= maximum and multiplier >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("Backoff.jitter must be in [0, 1]")

    def base_delay(self, retry: int) -> float:
        """The delay before retry number ``retry`` (0-based), without jitter."""
        delay = self.initial
        for _ in range(retry):
            delay *= self.multiplier
            if delay >= self.maximum:
                break
        return min(delay, self.maximum)

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """The jittered delay before retry number ``retry`` (0-based)."""
        u = (rng or random).random()
        return self.base_delay(retry) * (1.0 - self.jitter * u)


class Attempt:
    """The retry state of one logical call with an overall deadline of ``timeout`` seconds.

    Only ``UNAVAILABLE`` is retried, only for idempotent calls, at most ``retries`` times, and
    never when the backoff would end past the deadline (the last error is raised instead).
    """

    def __init__(
        self,
        *,
        idempotent: bool,
        retries: int,
        backoff: Backoff,
        rng: random.Random,
        timeout: float | None,
    ) -> None:
        self._retries = retries if idempotent else 0
        self._backoff = backoff
        self._rng = rng
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self.retried = 0

    def timeout(self) -> float | None:
        """The deadline left for the next attempt, in seconds (None: no deadline)."""
        if self._deadline is None:
            return None
        return max(self._deadline - time.monotonic(), 0.001)

    def retry_delay(self, err: grpc.RpcError) -> float | None:
        """Seconds to wait before retrying after ``err``, or None to give up."""
        code = err.code() if callable(getattr(err, "code", None)) else None
        if code != grpc.StatusCode.UNAVAILABLE or self.retried >= self._retries:
            return None
        delay = self._backoff.delay(self.retried, self._rng)
        if self._deadline is not None and time.monotonic() + delay >= self._deadline:
            return None
        self.retried += 1
        return delay


DEFAULT_BACKOFF = Backoff()


# --- settings -------------------------------------------------------------------------------


def _read_cert(cert: bytes | str | os.PathLike[str]) -> bytes:
    if isinstance(cert, bytes):
        return cert
    if isinstance(cert, str) and "-----BEGIN" in cert:
        return cert.encode()
    with open(cert, "rb") as f:
        return f.read()


@dataclass(frozen=True)
class Settings:
    """A client's validated configuration (see :class:`recsys_client.RecsysClient`)."""

    target: str
    """The target as given (entries joined by commas)."""
    channel_target: str
    """The gRPC channel target (`recsys_client._target`)."""
    metadata: tuple[tuple[str, str], ...] | None
    timeout: float | None
    retries: int
    backoff: Backoff
    root_cert: bytes | None
    options: list[tuple[str, Any]]
    rng: random.Random = field(default_factory=random.Random, compare=False)

    @classmethod
    def create(
        cls,
        target: str | Sequence[str],
        token: str | None,
        tls_root_cert: bytes | str | os.PathLike[str] | None,
        timeout: float | None,
        retries: int,
        backoff: Backoff | Sequence[float],
        options: Iterable[tuple[str, Any]],
    ) -> Settings:
        where = _target.parse(target)
        if token is not None and (
            not isinstance(token, str) or not token or any(c in token for c in "\r\n")
        ):
            raise ValueError("token must be a non-empty single-line string or None")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
        if not isinstance(backoff, Backoff):
            backoff = Backoff(*backoff)
        try:
            timeout = _convert.check_timeout(timeout)
        except InvalidArgument as e:
            raise ValueError(e.details) from None
        return cls(
            target=where.display,
            channel_target=where.uri,
            metadata=(("authorization", f"Bearer {token}"),) if token else None,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            root_cert=None if tls_root_cert is None else _read_cert(tls_root_cert),
            options=_target.channel_options(
                where, [("grpc.primary_user_agent", f"recsys-client/{__version__}"), *options]
            ),
        )

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials when a root certificate was given (None: plaintext)."""
        if self.root_cert is None:
            return None
        return grpc.ssl_channel_credentials(root_certificates=self.root_cert)

    def attempt(self, call: Call[Any], timeout: float | None) -> Attempt:
        per_call = _convert.check_timeout(timeout)
        return Attempt(
            idempotent=call.idempotent,
            retries=self.retries,
            backoff=self.backoff,
            rng=self.rng,
            timeout=per_call if per_call is not None else self.timeout,
        )


# --- calls ----------------------------------------------------------------------------------

_NO_CALL: Any = object()


@dataclass(frozen=True)
class Call(Generic[T]):
    """One RPC to make: where, with what, how to read the answer and whether to retry."""

    path: str
    request: Any
    response_type: Any
    convert: Callable[[Any], T]
    idempotent: bool = True
    # Statuses that are an answer rather than a failure, and the value they stand for.
    answers: Mapping[grpc.StatusCode, T] = field(default_factory=dict)
    # When set, the answer is known without calling (e.g. recording no events).
    result: T = _NO_CALL

    @property
    def needs_rpc(self) -> bool:
        return self.result is _NO_CALL

    def failed(self, err: grpc.RpcError) -> T:
        """The value for a final error status that is an answer; else raises its RecsysError."""
        code = err.code() if callable(getattr(err, "code", None)) else None
        if code in self.answers:
            return self.answers[code]
        raise from_rpc_error(err) from err


def _path(method: str) -> str:
    return f"/{SERVICE}/{method}"


def recommend(user_id: Any, k: Any, **kwargs: Any) -> Call[RecommendResult]:
    return Call(
        _path("Recommend"),
        _convert.recommend_request(user_id, k, **kwargs),
        pb.RecommendResponse,
        _convert.recommend_result,
    )


def recommend_batch(requests: Iterable[Any], **defaults: Any) -> Call[list[RecommendResult]]:
    request = _convert.recommend_batch_request(requests, **defaults)
    expected = len(request.requests)

    def convert(msg: pb.RecommendBatchResponse) -> list[RecommendResult]:
        if len(msg.responses) != expected:
            raise ServerError(
                f"RecommendBatch answered {len(msg.responses)} responses for {expected} requests"
            )
        return [_convert.recommend_result(r) for r in msg.responses]

    return Call(
        _path("RecommendBatch"),
        request,
        pb.RecommendBatchResponse,
        convert,
        result=_NO_CALL if expected else [],
    )


def similar_items(item_id: Any, k: Any, model: Any) -> Call[SimilarItemsResult]:
    return Call(
        _path("SimilarItems"),
        _convert.similar_items_request(item_id, k, model),
        pb.SimilarItemsResponse,
        _convert.similar_items_result,
    )


def record_interactions(events: Iterable[Interaction]) -> Call[RecordResult]:
    request = _convert.record_interactions_request(events)
    return Call(
        _path("RecordInteractions"),
        request,
        pb.RecordInteractionsResponse,
        _convert.record_result,
        # Idempotent by event_id: a retried event that was stored counts as a duplicate (on
        # any replica of a shared store). The SDK refuses events without one; checked anyway.
        idempotent=all(e.event_id for e in request.events),
        result=_NO_CALL if request.events else RecordResult(0, 0),
    )


def list_models() -> Call[ModelsResult]:
    return Call(
        _path("ListModels"), pb.ListModelsRequest(), pb.ListModelsResponse, _convert.models_result
    )


def reload_models() -> Call[ReloadResult]:
    return Call(
        _path("ReloadModels"),
        pb.ReloadModelsRequest(),
        pb.ReloadModelsResponse,
        _convert.reload_result,
        idempotent=False,
    )


def upsert_items(items: Iterable[Item]) -> Call[ItemsResult]:
    # Idempotent: upserting the same item again changes nothing.
    return Call(
        _path("UpsertItems"),
        _convert.upsert_items_request(items),
        pb.UpsertItemsResponse,
        _convert.items_result,
    )


def set_item_availability(item_ids: Iterable[Any], available: bool) -> Call[ItemsResult]:
    return Call(
        _path("SetItemAvailability"),
        _convert.set_availability_request(item_ids, available),
        pb.SetItemAvailabilityResponse,
        _convert.items_result,
    )


def get_item(item_id: Any) -> Call[Item]:
    return Call(
        _path("GetItem"),
        pb.GetItemRequest(item_id=_convert.check_id("item_id", item_id)),
        pb.GetItemResponse,
        _convert.get_item_result,
    )


def list_items(page_size: Any, page_token: Any, available: bool | None) -> Call[ItemsPage]:
    return Call(
        _path("ListItems"),
        _convert.list_items_request(page_size, page_token, available),
        pb.ListItemsResponse,
        _convert.items_page,
    )


def user_history(user_id: Any, limit: Any) -> Call[UserHistory]:
    return Call(
        _path("GetUserHistory"),
        _convert.user_history_request(user_id, limit),
        pb.GetUserHistoryResponse,
        _convert.user_history_result,
    )


def experiment_report(experiment: Any) -> Call[ExperimentReport]:
    return Call(
        _path("GetExperimentReport"),
        _convert.experiment_report_request(experiment),
        pb.GetExperimentReportResponse,
        _convert.experiment_report,
    )


def health(service: str) -> Call[str]:
    if not isinstance(service, str):
        raise InvalidArgument(f"service must be a string, got {service!r}")
    return Call(
        _health.CHECK_PATH,
        _health.HealthCheckRequest(service=service),
        _health.HealthCheckResponse,
        _health.status_name,
        # The health service answers NOT_FOUND for a service it does not know.
        answers={grpc.StatusCode.NOT_FOUND: "SERVICE_UNKNOWN"},
    )


def unary(channel: Any, call: Call[Any], cache: dict[str, Any]) -> Any:
    """The (cached) unary-unary multicallable for ``call`` on a sync or aio channel."""
    fn = cache.get(call.path)
    if fn is None:
        fn = cache[call.path] = channel.unary_unary(
            call.path,
            request_serializer=type(call.request).SerializeToString,
            response_deserializer=call.response_type.FromString,
        )
    return fn
