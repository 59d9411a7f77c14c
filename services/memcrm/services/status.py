"""The one place where memcrm errors become gRPC status codes.

Anything that is not a ``MemcrmError`` is a bug on our side: the client gets INTERNAL with the
trace id to quote, never a traceback; the details go to the log.
"""

from __future__ import annotations

import logging

import grpc

from memcrm.core.errors import MemcrmError

log = logging.getLogger(__name__)

_CODES: dict[str, grpc.StatusCode] = {
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "UNAUTHENTICATED": grpc.StatusCode.UNAUTHENTICATED,
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "FAILED_PRECONDITION": grpc.StatusCode.FAILED_PRECONDITION,
    "RESOURCE_EXHAUSTED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "INTERNAL": grpc.StatusCode.INTERNAL,
}


def unwrap(exc: BaseException) -> BaseException:
    """The domain error behind Ray's wrapper when it crossed a DeploymentHandle."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def to_status(exc: BaseException, trace_id: str) -> tuple[grpc.StatusCode, str]:
    exc = unwrap(exc)
    if isinstance(exc, MemcrmError):
        return _CODES.get(exc.status, grpc.StatusCode.INTERNAL), exc.message
    log.error("memcrm: unexpected error (trace %s)", trace_id, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error; quote trace id {trace_id}"
