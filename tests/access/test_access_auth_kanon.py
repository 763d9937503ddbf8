"""OIDC/JWT verification behind the auth seam; k-anonymity check for the release builder."""

from __future__ import annotations

import json
import time

import jwt
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from access.auth import ChainAuthenticator, OIDCAuthenticator
from privacy.disclosure import check_k_anonymity

ISS, AUD = "https://idp.example", "hdp-access"


@pytest.fixture(scope="module")
def keys():
    priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(priv.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    return priv, {"keys": [jwk]}


def _token(priv, **over):
    claims = {
        "iss": ISS,
        "aud": AUD,
        "sub": "s-1",
        "preferred_username": "alice",
        "roles": ["researcher", "superuser"],
        "exp": int(time.time()) + 300,
        **over,
    }
    return jwt.encode(claims, priv, algorithm="RS256", headers={"kid": "k1"})


def test_oidc_valid_token(keys):
    priv, jwks = keys
    auth = ChainAuthenticator(oidc=OIDCAuthenticator(ISS, AUD, lambda: jwks))
    user = auth.authenticate(_token(priv))
    assert user.name == "alice" and user.roles == frozenset({"researcher"})  # unknown role dropped


@pytest.mark.parametrize(
    "over", [{"iss": "https://evil"}, {"aud": "other"}, {"exp": int(time.time()) - 3600}]
)
def test_oidc_bad_claims_refused(keys, over):
    priv, jwks = keys
    assert OIDCAuthenticator(ISS, AUD, lambda: jwks).authenticate(_token(priv, **over)) is None


def test_oidc_wrong_key_and_hs256_confusion_refused(keys):
    _, jwks = keys
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    a = OIDCAuthenticator(ISS, AUD, lambda: jwks)
    assert a.authenticate(_token(other)) is None
    hs = jwt.encode(
        {"iss": ISS, "aud": AUD, "sub": "x", "exp": int(time.time()) + 60},
        "secret",
        algorithm="HS256",
        headers={"kid": "k1"},
    )
    assert a.authenticate(hs) is None
    assert ChainAuthenticator().authenticate("anything") is None  # nothing configured: refuse


def test_k_anonymity():
    t = pa.table({"sex": ["F"] * 5 + ["M"] * 2 + [None], "county": ["03"] * 5 + ["12"] * 2 + ["12"]})
    r = check_k_anonymity(t, ["sex", "county"], 3)
    assert not r.ok and r.classes == 3 and r.violating_classes == 2 and r.violating_rows == 3
    assert r.smallest_class == 1
    assert check_k_anonymity(t, ["county"], 3).ok
    assert check_k_anonymity(t.slice(0, 0), ["sex"], 5).ok
    with pytest.raises(KeyError):
        check_k_anonymity(t, ["postal_code"], 2)
