"""FHIR JSON through real HTTP, canonical events on the real broker, OperationOutcome on 4xx."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
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
    EXAMPLE_NAMES,
    REFUSED,
    fhir_appointment,
    fhir_care_plan,
    fhir_patient,
    fhir_transferred_patient,
    r4_example,
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


async def send(
    method: str, url: str, body: object = None, headers: dict[str, str] = HEADERS
) -> tuple[int, str, dict[str, Any]]:
    """Status, content type and parsed body of one request."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=data, headers=headers) as response,
    ):
        return response.status, response.content_type, await response.json(content_type=None)


async def test_the_r4_specifications_own_examples_pass_through_the_endpoint(
    base_url: str, kafka_bootstrap: str, topics: TopicNames
) -> None:
    stored = {"Appointment": 0, "Patient": 0, "CarePlan": 0}
    for name in EXAMPLE_NAMES:
        body = r4_example(name)
        kind = body["resourceType"]
        status, content_type, outcome = await send("PUT", f"{base_url}/{kind}/{body['id']}", body)
        assert content_type == "application/fhir+json"
        assert outcome["resourceType"] == "OperationOutcome"
        if name in REFUSED:
            assert status == 422, name
            assert outcome["issue"][0]["expression"] == [REFUSED[name]], name
        else:
            assert status == 200, (name, outcome)
            stored[kind] += 1
    assert stored == {"Appointment": 2, "Patient": 20, "CarePlan": 10}
    plans = await read_events(kafka_bootstrap, topics.plans, TreatmentPlanEvent, 10)
    by_id = {plan.plan_id: plan for plan in plans}
    assert by_id["example"].responsible_practitioner_id == "example"  # the one with an author
    assert by_id["f001"].responsible_practitioner_id is None
    assert [s.name for s in by_id["gpvisit"].stages] == [
        "Nurse Consultation",
        "Doctor Consultation",
    ]
    appointments = await read_events(kafka_bootstrap, topics.appointments, AppointmentEvent, 2)
    assert {(a.appointment_id, a.patient_id) for a in appointments} == {
        ("example", "example"),
        ("2docs", "example"),
    }
    await read_events(kafka_bootstrap, topics.contacts, ContactEvent, 20)


HOSTILE: list[tuple[str, str, bytes, int]] = [
    ("PUT", "/Patient/pat-1", b"[" * 5000 + b"]" * 5000, 400),  # RecursionError before
    (
        "PUT",
        "/Patient/pat-1",
        json.dumps(
            fhir_patient(extension=[{"url": "x", "extension": [[[[[[[[[[[[[[]]]]]]]]]]]]]]}])
        ).encode(),
        422,
    ),
    ("PUT", "/Patient/pat-1", b'{"a":' * 200 + b"1" + b"}" * 200, 400),  # deeper than FHIR
    (
        "PUT",
        "/Patient/pat-1",
        json.dumps(fhir_patient(communication=[{"language": None}])).encode(),
        422,
    ),
    ("PUT", "/Patient/pat-1", json.dumps(fhir_patient(meta={"_versionId": "3"})).encode(), 422),
    ("PUT", "/Patient/pat-1?_format=%00", json.dumps(fhir_patient()).encode(), 400),
    ("PUT", "/Patient/pat%00-1", json.dumps(fhir_patient(id="pat\x00-1")).encode(), 400),
    ("PUT", "/Patient/p%2F1", json.dumps(fhir_patient(id="p1")).encode(), 400),
    ("PUT", "/Patient/pat-1", json.dumps(fhir_patient(text={"div": "x" * 20_000})).encode(), 413),
    ("PUT", "/Patient/pat-1", b"\xff\xfe not utf-8", 400),
    ("PUT", "/Patient/pat-1", b"[]", 400),
    ("POST", "", json.dumps(fhir_patient()).encode(), 422),
    (
        "POST",
        "",
        json.dumps({"resourceType": "Bundle", "type": "batch", "entry": {}}).encode(),
        422,
    ),
    ("POST", "", json.dumps({"resourceType": "Bundle", "type": "document"}).encode(), 422),
]


@pytest.mark.parametrize(("method", "path", "body", "expected"), HOSTILE)
async def test_hostile_bodies_get_a_4xx_operation_outcome(
    base_url: str, method: str, path: str, body: bytes, expected: int
) -> None:
    status, content_type, outcome = await send(method, base_url + path, body)
    assert status == expected
    assert content_type == "application/fhir+json"
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"


async def test_a_chunked_body_without_length_is_bounded_too(base_url: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 1024

    async with (
        aiohttp.ClientSession() as session,
        session.put(f"{base_url}/Patient/pat-1", data=chunks(), headers=HEADERS) as response,
    ):
        assert response.status == 413
        assert (await response.json(content_type=None))["resourceType"] == "OperationOutcome"


async def test_metadata_is_an_r4_capability_statement_of_what_the_endpoint_does(
    base_url: str,
) -> None:
    status, content_type, body = await send("GET", f"{base_url}/metadata", headers={})
    assert (status, content_type) == (200, "application/fhir+json")
    statement = CapabilityStatement.model_validate(body)  # R4 (fhir.resources R4B package)
    assert statement.fhirVersion == "4.0.1" and statement.kind == "instance"
    rest = (statement.rest or [])[0]
    assert {r.type: [i.code for i in r.interaction or []] for r in rest.resource or []} == {
        "Appointment": ["update", "create"],
        "Patient": ["update", "create"],
        "CarePlan": ["update", "create"],
    }
    assert [i.code for i in rest.interaction or []] == ["batch", "transaction"]
    # What it says is true: each advertised interaction answers (here: refused for a bad
    # body, not for an unknown route), and a type it does not list is an unknown route.
    for kind in ("Appointment", "Patient", "CarePlan"):
        status, _, _ = await send(
            "PUT", f"{base_url}/{kind}/x1", {"resourceType": kind, "bogus": 1}
        )
        assert status == 422
        status, _, _ = await send("POST", f"{base_url}/{kind}", {"resourceType": kind, "bogus": 1})
        assert status == 422
    status, _, outcome = await send(
        "PUT", f"{base_url}/Encounter/e1", {"resourceType": "Encounter"}
    )
    assert status == 404 and outcome["issue"][0]["code"] == "not-supported"


async def test_unknown_routes_and_wrong_methods_answer_operation_outcomes(base_url: str) -> None:
    for method, path, expected in [
        ("GET", "/Observation/1", 404),
        ("GET", "/", 404),
        ("GET", "/Patient/pat-1", 405),
        ("DELETE", "/Appointment/apt-1", 405),
        ("GET", "", 405),
        ("PATCH", "/CarePlan/plan-1", 405),
    ]:
        status, content_type, outcome = await send(method, base_url + path)
        assert (status, content_type) == (expected, "application/fhir+json"), (method, path)
        assert outcome["resourceType"] == "OperationOutcome"
        assert "supported" in outcome["issue"][0]["diagnostics"]


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def put_entry(resource: dict[str, Any]) -> dict[str, Any]:
    url = f"{resource['resourceType']}/{resource['id']}"
    return {
        "fullUrl": f"https://ehr.example/fhir/{url}",
        "resource": resource,
        "request": {"method": "PUT", "url": url},
    }


async def test_a_batch_answers_entry_by_entry_and_stores_the_good_ones(
    base_url: str, kafka_bootstrap: str, topics: TopicNames
) -> None:
    status, _, answer = await send(
        "POST",
        base_url,
        bundle(
            "batch",
            put_entry(fhir_patient()),
            put_entry(fhir_appointment("maybe")),
            put_entry(fhir_care_plan()),
            {
                "resource": {"resourceType": "Observation", "id": "o1"},
                "request": {"method": "POST", "url": "Observation"},
            },
            {"request": {"method": "DELETE", "url": "Appointment/apt-1"}},
        ),
    )
    assert status == 200 and answer["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in answer["entry"]]
    assert statuses == ["200 OK", "422", "200 OK", "422", "422"]
    refused = answer["entry"][1]["response"]["outcome"]["issue"][0]
    assert refused["expression"] == ["Bundle.entry[1].resource.Appointment.status"]
    assert answer["entry"][3]["response"]["outcome"]["issue"][0]["code"] == "not-supported"
    assert answer["entry"][4]["response"]["outcome"]["issue"][0]["expression"] == [
        "Bundle.entry[4].request.method"
    ]
    await read_events(kafka_bootstrap, topics.contacts, ContactEvent, 1)
    await read_events(kafka_bootstrap, topics.plans, TreatmentPlanEvent, 1)
    assert await read_all(kafka_bootstrap, topics.appointments, quiet=1.0) == []


async def test_a_transaction_is_all_or_nothing(
    base_url: str, kafka_bootstrap: str, topics: TopicNames
) -> None:
    bad = bundle(
        "transaction",
        put_entry(fhir_patient()),
        put_entry(fhir_appointment("booked", participant=[])),
    )
    status, _, outcome = await send("POST", base_url, bad)
    assert status == 422 and outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[1].resource.Appointment.participant"]
    good = bundle(
        "transaction",
        put_entry(fhir_patient()),
        put_entry(fhir_appointment("booked")),
        put_entry(fhir_care_plan()),
    )
    status, _, answer = await send("POST", base_url, good)
    assert status == 200 and answer["type"] == "transaction-response"
    assert [e["response"]["status"] for e in answer["entry"]] == ["200 OK"] * 3
    # Only the good transaction's patient is on the topic: the bad one stored nothing.
    assert len(await read_all(kafka_bootstrap, topics.contacts, quiet=1.0)) == 1
    appointments = await read_events(kafka_bootstrap, topics.appointments, AppointmentEvent, 1)
    assert appointments[0].status == "booked"
    # Entries may name each other by fullUrl (urn:uuid), as transactions usually do.
    patient = put_entry(fhir_patient(id="pat-9"))
    patient["fullUrl"] = "urn:uuid:3f1c2a9e-5b7d-4c1e-9a2f-0d6e8b4c7a11"
    linked = put_entry(
        fhir_appointment(
            "booked",
            id="apt-9",
            participant=[{"actor": {"reference": patient["fullUrl"]}, "status": "accepted"}],
        )
    )
    status, _, _ = await send("POST", base_url, bundle("transaction", patient, linked))
    assert status == 200
    appointments = await read_events(kafka_bootstrap, topics.appointments, AppointmentEvent, 2)
    # Two patients, maybe two partitions: no order between them.
    assert {(a.appointment_id, a.patient_id) for a in appointments} == {
        ("apt-1", "pat-1"),
        ("apt-9", "pat-9"),
    }
    # A PUT entry whose URL names another id than its resource is refused.
    wrong = put_entry(fhir_appointment())
    wrong["request"]["url"] = "Appointment/apt-2"
    status, _, outcome = await send("POST", base_url, bundle("transaction", wrong))
    assert status == 422
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[0].resource.Appointment.id"]


async def test_what_an_r4_rest_hook_subscription_posts_is_accepted(
    base_url: str, kafka_bootstrap: str, topics: TopicNames
) -> None:
    """As HAPI FHIR and other R4 servers deliver a rest-hook: without payload an empty POST
    to the endpoint; with payload application/fhir+json an update to [endpoint]/[type]/[id]
    with the channel's headers; the Subscriptions backport posts a history Bundle."""
    hook = {
        "Authorization": f"Bearer {TOKEN}",
        "Content-Type": "application/fhir+json; charset=UTF-8",
    }
    status, _, outcome = await send(
        "POST", base_url, b"", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 200 and "nothing stored" in outcome["issue"][0]["diagnostics"]
    status, _, _ = await send(
        "PUT", f"{base_url}/Appointment/apt-1", fhir_appointment("arrived"), headers=hook
    )
    assert status == 200
    notification = bundle(
        "history",
        {
            "fullUrl": "urn:uuid:6a1e4c1f-2e51-4d2b-9f8c-0b7b2f6c1e11",
            "resource": {
                "resourceType": "Parameters",
                "parameter": [
                    {
                        "name": "subscription",
                        "valueReference": {"reference": "Subscription/followup"},
                    },
                    {"name": "type", "valueCode": "event-notification"},
                ],
            },
        },
        {
            "fullUrl": "https://ehr.example/fhir/Appointment/apt-2",
            "resource": fhir_appointment("booked", id="apt-2"),
            "request": {"method": "PUT", "url": "Appointment/apt-2"},
            "response": {"status": "200"},
        },
    )
    status, _, answer = await send("POST", base_url, notification, headers=hook)
    assert status == 200
    assert [e["response"]["status"] for e in answer["entry"]] == ["200 OK", "200 OK"]
    events = await read_events(kafka_bootstrap, topics.appointments, AppointmentEvent, 2)
    assert [(e.appointment_id, e.status) for e in events] == [
        ("apt-1", "arrived"),
        ("apt-2", "booked"),
    ]
    status, _, _ = await send("POST", base_url, b"", headers={})
    assert status == 401  # a ping needs the token too
