"""quiver: the Python SDK of the quiver feature store.

Built on quiver's Rust smart client (routing, fan-out, failover, hedging, deadlines,
watermark tokens) through PyO3; results come back as Arrow/pandas/NumPy columns without a
Python object per value.

>>> import quiver
>>> client = quiver.Client(["127.0.0.1:7070"])                       # doctest: +SKIP
>>> resp = client.get_online_features(["user_txn:*"], keys=["u1"])   # doctest: +SKIP
>>> resp.to_pandas()                                                 # doctest: +SKIP
"""

from ._client import TLS, AsyncClient, Client
from ._quiver import __version__
from ._response import OnlineResponse
from .errors import (
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    QuiverError,
    QuotaExhausted,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)

__all__ = [
    "Client",
    "AsyncClient",
    "TLS",
    "OnlineResponse",
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
    "__version__",
]
