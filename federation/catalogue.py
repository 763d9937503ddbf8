"""The hub's dataset catalogue: what each node publishes about its research zone (metadata and
disclosure-safe counts only), and the catalogue as HealthDCAT-AP RDF (JSON-LD and Turtle).

What a node publishes
    A :class:`DatasetSummary` per holder: the holder's facts, and per research table its
    variables (name, label, datatype, sensitivity class), its row and person counts and the
    months its events span. It travels as JSON (:meth:`DatasetSummary.to_json`, in the body of a
    ``catalogue`` message); :meth:`DatasetSummary.from_json` refuses a missing, unknown or
    wrongly typed key, so the hub never files a payload it did not expect.

Disclosure control of the counts
    Every count is published through :func:`safe_count` with the holder's own thresholds: a count
    below ``min_cell_count`` is published as 0 ("fewer than the threshold"), any other is rounded
    to the nearest multiple of ``rounding_base`` (half up) and never below the threshold. The
    value types check this on construction (:func:`is_safe_count`), so a summary with a count in
    ``1..min_cell_count-1`` or off the rounding grid cannot be built, sent or filed: the node
    computes the counts (``pipelines.dataset_summary``), the hub re-checks them here. Periods are
    coarse on purpose: months ('YYYY-MM'), and only months in which at least ``min_cell_count``
    persons have an event count (the node's query), so no edge month rests on one person.

The RDF (HealthDCAT-AP, on DCAT-AP 3)
    One ``dcat:Catalog`` (the hub) with one ``dcat:Dataset`` per holder. Each holder dataset has
    ``dct:identifier`` (its IRI, as HealthDCAT-AP asks for dereferenceable identifiers),
    ``dct:title``, ``dct:description``, ``dct:publisher`` (the holder as a ``foaf:Agent``),
    ``dct:accessRights`` NON_PUBLIC (EU access-right vocabulary: pseudonymised personal data,
    only under a data permit), ``dcat:theme`` HEAL (EU data-theme vocabulary),
    ``dcatap:applicableLegislation`` the EHDS regulation (EU) 2025/327, ``dct:temporal`` as a
    ``dct:PeriodOfTime`` with ``dcat:startDate``/``dcat:endDate`` typed ``xsd:gYearMonth``
    (DCAT 3 allows gYearMonth), ``healthdcatap:numberOfRecords``,
    ``healthdcatap:numberOfUniqueIndividuals``, ``healthdcatap:hdab`` (the hub as a
    ``foaf:Agent``), ``dcat:keyword`` (its tables' titles), ``dct:type`` (the holder's kind as a
    concept of a hub-local SKOS scheme: the EU dataset-type table has no fitting entry) and
    ``dct:modified`` (when the node published it).

    Each research table is a ``dcat:Dataset`` of its own, joined with ``dct:hasPart`` /
    ``dct:isPartOf``: a table has its own counts and period, which a ``dcat:Distribution`` (a
    downloadable form of the whole) could not carry, and nothing here is downloadable. A table
    dataset lists its variable names as ``dcat:keyword`` (what plain DCAT harvesters index) and
    carries its data dictionary the way HealthDCAT-AP describes variables: CSVW (W3C), through
    ``healthdcatap:hasVariables`` to a ``csvw:Table`` whose ``csvw:tableSchema`` has one
    ``csvw:Column`` per variable (``csvw:name``, ``csvw:title`` the label, ``csvw:datatype`` the
    XSD type, ``dct:type`` its sensitivity class as a concept of a hub-local SKOS scheme). The
    node id is routing, not metadata, and is not in the RDF.

    Sources: HealthDCAT-AP (https://healthdataeu.pages.code.europa.eu/healthdcat-ap/, earlier draft
    https://healthdcat-ap.github.io/) for the namespace ``http://healthdataportal.eu/ns/health#``
    and ``numberOfRecords``, ``numberOfUniqueIndividuals``, ``hdab`` (typed
    ``xsd:nonNegativeInteger`` as in Health-RI's HealthDCAT-AP test data,
    github.com/Health-RI/harvesting-test-data ``dataset_health.ttl``); ``hasVariables`` with CSVW
    tables is the data-dictionary form of the later releases (as implemented by MOLGENIS'
    ``HEALTHDCATAP.HAS_VARIABLES``) and is the property to re-check when the profile is final.
    DCAT-AP 3 (https://semiceu.github.io/DCAT-AP/releases/3.0.0/), DCAT 3
    (https://www.w3.org/TR/vocab-dcat-3/), CSVW (https://www.w3.org/ns/csvw).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rdflib import BNode, Graph, Literal, Namespace, URIRef
from rdflib.namespace import CSVW, DCAT, DCTERMS, FOAF, RDF, SKOS, XSD

HEALTHDCATAP = Namespace("http://healthdataportal.eu/ns/health#")
DCATAP = Namespace("http://data.europa.eu/r5r/")
ACCESS_RIGHT_NON_PUBLIC = URIRef("http://publications.europa.eu/resource/authority/access-right/NON_PUBLIC")
THEME_HEALTH = URIRef("http://publications.europa.eu/resource/authority/data-theme/HEAL")
#: Regulation (EU) 2025/327 on the European Health Data Space.
EHDS_REGULATION = URIRef("http://data.europa.eu/eli/reg/2025/327")

#: Prefixes of both serialisations (the JSON-LD context is exactly these).
PREFIXES: Mapping[str, str] = {
    "dcat": str(DCAT),
    "dct": str(DCTERMS),
    "dcatap": str(DCATAP),
    "foaf": str(FOAF),
    "skos": str(SKOS),
    "csvw": str(CSVW),
    "xsd": str(XSD),
    "healthdcatap": str(HEALTHDCATAP),
}

#: CSVW built-in datatype names a variable may have, and their XSD types in the RDF.
DATATYPES: Mapping[str, URIRef] = {
    "string": XSD.string,
    "integer": XSD.integer,
    "decimal": XSD.decimal,
    "double": XSD.double,
    "boolean": XSD.boolean,
    "date": XSD.date,
    "datetime": XSD.dateTime,
    "time": XSD.time,
}

# Ids go into IRIs, so they are plain tokens; free text has no control characters.
_TOKEN = re.compile(r"[a-z][a-z0-9_]{0,63}")
_MONTH = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")
_UTC_SECOND = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MAX_TEXT = 200


# --------------------------------------------------------------------------------------
# Disclosure-safe counts
# --------------------------------------------------------------------------------------


def safe_count(n: int, *, rounding_base: int, min_cell_count: int) -> int:
    """The publishable form of count ``n``: 0 below ``min_cell_count``, else ``n`` rounded half up
    to a multiple of ``rounding_base``, raised to the first multiple at or above the threshold if
    rounding took it below (a base larger than half the threshold can)."""
    _check_thresholds(rounding_base, min_cell_count)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError("a count must be a non-negative integer")
    if n < min_cell_count:
        return 0
    rounded = (n + rounding_base // 2) // rounding_base * rounding_base
    floor = -(-min_cell_count // rounding_base) * rounding_base  # first multiple >= threshold
    return max(rounded, floor)


def is_safe_count(n: int, *, rounding_base: int, min_cell_count: int) -> bool:
    """Whether ``n`` can be a published count: 0, or at least the threshold and on the grid."""
    return n == 0 or (n >= min_cell_count and n % rounding_base == 0)


def _check_thresholds(rounding_base: int, min_cell_count: int) -> None:
    for value in (rounding_base, min_cell_count):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError("rounding_base and min_cell_count must be positive integers")


# --------------------------------------------------------------------------------------
# What a node publishes
# --------------------------------------------------------------------------------------


def _check_token(value: str, what: str) -> None:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise ValueError(f"{what} must be a lower-case token (a-z, 0-9, _; at most 64 characters)")


def _check_text(value: str, what: str) -> None:
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_TEXT or _CONTROL.search(value):
        raise ValueError(
            f"{what} must be non-empty text of at most {_MAX_TEXT} characters, no control characters"
        )


def _check_count(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer")


@dataclass(frozen=True)
class VariableSummary:
    """One variable of a research table: its name, a label, a CSVW datatype, its sensitivity."""

    name: str
    label: str
    datatype: str
    sensitivity: str

    def __post_init__(self) -> None:
        _check_token(self.name, "variable name")
        _check_text(self.label, "variable label")
        if self.datatype not in DATATYPES:
            raise ValueError(f"variable datatype must be one of: {', '.join(DATATYPES)}")
        _check_token(self.sensitivity, "variable sensitivity")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "datatype": self.datatype,
            "sensitivity": self.sensitivity,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VariableSummary:
        fields = _fields(data, "variable", {"name": str, "label": str, "datatype": str, "sensitivity": str})
        return cls(**fields)


@dataclass(frozen=True)
class TableSummary:
    """One research table: its variables, rows, persons and the months its events span."""

    table: str
    title: str
    variables: tuple[VariableSummary, ...]
    rows: int
    persons: int
    period_start: str | None
    period_end: str | None

    def __post_init__(self) -> None:
        _check_token(self.table, "table name")
        _check_text(self.title, "table title")
        if not isinstance(self.variables, tuple) or not all(
            isinstance(v, VariableSummary) for v in self.variables
        ):
            raise ValueError("table variables must be a tuple of VariableSummary")
        if len({v.name for v in self.variables}) != len(self.variables):
            raise ValueError("a table lists each variable once")
        _check_count(self.rows, "table rows")
        _check_count(self.persons, "table persons")
        _check_period(self.period_start, self.period_end)

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "title": self.title,
            "variables": [v.to_json() for v in self.variables],
            "rows": self.rows,
            "persons": self.persons,
            "period_start": self.period_start,
            "period_end": self.period_end,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TableSummary:
        fields = _fields(
            data,
            "table",
            {
                "table": str,
                "title": str,
                "variables": list,
                "rows": int,
                "persons": int,
                "period_start": (str, type(None)),
                "period_end": (str, type(None)),
            },
        )
        fields["variables"] = tuple(VariableSummary.from_json(v) for v in fields["variables"])
        return cls(**fields)


def _check_period(start: str | None, end: str | None) -> None:
    for month in (start, end):
        if month is not None and (not isinstance(month, str) or not _MONTH.fullmatch(month)):
            raise ValueError("a period month must be 'YYYY-MM'")
    if (start is None) != (end is None):
        raise ValueError("a period has both its months or neither")
    if start is not None and end is not None and start > end:
        raise ValueError("a period cannot end before it starts")


@dataclass(frozen=True)
class DatasetSummary:
    """What one node publishes about its holder's research zone (metadata and counts only).

    Construction refuses a count that is not disclosure-safe under the holder's own thresholds
    (:func:`is_safe_count`): every count a summary holds is one :func:`safe_count` could give.
    """

    holder_id: str
    holder_name: str
    holder_kind: str
    node_id: str
    tables: tuple[TableSummary, ...]
    persons: int
    published_at: str
    min_cell_count: int
    rounding_base: int

    def __post_init__(self) -> None:
        _check_token(self.holder_id, "holder id")
        _check_text(self.holder_name, "holder name")
        _check_token(self.holder_kind, "holder kind")
        _check_text(self.node_id, "node id")
        if not isinstance(self.tables, tuple) or not all(isinstance(t, TableSummary) for t in self.tables):
            raise ValueError("tables must be a tuple of TableSummary")
        if len({t.table for t in self.tables}) != len(self.tables):
            raise ValueError("a summary lists each table once")
        _check_count(self.persons, "persons")
        if not isinstance(self.published_at, str) or not _UTC_SECOND.fullmatch(self.published_at):
            raise ValueError("published_at must be a UTC time 'YYYY-MM-DDTHH:MM:SSZ'")
        try:
            datetime.strptime(self.published_at, "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            raise ValueError("published_at is not a real time") from None
        _check_thresholds(self.rounding_base, self.min_cell_count)
        counts = [self.persons, *(n for t in self.tables for n in (t.rows, t.persons))]
        if not all(
            is_safe_count(n, rounding_base=self.rounding_base, min_cell_count=self.min_cell_count)
            for n in counts
        ):
            raise ValueError("a count is not disclosure-safe (below the threshold or not rounded)")

    @property
    def records(self) -> int:
        """Rows across the tables (a sum of published counts, so itself publishable)."""
        return sum(t.rows for t in self.tables)

    @property
    def period(self) -> tuple[str | None, str | None]:
        """The earliest and latest published month across the tables."""
        starts = [t.period_start for t in self.tables if t.period_start is not None]
        ends = [t.period_end for t in self.tables if t.period_end is not None]
        return (min(starts) if starts else None, max(ends) if ends else None)

    def to_json(self) -> dict[str, Any]:
        return {
            "holder_id": self.holder_id,
            "holder_name": self.holder_name,
            "holder_kind": self.holder_kind,
            "node_id": self.node_id,
            "tables": [t.to_json() for t in self.tables],
            "persons": self.persons,
            "published_at": self.published_at,
            "min_cell_count": self.min_cell_count,
            "rounding_base": self.rounding_base,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DatasetSummary:
        """The summary in ``data`` (a node's ``catalogue`` message body); ValueError, naming no
        value, if a key is missing, unknown or of the wrong type, or a count is not safe."""
        fields = _fields(
            data,
            "dataset summary",
            {
                "holder_id": str,
                "holder_name": str,
                "holder_kind": str,
                "node_id": str,
                "tables": list,
                "persons": int,
                "published_at": str,
                "min_cell_count": int,
                "rounding_base": int,
            },
        )
        fields["tables"] = tuple(TableSummary.from_json(t) for t in fields["tables"])
        return cls(**fields)


def utc_now() -> str:
    """Now, as a :attr:`DatasetSummary.published_at` ('YYYY-MM-DDTHH:MM:SSZ')."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fields(
    data: Mapping[str, Any], what: str, schema: Mapping[str, type | tuple[type, ...]]
) -> dict[str, Any]:
    """``data``'s values, checked against ``schema`` (key -> accepted types). The message names the
    expected keys it misses, never a value or a key it did not expect (both come from outside)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a {what} must be a JSON object")
    missing = sorted(set(schema) - set(data))
    if missing:
        raise ValueError(f"a {what} lacks: {', '.join(missing)}")
    if set(data) - set(schema):
        raise ValueError(f"a {what} has keys that are not part of it")
    for key, types in schema.items():
        value = data[key]
        # bool is an int in Python, never a count here
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
            raise ValueError(f"{what} key {key} has the wrong type")
    return dict(data)


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


# --------------------------------------------------------------------------------------
# The catalogue as HealthDCAT-AP RDF
# --------------------------------------------------------------------------------------


def catalogue_graph(
    summaries: Sequence[DatasetSummary],
    *,
    hub_uri: str,
    catalogue_title: str,
    hub_name: str = "Health data access body",
) -> Graph:
    """The HealthDCAT-AP catalogue of ``summaries`` (one per holder), with IRIs under ``hub_uri``
    (an http(s) URL; see the module docstring for the shape)."""
    base = _base_iri(hub_uri)
    _check_text(catalogue_title, "catalogue title")
    _check_text(hub_name, "hub name")
    holders = [s.holder_id for s in summaries]
    if len(set(holders)) != len(holders):
        raise ValueError("the catalogue has one summary per holder")

    graph = Graph()
    for prefix, namespace in PREFIXES.items():
        graph.bind(prefix, Namespace(namespace), replace=True)

    hdab = URIRef(f"{base}/agent/hdab")
    graph.add((hdab, RDF.type, FOAF.Agent))
    graph.add((hdab, FOAF.name, Literal(hub_name)))

    catalog = URIRef(f"{base}/catalogue")
    graph.add((catalog, RDF.type, DCAT.Catalog))
    graph.add((catalog, DCTERMS.title, Literal(catalogue_title)))
    graph.add((catalog, DCTERMS.description, Literal(_catalogue_description(len(summaries)))))
    graph.add((catalog, DCTERMS.publisher, hdab))
    graph.add((catalog, DCATAP.applicableLegislation, EHDS_REGULATION))
    if summaries:
        latest = max(s.published_at for s in summaries)
        graph.add((catalog, DCTERMS.modified, Literal(latest, datatype=XSD.dateTime)))

    for summary in sorted(summaries, key=lambda s: s.holder_id):
        graph.add((catalog, DCAT.dataset, _add_holder_dataset(graph, summary, base=base, hdab=hdab)))
    return graph


def _base_iri(hub_uri: str) -> str:
    if not isinstance(hub_uri, str) or not re.fullmatch(
        r"https?://[A-Za-z0-9.\-]+(:[0-9]+)?(/[A-Za-z0-9._~\-/]*)?", hub_uri
    ):
        raise ValueError("hub_uri must be an http(s) URL without query, fragment or spaces")
    return hub_uri.rstrip("/")


def _catalogue_description(holders: int) -> str:
    return (
        f"Pseudonymised health data of {holders} data holder(s), each kept at its own node and "
        "available for secondary use only under a data permit. Counts are published by each node "
        "under its own disclosure thresholds."
    )


def _add_holder_dataset(graph: Graph, summary: DatasetSummary, *, base: str, hdab: URIRef) -> URIRef:
    dataset = URIRef(f"{base}/dataset/{summary.holder_id}")
    publisher = URIRef(f"{base}/agent/{summary.holder_id}")
    graph.add((publisher, RDF.type, FOAF.Agent))
    graph.add((publisher, FOAF.name, Literal(summary.holder_name)))

    title = f"{summary.holder_name}: research data"
    tables = ", ".join(t.title for t in summary.tables) or "no tables yet"
    description = (
        f"Pseudonymised research data held by {summary.holder_name} ({_words(summary.holder_kind)}): {tables}. "
        f"Counts are rounded to multiples of {summary.rounding_base}; "
        f"a count below {summary.min_cell_count} is published as 0."
    )
    _add_common(graph, dataset, title=title, description=description, publisher=publisher, hdab=hdab)
    graph.add((dataset, DCTERMS.type, _concept(graph, base, "holder-kind", summary.holder_kind)))
    graph.add((dataset, DCTERMS.modified, Literal(summary.published_at, datatype=XSD.dateTime)))
    _add_counts(graph, dataset, records=summary.records, persons=summary.persons)
    _add_period(graph, dataset, *summary.period)
    for table in summary.tables:
        graph.add((dataset, DCAT.keyword, Literal(table.title)))
        part = _add_table_dataset(graph, summary, table, base=base, publisher=publisher, hdab=hdab)
        graph.add((dataset, DCTERMS.hasPart, part))
        graph.add((part, DCTERMS.isPartOf, dataset))
    return dataset


def _add_table_dataset(
    graph: Graph, summary: DatasetSummary, table: TableSummary, *, base: str, publisher: URIRef, hdab: URIRef
) -> URIRef:
    iri = f"{base}/dataset/{summary.holder_id}/{table.table}"
    dataset = URIRef(iri)
    description = f"{table.title} at {summary.holder_name}: {len(table.variables)} variable(s)."
    _add_common(graph, dataset, title=table.title, description=description, publisher=publisher, hdab=hdab)
    _add_counts(graph, dataset, records=table.rows, persons=table.persons)
    _add_period(graph, dataset, table.period_start, table.period_end)

    csv_table = URIRef(f"{iri}/variables")
    schema = URIRef(f"{iri}/variables/schema")
    graph.add((dataset, HEALTHDCATAP.hasVariables, csv_table))
    graph.add((csv_table, RDF.type, CSVW.Table))
    graph.add((csv_table, DCTERMS.title, Literal(f"Variables of {table.title}")))
    graph.add((csv_table, CSVW.tableSchema, schema))
    graph.add((schema, RDF.type, CSVW.Schema))
    for variable in table.variables:
        graph.add((dataset, DCAT.keyword, Literal(variable.name)))
        column = URIRef(f"{iri}/variables/{variable.name}")
        graph.add((schema, CSVW.column, column))
        graph.add((column, RDF.type, CSVW.Column))
        graph.add((column, CSVW.name, Literal(variable.name)))
        graph.add((column, CSVW.title, Literal(variable.label)))
        graph.add((column, CSVW.datatype, DATATYPES[variable.datatype]))
        graph.add((column, DCTERMS.type, _concept(graph, base, "sensitivity", variable.sensitivity)))
    return dataset


def _add_common(
    graph: Graph, dataset: URIRef, *, title: str, description: str, publisher: URIRef, hdab: URIRef
) -> None:
    graph.add((dataset, RDF.type, DCAT.Dataset))
    graph.add((dataset, DCTERMS.identifier, Literal(str(dataset))))
    graph.add((dataset, DCTERMS.title, Literal(title)))
    graph.add((dataset, DCTERMS.description, Literal(description)))
    graph.add((dataset, DCTERMS.publisher, publisher))
    graph.add((dataset, DCTERMS.accessRights, ACCESS_RIGHT_NON_PUBLIC))
    graph.add((dataset, DCAT.theme, THEME_HEALTH))
    graph.add((dataset, DCATAP.applicableLegislation, EHDS_REGULATION))
    graph.add((dataset, HEALTHDCATAP.hdab, hdab))


def _add_counts(graph: Graph, dataset: URIRef, *, records: int, persons: int) -> None:
    graph.add((dataset, HEALTHDCATAP.numberOfRecords, Literal(records, datatype=XSD.nonNegativeInteger)))
    graph.add(
        (dataset, HEALTHDCATAP.numberOfUniqueIndividuals, Literal(persons, datatype=XSD.nonNegativeInteger))
    )


def _add_period(graph: Graph, dataset: URIRef, start: str | None, end: str | None) -> None:
    if start is None or end is None:
        return
    period = BNode()
    graph.add((dataset, DCTERMS.temporal, period))
    graph.add((period, RDF.type, DCTERMS.PeriodOfTime))
    graph.add((period, DCAT.startDate, Literal(start, datatype=XSD.gYearMonth)))
    graph.add((period, DCAT.endDate, Literal(end, datatype=XSD.gYearMonth)))


def _concept(graph: Graph, base: str, scheme_name: str, code: str) -> URIRef:
    """A concept of a hub-local SKOS scheme (``<hub>/vocab/<scheme>/<code>``), declared once."""
    scheme = URIRef(f"{base}/vocab/{scheme_name}")
    concept = URIRef(f"{base}/vocab/{scheme_name}/{code}")
    graph.add((scheme, RDF.type, SKOS.ConceptScheme))
    graph.add((concept, RDF.type, SKOS.Concept))
    graph.add((concept, SKOS.inScheme, scheme))
    graph.add((concept, SKOS.prefLabel, Literal(_words(code))))
    return concept


def _words(token: str) -> str:
    return token.replace("_", " ")


# --------------------------------------------------------------------------------------
# Serialisations
# --------------------------------------------------------------------------------------


def catalogue_jsonld(graph: Graph) -> str:
    """``graph`` as JSON-LD, compacted with the context :data:`PREFIXES` (inline, so a reader
    fetches nothing)."""
    return graph.serialize(format="json-ld", context=dict(PREFIXES), auto_compact=True, indent=1)


def catalogue_turtle(graph: Graph) -> str:
    return graph.serialize(format="turtle")


def dataset_iris(graph: Graph) -> Iterable[URIRef]:
    """The holder datasets of a catalogue graph (those its ``dcat:Catalog`` lists)."""
    for catalog in graph.subjects(RDF.type, DCAT.Catalog):
        for dataset in graph.objects(catalog, DCAT.dataset):
            if isinstance(dataset, URIRef):
                yield dataset
