"""``hdp keys`` and ``hdp reid``: key-store operations and authorised re-identification.

Who is acting is never taken from a command-line name: ``hdp reid`` authenticates the
caller's API token (``--token`` or ``HDP_TOKEN``) against the governance store, and roles
come from there too. Nothing here prints key material; ``hdp reid resolve`` prints the one
identifier it was approved to return, to stdout only.
"""

from __future__ import annotations

import base64
import os
import secrets
import sys
from pathlib import Path

import click

from governance import service, store
from hdp.settings import get_settings
from pipelines.reid import HasRole, ReidError, decide_reid, get_reid, request_reid, resolve_reid
from privacy.keys import KekError, KeyStore, KeyStoreError, LocalAesGcmKms, load_kek, read_kek_file

# -------------------------------------------------------------------------------- keys


@click.group()
def keys() -> None:
    """Encrypted pseudonym-key store (restricted/keys/)."""


@keys.command("list")
def keys_list() -> None:
    """Key ids, domains, versions and status (never key material)."""
    store = KeyStore(get_settings())
    infos = store.list()
    if not infos:
        click.echo("no keys yet")
        return
    click.echo(f"{'key_id':<20} {'domain':<28} {'version':>7} {'status':<8} created_at")
    for k in sorted(infos, key=lambda k: (k.domain, k.version)):
        click.echo(f"{k.key_id:<20} {k.domain:<28} {k.version:>7} {k.status:<8} {k.created_at}")


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(1)


@keys.command("rotate-kek")
@click.option(
    "--new-kek-file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="File (outside HDP_HOME) holding the new key-encryption key, base64 of 32 bytes.",
)
@click.option(
    "--generate",
    is_flag=True,
    help="Create --new-kek-file with a fresh random key (mode 0600); it must not exist yet.",
)
def keys_rotate_kek(new_kek_file: Path, generate: bool) -> None:
    """Re-wrap every data key under a new key-encryption key; no pseudonym changes.

    The current KEK comes from HDP_KEK / HDP_KEK_FILE as usual. Afterwards point
    HDP_KEK_FILE (or HDP_KEK) at the new key and retire the old one.
    """
    settings = get_settings()
    try:
        current = LocalAesGcmKms(load_kek(settings))
        store = KeyStore(settings, kms=current)
        store.list()
        if generate:
            if new_kek_file.exists():
                raise KekError(f"{new_kek_file} exists; refusing to overwrite a key")
            new_kek_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(new_kek_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        # read through the same checks as HDP_KEK_FILE (outside HDP_HOME, permissions, format)
        new = LocalAesGcmKms(read_kek_file(new_kek_file.expanduser(), settings, "--new-kek-file"))
        if new.key_id == current.key_id:
            raise KekError("the new key-encryption key is the current one")
        n = store.rotate_kek(new)
    except (KekError, KeyStoreError) as exc:
        _fail(exc)
        return
    click.echo(f"re-wrapped {n} data keys: {current.key_id} -> {new.key_id}")
    click.echo(
        f"now set HDP_KEK_FILE={new_kek_file} (and unset HDP_KEK) for every process, then retire the old key"
    )


@keys.command("rotate-domain")
@click.argument("domain")
@click.option("--yes", is_flag=True, help="Confirm: every pseudonym of this domain will change.")
def keys_rotate_domain(domain: str, yes: bool) -> None:
    """Start a new key version for DOMAIN (holder:<id> or release:<id>). Changes its pseudonyms.

    See privacy/README.md "Rotating a domain key" for the full procedure.
    """
    if domain == "consent":
        _fail(
            KeyStoreError(
                "the consent domain cannot be rotated here: consent keys are stored in the "
                "governance consent registry and would all have to be re-keyed with it"
            )
        )
        return
    if not yes:
        _fail(KeyStoreError("rotating a domain key changes every pseudonym of the domain; re-run with --yes"))
        return
    try:
        info = KeyStore(get_settings()).rotate_domain(domain)
    except (KekError, KeyStoreError) as exc:
        _fail(exc)
        return
    click.echo(f"{domain}: new key {info.key_id} (version {info.version}); old version retired")
    if domain.startswith("holder:"):
        click.echo(
            f"next: hdp run --stage pseudonymise for {domain.split(':', 1)[1]} to rebuild its research zone"
        )


# -------------------------------------------------------------------------------- reid


def _governance_identity(token: str | None) -> tuple[str, HasRole]:
    """(user name, has_role) from the governance store; the CLI edge may import governance."""
    if not token:
        raise click.UsageError("give your API token with --token or HDP_TOKEN")
    url = get_settings().governance_url
    with store.session_scope(url) as session:
        user = service.authenticate_token(session, token)
    if user is None:
        raise click.UsageError("the token is unknown, revoked or its user is disabled")

    def has_role(user_name: str, role: str) -> bool:
        with store.session_scope(url) as s:
            return bool(service.has_role(s, user_name, role))

    return user.name, has_role


_token = click.option("--token", envvar="HDP_TOKEN", help="Your API token (or HDP_TOKEN).")


@click.group()
def reid() -> None:
    """Authorised re-identification for patient-safety findings (two approvers)."""


@reid.command("request")
@click.option("--release", "release_id", required=True)
@click.option("--pseudonym", required=True, help="The release person_id (64 hex characters).")
@click.option("--justification", required=True, help="Reference to the patient-safety finding.")
@_token
def reid_request(release_id: str, pseudonym: str, justification: str, token: str | None) -> None:
    """File a request to re-identify one person of a release."""
    user, _ = _governance_identity(token)
    try:
        rid = request_reid(
            release_id=release_id, pseudonym=pseudonym, requester=user, justification=justification
        )
    except (ReidError, KeyStoreError) as exc:
        _fail(exc)
        return
    click.echo(f"re-identification request {rid} filed; needs 2 approvers other than {user}")


def _decide(request_id: int, token: str | None, decision: str) -> None:
    user, has_role = _governance_identity(token)
    try:
        r = decide_reid(request_id=request_id, actor=user, decision=decision, has_role=has_role)
    except ReidError as exc:
        _fail(exc)
        return
    click.echo(f"request {r.id}: {r.status} (approvers: {', '.join(r.approvers) or 'none'})")


@reid.command("approve")
@click.argument("request_id", type=int)
@_token
def reid_approve(request_id: int, token: str | None) -> None:
    """Approve (needs role reid_approver or steward; not the requester)."""
    _decide(request_id, token, "approve")


@reid.command("reject")
@click.argument("request_id", type=int)
@_token
def reid_reject(request_id: int, token: str | None) -> None:
    """Reject; a rejected request can never be resolved."""
    _decide(request_id, token, "reject")


@reid.command("show")
@click.argument("request_id", type=int)
def reid_show(request_id: int) -> None:
    """Status and approvers of a request (no pseudonym, no identifier)."""
    try:
        r = get_reid(request_id)
    except ReidError as exc:
        _fail(exc)
        return
    click.echo(
        f"request {r.id}: release {r.release_id}, requester {r.requester}, {r.status}, "
        f"approvers: {', '.join(r.approvers) or 'none'}, filed {r.created_at}"
    )


@reid.command("resolve")
@click.argument("request_id", type=int)
@_token
def reid_resolve(request_id: int, token: str | None) -> None:
    """Print the identifier of an approved request (requester only, once)."""
    user, has_role = _governance_identity(token)
    try:
        identifier = resolve_reid(request_id=request_id, actor=user, has_role=has_role)
    except (ReidError, KeyStoreError) as exc:
        _fail(exc)
        return
    click.echo(identifier)
