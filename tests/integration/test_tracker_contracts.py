"""Contract across services, tracker -> scheduler: what the hospital sends the real tracker
(HL7 v2 over MLLP, FHIR R4 over HTTP, canonical JSON on Kafka) reaches the real scheduler
through the real topics and opens, or closes, the case the clinic expects.

Both services run in-process on one topic prefix and one manual clock (the tracker's grace
timer and the scheduler's cadence read the same time), the scheduler in its own PostgreSQL
schema. The tracker's own tests read its topics; the scheduler's tests feed it triggers built
by ``tests.support.scheduler``; only here does one read what the other wrote.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import hl7
import pytest

from common.clock import ManualClock
from common.kafka import KafkaPublisher, delete_topics_with_prefix
from schemas.events import AppointmentEvent
from schemas.topics import TopicNames
from services.scheduler.app import Scheduler
from services.tracker.app import Tracker
from services.tracker.fhir_mapping import PREFERRED_CHANNEL_EXTENSION
from tests.support import infra
from tests.support.polling import eventually
from tests.support.scheduler import case_from_api, scheduler_beside
from tests.support.tracker import tracker_settings
from tests.unit.tracker.fhir_samples import fhir_care_plan
from tests.unit.tracker.hl7_samples import adt_a03, siu

pytestmark = pytest.mark.integration
CASE_TOKEN = "case-api-token"
INGEST_TOKEN = "ingest-token"
VILNIUS = ZoneInfo("Europe/Vilnius")
# A Monday morning at the clinic (09:00 in Vilnius).
START = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)


@dataclass
class Both:
    tracker: Tracker
    scheduler: Scheduler
    clock: ManualClock
    publisher: KafkaPublisher
    topics: TopicNames

    # --- the hospital's three ways in ------------------------------------------------------

    async def hl7(self, message: str) -> None:
        """One HL7 message over MLLP; the tracker must accept it (AA)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.tracker.mllp.port)
        try:
            writer.write(b"\x0b" + message.encode() + b"\x1c\x0d")
            await writer.drain()
            block = await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 30)
        finally:
            writer.close()
        assert str(hl7.parse(block[1:-2].decode()).segment("MSA")(1)) == "AA"

    async def fhir(self, path: str, body: dict[str, Any]) -> None:
        url = f"http://127.0.0.1:{self.tracker.ops.port}/fhir/{path}"
        headers = {
            "Authorization": f"Bearer {INGEST_TOKEN}",
            "Content-Type": "application/fhir+json",
        }
        async with (
            aiohttp.ClientSession() as http,
            http.put(url, data=json.dumps(body), headers=headers) as reply,
        ):
            assert reply.status in (200, 201), await reply.text()

    async def json(self, event: AppointmentEvent) -> None:
        """The hospital's own producer: canonical JSON, keyed by the patient."""
        value = event.model_dump_json(exclude_none=True).encode()
        await self.publisher.publish_raw(
            self.topics.appointments, value, key=event.patient_id.encode()
        )

    # --- what the scheduler made of it ----------------------------------------------------

    async def cases_of(self, patient: str) -> list[dict[str, Any]]:
        pool = self.scheduler.pool
        assert pool is not None
        rows = await pool.fetch("SELECT case_id FROM cases WHERE patient_id = $1", patient)
        return [await case_from_api(self.scheduler, r["case_id"], CASE_TOKEN) for r in rows]

    async def case_of(
        self, patient: str, holds: Callable[[dict[str, Any]], bool] = lambda c: True
    ) -> dict[str, Any]:
        async def found() -> dict[str, Any] | None:
            cases = [c for c in await self.cases_of(patient) if holds(c)]
            return cases[0] if cases else None

        case: dict[str, Any] = await eventually(found, timeout=60)
        return case

    async def tracked(self, before: int) -> None:
        """Wait until the tracker holds one more appointment than ``before``."""
        detector = self.tracker.worker.detector
        await eventually(lambda: detector.tracked_appointments > before, timeout=60)


@pytest.fixture(scope="module")
async def both() -> AsyncIterator[Both]:
    infra.ensure_up()
    topics = TopicNames(prefix=f"t{uuid.uuid4().hex[:10]}.")
    clock = ManualClock(START)
    tracker = Tracker(
        tracker_settings(
            infra.KAFKA_BOOTSTRAP, topics, ingest_token=INGEST_TOKEN, default_department="dental"
        ),
        clock,
    )
    publisher = KafkaPublisher(infra.KAFKA_BOOTSTRAP, client_id="hospital")
    await tracker.start()
    await publisher.start()
    try:
        async with scheduler_beside(topics, clock, api_token=CASE_TOKEN) as scheduler:
            await eventually(tracker.worker.ready.is_set, timeout=60)
            yield Both(tracker, scheduler, clock, publisher, topics)
    finally:
        await publisher.stop()
        await tracker.stop()
        await delete_topics_with_prefix(infra.KAFKA_BOOTSTRAP, topics.prefix)


# --- the messages, with times relative to the shared clock ---------------------------------


def _hl7_time(moment: datetime) -> str:
    return moment.astimezone(VILNIUS).strftime("%Y%m%d%H%M%S%z")


def hl7_visit(
    trigger: str, control: str, patient: str, appointment: str, start: datetime, **extra: str
) -> str:
    """A SIU message about a 30-minute visit at ``start``, sent now (MSH-7)."""
    message = siu(trigger, control, appointment_id=appointment, patient_id=patient, **extra)
    return (
        message.replace("20260302093000+0200", _hl7_time(start))
        .replace("20260302100000+0200", _hl7_time(start + timedelta(minutes=30)))
        .replace("20260301120000+0200", _hl7_time(START))
    )


def fhir_visit(
    patient: str, appointment: str, start: datetime, status: str, version: int, **extra: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Appointment",
        "id": appointment,
        "meta": {"versionId": str(version)},
        "status": status,
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=30)).isoformat(),
        "participant": [
            {"actor": {"reference": f"Patient/{patient}"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/dr-7"}, "status": "accepted"},
            {"actor": {"reference": "Location/dental"}, "status": "accepted"},
        ],
        **extra,
    }


def json_visit(patient: str, appointment: str, start: datetime, now: datetime) -> AppointmentEvent:
    return AppointmentEvent(
        event_id=f"{appointment}:booked",
        occurred_at=now,
        source="his",
        change="booked",
        appointment_id=appointment,
        patient_id=patient,
        start=start,
        end=start + timedelta(minutes=30),
        timezone="Europe/Vilnius",
        department="dental",
        practitioner_id="dr-7",
        status="booked",
    )


Book = Callable[[Both, str, str, datetime], Awaitable[None]]


async def book_hl7(both: Both, patient: str, appointment: str, start: datetime) -> None:
    await both.hl7(hl7_visit("S12", f"{appointment}-1", patient, appointment, start))


async def book_fhir(both: Both, patient: str, appointment: str, start: datetime) -> None:
    await both.fhir(
        f"Appointment/{appointment}", fhir_visit(patient, appointment, start, "booked", 1)
    )


async def book_json(both: Both, patient: str, appointment: str, start: datetime) -> None:
    await both.json(json_visit(patient, appointment, start, both.clock.now()))


BOOK: dict[str, Book] = {"hl7": book_hl7, "fhir": book_fhir, "json": book_json}


async def _missed_visit(both: Both, route: str, patient: str) -> dict[str, Any]:
    """A visit booked through ``route`` half an hour from now, then nobody arrives: the
    scheduler's case for it."""
    appointment = f"APT-{patient}"
    before = both.tracker.worker.detector.tracked_appointments
    start = both.clock.now() + timedelta(minutes=30)
    await BOOK[route](both, patient, appointment, start)
    await both.tracked(before)
    both.clock.set(start + timedelta(minutes=20))  # the grace (15 minutes) passed
    return await both.case_of(patient)


# --- the tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("route", sorted(BOOK))
async def test_a_missed_visit_from_each_feed_opens_a_no_show_case_with_a_call(
    both: Both, route: str
) -> None:
    patient = f"PAT-NS-{route.upper()}"
    case = await _missed_visit(both, route, patient)
    assert (case["reason"], case["appointment_id"]) == ("no_show", f"APT-{patient}")
    assert case["practitioner_id"] == ("DR-7" if route == "hl7" else "dr-7")
    assert case["timezone"] == "Europe/Vilnius"
    [first] = case["attempts"]
    assert first["channel"] == "call_task" and first["purpose"] == "follow_up"


async def test_a_late_cancellation_by_the_patient_over_hl7_opens_its_case(both: Both) -> None:
    patient, appointment = "PAT-LATE", "APT-LATE"
    now = both.clock.now()
    start = now + timedelta(hours=3)
    before = both.tracker.worker.detector.tracked_appointments
    await both.hl7(hl7_visit("S12", "LATE-1", patient, appointment, start))
    await both.tracked(before)
    cancel = hl7_visit(
        "S15", "LATE-2", patient, appointment, start, filler_status="Cancelled", reason="PAT"
    )
    await both.hl7(cancel)
    case = await both.case_of(patient)
    assert (case["reason"], case["appointment_id"]) == ("late_cancellation", appointment)
    assert case["attempts"], case


async def test_a_clinic_cancellation_over_fhir_opens_a_rebooking_case(both: Both) -> None:
    patient, appointment = "PAT-CLINIC", "APT-CLINIC"
    start = both.clock.now() + timedelta(days=1)
    before = both.tracker.worker.detector.tracked_appointments
    await both.fhir(
        f"Appointment/{appointment}", fhir_visit(patient, appointment, start, "booked", 1)
    )
    await both.tracked(before)
    reason = {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason",
                "code": "prov",
            }
        ]
    }
    cancelled = fhir_visit(patient, appointment, start, "cancelled", 2, cancelationReason=reason)
    await both.fhir(f"Appointment/{appointment}", cancelled)
    case = await both.case_of(patient)
    assert (case["reason"], case["appointment_id"]) == ("clinic_cancellation", appointment)


async def test_a_new_booking_over_hl7_closes_the_case(both: Both) -> None:
    patient = "PAT-REBOOK"
    case = await _missed_visit(both, "hl7", patient)
    assert case["state"] != "closed"
    later = both.clock.now() + timedelta(days=2)
    await both.hl7(hl7_visit("S12", "REBOOK-2", patient, "APT-REBOOK-NEW", later))
    closed = await both.case_of(patient, lambda c: c["state"] == "closed")
    # Nobody had reached the patient yet (no notifier here): the booking supersedes the case.
    assert (closed["case_id"], closed["resolution"]) == (case["case_id"], "superseded")


async def test_a_death_over_fhir_closes_the_case_and_withdraws_what_was_planned(
    both: Both,
) -> None:
    patient = "PAT-DIED"
    case = await _missed_visit(both, "fhir", patient)
    body = {"resourceType": "Patient", "id": patient, "deceasedBoolean": True}
    await both.fhir(f"Patient/{patient}", body)
    closed = await both.case_of(patient, lambda c: c["state"] == "closed")
    assert (closed["case_id"], closed["resolution"]) == (case["case_id"], "deceased")
    assert all(a["state"] != "planned" for a in closed["attempts"])


async def test_a_discharge_to_another_hospital_over_hl7_closes_the_case(both: Both) -> None:
    patient = "PAT-MOVED"
    case = await _missed_visit(both, "hl7", patient)
    discharged = _hl7_time(both.clock.now() - timedelta(minutes=5))
    message = adt_a03("MOVED-1", patient_id=patient, discharged_at=discharged)
    await both.hl7(message.replace("20260301120000+0200", _hl7_time(START)))
    closed = await both.case_of(patient, lambda c: c["state"] == "closed")
    assert (closed["case_id"], closed["resolution"]) == (case["case_id"], "transferred_out")


async def test_a_treatment_plan_over_fhir_whose_next_stage_is_at_risk_opens_its_case(
    both: Both,
) -> None:
    patient, plan_id = "PAT-PLAN", "plan-contract"
    plan = fhir_care_plan()
    plan["id"] = plan_id
    plan["subject"] = {"reference": f"Patient/{patient}"}
    # The extraction ended 85 days ago; the implant is due within 90: five days are left,
    # inside the seven-day lead, so the stage is at risk at once.
    ended = both.clock.now() - timedelta(days=85)
    plan["activity"][0]["detail"]["scheduledPeriod"] = {"end": ended.isoformat()}
    await both.fhir(f"CarePlan/{plan_id}", plan)
    case = await both.case_of(patient)
    assert case["reason"] == "stage_window_at_risk"
    assert (case["plan_id"], case["stage_id"]) == (plan_id, "s2")
    deadline = datetime.fromisoformat(case["stage_deadline"])
    assert timedelta(days=4) < deadline - both.clock.now() <= timedelta(days=6)
    assert case["attempts"], case


async def test_a_patients_preferred_channel_over_fhir_opens_the_cadence(both: Both) -> None:
    patient = "PAT-PREFERS"
    body = {
        "resourceType": "Patient",
        "id": patient,
        "telecom": [{"system": "email", "value": "ona@example.org"}],
        "extension": [{"url": PREFERRED_CHANNEL_EXTENSION, "valueCode": "email"}],
    }
    await both.fhir(f"Patient/{patient}", body)
    pool = both.scheduler.pool
    assert pool is not None

    async def stored() -> bool:
        found = await pool.fetchval(
            "SELECT preferred_channel FROM patient_status WHERE patient_id = $1", patient
        )
        return bool(found == "email")

    await eventually(stored, timeout=60)
    case = await _missed_visit(both, "json", patient)
    [first] = case["attempts"]
    assert first["channel"] == "email"
