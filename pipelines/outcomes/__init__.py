"""Outcome measures from PROM/PREM data: EQ-5D scoring, patient-survey dimensions, change over time.

Pure logic over Arrow (no database, no I/O but reading the declarative value sets in
schemas/valuesets/ and survey configurations in schemas/surveys/):

* :mod:`pipelines.outcomes.valuesets` - EQ-5D value sets as cited data, validated when loaded;
* :mod:`pipelines.outcomes.scoring` - health profile, level sum, EQ VAS, indices, reason counts;
* :mod:`pipelines.outcomes.sql` - the same profile, level sum and indices as DuckDB SQL expressions,
  and whether a patient-survey answer is positive (the research zone's ``prem_*_positive``);
* :mod:`pipelines.outcomes.survey` - share of positive answers per patient-survey dimension
  (configured in schemas/surveys/);
* :mod:`pipelines.outcomes.change` - baseline/follow-up pairs per person and their change;
* :mod:`pipelines.outcomes.keyfigures` - key figures per holder and period under disclosure control.
"""

from pipelines.outcomes.change import (
    YEAR_ON_YEAR,
    ChangeColumns,
    ChangeResult,
    PairingRule,
    pair_changes,
    paretian_classification,
)
from pipelines.outcomes.keyfigures import (
    EQ5D_COLUMNS,
    PROM_COLUMNS,
    Figure,
    Improvement,
    KeyFigureColumns,
    KeyFigures,
    PeriodFigures,
    key_figures,
    mean_ci,
    threshold_for,
)
from pipelines.outcomes.scoring import (
    EQ5D_RESPONSE,
    PROM_RESPONSE,
    REASONS,
    EQ5DColumns,
    EQ5DScores,
    index_column,
    score_eq5d,
    split_profiles,
)
from pipelines.outcomes.sql import index_sql, level_sum_sql, profile_sql, score_sql, survey_positive_sql
from pipelines.outcomes.survey import (
    PREM_DEFAULT,
    SurveyConfig,
    SurveyDimension,
    SurveyError,
    load_survey,
    survey_shares,
)
from pipelines.outcomes.valuesets import ValueSet, ValueSetError, available_value_sets, load_value_set

__all__ = [
    "EQ5D_COLUMNS",
    "PROM_COLUMNS",
    "Figure",
    "Improvement",
    "KeyFigureColumns",
    "KeyFigures",
    "PeriodFigures",
    "key_figures",
    "mean_ci",
    "threshold_for",
    "EQ5D_RESPONSE",
    "PREM_DEFAULT",
    "PROM_RESPONSE",
    "REASONS",
    "YEAR_ON_YEAR",
    "ChangeColumns",
    "ChangeResult",
    "EQ5DColumns",
    "EQ5DScores",
    "PairingRule",
    "SurveyConfig",
    "SurveyDimension",
    "SurveyError",
    "ValueSet",
    "ValueSetError",
    "available_value_sets",
    "index_column",
    "index_sql",
    "level_sum_sql",
    "load_survey",
    "load_value_set",
    "pair_changes",
    "paretian_classification",
    "profile_sql",
    "score_eq5d",
    "score_sql",
    "split_profiles",
    "survey_positive_sql",
    "survey_shares",
]
