"""Quality gate: a declarative check library (schemas/checks), evaluated by DuckDB pushdown,
rendered as Great Expectations Data Docs, kept per run, summarised as a release's quality label.

Public entry points (import them from their modules; this package imports nothing heavy):

* ``pipelines.quality.gate.run_gate(zone, *, holder_id=None, release_dir=None, run_id, settings=None)``
* ``pipelines.quality.results.raise_for_blocking(result)`` / ``QualityGateFailed``
* ``pipelines.quality.label.quality_label(release_dir)``
* ``edge.commands.quality:quality`` (``hdp quality ...``)
"""
