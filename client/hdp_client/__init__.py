"""hdp_client: the researcher's client for the platform's access layer (httpx, pyarrow, pandas)."""

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
