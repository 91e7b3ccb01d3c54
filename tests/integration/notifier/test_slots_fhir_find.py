"""Free slots from a real FHIR R4 server (HAPI FHIR's libraries) that has the Appointment
``$find`` operation of the Argonaut / HL7 Scheduling IG, and from one that has only Slot
search: the adapter reads the server's CapabilityStatement and asks the way it can."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.notifier.slots import SlotFilter
from services.notifier.slots_fhir import FhirSlots, declares_find
from tests.support.fhir_server import FhirR4Server

pytestmark = pytest.mark.integration
MONDAY = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
DAY = timedelta(days=1)
HEADERS = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def _put(server: FhirR4Server, resource: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{server.base_url}/{resource['resourceType']}/{resource['id']}",
        data=json.dumps(resource).encode(),
        method="PUT",
        headers=HEADERS,
    )
    with urllib.request.urlopen(request, timeout=20) as reply:
        assert reply.status in (200, 201)


def _seeded(server: FhirR4Server) -> FhirR4Server:
    for schedule, actor in (("dental", "HealthcareService/dental"), ("dr-7", "Practitioner/dr-7")):
        _put(server, {"resourceType": "Schedule", "id": schedule, "actor": [{"reference": actor}]})
    for slot_id, schedule, start, status in (
        ("d-tue", "dental", MONDAY + DAY, "free"),
        ("d-tue-busy", "dental", MONDAY + DAY + timedelta(hours=1), "busy"),
        ("d-wed", "dental", MONDAY + 2 * DAY, "free"),
        ("d-late", "dental", MONDAY + 30 * DAY, "free"),  # after the stage deadline
        ("p-tue", "dr-7", MONDAY + DAY + timedelta(hours=2), "free"),
    ):
        _put(server, {
            "resourceType": "Slot", "id": slot_id, "status": status,
            "schedule": {"reference": f"Schedule/{schedule}"},
            "start": start.isoformat(), "end": (start + timedelta(minutes=30)).isoformat(),
        })  # fmt: skip
    return server


@pytest.fixture(scope="module")
def with_find() -> Iterator[FhirR4Server]:
    server = FhirR4Server(find=True).start()
    try:
        yield _seeded(server)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def slot_search_only() -> Iterator[FhirR4Server]:
    server = FhirR4Server().start()
    try:
        yield _seeded(server)
    finally:
        server.stop()


def _metadata(server: FhirR4Server) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.base_url}/metadata", timeout=20) as reply:
        loaded: dict[str, Any] = json.loads(reply.read())
        return loaded


WANTED = SlotFilter("dental", MONDAY, MONDAY + 10 * DAY)


async def test_a_server_with_find_is_asked_with_find(with_find: FhirR4Server) -> None:
    assert declares_find(_metadata(with_find))  # HAPI lists the operation it serves
    source = FhirSlots(with_find.base_url)
    try:
        offered = await source.free_slots(WANTED, 6)
        assert source.searching == "find"
        assert [s.slot_id for s in offered] == ["d-tue", "d-wed"]
        assert offered[0].start == MONDAY + DAY and offered[0].end - offered[0].start == timedelta(
            minutes=30
        )
        by_doctor = SlotFilter("dental", MONDAY, MONDAY + 10 * DAY, practitioner_id="dr-7")
        assert [s.slot_id for s in await source.free_slots(by_doctor, 6)] == ["p-tue"]
        assert [s.slot_id for s in await source.free_slots(WANTED, 1)] == ["d-tue"]
    finally:
        await source.close()


async def test_a_server_without_find_is_asked_for_slots(slot_search_only: FhirR4Server) -> None:
    assert not declares_find(_metadata(slot_search_only))
    source = FhirSlots(slot_search_only.base_url)
    try:
        offered = await source.free_slots(WANTED, 6)
        assert source.searching == "slot"
        assert [s.slot_id for s in offered] == ["d-tue", "d-wed"]
    finally:
        await source.close()
