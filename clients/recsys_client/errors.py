"""Exceptions raised by the recsys client: one class per kind of failure a caller may handle.

Every failed call raises a :class:`RecsysError` subclass carrying the gRPC status ``code`` and the
server's ``details``; the underlying ``grpc.RpcError`` is chained as ``__cause__``. Requests the
client can tell are invalid before sending them raise :class:`InvalidArgument` without a call.
"""

from __future__ import annotations

import grpc

__all__ = [
    "DeadlineExceeded",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "RecsysError",
    "ResourceExhausted",
    "ServerError",
    "Unauthenticated",
    "Unavailable",
    "error_for_code",
    "from_rpc_error",
]


class RecsysError(Exception):
    """A failed recsys call. ``code`` is a ``grpc.StatusCode``, ``details`` the server's text."""

    default_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str = "", code: grpc.StatusCode | None = None) -> None:
        self.code: grpc.StatusCode = code if code is not None else self.default_code
        self.details: str = details
        super().__init__(f"{self.code.name}: {details}" if details else self.code.name)


class InvalidArgument(RecsysError):
    """The request is malformed (``INVALID_ARGUMENT``), found by the client or the server."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(RecsysError):
    """An unknown model, item or user (``NOT_FOUND``)."""

    default_code = grpc.StatusCode.NOT_FOUND


class Unavailable(RecsysError):
    """The server cannot be reached or is not serving (``UNAVAILABLE``), after any retries."""

    default_code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(RecsysError):
    """No token, or a token the server does not know (``UNAUTHENTICATED``)."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(RecsysError):
    """The token is valid but not allowed to make this call (``PERMISSION_DENIED``)."""

    default_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(RecsysError):
    """Rate limited or overloaded, or a message over the size limit (``RESOURCE_EXHAUSTED``)."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(RecsysError):
    """The call did not finish within its timeout (``DEADLINE_EXCEEDED``)."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class ServerError(RecsysError):
    """Any other status: ``INTERNAL``, ``UNKNOWN``, ``UNIMPLEMENTED``, ``FAILED_PRECONDITION``..."""

    default_code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[RecsysError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def error_for_code(code: grpc.StatusCode, details: str = "") -> RecsysError:
    """The exception for a status ``code`` (``ServerError`` for codes without their own class)."""
    return _BY_CODE.get(code, ServerError)(details, code)


def from_rpc_error(err: grpc.RpcError) -> RecsysError:
    """Maps a failed gRPC call (sync or ``grpc.aio``) to the matching :class:`RecsysError`."""
    code = err.code() if callable(getattr(err, "code", None)) else None
    details = err.details() if callable(getattr(err, "details", None)) else None
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    return error_for_code(code, details or "")
