"""FHIR JSON through real HTTP, canonical events on the real broker, OperationOutcome on 4xx."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from common.clock import ManualClock
from common.http import OpsServer
from common.kafka import KafkaPublisher
from schemas.events import AppointmentEvent, ContactEvent, PatientStatusEvent, TreatmentPlanEvent
from schemas.topics import TopicNames
from services.tracker.fhir_api import FhirApi
from services.tracker.ingest import CanonicalSink
from tests.support.kafka import read_all, read_events
from tests.unit.tracker.fhir_samples import (
    fhir_appointment,
    fhir_care_plan,
    fhir_patient,
    fhir_transferred_patient,
)

pytestmark = pytest.mark.integration

TOKEN = "test-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/fhir+json"}


@pytest.fixture
async def base_url(publisher: KafkaPublisher, topics: TopicNames) -> AsyncIterator[str]:
    ops = OpsServer("tracker", registry=CollectorRegistry())
    FhirApi(
        sink=CanonicalSink(publisher, topics),
        clock=ManualClock(datetime(2026, 3, 1, 8, tzinfo=UTC)),
        token=TOKEN,
        zone="Europe/Vilnius",
        department="general",
        max_bytes=16 * 1024,
    ).mount(ops.app)
    port = await ops.start("127.0.0.1", 0)
    yield f"http://127.0.0.1:{port}/fhir"
    await ops.stop()


async def put(
    url: str, body: object, headers: dict[str, str] = HEADERS
) -> tuple[int, dict[str, object]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.put(url, data=data, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


async def test_appointment_patient_and_care_plan_land_canonical(
    base_url: str, kafka_bootstrap: str, topics: TopicNames
) -> None:
    status, outcome = await put(f"{base_url}/Appointment/apt-1", fhir_appointment("noshow"))
    assert status == 200 and outcome["resourceType"] == "OperationOutcome"
    status, _ = await put(f"{base_url}/Patient/pat-1", fhir_patient(deceasedBoolean=True))
    assert status == 200
    status, _ = await put(f"{base_url}/CarePlan/plan-1", fhir_care_plan())
    assert status == 200
    appointments = await read_events(kafka_bootstrap, topics.appointments, AppointmentEvent, 1)
    assert (appointments[0].appointment_id, appointments[0].status) == ("apt-1", "noshow")
    assert appointments[0].source == "tracker.fhir"
    contacts = await read_events(kafka_bootstrap, topics.contacts, ContactEvent, 1)
    assert contacts[0].email == "ona@example.org"
    statuses = await read_events(kafka_bootstrap, topics.patients, PatientStatusEvent, 1)
    assert statuses[0].status == "deceased"
    plans = await read_events(kafka_bootstrap, topics.plans, TreatmentPlanEvent, 1)
    assert plans[0].plan_id == "plan-1" and len(plans[0].stages) == 2


async def test_refusals_are_operation_outcomes_and_the_next_good_one_flows(
    base_url: str, kafka_bootstrap: str, topics: TopicNames
) -> None:
    url = f"{base_url}/Appointment/apt-1"
    status, outcome = await put(
        url, fhir_appointment(), headers={"Content-Type": "application/json"}
    )
    assert status == 401
    status, outcome = await put(url, b"{not json", headers=HEADERS)
    assert status == 400 and outcome["resourceType"] == "OperationOutcome"
    status, outcome = await put(url, fhir_appointment("maybe"))
    assert status == 422
    issue = outcome["issue"][0]  # type: ignore[index]
    assert issue["code"] == "invalid" and issue["expression"] == ["Appointment.status"]
    status, _ = await put(url, fhir_appointment(text={"div": "x" * 20_000}))
    assert status == 413
    status, _ = await put(url, fhir_appointment("booked"))
    assert status == 200
    events = await read_events(kafka_bootstrap, topics.appointments, AppointmentEvent, 1)
    assert [e.status for e in events] == ["booked"]


async def test_inactive_patient_transferred_elsewhere_goes_to_patients_topic(
    base_url: str, kafka_bootstrap: str, topics: TopicNames
) -> None:
    # Inactive without a marker: stored as a contact, no status (a duplicate or an error).
    status, _ = await put(f"{base_url}/Patient/pat-2", fhir_patient(id="pat-2", active=False))
    assert status == 200
    status, outcome = await put(f"{base_url}/Patient/pat-1", fhir_transferred_patient("link"))
    assert status == 200 and outcome["resourceType"] == "OperationOutcome"
    # A bad marker value is refused with the element named.
    bad = fhir_transferred_patient("extension")
    bad["extension"][0]["valueDateTime"] = "next week"
    status, outcome = await put(f"{base_url}/Patient/pat-1", bad)
    assert status == 422
    assert "extension" in json.dumps(outcome["issue"])
    statuses = await read_events(kafka_bootstrap, topics.patients, PatientStatusEvent, 1)
    assert (statuses[0].status, statuses[0].patient_id) == ("transferred_out", "pat-1")
    assert statuses[0].source == "tracker.fhir"
    records = await read_all(kafka_bootstrap, topics.patients, quiet=1.0)
    assert [r.key for r in records] == [b"pat-1"]
