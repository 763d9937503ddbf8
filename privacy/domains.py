"""Pseudonym domains and the keyed pseudonyms computed in them.

Every person pseudonym is the HMAC of the person's *namespaced identifier*
(:mod:`privacy.identifiers`): a national number's 12 digits, as always; any other kind prefixed
by its kind and holder (``reservnummer\x1fregion_skane\x1f...``), so it can only ever match
the same identifier of the same holder.

* ``holder:<id>``: the research-zone ``person_id`` of one data holder (stable across runs).
* ``release:<id>``: a release's own ``person_id``, computed from the namespaced identifier,
  so a national number links across holders inside one release but not between releases, and
  a holder-local identifier links only within its holder.
* ``consent``: the consent registry's key for a person, shared by governance and releases.
  The registry is keyed by national numbers: a person known only by a holder-local identifier
  has no consent key, and releases leave such persons out (fail closed; privacy/README.md).

Resource ids (FHIR ``Encounter`` ids, ...) are pseudonymised in the holder domain with a
type prefix, so they can never collide with a person pseudonym.
"""

from __future__ import annotations

from datetime import date

from hdp.settings import Settings, get_settings
from privacy.keys import KeyStore
from privacy.personnummer import parse
from privacy.pseudonym import Pseudonymiser

CONSENT_DOMAIN = "consent"
RESOURCE_SEPARATOR = "\x1f"  # unit separator: never part of a FHIR id or a personnummer


def holder_domain(holder_id: str) -> str:
    return f"holder:{holder_id}"


def release_domain_name(release: str) -> str:
    """``release:<id>`` for a release id, or the domain unchanged if already prefixed."""
    return release if release.startswith("release:") else f"release:{release}"


def resource_message(resource_type: str, resource_id: str) -> str:
    """The HMAC input for a resource id: type-prefixed, disjoint from 12-digit identifiers."""
    return f"{resource_type}{RESOURCE_SEPARATOR}{resource_id}"


def pseudonymiser(domain: str, *, settings: Settings | None = None, create: bool = True) -> Pseudonymiser:
    """The :class:`Pseudonymiser` of a domain's active key (key generated on first use).

    Not cached across calls on purpose: a rotation by another process must take effect,
    and unwrapping one key costs microseconds.
    """
    store = KeyStore(settings or get_settings())
    dk = store.active_key(domain, create=create)
    return Pseudonymiser(dk.secret, key_id=dk.info.key_id)


def consent_key(
    personnummer: str, *, reference_date: date | None = None, settings: Settings | None = None
) -> str:
    """Consent-domain pseudonym of a personnummer or samordningsnummer in any accepted form.

    Raises :class:`~privacy.personnummer.InvalidIdentifier` for an invalid one (an interim
    number too: it is no key of the opt-out registry).
    """
    ident = parse(personnummer, reference_date=reference_date)
    return pseudonymiser(CONSENT_DOMAIN, settings=settings).one(ident.normalised)
