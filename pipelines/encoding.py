"""Whole-file text encodings: decided once per delivered file, before any line is parsed.

A file in an unexpected encoding fails on every line that holds a non-ASCII byte (a UTF-16 file on
every line: its NUL bytes break each one), and a parser that decides line by line turns that into a
quarantine record per line: one UTF-16 NDJSON file gave 1,176 ``json.malformed`` records and a
phantom truncated line. Here one streaming pass over the file's bytes (:func:`scan`, any block
size, gzip already undone by the caller) decides how the whole file is read, so that a file gives
at most one file-level result.

How the bytes are recognised, in this order:

1. A byte-order mark: UTF-8, UTF-32 LE/BE, UTF-16 LE/BE (UTF-32 LE is tried before UTF-16 LE: its
   mark begins with UTF-16 LE's). The mark is skipped when reading.
2. No mark, but the NUL bytes UTF-16/32 put next to an ASCII first character (every file we take
   begins with one: JSON with ``{`` or ``[``, CSV with its header; the rule of RFC 8259 section 8.1):
   ``xx 00 00 00`` UTF-32 LE, ``00 00 00 xx`` UTF-32 BE, ``xx 00`` UTF-16 LE, ``00 xx`` UTF-16 BE.
   Such a file must decode completely, or it is quarantined whole (``encoding.invalid``).
3. Otherwise UTF-8, checked over the whole file. A line with a byte that is not UTF-8 is *damaged*:

   * none: UTF-8;
   * when the format accepts an 8-bit encoding (CSV registers: the source's declared encoding, or
     else cp1252), the file has no UTF-8 multi-byte character at all, and charset-normalizer finds
     the damaged lines plausible text in that encoding: the file is in that encoding. The heuristic
     rests on two facts: cp1252 text with letters such as å ä ö is practically never valid UTF-8
     (each such letter would have to be followed by exactly the right bytes in 0x80-0xBF), and a
     UTF-8 file with Swedish text has multi-byte characters all over. charset-normalizer's mess
     measure turns down binary garbage and the five bytes cp1252 leaves undefined. Latin-1 needs no
     detection of its own: it is cp1252 but for the C1 control codes (0x80-0x9F), which no text
     holds. A declared encoding is trusted for any file that is not UTF-8, unchecked;
   * a few damaged lines, at most ``max(MIN_DAMAGED_LINES, DAMAGED_SHARE * lines)``: a UTF-8 file
     with damage. The file is read; each damaged line is the parser's line-level problem
     (``encoding.not_utf8``), as before: it is not the encoding of the whole file;
   * more: the file is quarantined whole, once: ``encoding.not_utf8`` when nothing in it is UTF-8
     (an 8-bit file where none is accepted: FHIR), ``encoding.mixed`` when it is partly UTF-8.

What the callers do with a verdict (the policy):

* FHIR NDJSON, NDJSON.gz and Bundles (Bulk Data and FHIR JSON are UTF-8 only): a UTF-8 mark is
  dropped (harmless and common); UTF-16/32 is converted to UTF-8, streaming, and noted
  (``encoding.converted_from_utf16`` / ``encoding.converted_from_utf32``): the sender's tooling
  chose the encoding, the data are intact, and the mark or NUL pattern leaves no doubt. No 8-bit
  encoding is ever guessed for FHIR: such a file (undeclared, and the spec allows none) is
  quarantined whole.
* CSV registers: the same, plus the 8-bit encoding above. Reading the declared encoding is the
  contract and is not noted; reading a detected one is (``encoding.converted_from_cp1252``).

A converted file is read through a streaming conversion (:func:`to_utf8`); the delivered file is
never rewritten, and the ingest keeps a byte-for-byte copy of it in the quarantine area with the one
file-level record (:data:`CONVERTED_PREFIX` codes are notices: the file's rows were loaded).
Verdicts carry counts and byte offsets only, never text from the file.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

#: Reason codes of files that were read after a conversion (notices, not rejections).
CONVERTED_PREFIX = "encoding.converted_from_"
#: A file with at most this many damaged lines (or DAMAGED_SHARE of its lines) is UTF-8 with damage.
MIN_DAMAGED_LINES = 10
DAMAGED_SHARE = 0.01
#: Bytes of context around damaged lines kept for the plausibility check (in memory only).
SAMPLE_BYTES = 64 * 1024
_SAMPLE_WINDOW = 48  # characters each side of the first bad byte of a damaged line

_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE, whose mark it begins with
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_LABELS = {
    "utf-8": "UTF-8",
    "utf-16-le": "UTF-16LE",
    "utf-16-be": "UTF-16BE",
    "utf-32-le": "UTF-32LE",
    "utf-32-be": "UTF-32BE",
    "cp1252": "cp1252",
    "iso8859-1": "latin-1",
}
#: Python's codec name -> the family named in reason codes (``encoding.converted_from_<family>``).
_FAMILIES = {
    "utf-16-le": "utf16",
    "utf-16-be": "utf16",
    "utf-32-le": "utf32",
    "utf-32-be": "utf32",
    "cp1252": "cp1252",
    "iso8859-1": "latin1",
}
#: ``surrogateescape`` turns each byte that is not UTF-8 into one of these; valid UTF-8 never does.
_ESCAPED = re.compile("[\udc80-\udcff]")
_MULTIBYTE = re.compile("[\u0080-\ud7ff\ue000-\U0010ffff]")


@dataclass(frozen=True)
class FileEncoding:
    """How to read a file: the Python codec, and the bytes of byte-order mark to skip."""

    codec: str
    bom: int = 0
    how: str = ""  # what gave it away ("byte-order mark", "NUL pattern", ...), for the record's detail

    @property
    def is_utf8(self) -> bool:
        return self.codec == "utf-8"

    @property
    def label(self) -> str:
        return _LABELS.get(self.codec, self.codec)


@dataclass(frozen=True)
class Verdict:
    """What to do with a whole file.

    ``encoding`` None: the file is not read, it is quarantined whole with ``reason``. Otherwise it
    is read in ``encoding``; ``reason`` is then a conversion notice (:data:`CONVERTED_PREFIX`) or
    None (nothing to record). ``damaged_lines``: lines the parser will find not UTF-8 (line level).
    """

    encoding: FileEncoding | None
    reason: str | None = None
    detail: str = ""
    lines: int = 0
    damaged_lines: int = 0

    @property
    def converted(self) -> bool:
        return self.encoding is not None and not self.encoding.is_utf8


def normalise(codec: str) -> str:
    """Python's canonical name of an encoding (``latin_1`` -> ``iso8859-1``, ``windows-1252`` -> ``cp1252``)."""
    return codecs.lookup(codec).name


def sniff(head: bytes) -> FileEncoding | None:
    """The encoding the first bytes announce (a mark, or UTF-16/32's NUL pattern); None: no sign."""
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return FileEncoding(codec, len(bom), "byte-order mark")
    b = head[:4]
    if len(b) == 4 and b[0] and not b[1] and not b[2] and not b[3]:
        return FileEncoding("utf-32-le", 0, "NUL pattern")
    if len(b) == 4 and not b[0] and not b[1] and not b[2] and b[3]:
        return FileEncoding("utf-32-be", 0, "NUL pattern")
    if len(b) >= 2 and b[0] and not b[1]:
        return FileEncoding("utf-16-le", 0, "NUL pattern")
    if len(b) >= 2 and not b[0] and b[1]:
        return FileEncoding("utf-16-be", 0, "NUL pattern")
    return None


def scan(blocks: Iterable[bytes], *, fallback: str | None = None, declared: bool = False) -> Verdict:
    """Decide how a whole file is read, from its bytes in any blocks (one pass, one block in memory).

    ``fallback``: the 8-bit encoding the format accepts for a file that is not UTF-8 (None: none);
    ``declared``: the source declares it, so reading it is not noted and needs no plausibility check.
    """
    stream = iter(blocks)
    head = b""
    for block in stream:  # enough bytes to see a mark or a NUL pattern (blocks may be tiny)
        head += block
        if len(head) >= 4:
            break
    sniffed = sniff(head)
    if sniffed is not None and not sniffed.is_utf8:
        return _check_wide(_chain(head, stream), sniffed)
    bom = sniffed.bom if sniffed is not None else 0
    tally = _Utf8Tally()
    tally.feed(head[bom:])
    for block in stream:
        tally.feed(block)
    tally.finish()
    return _utf8_verdict(tally, bom, None if bom else fallback, declared)


def _chain(head: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield head
    yield from rest


def _check_wide(blocks: Iterable[bytes], enc: FileEncoding) -> Verdict:
    """A UTF-16/32 file: it must decode from end to end (it is converted when read)."""
    decoder = codecs.getincrementaldecoder(enc.codec)("strict")
    lines = 0
    consumed = 0  # bytes fed to the decoder before the current block (mark included)
    skip = enc.bom
    try:
        for block in blocks:
            consumed_before = consumed
            consumed += len(block)
            if skip:
                block, skip = block[skip:], max(0, skip - len(block))
            lines += decoder.decode(block).count("\n")
        consumed_before = consumed
        lines += decoder.decode(b"", final=True).count("\n")
    except UnicodeDecodeError:
        return Verdict(
            None,
            "encoding.invalid",
            f"file announces {enc.label} ({enc.how}) but is not valid {enc.label} (in the bytes from "
            f"offset {consumed_before} on); whole file quarantined",
        )
    family = _FAMILIES[enc.codec]
    return Verdict(
        enc,
        CONVERTED_PREFIX + family,
        f"file is {enc.label} ({enc.how}), not UTF-8: read through a conversion to UTF-8 "
        f"({lines} lines); original kept",
        lines=lines,
    )


class _Utf8Tally:
    """UTF-8 validity over a stream of blocks: line ends, damaged lines, multi-byte evidence, and a
    sample of the damaged lines' bytes (for the plausibility check; never logged)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.lines = 0  # line ends seen
        self.damaged = 0
        self.first_damaged: int | None = None  # 1-based line number
        self.multibyte = False  # some valid UTF-8 character outside ASCII
        self.tail = False  # bytes after the last line end
        self.sample = bytearray()
        self._last_damaged = -1
        self._before = ""  # the end of the text before the current block (context for the sample)
        self._open = ""  # a sample piece whose line goes on in the next block
        self._wanted = 0  # characters the open piece still takes

    def feed(self, block: bytes) -> None:
        if not block:
            return
        self.tail = not block.endswith(b"\n")
        if block.isascii() and not self._decoder.getstate()[0] and not self._wanted:  # the common case
            self.lines += block.count(b"\n")
            self._before = self._context(block[-_SAMPLE_WINDOW:].decode("ascii"))
            return
        self._text(*self._decode(block, final=False))

    def finish(self) -> None:
        self._text(*self._decode(b"", final=True))
        if self._open:
            self.sample += self._open.encode("utf-8", "surrogateescape")

    def _decode(self, block: bytes, *, final: bool) -> tuple[str, bool]:
        """The block's text, and whether it holds bytes that are not UTF-8 (marked as escapes)."""
        d = self._decoder
        try:
            return d.decode(block, final), False  # strict first: the fastest, and valid files pass
        except UnicodeDecodeError:
            # The decoder's state is unchanged by the failed call: decode again, marking bad bytes.
            d.errors = "surrogateescape"
            try:
                return d.decode(block, final), True
            finally:
                d.errors = "strict"

    def _text(self, text: str, escaped: bool) -> None:
        if not self.multibyte and _MULTIBYTE.search(text):
            self.multibyte = True
        if self._wanted:
            self._piece(self._open, text, 0)
        pos, line = 0, self.lines
        while escaped and (m := _ESCAPED.search(text, pos)) is not None:
            line += text.count("\n", pos, m.start())
            if line != self._last_damaged:
                self._last_damaged = line
                self.damaged += 1
                self.first_damaged = self.first_damaged or line + 1
                self._keep(text, m.start())
            end = text.find("\n", m.start())
            if end < 0:
                break
            pos = end  # on to the next line: one damaged line is counted once
        self.lines += text.count("\n")
        self._before = self._context(text)

    def _context(self, text: str) -> str:
        return (
            text[-_SAMPLE_WINDOW:] if len(text) >= _SAMPLE_WINDOW else (self._before + text)[-_SAMPLE_WINDOW:]
        )

    def _keep(self, text: str, at: int) -> None:
        """Keep the damaged line around its first bad byte, up to _SAMPLE_WINDOW characters each
        side (a plausibility check needs the words around the letters)."""
        if len(self.sample) >= SAMPLE_BYTES:
            return
        before = text[max(0, at - _SAMPLE_WINDOW) : at]
        if len(before) < _SAMPLE_WINDOW and at == len(before):  # the line began in an earlier block
            before = (self._before + before)[-_SAMPLE_WINDOW:]
        self._piece(before[before.rfind("\n") + 1 :], text, at)

    def _piece(self, start: str, text: str, at: int) -> None:
        """Add ``start`` plus what follows ``at`` in ``text`` up to the line end to the sample, or
        leave it open when the block ends first."""
        after = text[at : at + (self._wanted or _SAMPLE_WINDOW)]
        end = after.find("\n")
        if end >= 0:
            after = after[:end]
        elif len(after) < (self._wanted or _SAMPLE_WINDOW) and at + len(after) == len(text):
            self._open, self._wanted = start + after, (self._wanted or _SAMPLE_WINDOW) - len(after)
            return
        self._open, self._wanted = "", 0
        self.sample += (start + after).encode("utf-8", "surrogateescape") + b"\n"

    @property
    def line_count(self) -> int:
        return self.lines + (1 if self.tail else 0)


def _utf8_verdict(tally: _Utf8Tally, bom: int, fallback: str | None, declared: bool) -> Verdict:
    lines = tally.line_count
    utf8 = FileEncoding("utf-8", bom, "byte-order mark" if bom else "")
    if not tally.damaged:
        return Verdict(utf8, lines=lines)
    if fallback is not None and (
        declared or (not tally.multibyte and plausible(bytes(tally.sample), fallback))
    ):
        enc = FileEncoding(normalise(fallback), 0, "declared" if declared else "detected")
        if declared:
            return Verdict(enc, lines=lines)
        return Verdict(
            enc,
            CONVERTED_PREFIX + _FAMILIES.get(enc.codec, enc.codec.replace("-", "")),
            f"file is not UTF-8 and reads as {enc.label} ({tally.damaged} of {lines} lines have "
            f"non-UTF-8 bytes, none has a UTF-8 multi-byte character): read through a conversion to "
            f"UTF-8; original kept",
            lines=lines,
        )
    if tally.damaged <= max(MIN_DAMAGED_LINES, int(DAMAGED_SHARE * lines)):
        return Verdict(utf8, lines=lines, damaged_lines=tally.damaged)
    if tally.multibyte:
        reason, what = "encoding.mixed", "partly UTF-8, partly not"
    else:
        reason, what = "encoding.not_utf8", "not UTF-8 (no UTF-8 multi-byte character in it)"
        if fallback is not None:
            what += f", nor plausible {_LABELS.get(normalise(fallback), fallback)}"
    return Verdict(
        None,
        reason,
        f"file is {what}: {tally.damaged} of {lines} lines have non-UTF-8 bytes (first: line "
        f"{tally.first_damaged}); whole file quarantined",
        lines=lines,
        damaged_lines=tally.damaged,
    )


def plausible(sample: bytes, codec: str) -> bool:
    """charset-normalizer's judgement: is ``sample`` readable text in ``codec`` (little mess)?"""
    import charset_normalizer  # only files that are not UTF-8 get here

    try:
        sample.decode(codec)
    except UnicodeDecodeError:  # e.g. a byte cp1252 leaves undefined
        return False
    matches = charset_normalizer.from_bytes(sample, cp_isolation=[codec], enable_fallback=False)
    return matches.best() is not None


def to_utf8(blocks: Iterable[bytes], encoding: FileEncoding) -> Iterator[bytes]:
    """The file's text as UTF-8 blocks (its mark skipped), converted as it streams.

    UTF-8 passes through unchanged (bytes that are not UTF-8 stay for the parser's line-level
    check); other encodings decode strictly: a ``UnicodeDecodeError`` means the file changed since
    :func:`scan` passed it.
    """
    skip = encoding.bom
    decoder = None if encoding.is_utf8 else codecs.getincrementaldecoder(encoding.codec)("strict")
    for block in blocks:
        if skip:
            block, skip = block[skip:], max(0, skip - len(block))
        if decoder is None:
            if block:
                yield block
            continue
        text = decoder.decode(block)
        if text:
            yield text.encode("utf-8")
    if decoder is not None:
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail.encode("utf-8")


def decode(data: bytes, encoding: FileEncoding) -> str:
    """A whole file already in memory as text; bytes that are not UTF-8 (damaged lines of a UTF-8
    file) become lone surrogates, so the parser can find and quarantine exactly those lines."""
    body = data[encoding.bom :]
    return body.decode(encoding.codec, "surrogateescape" if encoding.is_utf8 else "strict")


def has_undecodable(text: str) -> bool:
    """Whether text from :func:`decode` holds bytes that were not UTF-8."""
    return _ESCAPED.search(text) is not None
