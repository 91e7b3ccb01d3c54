"""Rebooking by link across the services, on the real topics: the real scheduler opens a
no-show case and asks for an SMS; the real notifier sends it with its link; the patient
books in headless Chromium; the Appointment request reaches the real FHIR R4 server; the
scheduler records booking_requested on the SMS attempt and keeps the case open; the
hospital's own booking then closes it as recovered, and the page says "booked"."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from schemas.events import AppointmentEvent
from services.scheduler.app import Scheduler
from services.scheduler.cases import case_id_for
from services.scheduler.policy import DEFAULT_POLICY_PATH, CadencePolicy
from tests.integration.notifier.conftest import messaging_world
from tests.integration.notifier.test_rebooking_browser import _appointment, _put, _slot
from tests.integration.notifier.world import World
from tests.integration.scheduler.conftest import MISSED, no_show, outcome
from tests.support import infra
from tests.support.browser import chromium
from tests.support.fhir_server import FhirR4Server
from tests.support.polling import eventually
from tests.support.scheduler import scheduler_settings

pytestmark = pytest.mark.integration
CASE = case_id_for("no_show:appt-1")
LINK = re.compile(r"http://127\.0\.0\.1:\d+/r/[A-Za-z0-9_-]{12}")
FIRST_FREE = MISSED + timedelta(days=1, minutes=30)  # Tuesday 10:00


@pytest.fixture(scope="module")
def fhir() -> Iterator[FhirR4Server]:
    server = FhirR4Server().start()
    try:
        # The trigger names the practitioner (dr-7): the slots of dr-7's schedule.
        doctor = {"reference": "Practitioner/dr-7"}
        _put(server, {"resourceType": "Schedule", "id": "dr-7", "actor": [doctor]})
        _put(server, _slot("dr7-tue-10", "dr-7", FIRST_FREE))
        _put(server, _slot("dr7-wed-10", "dr-7", FIRST_FREE + timedelta(days=1)))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
async def world(fhir: FhirR4Server) -> AsyncIterator[World]:
    async with messaging_world(slots_source="fhir", slots_fhir_url=fhir.base_url) as running:
        yield running


@pytest.fixture
async def scheduler(world: World, pg_schema: str) -> AsyncIterator[Scheduler]:
    settings = scheduler_settings(
        infra.KAFKA_BOOTSTRAP, infra.DATABASE_URL, world.topics, pg_schema, poll_seconds=0.05
    )
    service = Scheduler(settings, world.clock, CadencePolicy.load(DEFAULT_POLICY_PATH))
    await service.start()
    await asyncio.wait_for(service.consumers_assigned(), 30)
    yield service
    await service.stop()


def _book_first(url: str) -> str:
    with chromium("en") as browser:
        browser.get(url)
        browser.find_element(By.ID, "book").click()  # the first slot is preselected
        # The answer page, once loaded (a click does not wait for the next page).
        found = WebDriverWait(browser, 30).until(
            expected_conditions.presence_of_element_located((By.ID, "message"))
        )
        return str(found.text)


def _status_of(url: str) -> str | None:
    with chromium("en") as browser:
        browser.get(url)
        found = browser.find_elements(By.ID, "status")
        return found[0].get_attribute("data-key") if found else None


async def test_a_patient_rebooks_by_link_and_the_hospitals_booking_closes_the_case(
    world: World, scheduler: Scheduler, fhir: FhirR4Server
) -> None:
    pool = scheduler.pool
    assert pool is not None
    await world.contact("pat-1", phone="+37060000071")

    async def attempt(number: int) -> dict[str, object] | None:
        row = await pool.fetchrow(
            "SELECT channel, state, planned_at, outcome, outcome_detail FROM attempts"
            " WHERE case_id = $1 AND attempt_number = $2",
            CASE,
            number,
        )
        return dict(row) if row else None

    async def case_state() -> tuple[str, str | None]:
        row = await pool.fetchrow("SELECT state, resolution FROM cases WHERE case_id = $1", CASE)
        return (row["state"], row["resolution"]) if row else ("", None)

    await world.publisher.publish(world.topics.triggers, no_show())
    first = await eventually(lambda: attempt(1), timeout=90)
    assert first["channel"] == "call_task"  # the policy's first step
    world.clock.set(MISSED + timedelta(hours=1))
    await eventually(lambda: world.outcome(f"{CASE}:1:task_created"), timeout=90)
    # The front desk could not reach the patient: the policy's next step is an SMS.
    await world.publisher.publish(
        world.topics.outcomes, outcome(CASE, 1, "no_answer", world.clock.now())
    )
    second = await eventually(lambda: attempt(2), timeout=90)
    assert second["channel"] == "sms"
    world.clock.set(second["planned_at"])
    [sms] = await eventually(
        lambda: [m for m in world.primary.messages if m.to == "+37060000071"], timeout=90
    )
    found = LINK.search(sms.body)
    assert found
    url = found.group(0)

    said = await asyncio.to_thread(_book_first, url)
    assert said.startswith("Thank you. We asked the clinic to book")
    appointment = await eventually(lambda: _appointment(fhir, CASE), timeout=90)
    assert appointment["slot"] == [{"reference": "Slot/dr7-tue-10"}]
    assert appointment["participant"][1]["actor"] == {"reference": "Practitioner/dr-7"}

    # The scheduler heard what the patient did, on the SMS attempt; the case stays open:
    # followup believes a booking only when the hospital's own event says so.
    async def requested() -> bool:
        found = await attempt(2)
        return found is not None and found["outcome"] == "booking_requested"

    await eventually(requested, timeout=90)  # generous: a loaded machine is slow, not wrong
    assert (await case_state())[0] != "closed"

    booked = AppointmentEvent(
        event_id="hospital:appt-2:booked",
        occurred_at=world.clock.now(),
        source="tracker",
        change="booked",
        appointment_id="appt-2",
        patient_id="pat-1",
        start=FIRST_FREE,
        end=FIRST_FREE + timedelta(minutes=30),
        timezone="Europe/Vilnius",
        department="dental",
        practitioner_id="dr-7",
        status="booked",
    )
    await world.publisher.publish(world.topics.appointments, booked)

    async def recovered() -> bool:
        return await case_state() == ("closed", "recovered")

    await eventually(recovered, timeout=90)

    async def confirmed() -> bool:
        return await asyncio.to_thread(_status_of, url) == "confirmed"

    await eventually(confirmed, timeout=90)
