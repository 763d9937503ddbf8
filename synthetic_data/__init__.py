"""Seeded synthetic deliveries (NDR register, PROM/PREM, regional FHIR) and the defect manifest.

Public API:

* ``synthetic_data.generate.generate(settings=None, *, seed, persons, defect_rate, extract_date)``
  -> ``GenerationSummary`` (counts only)
* ``synthetic_data.fhir.iter_fhir_resources(*, seed, persons, region=None, extract_date)``
  -> stream of valid FHIR R4 resources (dicts), for benchmarks
* ``edge.commands.generate.generate``: the ``hdp generate`` command

Modules import lazily from here; importing the package itself is cheap.
"""
