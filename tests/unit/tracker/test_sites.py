"""Every inbound message is attributed to a site (issue 22): HL7 MSH-4 / PV1-3.4, FHIR
Location / Organization / the site extension, the JSON contract's ``site``; an unknown
site is refused naming the field. Detection carries the site onto its triggers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from common.clock import ManualClock
from common.sites import SiteRegistry, Sites, UnknownSite
from schemas.base import Envelope
from schemas.events import AppointmentEvent, OutcomeEvent, TreatmentPlanEvent, TreatmentStage
from services.tracker.detection import DetectionRules, Detector
from services.tracker.fhir_api import FhirApi
from services.tracker.fhir_mapping import SITE_EXTENSION
from services.tracker.hl7_siu import Rejected, ack, read, read_header
from services.tracker.ingest import CanonicalSink
from tests.unit.tracker.fhir_samples import fhir_appointment, fhir_care_plan
from tests.unit.tracker.hl7_samples import siu

NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
SITES = Sites.from_text(
    """\
sites:
  vilnius:
    facilities: [VLN, Location/dental]
    timezone: Europe/Vilnius
    default_department: dental
  sofia:
    facilities: [SOF, Organization/sofia-dental]
    timezone: Europe/Sofia
"""
)


def hl7(text: str, sites: Sites | None = SITES):  # type: ignore[no-untyped-def]
    return read(text.encode(), zone=ZoneInfo("UTC"), now=NOW, department="general", sites=sites)


def from_facility(facility: str, pv1_facility: str = "CLINIC") -> str:
    text = siu("S12", "C1").replace("|HIS|CLINIC|", f"|HIS|{facility}|", 1)
    return text.replace("PV1|1|O|DENTAL^^^CLINIC", f"PV1|1|O|DENTAL^^^{pv1_facility}")


def test_hl7_takes_the_site_of_msh_4_and_reads_in_its_zone() -> None:
    result = hl7(from_facility("SOF"))
    assert result.appointment is not None
    assert result.appointment.site == "sofia"
    assert result.appointment.timezone == "Europe/Sofia"
    assert result.contact is not None and result.contact.timezone == "Europe/Sofia"


def test_hl7_without_msh_4_takes_the_facility_of_pv1_3() -> None:
    result = hl7(from_facility("", pv1_facility="VLN"))
    assert result.appointment is not None and result.appointment.site == "vilnius"


def test_hl7_naming_an_unknown_site_gets_a_negative_ack_naming_msh_4() -> None:
    raw = from_facility("RIGA")
    with pytest.raises(Rejected) as caught:
        hl7(raw)
    assert caught.value.location == "MSH-4"
    answer = ack(read_header(raw.encode()), code="AE", now=NOW, rejected=caught.value)
    assert "MSA|AE|C1|MSH-4 names no configured site" in answer
    assert "ERR||MSH^1^4|204^Unknown key identifier^HL70357" in answer
    # The ACK's own MSH addresses the sender (MSH-5/6 = its MSH-3/4), as every ACK does;
    # the reason does not echo the name.
    assert "RIGA" not in answer.split("\r", 1)[1]


def test_hl7_without_a_sites_file_is_read_as_before() -> None:
    result = hl7(from_facility("RIGA"), sites=Sites.implicit())
    assert result.appointment is not None and result.appointment.site is None
    assert result.appointment.timezone == "UTC"


class RecordingSink(CanonicalSink):
    def __init__(self) -> None:  # no broker: what is stored is the integration tier's
        self.events: list[Envelope] = []

    async def publish(self, way_in: str, events: Sequence[Envelope]) -> None:
        self.events += events


async def _fhir(bodies: list[dict[str, Any]]) -> tuple[list[tuple[int, Any]], list[Envelope]]:
    app = web.Application()
    sink = RecordingSink()
    FhirApi(
        sink=sink,
        clock=ManualClock(NOW),
        token="t",
        zone="UTC",
        department="general",
        sites=SiteRegistry.fixed(SITES),
    ).mount(app)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    answers = []
    try:
        async with ClientSession() as session:
            for body in bodies:
                url = server.make_url(f"/fhir/{body['resourceType']}")
                headers = {"Authorization": "Bearer t", "Content-Type": "application/fhir+json"}
                async with session.post(url, data=json.dumps(body), headers=headers) as answer:
                    answers.append((answer.status, json.loads(await answer.text())))
    finally:
        await server.close()
    return answers, sink.events


def test_fhir_takes_the_site_of_the_location_organization_or_extension() -> None:
    plan = fhir_care_plan()
    plan["author"] = {"reference": "Organization/sofia-dental"}
    explicit = fhir_appointment(id="apt-2", extension=[{"url": SITE_EXTENSION, "valueId": "sofia"}])
    answers, events = asyncio.run(_fhir([fhir_appointment(), plan, explicit]))
    assert [status for status, _ in answers] == [200, 200, 200]
    assert [(type(e).__name__, getattr(e, "site", None)) for e in events] == [
        ("AppointmentEvent", "vilnius"),
        ("TreatmentPlanEvent", "sofia"),
        ("AppointmentEvent", "sofia"),
    ]
    assert getattr(events[1], "timezone", None) == "Europe/Sofia"


def test_fhir_naming_an_unknown_site_gets_422_naming_the_element() -> None:
    unknown = fhir_appointment(
        participant=[
            {"actor": {"reference": "Patient/pat-1"}, "status": "accepted"},
            {"actor": {"reference": "Location/riga"}, "status": "accepted"},
        ]
    )
    answers, events = asyncio.run(_fhir([unknown]))
    ((status, outcome),) = answers
    assert status == 422 and events == []
    issue = outcome["issue"][0]
    assert issue["expression"] == ["Appointment.participant.actor"]
    assert "names no configured site" in issue["diagnostics"]
    assert "riga" not in json.dumps(outcome)


def test_a_json_event_must_name_a_configured_site() -> None:
    event = AppointmentEvent(
        event_id="e1",
        occurred_at=NOW,
        source="his.json",
        change="booked",
        appointment_id="a1",
        patient_id="p1",
        start=NOW + timedelta(days=1),
        timezone="Europe/Sofia",
        department="dental",
        status="booked",
        site="sofia",
    )
    assert SITES.check_event(event) is event
    for wrong in ("riga", None):
        with pytest.raises(UnknownSite) as caught:
            SITES.check_event(event.model_copy(update={"site": wrong}))
        assert caught.value.field == "site"
    defaulted = Sites(SITES.profiles, default_site="vilnius")
    assert defaulted.check_event(event.model_copy(update={"site": None})).site == "vilnius"
    assert Sites.implicit().check_event(event.model_copy(update={"site": None})).site is None


def test_detection_carries_the_visits_site_onto_its_trigger() -> None:
    detector = Detector(DetectionRules())
    start = NOW + timedelta(hours=1)
    booked = AppointmentEvent(
        event_id="e1",
        occurred_at=NOW,
        source="his.json",
        change="booked",
        appointment_id="a1",
        patient_id="p1",
        start=start,
        timezone="Europe/Sofia",
        department="dental",
        status="booked",
        site="sofia",
    )
    assert detector.on_appointment(booked, NOW) == []
    (found,) = detector.due(start + timedelta(hours=1))
    assert found.trigger.kind == "no_show"
    assert found.trigger.site == "sofia"


def test_an_unanswered_invitation_before_any_visit_carries_the_plans_site() -> None:
    # The clinic's own invitation call, for a patient with a plan and nothing booked yet:
    # the trigger is the plan's clinic's, not nobody's (the fault suite's chain found it).
    detector = Detector(DetectionRules())
    plan = TreatmentPlanEvent(
        event_id="plan-1",
        occurred_at=NOW,
        source="his.fhir",
        plan_id="plan-1",
        patient_id="p2",
        department="dental",
        timezone="Europe/Riga",
        stages=[TreatmentStage(stage_id="s1", sequence=1, name="Implant", completed_at=NOW)],
        site="riga",
    )
    assert detector.on_plan(plan, NOW) == []
    call = OutcomeEvent(
        event_id="invite:p2:1",
        occurred_at=NOW,
        source="his.json",
        outcome="no_answer",
        patient_id="p2",
        channel="call_task",
        reported_by="front-desk",
    )
    (found,) = detector.on_outcome(call, NOW)
    assert (found.trigger.kind, found.trigger.site) == ("unanswered_call", "riga")
