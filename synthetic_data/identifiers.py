"""Swedish personal identity numbers for synthetic persons.

Only Skatteverket's published *test* personnummer are used for synthetic persons, so that
no real person's number is ever attached to a fake diagnosis. A samordningsnummer
(coordination number) is derived from a test number by adding 60 to the day of birth and
recomputing the Luhn check digit. A population larger than the list falls back to
generated numbers; callers report that.

Forms (all refer to the same person):

* ``YYYYMMDDNNNC``  12 digits (canonical here)
* ``YYYYMMDD-NNNC`` 12 digits with separator
* ``YYMMDD-NNNC``   10 digits; separator ``+`` when the person is 100 or older
"""

from __future__ import annotations

from datetime import date
from functools import cache
from pathlib import Path

TEST_LIST = Path(__file__).resolve().parent / "skatteverket_testpersonnummer.txt"

PERSONNUMMER_SYSTEM = "http://electronichealth.se/identifier/personnummer"
SAMORDNINGSNUMMER_SYSTEM = "http://electronichealth.se/identifier/samordningsnummer"


def luhn_digit(nine: str) -> int:
    """Luhn check digit over the first nine digits of the 10-digit form.

    >>> luhn_digit("811218987")
    6
    """
    total = 0
    for i, ch in enumerate(nine):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d // 10 + d % 10
    return (10 - total % 10) % 10


def with_check_digit(first_eleven: str) -> str:
    """12-digit number from its first 11 digits (YYYYMMDDNNN) plus the computed Luhn digit."""
    return first_eleven + str(luhn_digit(first_eleven[2:11]))


def is_valid_luhn(twelve: str) -> bool:
    return luhn_digit(twelve[2:11]) == int(twelve[11])


def is_samordningsnummer(twelve: str) -> bool:
    return int(twelve[6:8]) > 60


def birth_date(twelve: str) -> date:
    """Birth date encoded in a 12-digit personnummer or samordningsnummer."""
    day = int(twelve[6:8])
    if day > 60:
        day -= 60
    return date(int(twelve[0:4]), int(twelve[4:6]), day)


def sex(twelve: str) -> str:
    """'male' or 'female' from the 9th digit of the 10-digit form (odd = male)."""
    return "male" if int(twelve[10]) % 2 == 1 else "female"


def to_samordningsnummer(twelve: str) -> str:
    """Samordningsnummer derived from a personnummer: day + 60, Luhn digit recomputed."""
    day = int(twelve[6:8])
    if day > 60:
        raise ValueError("already a samordningsnummer")
    return with_check_digit(twelve[:6] + f"{day + 60:02d}" + twelve[8:11])


def age_on(twelve: str, when: date) -> int:
    born = birth_date(twelve)
    return when.year - born.year - ((when.month, when.day) < (born.month, born.day))


def format_number(twelve: str, form: str, *, on: date) -> str:
    """Render a 12-digit number in one of the delivered forms.

    ``form`` is ``"12"`` (YYYYMMDDNNNC), ``"12-"`` (YYYYMMDD-NNNC) or ``"10"``
    (YYMMDD-NNNC, ``+`` instead of ``-`` for persons aged 100 or more on ``on``).
    Works for defective numbers too (it never parses the date).
    """
    if form == "12":
        return twelve
    if form == "12-":
        return f"{twelve[:8]}-{twelve[8:]}"
    if form == "10":
        century_sep = "-"
        try:
            if age_on(twelve, on) >= 100:
                century_sep = "+"
        except ValueError:  # impossible date (an injected defect): keep '-'
            pass
        return f"{twelve[2:8]}{century_sep}{twelve[8:]}"
    raise ValueError(f"unknown identifier form {form!r}")


@cache
def test_numbers() -> tuple[str, ...]:
    """Skatteverket's test personnummer (12 digits), in file order."""
    numbers = tuple(
        line.strip() for line in TEST_LIST.read_text(encoding="ascii").splitlines() if line.strip()
    )
    bad = sum(1 for n in numbers if len(n) != 12 or not n.isdigit() or not is_valid_luhn(n))
    if bad:
        raise ValueError(f"{TEST_LIST.name}: {bad} lines are not valid 12-digit personnummer")
    return numbers


def generated_number(born: date, serial: int) -> str:
    """A Luhn-valid personnummer that is *not* from the test list (fallback only).

    ``serial`` is 1..999: Skatteverket never issues serial 000, and the parser refuses it
    (``identifier.invalid_serial``), so a generated 000 would be an undeclared defect.
    Callers must skip any value that collides with a number already in use.
    """
    if not 1 <= serial <= 999:
        raise ValueError("serial number must be 1..999 (000 is never issued)")
    return with_check_digit(f"{born:%Y%m%d}{serial:03d}")
