"""Text placed into an HL7 v2 message we write, with the standard encoding characters
(``MSH-2`` ``^~\\&``): the delimiters as HL7 escape sequences (v2.5 section 2.7.4), line
breaks as spaces. Non-ASCII text stays as it is (our messages are UTF-8, MSH-18), which is
why python-hl7's ``util.escape`` (hex escapes for everything past ASCII) is not used; the
reading side uses python-hl7's ``util.unescape`` or the tracker's own reader."""

from __future__ import annotations

_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))


def escape(text: str) -> str:
    for raw, escaped in _ESCAPES:  # the escape character first, so it is not doubled
        text = text.replace(raw, escaped)
    return text.replace("\r", " ").replace("\n", " ")
