"""Questionnaire recognition as data, compiled into a SQL-on-FHIR ViewDefinition.

``schemas/questionnaires/eq5d_5l.json`` says which EQ-5D-5L questionnaires the platform scores:
per questionnaire its canonical URL, the linkId of each dimension and of EQ VAS, and how an answer
becomes a level. :func:`build_view` turns it into ``schemas/views/fhir_eq5d_response.json``, so a new
questionnaire is a data entry, not code, and the view stays an ordinary ViewDefinition that both the
Python evaluator and the SQL compiler run (``tests/fhir/test_questionnaire_views.py`` keeps the
committed view equal to the compiled one and the two evaluators equal on every variant).

Each column is ``iif(<questionnaire 1>, <its answer>, iif(<questionnaire 2>, ...))``: a response is
read only by the rules of the questionnaire it names, so two questionnaires may share linkIds and
still code their answers differently. Run ``python -m pipelines.fhir.questionnaire_views`` to
rewrite the view after editing the data file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["QUESTIONNAIRES", "VIEW", "QuestionnaireSpecError", "build_view", "load_spec"]

_ROOT = Path(__file__).resolve().parents[2]
QUESTIONNAIRES = _ROOT / "schemas" / "questionnaires" / "eq5d_5l.json"
VIEW = _ROOT / "schemas" / "views" / "fhir_eq5d_response.json"

_KINDS = ("level_code", "code_map")
_LEVELS = range(1, 6)
#: The view's fixed leading columns (the raw table's shape; the pseudonymisation policy reads them).
_KEY_COLUMNS = [
    {"name": "questionnaire_response_id", "path": "getResourceKey()", "type": "id"},
    {"name": "patient_id", "path": "subject.getReferenceKey(Patient)", "type": "id"},
    {"name": "encounter_id", "path": "encounter.getReferenceKey(Encounter)", "type": "id"},
    {"name": "authored", "path": "authored", "type": "dateTime"},
]


class QuestionnaireSpecError(ValueError):
    """The questionnaire data file is malformed (names the questionnaire and the field)."""


def _lit(s: str) -> str:
    """A FHIRPath string literal."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def load_spec(path: Path = QUESTIONNAIRES) -> dict[str, Any]:
    spec = json.loads(path.read_text(encoding="utf-8"))
    _check(spec)
    return spec


def _check(spec: dict[str, Any]) -> None:
    dims, vas = spec.get("dimensions"), spec.get("vas")
    if not isinstance(dims, list) or len(set(dims)) != 5 or not isinstance(vas, str):
        raise QuestionnaireSpecError("'dimensions' must name 5 distinct columns and 'vas' one")
    seen: set[str] = set()
    for q in spec.get("questionnaires") or []:
        name = q.get("name")
        if not isinstance(name, str) or not name.isidentifier() or name in seen:
            raise QuestionnaireSpecError(f"questionnaire name {name!r} is missing, invalid or repeated")
        seen.add(name)
        where = f"questionnaire {name}"
        canonical = q.get("canonical")
        if not isinstance(canonical, str) or not canonical or "|" in canonical:
            raise QuestionnaireSpecError(f"{where}: 'canonical' must be an unversioned URL")
        if not q.get("source"):
            raise QuestionnaireSpecError(f"{where}: 'source' must say where its codes come from")
        links = q.get("link_ids") or {}
        if set(links) != {*dims, vas} or not all(isinstance(x, str) and x for x in links.values()):
            raise QuestionnaireSpecError(f"{where}: 'link_ids' must give a linkId for each of {[*dims, vas]}")
        ans = q.get("answers") or {}
        if ans.get("kind") not in _KINDS:
            raise QuestionnaireSpecError(f"{where}: answers 'kind' must be one of {_KINDS}")
        systems = ans.get("systems")
        if (
            not isinstance(systems, list)
            or not systems
            or not all(s is None or isinstance(s, str) for s in systems)
        ):
            raise QuestionnaireSpecError(f"{where}: answers 'systems' must list systems (null: no system)")
        if ans["kind"] == "code_map":
            for dim, table in _code_tables(ans, dims, where).items():
                if not table or not all(isinstance(c, str) and lv in _LEVELS for c, lv in table.items()):
                    raise QuestionnaireSpecError(f"{where}: codes of {dim} must map codes to levels 1-5")
        elif {"codes", "codes_by_dimension"} & set(ans):
            raise QuestionnaireSpecError(f"{where}: a level_code questionnaire takes no code table")
    if not seen:
        raise QuestionnaireSpecError("no questionnaire")


def _code_tables(ans: dict[str, Any], dims: list[str], where: str) -> dict[str, dict[str, int]]:
    if ("codes" in ans) == ("codes_by_dimension" in ans):
        raise QuestionnaireSpecError(f"{where}: give exactly one of 'codes' and 'codes_by_dimension'")
    if "codes" in ans:
        return dict.fromkeys(dims, ans["codes"])
    by_dim = ans["codes_by_dimension"]
    if not isinstance(by_dim, dict) or set(by_dim) != set(dims):
        raise QuestionnaireSpecError(f"{where}: 'codes_by_dimension' must give a table for each dimension")
    return by_dim


def _is_questionnaire(name: str) -> str:
    # '<url>|<version>' is the same questionnaire in some version (FHIR canonical references).
    return f"(questionnaire = %{name} or questionnaire.startsWith(%{name}_versioned))"


def _system_test(systems: list[str | None]) -> str:
    tests = ["system.empty()" if s is None else f"system = {_lit(s)}" for s in systems]
    return tests[0] if len(tests) == 1 else "(" + " or ".join(tests) + ")"


def _answer(q: dict[str, Any], column: str, dims: list[str]) -> str:
    """FHIRPath for one questionnaire's value of ``column`` (a level, or EQ VAS)."""
    item = f"item.where(linkId = {_lit(q['link_ids'][column])}).answer.value"
    if column not in dims:
        return f"{item}.ofType(integer).first()"
    ans, systems = q["answers"], _system_test(q["answers"]["systems"])
    if ans["kind"] == "level_code":
        # The first code of an accepted system (one JSON pass in the compiled SQL: this is the
        # project's own, high-volume questionnaire).
        return f"{item}.ofType(Coding).where({systems}).code.first().toInteger()"
    # A table: only the first answer counts (two answers to one item never pick a level).
    coding = f"{item}.ofType(Coding).first().where({systems})"
    table = _code_tables(ans, dims, q["name"])[column]
    out = ""
    for code, level in reversed(list(table.items())):
        test = f"{coding}.where(code = {_lit(code)}).exists()"
        out = f"iif({test}, {level}, {out})" if out else f"iif({test}, {level})"
    return out


def _column(spec: dict[str, Any], column: str) -> str:
    out = ""
    for q in reversed(spec["questionnaires"]):
        branch = _answer(q, column, spec["dimensions"])
        test = _is_questionnaire(q["name"])
        out = f"iif({test}, {branch}, {out})" if out else f"iif({test}, {branch})"
    return out


def _description(spec: dict[str, Any]) -> str:
    recognised = "; ".join(f"%{q['name']} = {q['canonical']} ({q['source']})" for q in spec["questionnaires"])
    return (
        "One row per EQ-5D-5L QuestionnaireResponse of a recognised questionnaire. GENERATED from "
        "schemas/questionnaires/eq5d_5l.json by pipelines/fhir/questionnaire_views.py: edit that file, "
        "not this one. " + spec["description"] + " Recognised questionnaires: " + recognised + "."
    )


def build_view(spec: dict[str, Any]) -> dict[str, Any]:
    """The ViewDefinition (as JSON data) that reads every questionnaire of ``spec``."""
    _check(spec)
    constants = []
    for q in spec["questionnaires"]:
        constants.append({"name": q["name"], "valueCanonical": q["canonical"]})
        constants.append({"name": f"{q['name']}_versioned", "valueString": q["canonical"] + "|"})
    columns = [dict(c) for c in _KEY_COLUMNS]
    for column in [*spec["dimensions"], spec["vas"]]:
        columns.append({"name": column, "path": _column(spec, column), "type": "integer"})
    return {
        "resourceType": "ViewDefinition",
        "name": spec["view"]["name"],
        "title": spec["view"]["title"],
        "status": "active",
        "resource": "QuestionnaireResponse",
        "constant": constants,
        "select": [{"column": columns}],
        "where": [
            {
                "path": " or ".join(_is_questionnaire(q["name"]) for q in spec["questionnaires"]),
                "description": "only responses of a recognised questionnaire (see the view's description)",
            }
        ],
        "description": _description(spec),
    }


def render(view: dict[str, Any]) -> str:
    return json.dumps(view, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Rewrite the view from the data file (``--check``: only say whether it is up to date)."""
    args = sys.argv[1:] if argv is None else argv
    text = render(build_view(load_spec()))
    if "--check" in args:
        current = VIEW.read_text(encoding="utf-8") if VIEW.exists() else ""
        if current != text:
            print(f"{VIEW} is out of date: run python -m pipelines.fhir.questionnaire_views")
            return 1
        return 0
    VIEW.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
