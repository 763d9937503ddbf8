"""Bearer-token authentication behind one seam.

* Local API tokens (the embedded default): looked up through governance, which stores them
  hashed (``Governance.authenticate_token``).
* OIDC / JWT (production): signature checked against the issuer's JWKS, plus issuer, audience,
  expiry and not-before. Roles and holders come from claims.

``ChainAuthenticator`` tries them in order: a token shaped like a JWT goes to OIDC when it is
configured, anything else to the local store. Every failure is ``None`` (the caller answers
401); the reason is never echoed with token material.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import jwt

from access.ports import Governance, User
from governance.values import ROLES


class Authenticator(Protocol):
    def authenticate(self, token: str) -> User | None: ...


@dataclass
class LocalTokenAuthenticator:
    governance: Governance

    def authenticate(self, token: str) -> User | None:
        if not token or len(token) > 512:
            return None
        return self.governance.authenticate_token(token)


def jwks_from_url(url: str, *, ttl_s: float = 300.0, timeout_s: float = 5.0) -> Callable[[], dict[str, Any]]:
    """A JWKS provider that fetches ``url`` and caches it for ``ttl_s`` seconds."""
    lock = threading.Lock()
    cache: dict[str, Any] = {"at": 0.0, "jwks": None}

    def provider() -> dict[str, Any]:
        with lock:
            if cache["jwks"] is None or time.monotonic() - cache["at"] > ttl_s:
                with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - configured https URL
                    cache["jwks"] = json.loads(resp.read())
                cache["at"] = time.monotonic()
            return cache["jwks"]

    return provider


@dataclass
class OIDCAuthenticator:
    """Verify a JWT from the identity provider.

    ``jwks`` returns the provider's JSON Web Key Set. Only asymmetric algorithms are
    accepted (an HS256 token signed with a public key is the classic confusion attack).
    """

    issuer: str
    audience: str
    jwks: Callable[[], dict[str, Any]]
    algorithms: Sequence[str] = ("RS256", "ES256", "PS256", "EdDSA")
    username_claim: str = "preferred_username"
    roles_claim: str = "roles"
    holders_claim: str = "hdp_holders"
    leeway_s: int = 30

    def authenticate(self, token: str) -> User | None:
        try:
            header = jwt.get_unverified_header(token)
            kid = header.get("kid")
            keyset = jwt.PyJWKSet.from_dict(self.jwks())
            candidates = [k for k in keyset.keys if kid is None or k.key_id == kid]
            if len(candidates) != 1 or header.get("alg") not in self.algorithms:
                return None
            claims = jwt.decode(
                token,
                key=candidates[0].key,
                algorithms=list(self.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except (jwt.PyJWTError, ValueError, KeyError, OSError):
            return None
        name = claims.get(self.username_claim) or claims.get("sub")
        roles = claims.get(self.roles_claim) or []
        holders = claims.get(self.holders_claim) or []
        if not isinstance(name, str) or not isinstance(roles, list) or not isinstance(holders, list):
            return None
        return User(
            name=name,
            roles=frozenset(r for r in roles if r in ROLES),  # unknown roles grant nothing
            holder_ids=frozenset(str(h) for h in holders),
        )


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


@dataclass
class ChainAuthenticator:
    local: Authenticator | None = None
    oidc: Authenticator | None = None

    def authenticate(self, token: str) -> User | None:
        if looks_like_jwt(token):
            return self.oidc.authenticate(token) if self.oidc else None
        return self.local.authenticate(token) if self.local else None
