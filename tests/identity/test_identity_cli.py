"""hdp keys / hdp reid through click."""

from __future__ import annotations

import base64
import secrets

import pytest
from click.testing import CliRunner

from edge.commands.identity import keys, reid
from privacy.domains import pseudonymiser
from privacy.keys import KeyStore


def test_keys_list_and_rotate_kek(hdp_home, kek_env, tmp_path, monkeypatch):
    before = pseudonymiser("holder:ndr", settings=hdp_home).one("195001011234")
    KeyStore(hdp_home).active_key("consent")
    runner = CliRunner()
    out = runner.invoke(keys, ["list"])
    assert out.exit_code == 0 and "holder:ndr" in out.output and "consent" in out.output
    new_file = tmp_path / "outside" / "kek2"
    out = runner.invoke(keys, ["rotate-kek", "--new-kek-file", str(new_file), "--generate"])
    assert out.exit_code == 0, out.output
    assert "re-wrapped 2 data keys" in out.output
    assert (new_file.stat().st_mode & 0o777) == 0o600
    assert new_file.read_text().strip() not in out.output
    monkeypatch.delenv("HDP_KEK")
    monkeypatch.setenv("HDP_KEK_FILE", str(new_file))
    assert pseudonymiser("holder:ndr", settings=hdp_home).one("195001011234") == before


def test_rotate_kek_refuses_file_inside_home(hdp_home, kek_env):
    out = CliRunner().invoke(keys, ["rotate-kek", "--new-kek-file", str(hdp_home.home / "k"), "--generate"])
    assert out.exit_code == 1 and "inside HDP_HOME" in out.output


def test_wrong_kek_cli_fails_closed(hdp_home, kek_env, monkeypatch, tmp_path):
    KeyStore(hdp_home).active_key("holder:ndr")
    monkeypatch.setenv("HDP_KEK", base64.b64encode(secrets.token_bytes(32)).decode())
    out = CliRunner().invoke(keys, ["rotate-kek", "--new-kek-file", str(tmp_path / "n"), "--generate"])
    assert out.exit_code == 1 and "wrapped under" in out.output


def test_rotate_domain_needs_confirmation_and_not_consent(hdp_home, kek_env):
    KeyStore(hdp_home).active_key("holder:ndr")
    runner = CliRunner()
    assert runner.invoke(keys, ["rotate-domain", "holder:ndr"]).exit_code == 1
    assert runner.invoke(keys, ["rotate-domain", "consent", "--yes"]).exit_code == 1
    out = runner.invoke(keys, ["rotate-domain", "holder:ndr", "--yes"])
    assert out.exit_code == 0 and "version 2" in out.output


@pytest.mark.slow
def test_reid_cli_end_to_end_with_governance_tokens(hdp_home, kek_env):
    from pseudonymise.raw_fixtures import ANNA, build_ndr

    from governance import service, store
    from pipelines.pseudonymise import pseudonymise_holder
    from pipelines.release_identity import release_person_map

    build_ndr(hdp_home)
    pseudonymise_holder("ndr", settings=hdp_home)
    m = release_person_map(holder_ids=("ndr",), release_domain="release:rel-00003", settings=hdp_home)
    store.upgrade(hdp_home.governance_url)
    tokens = {}
    with store.session_scope(hdp_home.governance_url) as s:
        for name, roles in (("rita", {"researcher"}), ("sam", {"steward"}), ("stina", {"steward"})):
            service.create_user(
                s, name=name, roles=roles, holder_ids=() if "researcher" in roles else ("ndr",)
            )
            tokens[name] = service.issue_token(s, user_name=name)
    import duckdb

    con = duckdb.connect(str(hdp_home.raw_db("ndr")), read_only=True)
    anna_pid = con.execute("SELECT person_id FROM person_link WHERE personnummer = ?", [ANNA]).fetchall()[0][
        0
    ]
    con.close()
    pseud = next(r["release_person_id"] for r in m.to_pylist() if r["person_id"] == anna_pid)
    runner = CliRunner()
    out = runner.invoke(
        reid,
        [
            "request",
            "--release",
            "rel-00003",
            "--pseudonym",
            pseud,
            "--justification",
            "INC-1",
            "--token",
            tokens["rita"],
        ],
    )
    assert out.exit_code == 0, out.output
    assert runner.invoke(reid, ["resolve", "1", "--token", tokens["rita"]]).exit_code == 1
    assert runner.invoke(reid, ["approve", "1", "--token", tokens["rita"]]).exit_code == 1  # own request
    assert runner.invoke(reid, ["approve", "1", "--token", tokens["sam"]]).exit_code == 0
    assert runner.invoke(reid, ["approve", "1", "--token", "not-a-token"]).exit_code != 0
    assert runner.invoke(reid, ["approve", "1", "--token", tokens["stina"]]).exit_code == 0
    out = runner.invoke(reid, ["resolve", "1", "--token", tokens["rita"]])
    assert out.exit_code == 0 and out.output.strip() == ANNA
