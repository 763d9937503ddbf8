"""The shipped EQ-5D value sets: published example states give their published index values.

Every expected number below is read from the value-set file's ``examples``, and every example
names where it was taken from (a reference implementation's test or documented example, or a
published value table); the test id carries that source, so a failure says which number and
whose. The coefficients' own provenance is in each file's ``source`` and ``transcribed_from``.
"""

from __future__ import annotations

import copy
import json

import pyarrow as pa
import pytest

from pipelines.outcomes.scoring import index_column, score_eq5d
from pipelines.outcomes.valuesets import (
    DIMENSIONS,
    VALUESETS_DIR,
    ValueSetError,
    available_value_sets,
    load_value_set,
    parse_value_set,
)

SHIPPED = ("se_3l_tto_2014", "se_5l_tto_2020", "se_5l_vas_2020")


def _examples():
    for vs_id in SHIPPED:
        vs = load_value_set(vs_id)
        for i, ex in enumerate(vs.examples):
            source = ex.source.split(" ", 1)[0]
            yield pytest.param(vs_id, ex, id=f"{vs_id}-{ex.profile}-{i}-{source}")


def test_the_swedish_sets_are_shipped():
    assert set(SHIPPED) <= set(available_value_sets())


@pytest.mark.parametrize("vs_id", SHIPPED)
def test_each_file_cites_its_source_and_where_the_numbers_came_from(vs_id):
    raw = json.loads((VALUESETS_DIR / f"{vs_id}.json").read_text(encoding="utf-8"))
    src = raw["source"]
    for key in ("authors", "year", "title", "journal", "doi"):
        assert src.get(key), key
    assert "Burström" in src["authors"]
    assert raw["transcribed_from"], "every file says where its numbers were transcribed from"
    for entry in raw["transcribed_from"]:
        assert entry["repository"] and entry["path"] and len(entry["commit"]) == 40 and entry["what"]
    assert raw["examples"], "every shipped set carries published examples"


@pytest.mark.parametrize(("vs_id", "example"), list(_examples()))
def test_published_example_gives_published_value(vs_id, example):
    """|computed - published| within half a unit of the published last decimal."""
    vs = load_value_set(vs_id)
    levels = [int(c) for c in example.profile]
    tolerance = 0.5 * 10 ** (-example.decimals) + 1e-9
    assert abs(vs.value(levels) - example.value) <= tolerance, example.source
    # and the vectorised path gives the very same number as the scalar one
    table = pa.table({name: [lv] for name, lv in zip(_names(), levels, strict=True)} | {"eq_vas": [50]})
    scored = score_eq5d(table, [vs], levels=vs.levels).table
    assert scored.column(index_column(vs)).to_pylist() == [pytest.approx(vs.value(levels), abs=1e-12)]
    assert scored.column("eq5d_profile").to_pylist() == [example.profile]


def _names():
    return (
        "eq5d_mobility",
        "eq5d_self_care",
        "eq5d_usual_activities",
        "eq5d_pain_discomfort",
        "eq5d_anxiety_depression",
    )


def test_the_constants_are_the_published_models_constants():
    # fragla/eq5d data-raw/TTO.csv 'Sweden' FullHealth; data-raw/VT.csv 'Sweden_2020' StartValue;
    # RegistercentrumVGR/RCSTAT R/eq5d.R eq5d_5l_index_vas (the three constants, 11111's value)
    assert load_value_set("se_3l_tto_2014").value([1, 1, 1, 1, 1]) == 0.9694
    assert load_value_set("se_5l_tto_2020").value([1, 1, 1, 1, 1]) == 0.9755
    assert load_value_set("se_5l_vas_2020").value([1, 1, 1, 1, 1]) == 88.85


def test_the_worst_states():
    # 55555: fragla/eq5d tests/testthat/test-eq5d5l.R 'Sweden' 0.243; 33333: eq5dsuite-value-sets
    # EQ-5D-3L/SE.csv 0.340199977 (both also in the files' examples)
    assert round(load_value_set("se_5l_tto_2020").value([5] * 5), 3) == 0.243
    assert round(load_value_set("se_3l_tto_2014").value([3] * 5), 4) == 0.3402


# -- another country is a data file ---------------------------------------------------------------


def _raw(vs_id: str) -> dict:
    return json.loads((VALUESETS_DIR / f"{vs_id}.json").read_text(encoding="utf-8"))


def test_a_value_set_is_chosen_by_file(tmp_path):
    """The same model under another name and path scores the same: the set is data, not code."""
    raw = _raw("se_3l_tto_2014")
    raw["id"] = "copy_of_se_3l"
    path = tmp_path / "copy_of_se_3l.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    copy_vs = load_value_set(path)
    original = load_value_set("se_3l_tto_2014")
    assert copy_vs.id == "copy_of_se_3l"
    assert (copy_vs.state_values() == original.state_values()).all()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("source"), "missing 'source'"),
        (lambda r: r["source"].pop("authors"), "source must name"),
        (lambda r: r.update(extra=1), "unknown keys"),
        (lambda r: r.update(levels=5), "has 3 levels"),
        (lambda r: r.update(instrument="EQ-5D-7L"), "instrument must be"),
        (lambda r: r["model"].update(form="multiplicative"), "only the additive"),
        (lambda r: r["model"]["decrements"].pop("MO"), "exactly MO"),
        (lambda r: r["model"]["decrements"]["SC"].pop(), "must list 3 values"),
        (lambda r: r["model"]["decrements"]["SC"].__setitem__(0, 0.01), "0 at level 1"),
        (lambda r: r["model"]["decrements"]["PD"].__setitem__(1, "0.1"), "finite number"),
        (lambda r: r["model"]["decrements"]["PD"].__setitem__(1, float("nan")), "finite number"),
        (lambda r: r["model"].update(constant=True), "finite number"),
        (lambda r: r["model"]["terms"][0].update(any_dimension_at_least=4), "from 2 to 3"),
        (lambda r: r["model"]["terms"][0].update(all_dimensions_at_least=3), "a term takes"),
        (lambda r: r["model"]["terms"].append(dict(r["model"]["terms"][0])), "duplicate term"),
        (lambda r: r["examples"][0].update(profile="11114"), "not an EQ-5D-3L state"),
        (lambda r: r["examples"][0].pop("source"), "names its source"),
        (lambda r: r["examples"][0].update(decimals=1.5), "decimals"),
    ],
)
def test_a_malformed_value_set_is_refused(mutate, message):
    raw = copy.deepcopy(_raw("se_3l_tto_2014"))
    mutate(raw)
    with pytest.raises(ValueSetError, match=message):
        parse_value_set(raw)


def test_an_unknown_id_is_refused():
    with pytest.raises(ValueSetError, match="no value set"):
        load_value_set("xx_5l_tto_1999")


def test_the_id_must_match_the_file_name(tmp_path, monkeypatch):
    import pipelines.outcomes.valuesets as valuesets

    raw = _raw("se_5l_tto_2020")
    (tmp_path / "other_name.json").write_text(json.dumps(raw), encoding="utf-8")
    monkeypatch.setattr(valuesets, "VALUESETS_DIR", tmp_path)
    with pytest.raises(ValueSetError, match="differs from the file name"):
        valuesets.load_value_set("other_name")


def test_dimensions_are_in_profile_order():
    assert DIMENSIONS == ("MO", "SC", "UA", "PD", "AD")
