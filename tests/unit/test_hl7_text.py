"""Our HL7 escaping read back by python-hl7 (a reader we did not write)."""

from __future__ import annotations

import hl7
from hl7.util import unescape

from common.hl7_text import escape


def test_delimiters_survive_a_round_trip_through_python_hl7_and_names_stay_utf8() -> None:
    text = r"Ąžuolas | O'Brien ^ Smith & Co ~ back\slash"
    message = hl7.parse(f"MSH|^~\\&|A|B|C|D|20260302||ACK|1|P|2.5\rNTE|1||{escape(text)}")
    segment = message.segment("NTE")
    assert len(segment) == 4  # no delimiter leaked: still three fields after the name
    assert unescape(segment, str(segment(3))) == text
    assert "Ąžuolas" in escape(text)  # not hex-escaped
    assert escape("one\r\ntwo") == "one  two"  # a line break would end the segment
