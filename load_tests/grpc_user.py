"""An abstract Locust user that talks gRPC (plain grpcio, sync stubs, gevent-friendly).

Subclasses set ``stub_class`` (a generated ``*Stub``) and call ``self.call("Name", request)``:
every call, successful or not, is reported to Locust as a ``grpc`` request named after the RPC,
with its latency in ms and the serialized size of the response.

With RECSYS_LOAD_RETRIES=N (default 0) a call failing with UNAVAILABLE is retried up to N times
with the SDK's backoff, as `recsys_client` does for idempotent calls (every call of the
scenario is: reads, and RecordInteractions with event ids). The latency then covers the whole
logical call, and each retry is also reported, as a request named ``retry <RPC>``.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any, ClassVar

import gevent
import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User

from recsys_client import Backoff

# Locust runs users as greenlets: grpc's sync stubs must cooperate with gevent's loop.
grpc_gevent.init_gevent()
RETRIES = int(os.environ.get("RECSYS_LOAD_RETRIES", "0"))
BACKOFF = Backoff()


class GrpcUser(User):
    """Holds one insecure channel to ``host`` (``host:port``; a ``grpc://`` prefix is
    accepted) and one stub of ``stub_class``."""

    abstract = True
    stub_class: ClassVar[Any] = None
    timeout_s: ClassVar[float] = 10.0

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        if not self.host:
            raise ValueError("GrpcUser needs --host host:port")
        target = self.host.removeprefix("grpc://")
        self.channel = grpc.insecure_channel(target)
        self.stub = self.stub_class(self.channel)

    def on_stop(self) -> None:
        self.channel.close()

    def call(self, name: str, request: Any, stub: Any = None) -> Any:
        """Calls RPC ``name`` on ``stub`` (default ``self.stub``) and reports it to Locust.
        Returns the response, or None when the call failed (the failure is reported, not
        raised, so one bad call does not end the user's task loop)."""
        method = getattr(stub if stub is not None else self.stub, name)
        response, exc, length = None, None, 0
        start = time.perf_counter()
        for attempt in range(RETRIES + 1):
            try:
                response = method(request, timeout=self.timeout_s)
                length = response.ByteSize()
                exc = None
                break
            except Exception as e:  # grpc.RpcError and anything else: a failed request
                exc = e
                if attempt == RETRIES or getattr(e, "code", lambda: None)() != (
                    grpc.StatusCode.UNAVAILABLE
                ):
                    break
                self.environment.events.request.fire(
                    request_type="retry",
                    name=f"retry {name}",
                    response_time=0.0,
                    response_length=0,
                    exception=None,
                    context={},
                )
                gevent.sleep(BACKOFF.delay(attempt, random))
        ms = (time.perf_counter() - start) * 1000.0
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=ms,
            response_length=length,
            exception=exc,
            context={},
        )
        return response
