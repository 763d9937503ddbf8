"""Outcome measures from PROM/PREM data: EQ-5D scoring, patient-survey dimensions, change over time.

Pure logic over Arrow (no database, no I/O but reading the declarative value sets in
schemas/valuesets/):

* :mod:`pipelines.outcomes.valuesets` - EQ-5D value sets as cited data, validated when loaded;
* :mod:`pipelines.outcomes.scoring` - health profile, level sum, EQ VAS, indices, reason counts;
* :mod:`pipelines.outcomes.survey` - share of positive answers per patient-survey dimension;
* :mod:`pipelines.outcomes.change` - baseline/follow-up pairs per person and their change.
"""
