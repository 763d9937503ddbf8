r"""What FHIR dates, times and other string primitives look like: written once, used by every checker.

Two concepts, kept apart on purpose:

**FHIR primitive formats** (the R4 datatypes): what a *valid* ``date``, ``dateTime``, ``instant``,
``time``, ``code``, ``id``, ``uri``, ``url``, ``oid``, ``uuid`` or ``base64Binary`` value in a resource looks like, exactly:
month 01-12, a day that exists in its month (leap years included), no year 0000, offsets from
-12:00 to +14:00, at most microseconds. Each is regular-expression text, ASCII-explicit (``[0-9]``,
not ``\d``, which matches other scripts' digits) and anchored with ``^`` and ``\Z`` (``$`` would also
match before a trailing newline; ``string`` needs no anchor), so the same text serves msgspec's ``pattern`` (applied with
``re.search``, :mod:`pipelines.fhir.fastvalid`) and the Python checks of
:mod:`pipelines.fhir.validation`. Both only ever *accept*: each format is at least as strict as the
reference validator's type (``tests/fhir/test_validation_differential.py``,
``tests/fhir/test_fastvalid_differential.py``).

**FHIRPath partial dates and times** (:mod:`pipelines.fhir.fhirpath`, ``lowBoundary`` /
``highBoundary``): the *shape* of a date/time value already in hand, at any precision from the year
down, with a group per part; they parse, they do not validate (digits are only counted).

>>> bool(DATE_RE.match("2024-02-29")), bool(DATE_RE.match("2023-02-29")), bool(DATE_RE.match("1970-06"))
(True, False, True)
>>> FHIRPATH_DATE_RE.match("2023-13").groups()
('2023', '13', None)
"""

from __future__ import annotations

import re

# --------------------------------------------------------------------------- FHIR primitive formats
_YEAR = r"(?!0000)[0-9]{4}"
_MONTH_DAY = (
    r"(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
    r"|(?:0[13-9]|1[0-2])-(?:29|30)"
    r"|(?:0[13578]|1[02])-31)"
)
# 29 February: years divisible by 4 but not by 100 (last two digits), or by 400 (first two).
_LEAP_DAY = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29"
_FULL_DATE = rf"(?:{_YEAR}-{_MONTH_DAY}|(?!0000){_LEAP_DAY})"
_TIME_OF_DAY = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
_OFFSET = r"(?:Z|[+-](?:0[0-9]|1[0-3]):[0-5][0-9]|[+-]14:00)"

_YEAR_MONTH = rf"{_YEAR}(?:-(?:0[1-9]|1[0-2]))?"

# The full forms come first in each alternation: they are what real data holds, and a full value
# tried against the partial branch first fails only at ``\Z`` and is then scanned again (dateTime
# values matched in half the time).
#: ``date``: a year, a year and month, or a full date.
DATE = rf"^(?:{_FULL_DATE}|{_YEAR_MONTH})\Z"
#: ``dateTime``: a ``date``, or a full date with a time of day and an offset.
DATE_TIME = rf"^(?:{_FULL_DATE}(?:T{_TIME_OF_DAY}{_OFFSET})?|{_YEAR_MONTH})\Z"
#: ``instant``: a full date with a time of day and an offset.
INSTANT = rf"^{_FULL_DATE}T{_TIME_OF_DAY}{_OFFSET}\Z"
#: ``time``: a time of day, seconds required.
TIME = rf"^{_TIME_OF_DAY}\Z"
#: ``string`` (and ``markdown``): what the reference's regex ``[ \r\n\t\S]+`` finds somewhere, i.e. not
#: empty and not only blanks other than space, CR, LF and tab. Not anchored (``re.search``): it is
#: decided at the first character of almost every string, which is what makes it cheap. Python's
#: ``\S`` excludes U+001C-U+001F, which the reference's (Rust, Unicode White_Space) admits: stricter.
STRING = r"[ \r\n\t\S]"
#: ``code``: printable ASCII, single spaces between words.
CODE = r"^[!-~]+(?: [!-~]+)*\Z"
ID = r"^[A-Za-z0-9\-.]{1,64}\Z"
#: ``uri`` (and ``canonical``): absolute or relative (a nested extension's url is a bare name, a
#: canonical may end in ``|version``); FHIR's own regex is ``\S*``: here printable ASCII, no blank.
URI = r"^[!-~]+\Z"
#: ``url`` (and ``canonical`` here): http(s) with a host, an optional port and a plain path.
URL = r"^https?://[A-Za-z0-9.\-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~\-]+)*/?\Z"
OID = r"^urn:oid:[0-2](?:\.(?:0|[1-9][0-9]*))+\Z"
#: ``uuid``: as a URI, lower case. The reference's type is pydantic's UUID4, so the version digit
#: must be 4 (and the variant the RFC one).
UUID = r"^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z"
#: ``base64Binary``: the RFC 4648 alphabet, a length that is a multiple of 4 and at most two ``=`` at
#: the end (so 0, 2 or 3 data characters in the last group), no blanks or line breaks. (Written with
#: a look-ahead for the length, which steps 64 characters at a time and then by fours: about twice
#: as fast as a repeated group of four on long attachments, and the look-ahead itself four times
#: faster than stepping by fours only.)
BASE64 = r"^(?=(?:.{64})*(?:....){0,15}\Z)[A-Za-z0-9+/]*={0,2}\Z"

DATE_RE = re.compile(DATE)
DATE_TIME_RE = re.compile(DATE_TIME)
INSTANT_RE = re.compile(INSTANT)
TIME_RE = re.compile(TIME)
CODE_RE = re.compile(CODE)
ID_RE = re.compile(ID)
URI_RE = re.compile(URI)
URL_RE = re.compile(URL)
OID_RE = re.compile(OID)
UUID_RE = re.compile(UUID)
STRING_RE = re.compile(STRING)
BASE64_RE = re.compile(BASE64)

# --------------------------------------------------------------------------- FHIRPath partial values
#: year, month, day (the last two optional).
FHIRPATH_DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
#: year, month, day, hour, minute, second, fraction, offset (all but the year optional).
FHIRPATH_DATE_TIME_RE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?)?)?)?"
    r"(Z|[+-]\d{2}:\d{2})?$"
)
#: hour, minute, second, fraction (all but the hour optional).
FHIRPATH_TIME_RE = re.compile(r"^(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?$")
