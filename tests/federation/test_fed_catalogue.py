"""The hub's dataset catalogue: summaries round-trip, refuse unsafe counts and unexpected keys,
and become a HealthDCAT-AP graph that reads back the same from JSON-LD and Turtle."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rdflib import Graph, Literal, URIRef
from rdflib import namespace as ns
from rdflib.compare import isomorphic

from federation.catalogue import (
    ACCESS_RIGHT_NON_PUBLIC,
    DATATYPES,
    HEALTHDCATAP,
    THEME_HEALTH,
    DatasetSummary,
    TableSummary,
    VariableSummary,
    catalogue_graph,
    catalogue_jsonld,
    catalogue_turtle,
    dataset_iris,
    is_safe_count,
    safe_count,
)

HUB = "https://hub.example.se/"


def _summary(holder_id: str = "ndr", *, persons: int = 25, min_cell_count: int = 5, base: int = 5, **kw):
    visits = TableSummary(
        table="register_visit",
        title="Register visit",
        variables=(
            VariableSummary("person_id", "Person (holder pseudonym)", "string", "pseudonym"),
            VariableSummary("visit_date", "Visit date", "date", "quasi_identifier"),
            VariableSummary("hba1c_mmol_mol", "HbA1c (mmol/mol)", "double", "health"),
        ),
        rows=safe_count(123, rounding_base=base, min_cell_count=min_cell_count),
        persons=persons,
        period_start="2020-02",
        period_end="2024-11",
    )
    proms = TableSummary(
        table="prom_response",
        title="PROM response",
        variables=(VariableSummary("eq_vas", "EQ VAS", "integer", "health"),),
        rows=safe_count(3, rounding_base=base, min_cell_count=min_cell_count),  # suppressed
        persons=0,
        period_start=None,
        period_end=None,
    )
    fields = dict(
        holder_id=holder_id,
        holder_name=f"Holder {holder_id}",
        holder_kind="region",
        node_id=f"node:{holder_id}",
        tables=(visits, proms),
        persons=persons,
        published_at="2025-03-01T12:00:00Z",
        min_cell_count=min_cell_count,
        rounding_base=base,
    )
    return DatasetSummary(**{**fields, **kw})


# --------------------------------------------------------------------------------------
# safe counts
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "base", "threshold", "published"),
    [
        (0, 5, 5, 0),
        (4, 5, 5, 0),  # below the threshold: suppressed
        (5, 5, 5, 5),
        (7, 5, 5, 5),
        (8, 5, 5, 10),  # half up
        (123, 5, 5, 125),
        (9, 10, 10, 0),
        (10, 10, 10, 10),
        (15, 10, 10, 20),
        (5, 4, 5, 8),  # rounding would give 4, under the threshold: the first multiple above it
        (5, 1, 5, 5),  # base 1: exact counts at or above the threshold
    ],
)
def test_safe_count_suppresses_and_rounds(n, base, threshold, published):
    assert safe_count(n, rounding_base=base, min_cell_count=threshold) == published


@given(st.integers(0, 10_000), st.integers(1, 20), st.integers(1, 20))
def test_safe_count_is_never_a_small_count(n, base, threshold):
    published = safe_count(n, rounding_base=base, min_cell_count=threshold)
    assert published == 0 or published >= threshold
    assert published % base == 0
    assert is_safe_count(published, rounding_base=base, min_cell_count=threshold)
    if published:
        assert abs(published - n) <= max(base, threshold)


def test_safe_count_refuses_negative_counts_and_bad_thresholds():
    with pytest.raises(ValueError):
        safe_count(-1, rounding_base=5, min_cell_count=5)
    with pytest.raises(ValueError):
        safe_count(3, rounding_base=0, min_cell_count=5)


@pytest.mark.parametrize("unsafe", [1, 3, 4, 7, 12])
def test_a_summary_with_an_unsafe_count_cannot_be_built(unsafe):
    with pytest.raises(ValueError, match="disclosure-safe") as caught:
        _summary(persons=unsafe)
    assert str(unsafe) not in str(caught.value)
    table = _summary().tables[0]
    with pytest.raises(ValueError, match="disclosure-safe"):
        _summary(tables=(replace(table, rows=unsafe),))


# --------------------------------------------------------------------------------------
# JSON round trip and validation
# --------------------------------------------------------------------------------------


def test_summary_round_trips_through_json_text():
    summary = _summary()
    assert DatasetSummary.from_json(json.loads(json.dumps(summary.to_json()))) == summary


SECRET = "19121212-1212"  # a personnummer-shaped value that must never be echoed


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("persons"),
        lambda d: d.update({SECRET: 1}),
        lambda d: d.update(persons=str(d["persons"])),
        lambda d: d.update(persons=True),
        lambda d: d.update(holder_name=[SECRET]),
        lambda d: d["tables"][0].update({SECRET: SECRET}),
        lambda d: d["tables"][0]["variables"][0].pop("sensitivity"),
        lambda d: d["tables"][0].update(period_start=SECRET),
        lambda d: d.update(published_at=SECRET),
        lambda d: d.update(holder_id=SECRET),
        lambda d: d.update(min_cell_count=0),
    ],
)
def test_from_json_refuses_what_it_does_not_expect_without_echoing_values(mutate):
    data = _summary().to_json()
    mutate(data)
    with pytest.raises(ValueError) as caught:
        DatasetSummary.from_json(data)
    assert SECRET not in str(caught.value)
    assert "1212" not in str(caught.value)


def test_from_json_refuses_a_non_object():
    with pytest.raises(ValueError):
        DatasetSummary.from_json(["not", "an", "object"])  # type: ignore[arg-type]


def test_periods_are_months_in_order():
    table = _summary().tables[0]
    for start, end in (
        ("2020-02-01", "2024-11"),
        ("2024-11", "2020-02"),
        ("2020-02", None),
        ("2020-13", "2021-01"),
    ):
        with pytest.raises(ValueError):
            replace(table, period_start=start, period_end=end)


_tokens = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
_texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\x7f\x85"),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip())
_months = st.tuples(st.integers(1990, 2030), st.integers(1, 12)).map(lambda ym: f"{ym[0]:04d}-{ym[1]:02d}")


@st.composite
def _summaries(draw):
    base = draw(st.integers(1, 10))
    threshold = draw(st.integers(1, 11))

    def count():
        return safe_count(draw(st.integers(0, 100_000)), rounding_base=base, min_cell_count=threshold)

    tables = []
    for name in draw(st.lists(_tokens, max_size=4, unique=True)):
        names = draw(st.lists(_tokens, max_size=5, unique=True))
        variables = tuple(
            VariableSummary(n, draw(_texts), draw(st.sampled_from(sorted(DATATYPES))), draw(_tokens))
            for n in names
        )
        period = sorted(draw(st.lists(_months, min_size=2, max_size=2)))
        start, end = draw(st.sampled_from([(period[0], period[1]), (None, None)]))
        tables.append(TableSummary(name, draw(_texts), variables, count(), count(), start, end))
    return DatasetSummary(
        holder_id=draw(_tokens),
        holder_name=draw(_texts),
        holder_kind=draw(_tokens),
        node_id=draw(_texts),
        tables=tuple(tables),
        persons=count(),
        published_at=draw(st.datetimes(min_value=datetime(2000, 1, 1))).strftime("%Y-%m-%dT%H:%M:%SZ"),
        min_cell_count=threshold,
        rounding_base=base,
    )


@given(_summaries())
def test_from_json_inverts_to_json(summary):
    assert DatasetSummary.from_json(summary.to_json()) == summary
    assert DatasetSummary.from_json(json.loads(json.dumps(summary.to_json()))) == summary


# --------------------------------------------------------------------------------------
# The HealthDCAT-AP graph
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def summaries():
    return [
        _summary("ndr"),
        _summary("region_uppsala", persons=safe_count(62, rounding_base=5, min_cell_count=5)),
        _summary(
            "region_skane",
            persons=safe_count(7, rounding_base=10, min_cell_count=10),
            min_cell_count=10,
            base=10,
        ),
    ]


@pytest.fixture(scope="module")
def graph(summaries):
    return catalogue_graph(summaries, hub_uri=HUB, catalogue_title="Swedish diabetes data catalogue")


@pytest.fixture(scope="module", params=["json-ld", "turtle"])
def parsed(request, graph):
    text = catalogue_jsonld(graph) if request.param == "json-ld" else catalogue_turtle(graph)
    return Graph().parse(data=text, format=request.param)


def test_both_serialisations_read_back_as_the_same_graph(graph, parsed):
    assert isomorphic(graph, parsed)


def test_jsonld_is_compacted_with_the_prefixes(graph):
    document = json.loads(catalogue_jsonld(graph))
    assert document["@context"]["healthdcatap"] == "http://healthdataportal.eu/ns/health#"
    assert document["@context"]["dcat"] == "http://www.w3.org/ns/dcat#"
    types = {node.get("@type") for node in document["@graph"]}
    assert "dcat:Catalog" in types and "dcat:Dataset" in types


def test_catalogue_lists_one_dataset_per_holder(parsed, summaries):
    (catalog,) = parsed.subjects(ns.RDF.type, ns.DCAT.Catalog)
    assert parsed.value(catalog, ns.DCTERMS.title) == Literal("Swedish diabetes data catalogue")
    assert parsed.value(parsed.value(catalog, ns.DCTERMS.publisher), ns.FOAF.name) is not None
    query = """
        SELECT (COUNT(DISTINCT ?d) AS ?n) WHERE { ?c a dcat:Catalog ; dcat:dataset ?d . ?d a dcat:Dataset . }
    """
    (row,) = parsed.query(query, initNs={"dcat": ns.DCAT})
    assert int(row[0]) == len(summaries)
    assert {str(d).rsplit("/", 1)[-1] for d in dataset_iris(parsed)} == {s.holder_id for s in summaries}


def test_each_holder_dataset_has_the_healthdcat_properties(parsed, summaries):
    by_holder = {s.holder_id: s for s in summaries}
    query = """
        SELECT ?d ?name ?persons ?records ?hdab ?start ?end WHERE {
            ?c a dcat:Catalog ; dcat:dataset ?d .
            ?d dct:publisher ?p ; dct:accessRights ?rights ; dcat:theme ?theme ;
               healthdcatap:numberOfUniqueIndividuals ?persons ; healthdcatap:numberOfRecords ?records ;
               healthdcatap:hdab ?hdab ; dct:identifier ?id ; dct:title ?title ; dct:description ?text ;
               dct:type ?kind ; dct:temporal ?period .
            ?p a foaf:Agent ; foaf:name ?name .
            ?hdab a foaf:Agent .
            ?period a dct:PeriodOfTime ; dcat:startDate ?start ; dcat:endDate ?end .
            FILTER (?rights = ?nonPublic && ?theme = ?health)
        }
    """
    rows = list(
        parsed.query(
            query,
            initNs={"dcat": ns.DCAT, "dct": ns.DCTERMS, "foaf": ns.FOAF, "healthdcatap": HEALTHDCATAP},
            initBindings={"nonPublic": ACCESS_RIGHT_NON_PUBLIC, "health": THEME_HEALTH},
        )
    )
    assert len(rows) == len(summaries)
    for dataset, name, persons, records, _hdab, start, end in rows:
        summary = by_holder[str(dataset).rsplit("/", 1)[-1]]
        assert str(name) == summary.holder_name
        assert persons.datatype == ns.XSD.nonNegativeInteger
        assert int(persons) == summary.persons
        assert int(records) == summary.records
        assert (str(start), str(end)) == summary.period
        assert start.datatype == ns.XSD.gYearMonth


def test_small_counts_are_published_as_zero(parsed, summaries):
    skane = URIRef(f"{HUB}dataset/region_skane")
    assert int(parsed.value(skane, HEALTHDCATAP.numberOfUniqueIndividuals)) == 0  # 7 < 10
    proms = URIRef(f"{HUB}dataset/ndr/prom_response")
    assert int(parsed.value(proms, HEALTHDCATAP.numberOfRecords)) == 0  # 3 < 5
    assert parsed.value(proms, ns.DCTERMS.temporal) is None


def test_no_published_count_is_below_its_holders_threshold(parsed, summaries):
    threshold = {s.holder_id: s.min_cell_count for s in summaries}
    counted = 0
    for predicate in (HEALTHDCATAP.numberOfRecords, HEALTHDCATAP.numberOfUniqueIndividuals):
        for dataset, count in parsed.subject_objects(predicate):
            holder_id = str(dataset).removeprefix(f"{HUB}dataset/").split("/")[0]
            assert int(count) == 0 or int(count) >= threshold[holder_id]
            assert int(count) not in range(1, threshold[holder_id])
            counted += 1
    assert counted == 2 * len(summaries) * 3  # holder dataset and two tables, two counts each


def test_tables_are_parts_with_a_csvw_data_dictionary(parsed):
    holder = URIRef(f"{HUB}dataset/ndr")
    visits = URIRef(f"{HUB}dataset/ndr/register_visit")
    assert (holder, ns.DCTERMS.hasPart, visits) in parsed
    assert (visits, ns.DCTERMS.isPartOf, holder) in parsed
    assert (visits, ns.RDF.type, ns.DCAT.Dataset) in parsed
    assert parsed.value(visits, ns.DCTERMS.accessRights) == ACCESS_RIGHT_NON_PUBLIC
    assert int(parsed.value(visits, HEALTHDCATAP.numberOfRecords)) == 125
    assert set(parsed.objects(visits, ns.DCAT.keyword)) == {
        Literal("person_id"),
        Literal("visit_date"),
        Literal("hba1c_mmol_mol"),
    }
    table = parsed.value(visits, HEALTHDCATAP.hasVariables)
    assert (table, ns.RDF.type, ns.CSVW.Table) in parsed
    columns = {
        str(parsed.value(c, ns.CSVW.name)): c
        for c in parsed.objects(parsed.value(table, ns.CSVW.tableSchema), ns.CSVW.column)
    }
    assert set(columns) == {"person_id", "visit_date", "hba1c_mmol_mol"}
    hba1c = columns["hba1c_mmol_mol"]
    assert parsed.value(hba1c, ns.CSVW.title) == Literal("HbA1c (mmol/mol)")
    assert parsed.value(hba1c, ns.CSVW.datatype) == ns.XSD.double
    assert str(parsed.value(hba1c, ns.DCTERMS.type)).endswith("/vocab/sensitivity/health")


def test_catalogue_graph_refuses_a_bad_hub_uri_and_duplicate_holders(summaries):
    for bad in ("ftp://hub", "https://hub.example.se/?x=1", "hub.example.se", "https://hub example"):
        with pytest.raises(ValueError):
            catalogue_graph(summaries, hub_uri=bad, catalogue_title="c")
    with pytest.raises(ValueError):
        catalogue_graph([summaries[0], summaries[0]], hub_uri=HUB, catalogue_title="c")


def test_an_empty_catalogue_is_a_catalogue():
    graph = catalogue_graph([], hub_uri=HUB, catalogue_title="Empty")
    parsed = Graph().parse(data=catalogue_jsonld(graph), format="json-ld")
    assert len(list(parsed.subjects(ns.RDF.type, ns.DCAT.Catalog))) == 1
    assert not list(dataset_iris(parsed))
