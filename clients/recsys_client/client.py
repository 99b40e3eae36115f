"""The synchronous client: :class:`RecsysClient`."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc

from recsys_client import _core
from recsys_client._core import (
    DEFAULT_BACKOFF,
    DEFAULT_RETRIES,
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT,
    REPORT_TIMEOUT,
    Backoff,
)
from recsys_client.types import (
    ExperimentReport,
    Interaction,
    Item,
    ItemsPage,
    ItemsResult,
    ModelsResult,
    RecommendRequest,
    RecommendResult,
    RecordResult,
    ReloadResult,
    SimilarItemsResult,
    UserHistory,
)

__all__ = ["Backoff", "RecsysClient"]

T = TypeVar("T")


class RecsysClient:
    """A blocking client of the recsys.v1.Recommender service. Thread-safe; one per process
    is enough (it holds one gRPC channel). Use it as a context manager or call :meth:`close`.

    Args:
        target: ``host:port`` of the server; or several replicas, as a list or a
            comma-separated string (``"h1:50051,h2:50051"``, host names resolved once, here);
            or a gRPC target such as ``dns:///name:50051`` (resolved by gRPC, again when a
            connection fails). Calls are spread over every address by gRPC's round-robin, and
            a retried call goes to the next replica that is up. ValueError names a bad entry.
        token: sent as ``authorization: Bearer <token>`` with every call.
        tls_root_cert: PEM root certificate(s) (bytes, or a path) to connect with TLS;
            plaintext when None.
        timeout: default deadline of each call in seconds, retries and their backoff included
            (None: no deadline); every method also takes ``timeout=``.
        retries: how many times a call failing with ``UNAVAILABLE`` is retried, on the next
            replica when there are several (0: never). Only idempotent calls are retried: the
            reads, health, the catalogue writes, and RecordInteractions (every event carries an
            event_id, which the server stores once); never ReloadModels.
        backoff: the wait between retries (:class:`Backoff`, or its arguments as a tuple).
        options: extra gRPC channel options, e.g. ``[("grpc.max_receive_message_length", n)]``.

    Failed calls raise :class:`recsys_client.errors.RecsysError` subclasses.
    """

    def __init__(
        self,
        target: str | Sequence[str] = DEFAULT_TARGET,
        *,
        token: str | None = None,
        tls_root_cert: bytes | str | os.PathLike[str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: Backoff | Sequence[float] = DEFAULT_BACKOFF,
        options: Iterable[tuple[str, Any]] = (),
    ) -> None:
        self._settings = _core.Settings.create(
            target, token, tls_root_cert, timeout, retries, backoff, options
        )
        creds = self._settings.credentials()
        where, options = self._settings.channel_target, self._settings.options
        if creds is None:
            self._channel = grpc.insecure_channel(where, options=options)
        else:
            self._channel = grpc.secure_channel(where, creds, options=options)
        self._callables: dict[str, Any] = {}

    @property
    def target(self) -> str:
        return self._settings.target

    def _invoke(self, call: _core.Call[T], timeout: float | None) -> T:
        if not call.needs_rpc:
            return call.result
        attempt = self._settings.attempt(call, timeout)
        fn = _core.unary(self._channel, call, self._callables)
        while True:
            try:
                response = fn(
                    call.request, timeout=attempt.timeout(), metadata=self._settings.metadata
                )
            except grpc.RpcError as err:
                delay = attempt.retry_delay(err)
                if delay is None:
                    return call.failed(err)
                time.sleep(delay)
            else:
                return call.convert(response)

    # --- API --------------------------------------------------------------------------------

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        *,
        model: str | None = None,
        exclude: Iterable[str] = (),
        allow: Iterable[str] = (),
        recent: Iterable[str] = (),
        explain: bool = False,
        diversity: float = 0.0,
        timeout: float | None = None,
    ) -> RecommendResult:
        """The top-``k`` items for ``user_id``.

        ``model``: one of the loaded models (`list_models`; None: the server's default or the
        user's A/B variant). ``exclude`` items are never returned; when ``allow`` is given
        only those items may be. ``recent`` item ids are session context added to the user's
        history (works for unknown users). ``explain`` asks for an explanation per item.
        ``diversity`` (0 … 1, 0: off) re-ranks the model's candidates by maximal marginal
        relevance, trading relevance for items less similar to each other (docs/serving.md).
        """
        call = _core.recommend(
            user_id,
            k,
            model=model,
            exclude=exclude,
            allow=allow,
            recent=recent,
            explain=explain,
            diversity=diversity,
        )
        return self._invoke(call, timeout)

    def recommend_batch(
        self,
        requests: Iterable[RecommendRequest | str],
        *,
        k: int = 10,
        model: str | None = None,
        exclude: Iterable[str] = (),
        allow: Iterable[str] = (),
        recent: Iterable[str] = (),
        explain: bool = False,
        diversity: float = 0.0,
        timeout: float | None = None,
    ) -> list[RecommendResult]:
        """Recommendations for many users in one call (at most 1000), in request order.

        Entries are :class:`RecommendRequest` objects or bare user ids; bare ids use the
        keyword arguments given here.
        """
        call = _core.recommend_batch(
            requests,
            k=k,
            model=model,
            exclude=exclude,
            allow=allow,
            recent=recent,
            explain=explain,
            diversity=diversity,
        )
        return self._invoke(call, timeout)

    def similar_items(
        self, item_id: str, k: int = 10, model: str | None = None, *, timeout: float | None = None
    ) -> SimilarItemsResult:
        """The ``k`` nearest neighbours of ``item_id`` by a model with item similarity (None:
        the server's default, item_cf)."""
        return self._invoke(_core.similar_items(item_id, k, model), timeout)

    def record_interactions(
        self, events: Iterable[Interaction] | Interaction, *, timeout: float | None = None
    ) -> RecordResult:
        """Durably records behaviour events (at most 1000 per call). Safe to repeat: events
        whose event_id the server already has come back as ``duplicates``."""
        return self._invoke(_core.record_interactions(events), timeout)

    def list_models(self, *, timeout: float | None = None) -> ModelsResult:
        """The loaded models with their versions, training times and offline metrics."""
        return self._invoke(_core.list_models(), timeout)

    def reload_models(self, *, timeout: float | None = None) -> ReloadResult:
        """Admin: make the server look for a new artifact version now (never retried)."""
        return self._invoke(_core.reload_models(), timeout)

    def upsert_items(
        self, items: Iterable[Item] | Item, *, timeout: float | None = None
    ) -> ItemsResult:
        """Adds or replaces catalogue items (at most 1000, distinct ids); returns once
        durable. Idempotent: an item upserted again unchanged counts as ``unchanged``. Needs
        the write token when the server has one."""
        return self._invoke(_core.upsert_items(items), timeout)

    def set_item_availability(
        self, item_ids: Iterable[str], available: bool, *, timeout: float | None = None
    ) -> ItemsResult:
        """Makes items available or unavailable (at most 1000 ids); an unavailable item is
        returned by no RPC once this returns. Idempotent; needs the write token."""
        return self._invoke(_core.set_item_availability(item_ids, available), timeout)

    def get_item(self, item_id: str, *, timeout: float | None = None) -> Item:
        """One item of the live catalogue; NotFound when the server does not know it."""
        return self._invoke(_core.get_item(item_id), timeout)

    def list_items(
        self,
        page_size: int = 100,
        page_token: str = "",
        *,
        available: bool | None = None,
        timeout: float | None = None,
    ) -> ItemsPage:
        """One page of the live catalogue in item id order (pass ``next_page_token`` on)."""
        return self._invoke(_core.list_items(page_size, page_token, available), timeout)

    def user_history(
        self, user_id: str, limit: int = 100, *, timeout: float | None = None
    ) -> UserHistory:
        """The user's training history and latest ``limit`` stored events (newest first)."""
        return self._invoke(_core.user_history(user_id, limit), timeout)

    def experiment_report(
        self, experiment: str, *, timeout: float | None = REPORT_TIMEOUT
    ) -> ExperimentReport:
        """The report of a configured experiment: per variant users, impressions, CTR,
        conversions and value per user; each variant against the control with fixed-horizon
        and always-valid 95% intervals; the sample-ratio check; the interleaving preference.
        NotFound when the server has no experiment of that name (docs/experiments.md). The
        deadline defaults to 60 s, not the client's: the server reads the whole experiment
        (None: the client's default)."""
        return self._invoke(_core.experiment_report(experiment), timeout)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The server's grpc.health.v1 status: "SERVING", "NOT_SERVING", "UNKNOWN" or
        "SERVICE_UNKNOWN" (``service`` "" is the server as a whole)."""
        return self._invoke(_core.health(service), timeout)

    # --- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RecsysClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RecsysClient({self._settings.target!r})"
