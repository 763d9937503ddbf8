"""The thin client (``client/``, package ``hdp_client``): its own dependencies only, one-line
typed errors, a command line that never prints a traceback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import hdp_client
import httpx
import pytest
from hdp_client import (
    AccessError,
    Client,
    ClientError,
    LimitExceeded,
    NotFound,
    NotPermitted,
    QueryError,
    ServerUnreachable,
)

import access.client

#: Server packages and the server's heavy dependencies: importing any of them fails in the probe.
BLOCKED = (
    "access edge governance pipelines privacy hdp hub node federation dags synthetic_data "
    "airflow duckdb sqlalchemy fastapi starlette uvicorn sqlglot great_expectations alembic"
).split()
#: What the client may load besides the standard library: its three dependencies and theirs;
#: click, rich, pygments, markdown_it and mdurl are httpx's optional command line, which httpx
#: imports when they happen to be installed (they are, in the server's environment).
ALLOWED = set(
    "hdp_client httpx httpcore h11 h2 hpack hyperframe anyio sniffio idna certifi pyarrow numpy pandas "
    "dateutil pytz tzdata six typing_extensions cython_runtime click rich pygments markdown_it mdurl".split()
)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PROBE = textwrap.dedent(
    """
    import importlib.abc, json, sys
    BLOCKED = set(sys.argv[1].split(","))

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"blocked: {name}")
            return None

    sys.meta_path.insert(0, Block())
    for name in list(sys.modules):  # nothing of the server may already be loaded either
        assert name.split(".")[0] not in BLOCKED, name
    before = set(sys.modules)
    import hdp_client, hdp_client.cli
    c = hdp_client.Client(sys.argv[2], "token")
    try:
        c.releases()
    except hdp_client.ServerUnreachable as err:
        message = str(err)
    c.close()
    import pandas  # as_="pandas" needs it
    loaded = sorted({m.split(".")[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names))
    print(json.dumps({"loaded": loaded, "message": message}))
    """
)


def test_the_client_imports_nothing_of_the_server():
    url = f"http://127.0.0.1:{_closed_port()}"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(BLOCKED), url], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    # Cython's runtime modules (pyarrow, pandas) and the interpreter's own sysconfig data
    loaded = {m for m in out["loaded"] if not m.startswith(("_cython", "_cyutility", "_sysconfigdata"))}
    assert "hdp_client" in loaded and "httpx" in loaded and "pyarrow" in loaded
    assert loaded <= ALLOWED, loaded - ALLOWED
    assert out["message"] == f"cannot reach {url}: connection refused"


def test_the_server_re_exports_the_one_client():
    assert access.client.Client is hdp_client.Client
    assert access.client.AccessError is hdp_client.AccessError


def test_client_pins_only_its_own_dependencies():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[2] / "client" / "pyproject.toml").read_text())["project"]
    assert sorted(d.split("==")[0] for d in project["dependencies"]) == ["httpx", "pandas", "pyarrow"]
    assert all("==" in d for d in project["dependencies"])  # pinned


def test_unreachable_server_is_one_line():
    url = f"http://127.0.0.1:{_closed_port()}"
    with Client(url, "t", release="r") as c, pytest.raises(ServerUnreachable) as err:
        c.query("SELECT 1")
    assert str(err.value) == f"cannot reach {url}: connection refused"
    assert isinstance(err.value, ClientError) and "\n" not in str(err.value)


def test_a_timeout_is_named():
    def slow(request):
        raise httpx.ReadTimeout("timed out", request=request)

    with (
        Client("http://x.test", "t", transport=httpx.MockTransport(slow)) as c,
        pytest.raises(ServerUnreachable) as err,
    ):
        c.me()
    assert str(err.value) == "cannot reach http://x.test: timed out"


@pytest.mark.parametrize(
    ("status", "reason", "kind", "limit"),
    [
        (400, "sql.invalid", QueryError, None),
        (400, "aggregate.column", QueryError, None),
        (422, "limit.time", LimitExceeded, "time"),
        (422, "limit.rows", LimitExceeded, "rows"),
        (403, "ledger.budget_exhausted", LimitExceeded, "budget"),
        (403, "permit.none", NotPermitted, None),
        (401, "auth.invalid_token", NotPermitted, None),
        (404, "release.unknown", NotFound, None),
        (409, "output.conflict", AccessError, None),
    ],
)
def test_refusals_are_typed_and_one_line(status, reason, kind, limit):
    message = "unknown column 'hba1x' at line 1, col 8;\n did you mean hba1c_mmol_mol?"

    def answer(request):
        return httpx.Response(status, json={"error": reason, "message": message})

    with Client("http://x.test", "t", release="r", transport=httpx.MockTransport(answer)) as c:
        with pytest.raises(kind) as err:
            c.query("SELECT hba1x FROM register_visit")
    e = err.value
    assert type(e) is kind and e.reason == reason and e.status == status
    assert (
        str(e) == f"{status} {reason}: unknown column 'hba1x' at line 1, col 8; did you mean hba1c_mmol_mol?"
    )
    if limit:
        assert e.limit == limit


def test_the_token_never_shows():
    c = Client("http://x.test", "s3cret-token")
    assert "s3cret" not in repr(c)
    c.close()


def _cli(*args: str, env_token: str | None = "t") -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", **({"HDP_TOKEN": env_token} if env_token else {})}
    return subprocess.run(
        [sys.executable, "-m", "hdp_client", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_cli_unreachable_prints_one_line_and_exits_non_zero():
    url = f"http://127.0.0.1:{_closed_port()}"
    proc = _cli("--url", url, "query", "-r", "rel-1", "SELECT 1")
    assert proc.returncode == 1
    assert proc.stderr == f"error: cannot reach {url}: connection refused\n"
    assert proc.stdout == ""


def test_cli_without_a_token_says_so():
    proc = _cli("--url", "http://127.0.0.1:9", "releases", env_token=None)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: no token: set $HDP_TOKEN or pass --token"


def test_cli_refusal_is_one_line_with_the_server_reason(monkeypatch, capsys):
    from hdp_client import cli

    def refuse(request):
        return httpx.Response(
            422,
            json={
                "error": "limit.time",
                "message": "the query ran longer than the time limit of 10 s\nand was stopped",
            },
        )

    real = cli.Client
    monkeypatch.setattr(cli, "Client", lambda *a, **kw: real(*a, **kw, transport=httpx.MockTransport(refuse)))
    code = cli.main(["--url", "http://x.test", "--token", "t", "query", "-r", "rel-1", "SELECT 1"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == "error: 422 limit.time: the query ran longer than the time limit of 10 s and was stopped\n"


def test_hdp_query_prints_one_line_when_the_server_cannot_be_reached():
    url = f"http://127.0.0.1:{_closed_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", "query", "-r", "rel-1", "-t", "t", "--url", url, "SELECT 1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"Error: cannot reach {url}: connection refused"
    assert "Traceback" not in proc.stderr
