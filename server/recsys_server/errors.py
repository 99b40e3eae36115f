"""Domain errors of the serving core. No gRPC here: each class names its status code, and
`recsys_server.interceptors` is the one place that turns them into gRPC statuses."""

from __future__ import annotations


class ServingError(Exception):
    """An error the caller can act on; ``code`` is a `grpc.StatusCode` name."""

    code = "INTERNAL"


class InvalidArgument(ServingError):
    """A request field is malformed; the message starts with the field's name."""

    code = "INVALID_ARGUMENT"

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class NotFound(ServingError):
    code = "NOT_FOUND"


class Unavailable(ServingError):
    """No model is loaded yet, the event log is closed, or a write failed (retry)."""

    code = "UNAVAILABLE"


class DeadlineExceeded(ServingError):
    """The caller's deadline passed while the server worked for it; nothing is returned."""

    code = "DEADLINE_EXCEEDED"


class ResourceExhausted(ServingError):
    code = "RESOURCE_EXHAUSTED"


class Unauthenticated(ServingError):
    code = "UNAUTHENTICATED"


class PermissionDenied(ServingError):
    code = "PERMISSION_DENIED"
