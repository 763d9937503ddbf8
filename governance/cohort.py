"""Cohort criteria of an extract request: a small, closed condition language.

A request's ``cohort_criteria`` maps catalogue variables to one condition each::

    {"register_visit.diabetes_type": {"in": ["typ2"]},
     "register_visit.birth_year": {"between": [1940, 1970]},
     "condition.code": {"in": ["E11.9", "E11.6"]}}

A person belongs to the cohort when, for every table named in the criteria, at least one of
their rows in that table meets all of that table's conditions. The release then holds only
cohort members. Parsing is strict (unknown operators and malformed operands are refused), and
values are only ever passed to SQL as bound parameters.

>>> [str(c) for c in parse({"register_visit.birth_year": {">=": 1950}})]
['register_visit.birth_year >= ?']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OPERATORS = ("in", "between", "=", ">=", "<=", ">", "<", "is_null")


class InvalidCriteria(ValueError):
    """Criteria that cannot be applied; the message names the variable and the rule, never a value."""


@dataclass(frozen=True)
class Condition:
    table: str
    column: str
    op: str
    operands: tuple[Any, ...]

    def sql(self, alias: str) -> str:
        """A predicate over ``alias`` with ``?`` placeholders for :attr:`operands`."""
        col = f'{alias}."{self.column}"'
        if self.op == "in":
            return f"{col} IN ({', '.join('?' for _ in self.operands)})"
        if self.op == "between":
            return f"{col} BETWEEN ? AND ?"
        if self.op == "is_null":
            return f"{col} IS NULL" if self.operands[0] else f"{col} IS NOT NULL"
        return f"{col} {self.op} ?"

    def __str__(self) -> str:
        return f"{self.table}.{self.column} {self.op} ?"


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def parse(criteria: Mapping[str, Any] | None) -> list[Condition]:
    """Validate criteria and return their conditions (empty when there are none)."""
    if not criteria:
        return []
    if not isinstance(criteria, Mapping):
        raise InvalidCriteria("cohort criteria must be an object: variable -> condition")
    out = []
    for variable, condition in sorted(criteria.items()):
        table, _, column = str(variable).partition(".")
        if not (table.isidentifier() and column.isidentifier()):
            raise InvalidCriteria(f"criterion {variable!r} is not of the form table.column")
        if not isinstance(condition, Mapping) or len(condition) != 1:
            raise InvalidCriteria(f"criterion on {variable} must be one operator: {', '.join(OPERATORS)}")
        ((op, operand),) = condition.items()
        if op == "in":
            if (
                not isinstance(operand, list)
                or not operand
                or not all(_scalar(v) for v in operand)
                or len(operand) > 1000
            ):
                raise InvalidCriteria(f"'in' on {variable} needs a list of 1-1000 plain values")
            operands = tuple(operand)
        elif op == "between":
            if not isinstance(operand, list) or len(operand) != 2 or not all(_scalar(v) for v in operand):
                raise InvalidCriteria(f"'between' on {variable} needs [low, high]")
            operands = tuple(operand)
        elif op == "is_null":
            if not isinstance(operand, bool):
                raise InvalidCriteria(f"'is_null' on {variable} needs true or false")
            operands = (operand,)
        elif op in OPERATORS:
            if not _scalar(operand):
                raise InvalidCriteria(f"'{op}' on {variable} needs one plain value")
            operands = (operand,)
        else:
            raise InvalidCriteria(f"unknown operator on {variable}; use one of {', '.join(OPERATORS)}")
        out.append(Condition(table, column, op, operands))
    return out


def by_table(conditions: list[Condition]) -> dict[str, list[Condition]]:
    grouped: dict[str, list[Condition]] = {}
    for c in conditions:
        grouped.setdefault(c.table, []).append(c)
    return grouped
