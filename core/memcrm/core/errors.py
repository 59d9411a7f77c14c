"""The one error hierarchy of memcrm.

Domain code raises these; the service layer maps ``status`` to a gRPC status code in one place
(``memcrm.services.status``). ``status`` is a plain name so this module imports no grpc.
"""

from __future__ import annotations


class MemcrmError(Exception):
    """Base of every error memcrm reports to a client. The message is safe to show."""

    status = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(MemcrmError):
    """The request is malformed; ``field`` names the offending field by its proto path."""

    status = "INVALID_ARGUMENT"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem

    def __reduce__(self) -> tuple[type[InvalidArgument], tuple[str, str]]:
        # Errors cross process boundaries (Ray handles) by pickling.
        return (type(self), (self.field, self.problem))


class Unauthenticated(MemcrmError):
    status = "UNAUTHENTICATED"


class PermissionDenied(MemcrmError):
    status = "PERMISSION_DENIED"


class NotFound(MemcrmError):
    status = "NOT_FOUND"

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} {ident!r} not found")
        self.kind = kind
        self.ident = ident

    def __reduce__(self) -> tuple[type[NotFound], tuple[str, str]]:
        return (type(self), (self.kind, self.ident))


class StoreUnavailable(MemcrmError):
    """PostgreSQL or Redis cannot be reached; the client may retry."""

    status = "UNAVAILABLE"


class ResourceExhausted(MemcrmError):
    """A limit that protects the service is reached (e.g. open WatchSignals streams)."""

    status = "RESOURCE_EXHAUSTED"


class ConfigError(MemcrmError):
    """Settings or tenant configuration are invalid; raised at start-up."""

    status = "FAILED_PRECONDITION"
