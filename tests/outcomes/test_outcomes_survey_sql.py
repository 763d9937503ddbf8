"""Patient-survey answers as DuckDB SQL (issue 17, item 3): per dimension 1 positive, 0 another
valid answer, NULL otherwise, so that the column's mean per group is ``survey_shares``'
``share_positive``, its count ``n_denominator`` and its sum ``n_positive``, for every input."""

from __future__ import annotations

import json

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.outcomes import survey as survey_module
from pipelines.outcomes.sql import (
    TRIMMED_WHITESPACE,
    _is_normal,
    _lowered_codepoints,
    lower_preimage,
    survey_positive_sql,
)
from pipelines.outcomes.survey import (
    PREM_DEFAULT,
    SurveyConfig,
    SurveyError,
    load_survey,
    survey_shares,
)

#: characters whose case is tricky: the Kelvin sign and dotted I lower-case to ASCII letters; the
#: Latin small gamma has an upper case (U+A7CB, Unicode 16) that pyarrow lower-cases and DuckDB's
#: lower() does not; sharp s and final sigma differ between casefold() and lower-casing
TRICKY = "kK\u212aiI\u0130\u0264\ua7cb\u00df\u1e9e\u03c3\u03a3\u03c2"
ALPHABET = "ab12 " + TRICKY


def _sql_figures(table: pa.Table, config: SurveyConfig, by: str) -> dict[tuple, tuple]:
    """(group, dimension) -> (mean, count, sum) of the compiled column, computed by DuckDB."""
    con = duckdb.connect()
    try:
        con.register("answers", table)
        out = {}
        for dim in config.dimensions:
            expr = survey_positive_sql(f'"{dim.column}"', dim.name, config)
            sql = f"SELECT {by}, avg(v), count(v), sum(v) FROM (SELECT {by}, {expr} AS v FROM answers) GROUP BY {by}"
            for g, mean, n, total in con.execute(sql).fetchall():
                out[(g, dim.name)] = (mean, n, total or 0)
        return out
    finally:
        con.close()


def _arrow_figures(table: pa.Table, config: SurveyConfig, by: str) -> dict[tuple, tuple]:
    return {
        (r[by], r["dimension"]): (r["share_positive"], r["n_denominator"], r["n_positive"])
        for r in survey_shares(table, config, by=[by]).to_pylist()
    }


def _dressed(draw, value: str) -> str:
    """``value`` as a respondent's system might deliver it: any character replaced by one that
    lower-cases to it, blanks around it."""
    chars = [draw(st.sampled_from(sorted(map(chr, lower_preimage(c))) or [c])) for c in value]
    pad = st.text(alphabet=[chr(p) for p in TRIMMED_WHITESPACE], max_size=2)
    return draw(pad) + "".join(chars) + draw(pad)


def _normal(answer: str) -> str:
    return pc.utf8_lower(pc.utf8_trim_whitespace(pa.array([answer], pa.string()))).to_pylist()[0]


@st.composite
def configs(draw) -> SurveyConfig:
    word = st.text(alphabet=ALPHABET, min_size=1, max_size=3).filter(lambda w: _normal(w))
    values = draw(st.lists(word, min_size=2, max_size=6, unique_by=_normal))
    split = draw(st.integers(1, len(values) - 1))
    answers, not_applicable = values[:split], values[split:]
    positive = draw(st.lists(st.sampled_from(answers), min_size=1, unique=True))
    n_dims = draw(st.integers(1, 3))
    dims = []
    for i in range(n_dims):
        dim: dict = {"name": f"d{i}", "column": f"c{i}"}
        if draw(st.booleans()):
            dim["positive"] = draw(st.lists(st.sampled_from(answers), min_size=1, unique=True))
        dims.append(dim)
    return SurveyConfig.from_mapping(
        {"answers": answers, "positive": positive, "not_applicable": not_applicable, "dimensions": dims}
    )


@st.composite
def surveyed(draw) -> tuple[SurveyConfig, pa.Table]:
    config = draw(configs())
    known = sorted(config.answers | config.not_applicable)
    n = draw(st.integers(0, 40))
    answer = st.one_of(
        st.none(),
        st.sampled_from(["", " ", "\u3000"]),
        st.sampled_from(known),
        st.text(alphabet=ALPHABET, max_size=4),
        st.text(max_size=4),  # anything at all
    )
    columns = {}
    for dim in config.dimensions:
        cells = []
        for _ in range(n):
            a = draw(answer)
            if a in known and draw(st.booleans()):
                a = _dressed(draw, a)
            cells.append(a)
        columns[dim.column] = pa.array(cells, pa.string())
    groups = pa.array(draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=n, max_size=n)), pa.string())
    return config, pa.table({**columns, "g": groups})


@settings(max_examples=300, deadline=None)
@given(surveyed())
def test_mean_of_the_sql_column_is_the_share_of_positive_answers(case):
    config, table = case
    sql, arrow = _sql_figures(table, config, "g"), _arrow_figures(table, config, "g")
    assert sql == arrow


RESPECT_ONLY = SurveyConfig.from_mapping(
    {
        "answers": [1, 2, 3, 4, 5],
        "positive": [4, 5],
        "not_applicable": [-1],
        "dimensions": [{"name": "respect", "column": "prem_respect"}],
    }
)


@st.composite
def integer_answers(draw) -> pa.Table:
    arrow_type = draw(
        st.sampled_from([pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint64()])
    )
    low = 0 if pa.types.is_unsigned_integer(arrow_type) else -3
    values = draw(st.lists(st.one_of(st.none(), st.integers(low, 9)), max_size=30))
    groups = draw(st.lists(st.sampled_from("ab"), min_size=len(values), max_size=len(values)))
    return pa.table({"prem_respect": pa.array(values, arrow_type), "g": pa.array(groups, pa.string())})


@settings(max_examples=100, deadline=None)
@given(integer_answers())
def test_integer_answers_are_read_as_their_text(table):
    assert _sql_figures(table, RESPECT_ONLY, "g") == _arrow_figures(table, RESPECT_ONLY, "g")


def test_an_enum_column_is_read_as_its_text_like_a_dictionary_array():
    values = ["4", " 5", "Ej aktuellt", "2", "x"]
    rows = [*values, None, "4"]
    con = duckdb.connect()
    con.execute(f"CREATE TYPE answer AS ENUM ({', '.join(repr(v) for v in values)})")
    con.execute("CREATE TABLE t (a answer)")
    con.executemany("INSERT INTO t VALUES (?)", [[r] for r in rows])
    assert con.execute("SELECT typeof(a) FROM t LIMIT 1").fetchall()[0][0].startswith("ENUM(")
    expr = survey_positive_sql("a", "respect", RESPECT_ONLY)
    mean, n, total = con.execute(f"SELECT avg({expr}), count({expr}), sum({expr}) FROM t").fetchall()[0]
    table = pa.table(
        {"prem_respect": pa.array(rows, pa.string()).dictionary_encode(), "g": ["a"] * len(rows)}
    )
    assert (
        _arrow_figures(table, RESPECT_ONLY, "g")
        == {("a", "respect"): (mean, n, total)}
        == {("a", "respect"): (3 / 4, 4, 3)}
    )


def test_configured_answers_are_normalised_as_the_answers_are():
    """str.casefold would make the configured sharp s "ss", which no lower-cased answer is."""
    config = SurveyConfig.from_mapping(
        {
            "answers": [" \u00df", "\u03c2", "X"],
            "positive": ["\u00df"],
            "dimensions": [{"name": "d", "column": "c"}],
        }
    )
    assert config.answers == {"\u00df", "\u03c2", "x"}
    table = pa.table(
        {"c": ["\u00df", "\u1e9e", "\u03c2", "x"], "g": ["a"] * 4}
    )  # U+1E9E lower-cases to sharp s
    assert _arrow_figures(table, config, "g") == _sql_figures(table, config, "g") == {("a", "d"): (0.5, 4, 2)}


def test_the_prem_configuration_on_typical_answers():
    answers = ["5", "4", " 4 ", "3", "1", "ej aktuellt", "EJ AKTUELLT", None, "", "7", "4.0"]
    con = duckdb.connect()
    expr = survey_positive_sql("a", "respect", "prem")
    got = [r[0] for r in con.execute(f"SELECT {expr} FROM unnest(?) t(a)", [answers]).fetchall()]
    assert got == [1, 1, 1, 0, 0, None, None, None, None, None, None]


def test_lower_casing_is_pyarrows_not_duckdbs():
    """U+A7CB lower-cases to U+0264 in pyarrow (utf8proc, Unicode 16) but not in DuckDB 's lower():
    the SQL agrees with survey_shares because it never calls lower()."""
    config = SurveyConfig.from_mapping(
        {"answers": ["\u0264", "x"], "positive": ["\u0264"], "dimensions": [{"name": "d", "column": "c"}]}
    )
    table = pa.table({"c": ["\ua7cb", "\u0264", "X", "\u212a"], "g": ["a", "a", "a", "a"]})
    arrow = _arrow_figures(table, config, "g")
    assert arrow[("a", "d")] == (2 / 3, 3, 2)
    assert _sql_figures(table, config, "g") == arrow
    assert duckdb.connect().execute("SELECT lower('\ua7cb') = '\u0264'").fetchall() == [(False,)]  # why


def test_every_unicode_code_point_lower_cases_as_pyarrow_says():
    """The table the SQL is compiled from is pyarrow's utf8_lower, code point by code point."""
    lowered = _lowered_codepoints()
    points = [p for p in range(0x110000) if not 0xD800 <= p <= 0xDFFF]
    expected = pc.utf8_lower(pa.array([chr(p) for p in points], pa.string())).to_pylist()
    assert [chr(lowered[p]) for p in points] == expected


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=ALPHABET + "\u3000\t", max_size=5) | st.text(max_size=5))
def test_the_fast_path_takes_exactly_the_strings_that_are_their_own_normal_form(value):
    arr = pa.array([value], pa.string())
    assert _is_normal(value) == (pc.utf8_lower(pc.utf8_trim_whitespace(arr)).to_pylist() == [value])


@pytest.mark.parametrize("column_type", ["DOUBLE", "BOOLEAN", "DATE", "DECIMAL(4,1)"])
def test_another_column_type_raises_as_survey_shares_does(column_type):
    con = duckdb.connect()
    con.execute(f"CREATE TABLE t (a {column_type})")
    con.execute("INSERT INTO t VALUES (NULL)")
    expr = survey_positive_sql("a", "respect", RESPECT_ONLY)
    with pytest.raises(duckdb.Error, match="a survey answer must be text or integer"):
        con.execute(f"SELECT {expr} FROM t").fetchall()
    with pytest.raises(TypeError):
        survey_shares(con.sql("SELECT a AS prem_respect FROM t").to_arrow_table(), RESPECT_ONLY)


def test_an_untyped_null_is_no_answer():
    con = duckdb.connect()
    assert con.execute(f"SELECT {survey_positive_sql('NULL', 'overall', 'prem')}").fetchone() == (None,)


@pytest.mark.parametrize(
    "survey, dimension, message",
    [
        ("prem", "kindness", "unknown survey dimension 'kindness'"),
        ("nowhere", "respect", "unknown survey 'nowhere'"),
        ("../policies/release", "respect", "not a survey id"),
    ],
)
def test_an_unknown_survey_or_dimension_is_refused_when_compiled(survey, dimension, message):
    with pytest.raises(SurveyError, match=message):
        survey_positive_sql("a", dimension, survey)


def test_survey_files_are_validated(tmp_path, monkeypatch):
    monkeypatch.setattr(survey_module, "SURVEYS_DIR", tmp_path)
    good = json.loads((survey_module.SCHEMAS_DIR / "surveys" / "prem.json").read_text(encoding="utf-8"))
    (tmp_path / "other.json").write_text(json.dumps(good), encoding="utf-8")  # says it is "prem"
    (tmp_path / "broken.json").write_text(
        json.dumps({**good, "id": "broken", "positive": ["9"]}), encoding="utf-8"
    )
    (tmp_path / "blank.json").write_text(
        json.dumps({**good, "id": "blank", "answers": [*good["answers"], " "]})
    )
    load = load_survey.__wrapped__  # the cached loader reads the real directory
    with pytest.raises(SurveyError, match="says it is survey 'prem'"):
        load("other")
    with pytest.raises(SurveyError, match="positive answers must be"):
        load("broken")
    with pytest.raises(SurveyError, match="blank answer"):
        load("blank")


def test_the_prem_file_is_the_default_configuration():
    assert load_survey("prem") is PREM_DEFAULT
    assert PREM_DEFAULT.positive == {"4", "5"} and PREM_DEFAULT.not_applicable == {"ej aktuellt"}
    assert [d.column for d in PREM_DEFAULT.dimensions] == [
        "prem_respect",
        "prem_involvement",
        "prem_information",
        "prem_accessibility",
        "prem_overall",
    ]
