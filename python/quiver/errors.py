"""Exceptions raised by the quiver SDK.

Every error a node or the client reports is a :class:`QuiverError` whose ``code`` is
quiver's error code (``"invalid_argument"``, ``"not_found"``, ...) and whose message names
what was wrong. Errors found before anything is sent (an unknown feature, a key of the
wrong type, an empty batch) are raised the same way, and nothing is sent.
"""

from __future__ import annotations

from typing import Dict, Optional, Type


class QuiverError(Exception):
    """Base class of every quiver error. ``code`` is quiver's error code."""

    code: str = "unknown"

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class InvalidArgument(QuiverError, ValueError):
    """The request is malformed or breaks a limit; retrying it unchanged cannot succeed."""

    code = "invalid_argument"


class NotFound(QuiverError, LookupError):
    """A named view, feature, feature service or entity does not exist."""

    code = "not_found"


class FailedPrecondition(QuiverError):
    """The request conflicts with the current state (e.g. an incompatible view change)."""

    code = "failed_precondition"


class Unauthenticated(QuiverError):
    """No valid credentials: the token is missing, unknown, malformed or revoked."""

    code = "unauthenticated"


class PermissionDenied(QuiverError):
    """The token's role or grants do not allow the call."""

    code = "permission_denied"


class DeadlineExceeded(QuiverError, TimeoutError):
    """No replica answered within the call's deadline (never a stale answer instead)."""

    code = "deadline_exceeded"


class Unavailable(QuiverError, ConnectionError):
    """The cluster cannot serve the call now (nodes down, overloaded or behind); retry."""

    code = "unavailable"


class ResourceExhausted(QuiverError):
    """A node's queue or in-flight limit is full; retry later with backoff."""

    code = "resource_exhausted"


class QuotaExhausted(ResourceExhausted):
    """The caller's quota is spent; retry after the wait the message names."""

    code = "quota_exhausted"


class Unimplemented(QuiverError):
    """The node does not offer this call (e.g. the cluster map of a static node)."""

    code = "unimplemented"


class Internal(QuiverError):
    """A bug or a storage failure on a node."""

    code = "internal"


_BY_CODE: Dict[str, Type[QuiverError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        FailedPrecondition,
        Unauthenticated,
        PermissionDenied,
        DeadlineExceeded,
        Unavailable,
        ResourceExhausted,
        QuotaExhausted,
        Unimplemented,
        Internal,
    )
}
# Routing conditions the client normally recovers from; when they surface the cluster
# could not serve the call.
_BY_CODE["wrong_shard"] = Unavailable
_BY_CODE["behind"] = Unavailable


def _from_code(code: str, message: str) -> QuiverError:
    """The exception for ``code`` (used by the native module)."""
    return _BY_CODE.get(code, QuiverError)(message, code)


__all__ = [
    "QuiverError",
    "InvalidArgument",
    "NotFound",
    "FailedPrecondition",
    "Unauthenticated",
    "PermissionDenied",
    "DeadlineExceeded",
    "Unavailable",
    "ResourceExhausted",
    "QuotaExhausted",
    "Unimplemented",
    "Internal",
]
