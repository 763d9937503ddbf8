"""fhir4ds side of the FHIR benchmark (``bench/bench_fhir.py``), plus the pure helpers both sides use.

Run as a script, this file executes inside a separate virtual environment that holds the PyPI
package ``fhir4ds`` (never the project's environment: it pulls pandas and psycopg2):

    <fhir4ds-venv>/bin/python bench/fhir4ds_child.py SPEC.json

SPEC is written by ``bench_fhir.py``::

    {"db": "<new DuckDB file>", "scratch": "<dir>", "loader": "dicts" | "file",
     "files": [["<Type>.ndjson", <max lines or null>], ...],
     "views": ["schemas/views/<name>.json", ...], "ours_db": "<raw.duckdb of our run>" | null}

What is timed (from before ``import fhir4ds`` to the end of the last view, in this process):

* loading, with fhir4ds's own API (fhir4ds has no NDJSON reader that keeps the resources as
  delivered): ``dicts`` parses each line with ``json.loads`` and hands the resources to
  ``ConnectedDatabase.load_resources`` in chunks; ``file`` calls
  ``ConnectedDatabase.load_from_json_file`` on each NDJSON file (DuckDB ``read_json``; it re-writes
  every resource through one inferred struct per file, which changes values: dateTimes come back in
  UTC as ``YYYY-MM-DD HH:MM:SS+00``, integers as decimals, absent elements as ``null``);
* each ViewDefinition, as ``ConnectedDatabase.create_table`` (a table in the DuckDB file, as our
  pipeline writes its flattened tables), then ``count(*)``.

fhir4ds does not validate resources: this compares flattening only.

Offline note: fhir4ds runs ``INSTALL json; LOAD json;`` on every DuckDB connection it opens.
DuckDB 2 tries to download the extension even though it is built in, which fails without network.
The child gives fhir4ds a ``duckdb`` whose connections run ``LOAD json`` in that case (what the
statement amounts to on a machine with network access); nothing else of fhir4ds is changed.

After the timed part (and after reading the peak memory), each view's table is compared with our
table of the same name in ``ours_db``, restricted to the resources fhir4ds loaded: rows, rows
missing or extra, and per column how many rows hold a different value. Only counts and column
names leave this process, never a value.

The last stdout line is one JSON object (see ``main``).
"""

from __future__ import annotations

import json
import re
import resource
import sys
import time
import types
from pathlib import Path
from typing import Any

CHUNK = 10_000  # resources per load_resources call (dicts loader)
KEY_FUNCS = ("getResourceKey(", "getReferenceKey(")
NUMERIC = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "FLOAT",
    "DOUBLE",
    "DECIMAL",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
)


# ---------------------------------------------------------------------------- pure helpers


def short_error(exc: BaseException, limit: int = 120) -> str:
    """``Class: first line of the message``, quoted literals masked, at most ``limit`` characters.

    Database errors can quote a value (``Could not convert string '...'``); the mask keeps data
    values out of the benchmark's output.
    """
    lines = str(exc).strip().splitlines()
    msg = re.sub(r"'[^']*'", "'…'", lines[0] if lines else "")
    out = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return out if len(out) <= limit else out[: limit - 1] + "…"


def view_columns(vd: dict[str, Any]) -> list[dict[str, Any]]:
    """Every column of a ViewDefinition, in order (nested ``select`` and ``unionAll`` included)."""
    out: list[dict[str, Any]] = []

    def walk(selects: list[dict[str, Any]]) -> None:
        for s in selects:
            out.extend(s.get("column", []))
            walk(s.get("select", []))
            union = s.get("unionAll", [])
            if union:
                walk(union[:1])  # the branches share their columns

    walk(vd.get("select", []))
    return out


def key_column(vd: dict[str, Any]) -> str | None:
    """The column that keys one row per resource (``getResourceKey()``), if the view has one.

    None when there is none or when the view can produce several rows per resource
    (``forEach``, ``forEachOrNull``, ``unionAll``): then only row counts are compared.
    """
    text = json.dumps(vd.get("select", []))
    if any(f'"{k}"' in text for k in ("forEach", "forEachOrNull", "unionAll")):
        return None
    for c in view_columns(vd):
        if c.get("path", "").replace(" ", "") == "getResourceKey()":
            return c["name"]
    return None


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def compare_view(
    con: Any,
    vd: dict[str, Any],
    table: str,
    ours: str,
    resources: str = "fhir_resources",
    json_col: str = "resource",
) -> dict[str, Any]:
    """Compare fhir4ds's table ``table`` with our table of the view's name in catalog ``ours``.

    Counts only: ``ours_rows`` (our rows for the resources in ``resources``), ``missing`` (our rows
    without a fhir4ds row of the same key), ``extra`` (the reverse), ``differs`` (column -> rows
    whose values differ), ``null`` (column -> rows of those where fhir4ds has NULL and we have a
    value), ``absent`` (our columns fhir4ds did not produce). Keys compare without a
    ``Type/`` prefix (a key's form is the implementation's choice); numbers compare as DOUBLE;
    everything else as text (a JSON scalar by its value).
    """
    name = vd["name"]
    ours_t = f"{_q(ours)}.main.{_q(name)}"
    theirs = {
        r[0]: r[1]
        for r in con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() "
            "WHERE database_name = current_database() AND schema_name = 'main' AND table_name = ?",
            [table],
        ).fetchall()
    }
    ours_types = {
        r[0]: r[1]
        for r in con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() "
            "WHERE database_name = ? AND schema_name = 'main' AND table_name = ?",
            [ours, name],
        ).fetchall()
    }
    if not ours_types:
        raise LookupError(f"no table {name} in our database")
    key = key_column(vd)
    ids = (
        f"SELECT json_extract_string({_q(json_col)}, '$.id') FROM {_q(resources)} "
        f"WHERE json_extract_string({_q(json_col)}, '$.resourceType') = ?"
    )
    if key is None or key not in theirs or key not in ours_types:
        ours_rows = con.execute(f"SELECT count(*) FROM {ours_t}").fetchone()[0]
        return {
            "ours_rows": ours_rows,
            "keyed": False,
            "differs": {},
            "missing": None,
            "extra": None,
            "absent": sorted(set(ours_types) - set(theirs)),
        }

    key_funcs = {c["name"] for c in view_columns(vd) if any(f in c.get("path", "") for f in KEY_FUNCS)}

    def text(col: str) -> str:
        ref = f"t.{_q(col)}"
        return f"json_extract_string({ref}, '$')" if theirs[col] == "JSON" else f"CAST({ref} AS VARCHAR)"

    def pair(col: str) -> tuple[str, str]:
        o = f"o.{_q(col)}"
        if col in key_funcs:
            return f"regexp_replace({text(col)}, '^[A-Za-z]+/', '')", f"CAST({o} AS VARCHAR)"
        if ours_types[col].split("(")[0] in NUMERIC:
            return f"TRY_CAST({text(col)} AS DOUBLE)", f"CAST({o} AS DOUBLE)"
        return text(col), f"CAST({o} AS VARCHAR)"

    cols = [c for c in ours_types if c in theirs and c != key]
    tk, ok = pair(key)
    both = "t._in AND o._in"  # a row on both sides (NULL when one side is absent)
    aggs = []
    for a, b in map(pair, cols):
        aggs.append(f"count(*) FILTER (WHERE {both} AND ({a}) IS DISTINCT FROM ({b}))")
        aggs.append(f"count(*) FILTER (WHERE {both} AND ({a}) IS NULL AND ({b}) IS NOT NULL)")
    # pair() refers to t.<col> and o.<col>: the tables inside the CTEs and the CTEs outside.
    sql = (
        f"WITH t AS (SELECT {tk} AS _k, true AS _in, * FROM {_q(table)} AS t), "
        f"o AS (SELECT {ok} AS _k, true AS _in, * FROM {ours_t} AS o WHERE {_q(key)} IN ({ids})) "
        f"SELECT (SELECT count(*) FROM o), count(*) FILTER (WHERE t._in IS NULL), "
        f"count(*) FILTER (WHERE o._in IS NULL){''.join(', ' + a for a in aggs)} "
        f"FROM t FULL OUTER JOIN o ON t._k = o._k"
    )
    r = con.execute(sql, [vd["resource"]]).fetchone()
    return {
        "ours_rows": r[0],
        "keyed": True,
        "missing": r[1],
        "extra": r[2],
        "differs": {c: n for c, n in zip(cols, r[3::2], strict=True) if n},
        "null": {c: n for c, n in zip(cols, r[4::2], strict=True) if n},
        "absent": sorted(set(ours_types) - set(theirs)),
    }


def view_line(name: str, v: dict[str, Any]) -> str:
    """One line per view for the benchmark output (counts and column names only)."""
    if v.get("error"):
        return f"  {name}: failed ({v['error']})"
    head = f"  {name}: {v['rows']:,} rows in {v['seconds']:.2f} s"
    c = v.get("compare")
    if c is None:
        return head + (f"; not compared ({v['compare_error']})" if v.get("compare_error") else "")
    same_rows = c["ours_rows"] == v["rows"]
    head += f", ours {c['ours_rows']:,}" + (" (same)" if same_rows else " (DIFFERENT)")
    if not c["keyed"]:
        return head + "; values not compared (no one-row-per-resource key)"
    notes = []
    if c["missing"] or c["extra"]:
        notes.append(f"{c['missing']:,} of our rows missing, {c['extra']:,} extra")
    if c["absent"]:
        notes.append("columns absent: " + ", ".join(c["absent"]))
    if c["differs"]:

        def one(col: str, n: int) -> str:
            empty = c.get("null", {}).get(col, 0)
            return f"{col} {n:,}" + ("" if not empty else " all NULL" if empty == n else f" ({empty:,} NULL)")

        notes.append(
            "rows whose value differs from ours: " + ", ".join(one(col, n) for col, n in c["differs"].items())
        )
    return head + ("; " + "; ".join(notes) if notes else "; every value the same as ours")


def summary(views: dict[str, dict[str, Any]]) -> str:
    """``k of n views ran (j identical to ours)``."""
    ran = [v for v in views.values() if not v.get("error")]
    same = [
        v
        for v in ran
        if v.get("compare")
        and v["compare"]["keyed"]
        and v["compare"]["ours_rows"] == v["rows"]
        and not v["compare"]["missing"]
        and not v["compare"]["extra"]
        and not v["compare"]["differs"]
        and not v["compare"]["absent"]
    ]
    return f"{len(ran)} of {len(views)} views ran, {len(same)} identical to ours"


def bench_suffix(rate: float | None) -> str:
    """What ``bench_fhir.py`` appends to its BENCH line."""
    return f" fhir4ds_resources_per_s={'na' if rate is None else f'{rate:.0f}'}"


# ---------------------------------------------------------------------------- the fhir4ds run


class _OfflineConnection:
    """A DuckDB connection that turns fhir4ds's ``INSTALL json; LOAD json;`` into ``LOAD json``."""

    def __init__(self, con: Any) -> None:
        self._con = con

    def execute(self, sql: str, *args: Any) -> _OfflineConnection:
        if sql.strip().upper().startswith("INSTALL JSON"):
            sql = "LOAD json"
        self._con.execute(sql, *args)
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def _sample_file(src: Path, limit: int, scratch: Path) -> Path:
    scratch.mkdir(parents=True, exist_ok=True)
    dst = scratch / src.name
    with open(src, "rb") as f, open(dst, "wb") as out:
        for i, line in enumerate(f):
            if i >= limit:
                break
            out.write(line)
    return dst


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    files = [(Path(p), n) for p, n in spec["files"]]
    if spec["loader"] == "file":  # sample files are prepared before the clock starts
        files = [(p if n is None else _sample_file(p, n, Path(spec["scratch"])), None) for p, n in files]
    view_defs = [json.loads(Path(p).read_text()) for p in spec["views"]]

    t0 = time.perf_counter()
    import duckdb
    import fhir4ds
    import fhir4ds.dialects.duckdb as f4_duckdb
    from fhir4ds.datastore import QuickConnect

    f4_duckdb.duckdb = types.SimpleNamespace(  # type: ignore[attr-defined]
        connect=lambda database=":memory:", **kw: _OfflineConnection(duckdb.connect(database, **kw))
    )
    db = QuickConnect.duckdb(spec["db"])
    t_import = time.perf_counter() - t0

    t = time.perf_counter()
    given = 0
    for path, limit in files:
        if spec["loader"] == "file":
            db.load_from_json_file(str(path))
            continue
        batch: list[dict[str, Any]] = []
        with open(path, "rb") as f:
            for i, line in enumerate(f):
                if limit is not None and i >= limit:
                    break
                batch.append(json.loads(line))
                if len(batch) == CHUNK:
                    db.load_resources(batch)
                    given += len(batch)
                    batch = []
        if batch:
            db.load_resources(batch)
            given += len(batch)
    con = db.datastore.dialect.connection
    loaded = con.execute(f"SELECT count(*) FROM {db.datastore.table_name}").fetchone()[0]
    t_load = time.perf_counter() - t

    views: dict[str, dict[str, Any]] = {}
    for vd in view_defs:
        t = time.perf_counter()
        try:
            db.create_table(vd, vd["name"])
            rows = con.execute(f"SELECT count(*) FROM {_q(vd['name'])}").fetchone()[0]
            views[vd["name"]] = {"rows": rows, "seconds": time.perf_counter() - t}
        except Exception as e:  # an unsupported feature or a bug: reported, the rest still runs
            views[vd["name"]] = {"error": short_error(e), "seconds": time.perf_counter() - t}
    job_s = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    if spec.get("ours_db"):
        try:
            con.execute(f"ATTACH '{spec['ours_db']}' AS ours (READ_ONLY)")
        except Exception as e:
            for v in views.values():
                v["compare_error"] = short_error(e)
        else:
            for vd in view_defs:
                v = views[vd["name"]]
                if v.get("error"):
                    continue
                try:
                    v["compare"] = compare_view(
                        con, vd, vd["name"], "ours", db.datastore.table_name, db.datastore.json_col
                    )
                except Exception as e:
                    v["compare_error"] = short_error(e)
    con.close()
    print(
        json.dumps(
            {
                "fhir4ds": fhir4ds.__version__,
                "duckdb": duckdb.__version__,
                "loader": spec["loader"],
                "given": given if spec["loader"] == "dicts" else None,
                "loaded": loaded,
                "import_s": t_import,
                "load_s": t_load,
                "job_s": job_s,
                "peak_mib": peak_kib / 1024,
                "views": views,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
