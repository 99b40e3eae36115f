"""Server interceptors for the Recommender service (health and reflection pass through):

* `ObserveInterceptor` (outermost): request metrics, and the one place where errors become
  gRPC statuses: `ServingError` -> its code with its message; anything unexpected -> INTERNAL
  with a generic message and the traceback in the server log. A handler never ends UNKNOWN.
* `AuthInterceptor`: bearer tokens from the ``authorization`` metadata, compared in constant
  time. Tokens are never logged.

Each wraps a method's handler once and reuses the wrapper (the per-call work is in the wrapper).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from recsys_server.errors import PermissionDenied, ServingError, Unauthenticated
from recsys_server.metrics import Metrics

log = logging.getLogger(__name__)

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]

WRITE_METHODS = frozenset({"RecordInteractions"})
ADMIN_METHODS = frozenset({"ReloadModels"})


class _Wrapping(grpc.aio.ServerInterceptor):
    """Wraps the unary handlers of one service's methods, once per method."""

    def __init__(self, service: str) -> None:
        self.prefix = f"/{service}/"
        self._cache: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def wrap(self, method: str, behavior: Behavior) -> Behavior | None:
        raise NotImplementedError

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        full = handler_call_details.method or ""
        hit = self._cache.get(full)
        if hit is not None and hit[0] is handler:
            return hit[1]
        if handler is None or handler.unary_unary is None or not full.startswith(self.prefix):
            return handler
        behavior = self.wrap(full[len(self.prefix) :], handler.unary_unary)
        wrapped = (
            handler
            if behavior is None
            else grpc.unary_unary_rpc_method_handler(
                behavior,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        )
        self._cache[full] = (handler, wrapped)
        return wrapped


class ObserveInterceptor(_Wrapping):
    def __init__(self, service: str, metrics: Metrics | None) -> None:
        super().__init__(service)
        self.metrics = metrics

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        metrics = self.metrics
        duration = metrics.duration.labels(method) if metrics is not None else None
        by_code: dict[str, Any] = {}

        async def observed(request, context):
            code = "OK"
            t0 = time.perf_counter()
            if metrics is not None:
                metrics.inflight.inc()
            try:
                return await behavior(request, context)
            except ServingError as e:
                code = e.code
                await context.abort(grpc.StatusCode[code], str(e))
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except grpc.aio.AbortError:
                c = context.code()
                code = c.name if isinstance(c, grpc.StatusCode) else "INTERNAL"
                raise
            except Exception:
                code = "INTERNAL"
                log.exception("%s failed", method)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error (see server log)")
            finally:
                if metrics is not None:
                    metrics.inflight.dec()
                    duration.observe(time.perf_counter() - t0)
                    counter = by_code.get(code)
                    if counter is None:
                        counter = by_code[code] = metrics.requests.labels(method, code)
                    counter.inc()

        return observed


def bearer_token(metadata) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def _matches(token: str, candidates: list[str]) -> bool:
    ok = False
    given = token.encode()
    for c in candidates:  # no early exit: the time does not depend on which one matched
        ok |= hmac.compare_digest(given, c.encode())
    return ok


class AuthInterceptor(_Wrapping):
    """Write RPCs need the write or admin token when a write token is configured; ReloadModels
    needs the admin token when one is configured; with a read token configured, every other
    call (and those two when their token is not configured) needs one of the configured tokens.
    No token -> UNAUTHENTICATED; a wrong or insufficient one -> PERMISSION_DENIED."""

    def __init__(
        self,
        service: str,
        *,
        read: str | None = None,
        write: str | None = None,
        admin: str | None = None,
    ) -> None:
        super().__init__(service)
        self.read, self.write, self.admin = read, write, admin
        self.all = [t for t in (read, write, admin) if t]

    def accepted(self, method: str) -> tuple[list[str], str] | None:
        """(tokens accepted, role) for a method, or None when it is open."""
        if method in ADMIN_METHODS and self.admin:
            return [self.admin], "admin"
        if method in WRITE_METHODS and self.write:
            return [t for t in (self.write, self.admin) if t], "write"
        if self.read:
            return self.all, "read"
        return None

    def wrap(self, method: str, behavior: Behavior) -> Behavior | None:
        need = self.accepted(method)
        if need is None:
            return None  # open: no check at all
        tokens, role = need

        async def checked(request, context):
            token = bearer_token(context.invocation_metadata())
            if token is None:
                raise Unauthenticated(
                    f"{method} needs a {role} token: send 'authorization: Bearer <token>'"
                )
            if not _matches(token, tokens):
                raise PermissionDenied(f"the token given does not allow {method} ({role} needed)")
            return await behavior(request, context)

        return checked
