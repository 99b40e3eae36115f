"""What runs around every Recommender handler. The wrappers are applied once, when the
service is registered (`recsys_server.service.add_to_server`), not as grpc interceptors, which
cost two coroutines per call on every method, health included:

* `Observe` (outermost): request metrics, and the one place where errors become gRPC
  statuses: `ServingError` -> its code with its message; anything unexpected -> INTERNAL
  with a generic message and the traceback in the server log. A handler never ends UNKNOWN.
  It also admits at most ``limit`` Recommender RPCs at a time: the next one is refused at
  once with RESOURCE_EXHAUSTED (a short queue and fast refusals rather than a growing queue;
  health and reflection are not wrapped, so they answer under overload), a request whose
  bytes are not a valid message is INVALID_ARGUMENT, and a call whose deadline passed is
  counted as DEADLINE_EXCEEDED rather than CANCELLED. Once `drain` is called (shutdown,
  after health turned NOT_SERVING), every new call is refused with UNAVAILABLE, and the calls
  that were in flight are counted by how they end (``recsys_shutdown_calls_total``).
* `Auth`: bearer tokens from the ``authorization`` metadata, compared in constant time.
  Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from recsys_server.errors import (
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    ServingError,
    Unauthenticated,
    Unavailable,
)
from recsys_server.metrics import SHUTDOWN_OUTCOMES, Metrics

log = logging.getLogger(__name__)

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]

WRITE_METHODS = frozenset({"RecordInteractions", "UpsertItems", "SetItemAvailability"})
ADMIN_METHODS = frozenset({"ReloadModels"})


class Undecodable:
    """Stands for a request whose bytes did not parse (the handler answers INVALID_ARGUMENT;
    grpc's own answer would be INTERNAL "Exception deserializing request!")."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class Observe:
    def __init__(self, metrics: Metrics | None, limit: int | None = None) -> None:
        self.metrics = metrics
        self.limit = limit
        self.active = 0  # Recommender RPCs being handled (all methods)
        self.draining = False
        self.last_arrival = 0.0  # perf_counter() when the latest Recommender RPC arrived
        self.shutdown_counts = dict.fromkeys(SHUTDOWN_OUTCOMES, 0)
        if metrics is not None:  # read at scrape time: no gauge update (and lock) per call
            metrics.inflight.set_function(lambda: self.active)

    def drain(self) -> None:
        """From now on every new call is refused with UNAVAILABLE (the server is stopping)."""
        self.draining = True

    def _count_shutdown(self, outcome: str) -> None:
        self.shutdown_counts[outcome] += 1
        if self.metrics is not None:
            self.metrics.shutdown_calls.labels(outcome).inc()

    def deserializer(self, method: str, deserialize: Any) -> Any:
        if deserialize is None:
            return None

        def safe(data: bytes):
            try:
                return deserialize(data)
            except Exception as e:  # DecodeError, invalid UTF-8, recursion limit ...
                return Undecodable(e)

        return safe

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        metrics = self.metrics
        duration = metrics.duration.labels(method) if metrics is not None else None
        by_code: dict[str, Any] = {}

        async def observed(request, context):
            code = "OK"
            t0 = self.last_arrival = time.perf_counter()
            accepted = not self.draining
            self.active += 1
            try:
                if not accepted:
                    raise Unavailable(
                        "server is shutting down (health NOT_SERVING); retry on another replica"
                    )
                # Over the limit: refused before anything else runs (no auth, no work), so a
                # refusal costs far less than an answer and the server keeps up under overload.
                if self.limit is not None and self.active > self.limit:
                    raise ResourceExhausted(
                        f"server busy: {self.limit} requests in flight (max_concurrent_rpcs); "
                        "retry with backoff"
                    )
                if isinstance(request, Undecodable):
                    raise InvalidArgument(
                        "request", f"not a valid {method} request message ({request.error})"[:300]
                    )
                return await behavior(request, context)
            except ServingError as e:
                code = e.code
                await context.abort(grpc.StatusCode[code], str(e))
            except asyncio.CancelledError:
                left = context.time_remaining()
                code = "DEADLINE_EXCEEDED" if left is not None and left <= 0 else "CANCELLED"
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
                self.active -= 1
                if not accepted:
                    self._count_shutdown("refused")
                elif self.draining:
                    self._count_shutdown(
                        "cancelled" if code in ("CANCELLED", "DEADLINE_EXCEEDED") else "completed"
                    )
                if metrics is not None:
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


class Auth:
    """Write RPCs need the write or admin token when a write token is configured; ReloadModels
    needs the admin token when one is configured; with a read token configured, every other
    call (and those two when their token is not configured) needs one of the configured tokens.
    No token -> UNAUTHENTICATED; a wrong or insufficient one -> PERMISSION_DENIED."""

    def __init__(
        self,
        *,
        read: str | None = None,
        write: str | None = None,
        admin: str | None = None,
    ) -> None:
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
