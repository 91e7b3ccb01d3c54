"""Every message of the HL7 corpus (tests/corpus/hl7, shapes of published sources noted in
its MANIFEST.yaml) is stored with the right start, status, identity and contact, or
refused naming the field."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from services.tracker.hl7_siu import Rejected, read

CORPUS = Path(__file__).parents[2] / "corpus" / "hl7"
MANIFEST: list[dict[str, Any]] = yaml.safe_load((CORPUS / "MANIFEST.yaml").read_text())
ZONE = ZoneInfo("Europe/Vilnius")
NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def test_the_corpus_is_large_and_varied() -> None:
    files = sorted(p.name for p in CORPUS.glob("*.hl7"))
    assert files == sorted(e["file"] for e in MANIFEST)
    assert len(files) >= 40
    assert len({e["shape"].split(":")[0].split(";")[0] for e in MANIFEST}) >= 5
    versions = {
        e
        for e in ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8")
        if any(f"|P|{e}" in (CORPUS / f).read_bytes().decode("latin-1") for f in files)
    }
    assert len(versions) == 8


@pytest.mark.parametrize("entry", MANIFEST, ids=[e["file"] for e in MANIFEST])
def test_each_message_is_stored_right_or_refused_naming_the_field(entry: dict[str, Any]) -> None:
    raw = (CORPUS / entry["file"]).read_bytes()
    if entry["expect"] == "refused":
        with pytest.raises(Rejected) as caught:
            read(raw, zone=ZONE, now=NOW, department="general")
        assert (caught.value.ack_code, caught.value.location) == (entry["ack"], entry["field"])
        assert entry["field"].split(".")[0] in caught.value.reason
        return
    result = read(raw, zone=ZONE, now=NOW, department="general")
    expected = entry.get("appointment")
    event = result.appointment
    if expected is None:
        assert event is None
    else:
        assert event is not None
        assert (event.appointment_id, event.status, event.patient_id) == (
            expected["id"],
            expected["status"],
            entry["patient"],
        )
        assert event.start == moment(expected["start"])
        if expected["start"] is not None:
            assert event.start is not None
            assert event.start.utcoffset() == moment(expected["start"]).utcoffset()  # type: ignore[union-attr]
        if "other_ids" in expected:
            assert event.other_ids == expected["other_ids"]
        for key, attribute in (
            ("change", "change"),
            ("department", "department"),
            ("practitioner", "practitioner_id"),
        ):
            if key in expected:
                assert getattr(event, attribute) == expected[key], key
        assert event.plan_id is None  # no corpus message links a treatment plan
        if "end" in expected:
            assert event.end == moment(expected["end"])
        if "cancelled_by" in entry:
            assert event.cancelled_by == entry["cancelled_by"]
        if "status_at" in entry:
            assert event.status_at == moment(entry["status_at"])
    assert result.doubled == tuple(entry.get("doubled", []))
    assert result.contact is not None and result.contact.patient_id == entry["patient"]
    for key, value in entry.get("contact", {}).items():
        assert getattr(result.contact, key) == value, key
    status = result.patient_status.status if result.patient_status else None
    assert status == entry.get("patient_status")


def test_mutated_corpus_messages_are_read_or_refused_never_crash() -> None:
    # Nothing a message contains may stop the listener: every mutation of a real-shaped
    # message ends as events or as a refusal naming a field.
    rng = random.Random(13)
    files = sorted(CORPUS.glob("*.hl7"))
    for _ in range(2000):
        raw = bytearray(rng.choice(files).read_bytes())
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(raw) + 1)
            op = rng.random()
            if op < 0.3:
                raw[i:i] = bytes([rng.choice(b'|^~\\&\r\n"0123456789+-.')])
            elif op < 0.5:
                del raw[i : i + rng.randint(1, 20)]
            elif op < 0.7:
                raw[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 5)))
            elif op < 0.85:
                raw = raw[:i]
            else:
                raw[i:i] = b'""'
        try:
            read(bytes(raw), zone=ZONE, now=NOW, department="general")
        except Rejected as rejected:
            assert re.fullmatch(r"[A-Z][A-Z0-9]{2}(-\d+(\.\d+)?)?", rejected.location or "")
