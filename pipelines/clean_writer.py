"""Write DuckDB files outside the restricted zone from a process that never held an identifier.

Why a separate process. DuckDB writes a column segment's whole 256 KiB block to the file even
when the segment fills only part of it: a string segment (uncompressed, dictionary or FSST)
that is at least 80 % full is written as is, and the gap between its offsets and its
dictionary is whatever the buffer held before: uninitialised heap memory (DuckDB issues
#18362, #23382, open in 2.0.0). In the process that pseudonymises, that memory held raw
identifiers, names, addresses and HMAC states a moment earlier, so they ended up in
``research/<holder>.duckdb`` in blocks no query reads (seen: 44 to 1,523 personnummer in one
file, in some runs and not others, depending on how the heap was reused). The same holds for
``release.duckdb``, built in the process that read ``person_link``. Deleting or dropping
cannot help, nor can writing a fresh file from the same process: the leak is in the memory
the file is written from.

So a DuckDB file outside ``restricted/`` is written here, by a fresh interpreter (``exec``,
not ``fork``: a forked child would inherit the heap) with an empty environment (no key-
encryption key), that reads only Parquet files of identifier-free tables and writes the
target file once. Whatever DuckDB leaves uninitialised in that file can only come from that
child's memory, which never held more than the Parquet files' contents.

Parquet is the hand-over format because it carries only values: DuckDB's Parquet writer
writes each page at its encoded length and zeroes its bloom filters, and a NULL has no value
slot at all. An Arrow or DuckDB file would not do: DuckDB's Arrow export copies whatever lies
in the data slot of a NULL (``ArrowScalarConverter`` does not skip NULLs), and a DuckDB file
has the very gaps described above. The Parquet files themselves are written by the
identifier-holding process into the restricted zone (or, for a release, beside the release:
they are the release's files) and their bytes are scanned by the end-to-end leak test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb


class CleanWriteError(RuntimeError):
    """The writer process failed (the message names the file, never a value)."""


@dataclass(frozen=True)
class TableSource:
    """One table of the target file: its rows in ``parquet``; ``ddl`` (``CREATE TABLE "<name>" (...)``)
    fixes its types and storage options, else the table takes the Parquet file's types."""

    name: str
    parquet: Path
    ddl: str | None = None
    #: the rows as a SELECT over the view ``_src`` (``parquet``) and the views of ``lookups``
    #: (default: ``SELECT * FROM _src``): lets the caller hand over a wide value once per key
    #: (the pseudonym of each person) instead of once per row
    select: str | None = None
    #: ``(view name, Parquet file)``: more identifier-free files ``select`` reads
    lookups: tuple[tuple[str, Path], ...] = ()


#: Environment of the writer: nothing of the caller's (no HDP_KEK, no tokens, no paths).
_CHILD_ENV = {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}


def write_duckdb(
    target: Path,
    tables: Sequence[TableSource],
    *,
    temp_directory: Path,
    threads: int | None = None,
    preserve_insertion_order: bool = True,
    timeout_s: float = 3600.0,
) -> dict[str, int]:
    """Create the DuckDB file ``target`` (which must not exist) holding ``tables``, in a fresh process.

    ``temp_directory`` is where that process may spill. ``threads=1`` with
    ``preserve_insertion_order`` keeps every table's rows in Parquet order (row ids follow it).
    Returns table -> rows written.
    """
    if target.exists():
        raise CleanWriteError(f"{target.name} exists already; the writer only creates fresh files")
    job = {
        "target": str(target),
        "tables": [
            {
                "name": t.name,
                "parquet": str(t.parquet),
                "ddl": t.ddl,
                "select": t.select,
                "lookups": [[view, str(path)] for view, path in t.lookups],
            }
            for t in tables
        ],
        "temp_directory": str(temp_directory),
        "threads": threads,
        "preserve_insertion_order": preserve_insertion_order,
    }
    # -I: isolated (no PYTHON* variables, no user site, not even this file's folder on sys.path):
    # the child imports only the standard library and duckdb.
    proc = subprocess.run(
        [sys.executable, "-I", str(Path(__file__).resolve())],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        env=_CHILD_ENV,
        timeout=timeout_s,
        cwd=str(temp_directory),
        check=False,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1][:500]
        raise CleanWriteError(f"writing {target.name} failed (exit {proc.returncode}): {last}")
    return {str(k): int(v) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _child(job: dict) -> dict[str, int]:
    target = Path(job["target"])
    con = duckdb.connect(str(target), config={"autoinstall_known_extensions": False})
    counts: dict[str, int] = {}
    try:
        con.execute("SET temp_directory = ?", [job["temp_directory"]])
        con.execute("SET enable_progress_bar = false")
        if job.get("threads"):
            con.execute(f"SET threads = {int(job['threads'])}")
        con.execute(
            f"SET preserve_insertion_order = {'true' if job['preserve_insertion_order'] else 'false'}"
        )
        for t in job["tables"]:
            name = _quote(t["name"])
            # temporary views: they live in this connection only, never in the file
            for view, path in [["_src", t["parquet"]], *t.get("lookups", [])]:
                con.execute(
                    f"CREATE OR REPLACE TEMP VIEW {_quote(view)} AS SELECT * FROM read_parquet({_literal(path)})"
                )
            select = t.get("select") or "SELECT * FROM _src"
            if t["ddl"]:
                con.execute(t["ddl"])
                cur = con.execute(f"INSERT INTO {name} {select}")
                counts[t["name"]] = int(cur.fetchall()[0][0])
            else:
                con.execute(f"CREATE TABLE {name} AS {select}")
                counts[t["name"]] = int(con.execute(f"SELECT count(*) FROM {name}").fetchall()[0][0])
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return counts


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.stdin.read()))))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown (DuckDB 2.0 prints nanobind leak notes at exit)
