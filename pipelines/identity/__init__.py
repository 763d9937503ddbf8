"""Identity: identifier validation, keyed pseudonyms, key store, release policy, re-identification.

Public API (imported lazily so ``import pipelines.identity.personnummer`` stays light):

* :func:`consent_key` - consent-domain pseudonym of an identifier in any form
* :func:`release_person_map` - holder pseudonyms -> a release's own pseudonyms (+ consent keys)
* :func:`apply_release_policy` - quasi-identifier generalisation for a release
* :func:`describe_release_policy` - the policy as applied, for the release manifest
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "consent_key": "pipelines.identity.domains",
    "holder_domain": "pipelines.identity.domains",
    "release_domain_name": "pipelines.identity.domains",
    "release_person_map": "pipelines.identity.release",
    "apply_release_policy": "pipelines.identity.release",
    "describe_release_policy": "pipelines.identity.release",
    "load_release_policy": "pipelines.identity.policy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
