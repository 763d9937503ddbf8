"""Swedish personnummer and samordningsnummer (and interim numbers): parse, validate, normalise.

Accepted forms (surrounding whitespace ignored)::

    YYYYMMDDNNNC     12 digits
    YYYYMMDD-NNNC    12 digits with '-'
    YYYYMMDD+NNNC    12 digits with '+': the person turns 100 in the reference year or earlier
    YYMMDDNNNC       10 digits, no separator (read like '-')
    YYMMDD-NNNC      10 digits, person younger than 100 at the reference date
    YYMMDD+NNNC      10 digits, person turning 100 in the reference year or earlier

``C`` is a Luhn check digit over the 10-digit form ``YYMMDDNNN``. The ninth digit (last
of ``NNN``) is odd for men, even for women. A samordningsnummer (coordination number)
adds 60 to the day of month. The serial number ``NNN`` runs from 001 to 999: Skatteverket
never issues 000, so a Luhn-valid number with serial 000 is refused as
``identifier.invalid_serial`` (checked after the date and the check digit, so a mistyped
number is still reported as a checksum error).

The '+' separator. Skatteverket replaces '-' by '+' from the year a person turns 100
(folkbokföringslagen 18 § 2 st.; Skatteverket, rättslig vägledning "Personnummer", 2015.10).
A 10-digit form with '+' therefore means the latest year ending in ``YY`` at least 100 years
before the reference year (by calendar year, not by birthday). A 12-digit form with '+' carries
its century, so the '+' is only checked: the person must turn 100 in the reference year or
earlier, else ``identifier.plus_under_100``. '-' and no separator keep the exact-age rule (the
person is 0-99 on the reference date), and a 12-digit form with '-' is accepted at any age.

Interim numbers (``YYMMDD-Xnnn``, "T-nummer", "interimistiskt personnummer"): a letter
``X`` in T R S U W X J K L M N replaces the first digit of the serial, and counts as 1 in the
Luhn check (personnummer/meta, package specification "Interim-Number", commit c44a844). They
are *not* issued by Skatteverket: universities (Ladok) and other organisations assign them to
people without a personnummer or samordningsnummer, and a number is unique only within its
issuer (KTH and Stockholm University describe them as valid only at the university). They are
accepted (kind ``interim``, normalised ``YYYYMMDDXnnC``, the real day of month, never + 60) only
with ``allow_interim=True``; otherwise a well-formed, Luhn-valid one is refused as
``identifier.interim_not_accepted`` (after every other check, so a malformed one keeps its
specific reason). The pipeline passes ``HDP_ACCEPT_INTERIM_NUMBERS`` (default off).

Errors never contain the value itself (it is a direct identifier): only a reason code.

Two paths with identical results (a property test holds them equal):

* :func:`parse` for one value, plain Python, easy to read;
* :func:`parse_batch` for many values, vectorised with numpy over Arrow arrays, used by the
  pipeline on the *distinct* identifiers of a table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

PERSONNUMMER: Final = "personnummer"
SAMORDNINGSNUMMER: Final = "samordningsnummer"
INTERIM: Final = "interim"
IdentifierKind = Literal["personnummer", "samordningsnummer", "interim"]

BAD_CHECKSUM = "identifier.bad_checksum"
IMPOSSIBLE_DATE = "identifier.impossible_date"
UNKNOWN_FORMAT = "identifier.unknown_format"
MISSING = "identifier.missing"
INVALID_SERIAL = "identifier.invalid_serial"
PLUS_UNDER_100 = "identifier.plus_under_100"
INTERIM_NOT_ACCEPTED = "identifier.interim_not_accepted"
REASON_CODES = frozenset(
    {
        BAD_CHECKSUM,
        IMPOSSIBLE_DATE,
        UNKNOWN_FORMAT,
        MISSING,
        INVALID_SERIAL,
        PLUS_UNDER_100,
        INTERIM_NOT_ACCEPTED,
    }
)

#: What each reason code means, in words (never containing the value, nor a quote: the texts go
#: into SQL string literals): for messages and reports.
REASON_TEXT = {
    BAD_CHECKSUM: "check digit does not match (Luhn)",
    IMPOSSIBLE_DATE: "birth date part is not a possible date",
    UNKNOWN_FORMAT: "not a personnummer/samordningsnummer in any accepted form",
    MISSING: "identifier is empty",
    INVALID_SERIAL: "serial number 000 is never issued",
    PLUS_UNDER_100: "the plus separator of a 12-digit form, but the person turns 100 after the reference year",
    INTERIM_NOT_ACCEPTED: "an interim number (letter in the serial); accepted only with HDP_ACCEPT_INTERIM_NUMBERS",
}

#: Whitespace tolerated around a value (ASCII only: anything more exotic is a format error).
_WS = " \t\r\n\x0b\x0c"
#: The letters an interim number may carry in place of the serial's first digit.
INTERIM_LETTERS: Final = "TRSUWXJKLMN"
_FORM = re.compile(rf"([0-9]{{2}})?([0-9]{{6}})([-+])?([0-9]{{4}}|[{INTERIM_LETTERS}][0-9]{{3}})")


class InvalidIdentifier(ValueError):
    """An identifier that cannot be used. The message never contains the value."""

    def __init__(self, reason_code: str) -> None:
        self.reason_code = reason_code
        super().__init__(f"{reason_code}: {REASON_TEXT[reason_code]}")


@dataclass(frozen=True)
class Identifier:
    """A validated identifier. ``normalised`` is the 12-character form without separator (12
    digits; an interim number keeps its letter)."""

    normalised: str
    kind: IdentifierKind
    sex: Literal["F", "M"]
    birth_date: date

    def __repr__(self) -> str:  # keep identifiers out of tracebacks and debug logs
        return f"Identifier(kind={self.kind!r}, <redacted>)"

    def ten_digit(self, *, reference_date: date | None = None) -> str:
        """The 10-digit form with '-' (or '+' from the year of the 100th birthday, as Skatteverket
        writes it)."""
        ref = reference_date or date.today()
        plus = ref.year - self.birth_date.year >= 100
        return f"{self.normalised[2:8]}{'+' if plus else '-'}{self.normalised[8:]}"


def luhn_ok(ten_digits: str) -> bool:
    """Luhn check over a 10-digit string (doubling every other digit from the left).

    >>> luhn_ok("8112189876")
    True
    """
    total = 0
    for i, ch in enumerate(ten_digits):
        d = ord(ch) - 48
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def luhn_digit(nine_digits: str) -> str:
    """The check digit that makes ``nine_digits`` + digit pass :func:`luhn_ok`."""
    for c in "0123456789":
        if luhn_ok(nine_digits + c):
            return c
    raise AssertionError("unreachable: one of ten digits always satisfies Luhn")


def _is_leap(y: int) -> bool:
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _century_year(yy: int, month: int, day: int, plus: bool, ref: date) -> int:
    """Full birth year for a 10-digit form. '-' (or none): the most recent year ending in ``yy``
    whose (month, day) is not after the reference date. '+': the most recent year ending in
    ``yy`` at least 100 years before the reference year (the '+' is written from the year of the
    100th birthday, so the birthday need not have passed)."""
    year = ref.year - ((ref.year - yy) % 100)
    if plus:
        return year - 100
    if (month, day) > (ref.month, ref.day) and year == ref.year:
        year -= 100
    return year


def parse(
    value: str | None, *, reference_date: date | None = None, allow_interim: bool = False
) -> Identifier:
    """Parse one identifier in any accepted form; raise :class:`InvalidIdentifier`.

    ``reference_date`` (default today) decides the century of 10-digit forms and is the
    latest possible birth date. ``allow_interim`` accepts interim numbers (kind ``interim``).
    """
    if value is None:
        raise InvalidIdentifier(MISSING)
    s = value.strip(_WS)
    if not s:
        raise InvalidIdentifier(MISSING)
    m = _FORM.fullmatch(s)
    if m is None:
        raise InvalidIdentifier(UNKNOWN_FORMAT)
    cc, yymmdd, sep, tail = m.groups()
    ref = reference_date or date.today()
    yy, month, raw_day = int(yymmdd[:2]), int(yymmdd[2:4]), int(yymmdd[4:6])
    interim = not tail[0].isdigit()
    kind: IdentifierKind = INTERIM if interim else PERSONNUMMER
    day = raw_day
    if raw_day > 60:
        if interim:  # an interim number carries the real day of month
            raise InvalidIdentifier(IMPOSSIBLE_DATE)
        kind, day = SAMORDNINGSNUMMER, raw_day - 60
    if not 1 <= month <= 12 or day < 1:
        raise InvalidIdentifier(IMPOSSIBLE_DATE)
    year = int(cc + yymmdd[:2]) if cc is not None else _century_year(yy, month, day, sep == "+", ref)
    max_day = 29 if month == 2 and _is_leap(year) else _DAYS[month - 1]
    if day > max_day:
        raise InvalidIdentifier(IMPOSSIBLE_DATE)
    birth = date(year, month, day)
    if birth > ref:
        raise InvalidIdentifier(IMPOSSIBLE_DATE)
    if sep == "+" and cc is not None and ref.year - year < 100:
        raise InvalidIdentifier(PLUS_UNDER_100)
    if not luhn_ok(yymmdd + ("1" + tail[1:] if interim else tail)):
        raise InvalidIdentifier(BAD_CHECKSUM)
    if tail[:3] == "000":
        raise InvalidIdentifier(INVALID_SERIAL)
    if interim and not allow_interim:
        raise InvalidIdentifier(INTERIM_NOT_ACCEPTED)
    return Identifier(
        normalised=f"{year:04d}{yymmdd[2:]}{tail}",
        kind=kind,
        sex="M" if int(tail[2]) % 2 else "F",
        birth_date=birth,
    )


def try_parse(
    value: str | None, *, reference_date: date | None = None, allow_interim: bool = False
) -> Identifier | str:
    """:func:`parse`, returning the reason code instead of raising."""
    try:
        return parse(value, reference_date=reference_date, allow_interim=allow_interim)
    except InvalidIdentifier as exc:
        return exc.reason_code


# --------------------------------------------------------------------------------------
# Vectorised path
# --------------------------------------------------------------------------------------

#: Columns of the table :func:`parse_batch` returns (one row per input value, same order).
BATCH_SCHEMA = pa.schema(
    [
        ("normalised", pa.string()),  # 12 digits, null when invalid
        ("kind", pa.string()),
        ("sex", pa.string()),
        ("birth_date", pa.date32()),
        ("reason_code", pa.string()),  # null when valid
    ]
)

_CUM_DAYS = np.array([0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334], dtype=np.int64)


def _days_from_civil(
    y: npt.NDArray[np.integer], m: npt.NDArray[np.integer], d: npt.NDArray[np.integer]
) -> npt.NDArray[np.int64]:
    """Days since 1970-01-01 for valid (y, m, d) arrays (proleptic Gregorian)."""
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    doy = _CUM_DAYS[m - 1] + d - 1 + ((m > 2) & leap)
    yp = y - 1
    days_before_year = (
        365 * (y - 1970) + (yp // 4 - yp // 100 + yp // 400) - (1969 // 4 - 1969 // 100 + 1969 // 400)
    )
    return np.asarray(days_before_year + doy, dtype=np.int64)


@dataclass(frozen=True)
class _Forms:
    """The shape of each value (one entry per value) and its digits as an ``n x 12`` matrix."""

    missing: npt.NDArray[np.bool_]
    unknown: npt.NDArray[np.bool_]  # not in any accepted form (and not missing)
    plus: npt.NDArray[np.bool_]  # written with '+' (100 or older)
    twelve: npt.NDArray[np.bool_]  # 12-digit form (century given)
    interim: npt.NDArray[np.bool_]  # a letter in place of the serial's first digit
    #: 12 ASCII characters per value: 10-digit forms left-padded with "00", unaccepted forms all "0"
    padded: pa.StringArray
    #: ``padded`` as int32 digits, an interim letter read as 1 (its value in the Luhn check):
    #: small enough to be cheap, wide enough for year arithmetic
    digits: npt.NDArray[np.int32]


@dataclass(frozen=True)
class _BirthDates:
    """Birth date parts of every value; ``days`` is 1970-01-01 wherever ``possible`` is False."""

    year: npt.NDArray[np.int64]
    samordningsnummer: npt.NDArray[np.bool_]  # day of month + 60
    possible: npt.NDArray[np.bool_]  # a real calendar date, not after the reference date
    days: npt.NDArray[np.int64]  # since 1970-01-01


def _string_array(values: pa.Array | pa.ChunkedArray | Sequence[str | None]) -> pa.StringArray:
    arr = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(list(values), pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], pa.string())
    if not pa.types.is_string(arr.type):
        arr = arr.cast(pa.string())
    return arr


def _bools(arr: pa.Array, null_as: bool) -> npt.NDArray[np.bool_]:
    return np.asarray(pc.fill_null(arr, null_as), dtype=bool)


def _digit_matrix(padded: pa.StringArray) -> npt.NDArray[np.int32]:
    """The 12 ASCII digits of each value of ``padded`` as an ``n x 12`` int32 matrix."""
    n = len(padded)
    if not n:
        return np.zeros((0, 12), dtype=np.int32)
    offsets = np.frombuffer(padded.buffers()[1], dtype=np.int32, count=n + 1, offset=padded.offset * 4)
    raw = np.frombuffer(padded.buffers()[2], dtype=np.uint8)
    if offsets[n] - offsets[0] == 12 * n and bool(np.all(np.diff(offsets) == 12)):
        # every value is 12 bytes (the usual case): the data buffer *is* an n x 12 matrix
        ascii_digits = raw[offsets[0] : offsets[n]].reshape(n, 12)
    else:
        ascii_digits = raw[offsets[:-1, None] + np.arange(12)[None, :]]
    return np.subtract(ascii_digits, ord("0"), dtype=np.int32)


def _forms(arr: pa.StringArray) -> _Forms:
    """Sort each value into missing / unknown form / accepted form, and line up its digits."""
    stripped = pc.utf8_trim(arr, characters=_WS)
    missing = _bools(pc.equal(pc.binary_length(stripped), 0), True)
    form_ok = (
        _bools(
            pc.match_substring_regex(
                stripped, rf"^[0-9]{{6}}([0-9]{{2}})?[-+]?[0-9{INTERIM_LETTERS}][0-9]{{3}}$"
            ),
            False,
        )
        & ~missing
    )
    plus = _bools(pc.match_substring(stripped, "+"), False) & form_ok
    # plain substring replaces: a regex replace costs several times more on a million values
    digits_only = pc.replace_substring(
        pc.replace_substring(pc.if_else(pa.array(form_ok), stripped, pa.scalar("000000000000")), "-", ""),
        "+",
        "",
    )
    twelve = np.asarray(pc.utf8_length(digits_only), dtype=np.int64) == 12
    padded = pc.utf8_lpad(digits_only, 12, "0")
    unknown = ~form_ok & ~missing
    digits = _digit_matrix(padded)
    interim = digits[:, 8] > 9  # an ASCII letter, not a digit
    if interim.any():
        digits[:, 8] = np.where(interim, 1, digits[:, 8])
    return _Forms(missing, unknown, plus, twelve, interim, padded, digits)


def _birth_dates(forms: _Forms, ref: date) -> _BirthDates:
    """Birth dates, the century of 10-digit forms decided as :func:`_century_year` does."""
    dm = forms.digits
    yy = dm[:, 2] * 10 + dm[:, 3]
    month = dm[:, 4] * 10 + dm[:, 5]
    raw_day = dm[:, 6] * 10 + dm[:, 7]
    samord = raw_day > 60
    day = np.where(samord, raw_day - 60, raw_day)
    latest = ref.year - ((ref.year - yy) % 100)
    after_ref = (month * 100 + day) > (ref.month * 100 + ref.day)
    year10 = np.where(after_ref & (latest == ref.year), latest - 100, latest)
    year10 = np.where(forms.plus, latest - 100, year10)
    year = np.where(forms.twelve, dm[:, 0] * 1000 + dm[:, 1] * 100 + yy, year10).astype(np.int64)

    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_ok = (month >= 1) & (month <= 12)
    mdays = np.array(_DAYS, dtype=np.int64)[np.clip(month, 1, 12) - 1] + ((month == 2) & leap)
    # an interim number carries the real day of month (never + 60)
    possible = month_ok & (day >= 1) & (day <= mdays) & ~(samord & forms.interim)
    days = _days_from_civil(
        np.where(possible, year, 1970), np.where(possible, month, 1), np.where(possible, day, 1)
    )
    possible &= days <= (ref - date(1970, 1, 1)).days
    return _BirthDates(year, samord, possible, days)


def _luhn_ok_rows(digits: npt.NDArray[np.int32]) -> npt.NDArray[np.bool_]:
    """:func:`luhn_ok` of every row's 10-digit form (digits 2..11): positions 0, 2, 4, .. doubled."""
    ten = digits[:, 2:12]
    dbl = ten[:, 0:9:2] * 2
    dbl = np.where(dbl > 9, dbl - 9, dbl)
    return np.asarray((dbl.sum(axis=1) + ten[:, 1:10:2].sum(axis=1)) % 10 == 0, dtype=bool)


def _reason_codes(n: int, masks: Iterable[tuple[npt.NDArray[np.bool_], str]]) -> pa.StringArray:
    """One reason code per value from disjoint masks (no per-value Python); null where none applies."""
    reason = pa.nulls(n, pa.string())
    for mask, code in masks:
        if mask.any():
            reason = pc.if_else(pa.array(mask), pa.scalar(code), reason)
    return reason


def parse_batch(
    values: pa.Array | pa.ChunkedArray | Sequence[str | None],
    *,
    reference_date: date | None = None,
    allow_interim: bool = False,
) -> pa.Table:
    """Parse many identifiers at once; never raises for a bad value.

    Returns a table with :data:`BATCH_SCHEMA`, row *i* describing ``values[i]``. Equal to
    calling :func:`parse` on each value (property-tested), about two orders of magnitude faster.
    The checks run in :func:`parse`'s order: form, date, '+' of a 12-digit form, check digit,
    serial number, interim refusal.
    """
    ref = reference_date or date.today()
    forms = _forms(_string_array(values))
    dates = _birth_dates(forms, ref)
    luhn = _luhn_ok_rows(forms.digits)
    serial_ok = (forms.digits[:, 8] | forms.digits[:, 9] | forms.digits[:, 10]) != 0
    plus_ok = ~(forms.twelve & forms.plus & (ref.year - dates.year < 100))

    valid_form = ~forms.missing & ~forms.unknown
    bad_date = valid_form & ~dates.possible
    bad_plus = valid_form & dates.possible & ~plus_ok
    checked = valid_form & dates.possible & plus_ok
    bad_sum = checked & ~luhn
    bad_serial = checked & luhn & ~serial_ok
    refused_interim = checked & luhn & serial_ok & forms.interim & (not allow_interim)
    ok = checked & luhn & serial_ok & ~refused_interim
    reason = _reason_codes(
        len(forms.padded),
        (
            (refused_interim, INTERIM_NOT_ACCEPTED),
            (bad_serial, INVALID_SERIAL),
            (bad_sum, BAD_CHECKSUM),
            (bad_plus, PLUS_UNDER_100),
            (bad_date, IMPOSSIBLE_DATE),
            (forms.unknown, UNKNOWN_FORMAT),
            (forms.missing, MISSING),
        ),
    )

    # normalised: 4-digit year + MMDDNNNC from the padded digits
    year_str = pc.utf8_lpad(pa.array(dates.year).cast(pa.string()), 4, "0")
    normalised = pc.binary_join_element_wise(year_str, pc.utf8_slice_codeunits(forms.padded, 4, 12), "")
    invalid = pa.array(~ok)
    null_str = pa.scalar(None, pa.string())
    kind = pc.if_else(pa.array(dates.samordningsnummer), SAMORDNINGSNUMMER, PERSONNUMMER)
    if forms.interim.any():
        kind = pc.if_else(pa.array(forms.interim), INTERIM, kind)
    sex = pc.if_else(pa.array(forms.digits[:, 10] % 2 == 1), "M", "F")
    return pa.table(
        {
            "normalised": pc.if_else(invalid, null_str, normalised),
            "kind": pc.if_else(invalid, null_str, kind),
            "sex": pc.if_else(invalid, null_str, sex),
            "birth_date": pa.array(dates.days.astype(np.int32), pa.int32(), mask=~ok).cast(pa.date32()),
            "reason_code": reason,
        },
        schema=BATCH_SCHEMA,
    )


def reason_counts(reason_codes: Iterable[str | None]) -> dict[str, int]:
    """Count reason codes (None = valid is skipped); handy for logs and results."""
    out: dict[str, int] = {}
    for r in reason_codes:
        if r is not None:
            out[r] = out.get(r, 0) + 1
    return dict(sorted(out.items()))
