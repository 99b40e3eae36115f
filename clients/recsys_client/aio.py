"""The asyncio client: :class:`AsyncRecsysClient`, the same API as :class:`RecsysClient` on
``grpc.aio``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio

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

__all__ = ["AsyncRecsysClient", "Backoff"]

T = TypeVar("T")


class AsyncRecsysClient:
    """The asyncio twin of :class:`recsys_client.RecsysClient`: same arguments, same methods
    (coroutines), same results and errors. The gRPC channel is opened on first use, in the
    running event loop, and belongs to that loop; use ``async with`` or ``await close()``.
    The host names of a list of targets are resolved in the constructor (blocking, once).
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
        self._channel: grpc.aio.Channel | None = None
        self._callables: dict[str, Any] = {}

    @property
    def target(self) -> str:
        return self._settings.target

    def _get_channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            creds = self._settings.credentials()
            target, options = self._settings.channel_target, self._settings.options
            if creds is None:
                self._channel = grpc.aio.insecure_channel(target, options=options)
            else:
                self._channel = grpc.aio.secure_channel(target, creds, options=options)
        return self._channel

    async def _invoke(self, call: _core.Call[T], timeout: float | None) -> T:
        if not call.needs_rpc:
            return call.result
        attempt = self._settings.attempt(call, timeout)
        fn = _core.unary(self._get_channel(), call, self._callables)
        while True:
            try:
                response = await fn(
                    call.request, timeout=attempt.timeout(), metadata=self._settings.metadata
                )
            except grpc.RpcError as err:
                delay = attempt.retry_delay(err)
                if delay is None:
                    return call.failed(err)
                await asyncio.sleep(delay)
            else:
                return call.convert(response)

    # --- API (see RecsysClient for the documentation) --------------------------------------

    async def recommend(
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
        """The top-``k`` items for ``user_id`` (see :meth:`RecsysClient.recommend`)."""
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
        return await self._invoke(call, timeout)

    async def recommend_batch(
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
        """Many users in one call (see :meth:`RecsysClient.recommend_batch`)."""
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
        return await self._invoke(call, timeout)

    async def similar_items(
        self, item_id: str, k: int = 10, model: str | None = None, *, timeout: float | None = None
    ) -> SimilarItemsResult:
        """The neighbours of ``item_id`` (see :meth:`RecsysClient.similar_items`)."""
        return await self._invoke(_core.similar_items(item_id, k, model), timeout)

    async def record_interactions(
        self, events: Iterable[Interaction] | Interaction, *, timeout: float | None = None
    ) -> RecordResult:
        """Records events, idempotently (see :meth:`RecsysClient.record_interactions`)."""
        return await self._invoke(_core.record_interactions(events), timeout)

    async def list_models(self, *, timeout: float | None = None) -> ModelsResult:
        """The loaded models (see :meth:`RecsysClient.list_models`)."""
        return await self._invoke(_core.list_models(), timeout)

    async def upsert_items(
        self, items: Iterable[Item] | Item, *, timeout: float | None = None
    ) -> ItemsResult:
        """Adds or replaces items (see :meth:`RecsysClient.upsert_items`)."""
        return await self._invoke(_core.upsert_items(items), timeout)

    async def set_item_availability(
        self, item_ids: Iterable[str], available: bool, *, timeout: float | None = None
    ) -> ItemsResult:
        """See :meth:`RecsysClient.set_item_availability`."""
        return await self._invoke(_core.set_item_availability(item_ids, available), timeout)

    async def get_item(self, item_id: str, *, timeout: float | None = None) -> Item:
        """See :meth:`RecsysClient.get_item`."""
        return await self._invoke(_core.get_item(item_id), timeout)

    async def list_items(
        self,
        page_size: int = 100,
        page_token: str = "",
        *,
        available: bool | None = None,
        timeout: float | None = None,
    ) -> ItemsPage:
        """See :meth:`RecsysClient.list_items`."""
        return await self._invoke(_core.list_items(page_size, page_token, available), timeout)

    async def user_history(
        self, user_id: str, limit: int = 100, *, timeout: float | None = None
    ) -> UserHistory:
        """See :meth:`RecsysClient.user_history`."""
        return await self._invoke(_core.user_history(user_id, limit), timeout)

    async def experiment_report(
        self, experiment: str, *, timeout: float | None = REPORT_TIMEOUT
    ) -> ExperimentReport:
        """See :meth:`RecsysClient.experiment_report`."""
        return await self._invoke(_core.experiment_report(experiment), timeout)

    async def reload_models(self, *, timeout: float | None = None) -> ReloadResult:
        """Admin: look for a new artifact version now; never retried."""
        return await self._invoke(_core.reload_models(), timeout)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The grpc.health.v1 status (see :meth:`RecsysClient.health`)."""
        return await self._invoke(_core.health(service), timeout)

    # --- lifecycle --------------------------------------------------------------------------

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        self._callables.clear()
        if channel is not None:
            await channel.close()

    async def __aenter__(self) -> AsyncRecsysClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncRecsysClient({self._settings.target!r})"
