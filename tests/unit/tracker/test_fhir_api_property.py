"""The FHIR endpoint over a real local socket, any body: FHIR JSON back, never a 500.

The broker is replaced by a sink that records what it would store (what is stored is the
integration tier's business: tests/integration/tracker/test_fhir_http.py); here the
question is only whether some body can make the endpoint fail.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, example, given, settings

from common.clock import ManualClock
from schemas.base import Envelope
from services.tracker.fhir_api import FhirApi
from services.tracker.ingest import CanonicalSink
from tests.unit.tracker.fhir_mutations import mutated
from tests.unit.tracker.fhir_samples import (
    fhir_appointment,
    fhir_care_plan,
    fhir_patient,
    r4_example,
)

TOKEN = "t"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/fhir+json"}


class RecordingSink(CanonicalSink):
    def __init__(self) -> None:  # no broker
        self.events: list[Envelope] = []

    async def publish(self, way_in: str, events: Sequence[Envelope]) -> None:
        self.events += events


def bundle(kind: str) -> dict[str, Any]:
    linked = fhir_appointment(
        participant=[{"actor": {"reference": "urn:uuid:a"}, "status": "accepted"}]
    )
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {
                "fullUrl": "urn:uuid:a",
                "resource": fhir_patient(),
                "request": {"method": "PUT", "url": "Patient/pat-1"},
            },
            {"resource": linked, "request": {"method": "PUT", "url": "Appointment/apt-1"}},
            {"resource": fhir_care_plan(), "request": {"method": "POST", "url": "CarePlan"}},
            {"resource": {"resourceType": "Parameters", "parameter": []}},
        ],
    }


SAMPLES = [bundle(kind) for kind in ("batch", "transaction", "history")] + [
    r4_example("careplan-example-f202-malignancy.json"),
    r4_example("appointment-example.json"),
    r4_example("patient-example.json"),
]


async def _post(session: ClientSession, base: str, body: dict[str, Any]) -> tuple[int, str, Any]:
    kind = body.get("resourceType")
    url = base if kind == "Bundle" or not isinstance(kind, str) else f"{base}/{kind}"
    async with session.post(url, data=json.dumps(body).encode(), headers=HEADERS) as response:
        return response.status, response.content_type, json.loads(await response.text())


def test_no_body_makes_the_endpoint_answer_anything_but_fhir_json_below_500() -> None:
    loop = asyncio.new_event_loop()
    sink = RecordingSink()
    app = web.Application()
    FhirApi(
        sink=sink,
        clock=ManualClock(datetime(2026, 3, 1, 8, tzinfo=UTC)),
        token=TOKEN,
        zone="Europe/Vilnius",
        department="general",
    ).mount(app)
    server = TestServer(app, host="127.0.0.1")
    loop.run_until_complete(server.start_server())
    session = loop.run_until_complete(_session())
    base = str(server.make_url("/fhir"))
    answers: list[int] = []
    try:

        @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(mutated(SAMPLES))
        # Found by this property: a list as an entry's resourceType was a TypeError (500).
        @example(bundle("history") | {"entry": [{"resource": {"resourceType": []}}]})
        def check(body: dict[str, Any]) -> None:
            status, content_type, parsed = loop.run_until_complete(_post(session, base, body))
            answers.append(status)
            assert status < 500, body
            assert content_type == "application/fhir+json"
            assert parsed["resourceType"] in ("OperationOutcome", "Bundle")

        check()
    finally:
        loop.run_until_complete(session.close())
        loop.run_until_complete(server.close())
        loop.close()
    # The property saw both sides: bodies stored and bodies refused.
    assert 200 in answers and any(400 <= a < 500 for a in answers)
    assert sink.events


async def _session() -> ClientSession:
    return ClientSession()
