"""The researcher's client lives in its own package, ``hdp_client`` (``client/``, installed with
``pip install ./client``: httpx, pyarrow and pandas only, nothing of the server). This module
re-exports it for the server's own users (``hdp query``, tests) so the code exists once."""

from hdp_client.client import Client
from hdp_client.errors import (
    AccessError,
    ClientError,
    IntegrityError,
    LimitExceeded,
    NotFound,
    NotPermitted,
    QueryError,
    ServerUnreachable,
    ServiceUnavailable,
)

__all__ = [
    "AccessError",
    "Client",
    "ClientError",
    "IntegrityError",
    "LimitExceeded",
    "NotFound",
    "NotPermitted",
    "QueryError",
    "ServerUnreachable",
    "ServiceUnavailable",
]
