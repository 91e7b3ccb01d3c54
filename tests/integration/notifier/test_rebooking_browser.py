"""A patient rebooks from the link in their SMS, in a real headless browser, against a real
FHIR R4 server (HAPI FHIR's plain server) seeded with a Schedule and Slots.

The SMS reaches the provider stand-in with its own signed link; Chromium opens it, the page
(in the patient's language, first name only) offers the free slots of the stage's
department before its deadline; the patient picks one and the Appointment request arrives
at the FHIR server. The page then says "requested" until the hospital's own booking comes
back on followup.appointments. A slot taken meanwhile offers the next ones; "call me back"
becomes a callback_requested outcome; tampered, foreign-site, reused and expired links get a
clear page with a 4xx.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from schemas.events import AppointmentEvent
from tests.integration.notifier.conftest import messaging_world
from tests.integration.notifier.world import START, World
from tests.support.browser import chromium
from tests.support.fhir_server import FhirR4Server
from tests.support.polling import eventually

pytestmark = pytest.mark.integration
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
LINK = re.compile(r"http://127\.0\.0\.1:\d+/r/[A-Za-z0-9_-]{12}")
DAY = timedelta(days=1)


def _slot(slot_id: str, schedule: str, start: datetime, status: str = "free") -> dict[str, Any]:
    return {
        "resourceType": "Slot",
        "id": slot_id,
        "schedule": {"reference": f"Schedule/{schedule}"},
        "status": status,
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=30)).isoformat(),
    }


def _put(fhir: FhirR4Server, resource: dict[str, Any]) -> None:
    import urllib.request

    request = urllib.request.Request(
        f"{fhir.base_url}/{resource['resourceType']}/{resource['id']}",
        data=json.dumps(resource).encode(),
        method="PUT",
        headers=FHIR_JSON,
    )
    with urllib.request.urlopen(request, timeout=20) as reply:
        assert reply.status in (200, 201)


# The dental schedule's slots, as the hospital publishes them (START: Monday 10:00 Vilnius).
TUESDAY_9 = START + DAY - timedelta(hours=1)
TUESDAY_11 = START + DAY + timedelta(hours=1)
WEDNESDAY_10 = START + 2 * DAY
THURSDAY_10 = START + 3 * DAY
TOO_LATE = START + 30 * DAY  # after the stage deadline


@pytest.fixture(scope="module")
def fhir() -> Iterator[FhirR4Server]:
    server = FhirR4Server().start()
    try:
        for schedule, actor in (
            ("dental", "HealthcareService/dental"),
            ("eye", "HealthcareService/eye"),
        ):
            _put(
                server,
                {"resourceType": "Schedule", "id": schedule, "actor": [{"reference": actor}]},
            )
        for resource in (
            _slot("d-tue-9", "dental", TUESDAY_9),
            _slot("d-tue-10", "dental", TUESDAY_9 + timedelta(hours=1), status="busy"),
            _slot("d-tue-11", "dental", TUESDAY_11),
            _slot("d-wed-10", "dental", WEDNESDAY_10),
            _slot("d-thu-10", "dental", THURSDAY_10),
            _slot("d-late", "dental", TOO_LATE),
            _slot("e-tue-9", "eye", TUESDAY_9),
        ):
            _put(server, resource)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
async def world(fhir: FhirR4Server) -> AsyncIterator[World]:
    async with messaging_world(
        slots_source="fhir", slots_fhir_url=fhir.base_url, slots_cache_minutes=2
    ) as running:
        yield running


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _sms_link(world: World, case_id: str, patient_id: str, phone: str, **contact: Any) -> str:
    await world.contact(patient_id, phone=phone, **contact)
    await world.send(world.command(case_id, patient_id, "sms"))
    [message] = await eventually(
        lambda: [m for m in world.primary.messages if m.to == phone], timeout=90
    )
    found = LINK.search(message.body)
    assert found, "the SMS carries no rebooking link"
    return found.group(0)


async def _appointment(fhir: FhirR4Server, case_id: str) -> dict[str, Any] | None:
    query = (
        "Appointment?_lastUpdated=ge2000-01-01T00:00:00Z"
        f"&identifier=urn:followup:rebook-request|rebook:{case_id}"
    )
    async with (
        aiohttp.ClientSession(headers=FHIR_JSON) as http,
        http.get(f"{fhir.base_url}/{query}") as reply,
    ):
        bundle = await reply.json(content_type=None)
    entries = bundle.get("entry") or []
    return entries[0]["resource"] if entries else None


def _after_submit(browser: Any) -> Any:
    """The answer page's message, once loaded (a click does not wait for the next page)."""
    return WebDriverWait(browser, 30).until(
        expected_conditions.presence_of_element_located((By.ID, "message"))
    )


def _pick_second_slot(url: str) -> dict[str, Any]:
    """The patient opens the link on their phone, reads the page, picks the second time."""
    with chromium("lt") as browser:
        browser.get(url)
        seen: dict[str, Any] = {
            key: browser.find_element(By.ID, key).text
            for key in ("greeting", "why", "stage", "none_fit")
        }
        seen["page"] = browser.find_element(By.TAG_NAME, "body").text
        radios = browser.find_elements(By.CSS_SELECTOR, "input[name=slot]")
        seen["slots"] = [r.get_attribute("value") for r in radios]
        seen["labels"] = [
            label.text
            for label in browser.find_elements(By.CSS_SELECTOR, "label")
            if label.find_elements(By.CSS_SELECTOR, "input[name=slot]")
        ]
        radios[1].click()
        browser.find_element(By.ID, "book").click()
        seen["after"] = _after_submit(browser).text
        return seen


def _open(url: str, language: str = "en") -> tuple[str, str, str | None]:
    """What the page says: (its message's key, its text, the request's status key)."""
    with chromium(language) as browser:
        browser.get(url)
        message = browser.find_element(By.ID, "message")
        status = browser.find_elements(By.ID, "status")
        state = status[0].get_attribute("data-key") if status else None
        return str(message.get_attribute("data-key")), str(message.text), state


async def test_the_patient_picks_a_slot_and_the_request_reaches_the_fhir_server(
    world: World, fhir: FhirR4Server
) -> None:
    offered_before = _metric("followup_notifier_rebook_slots_offered_total")
    requested_before = _metric(
        "followup_notifier_rebook_requests_total", kind="booking", result="requested"
    )
    url = await _sms_link(world, "c-rb", "p-rb", "+37060000051", language="lt")

    seen = await asyncio.to_thread(_pick_second_slot, url)
    assert seen["greeting"] == "Sveiki, Ona."  # first name only
    assert "Petraitė" not in seen["page"] and "+37060000051" not in seen["page"]
    assert seen["why"].startswith("Pasigedome Jūsų vizito")  # care first: the missed visit
    assert seen["stage"].startswith("Kitas jūsų gydymo etapas: Implant.")
    # The dental department's free slots before the deadline, earliest first: not the busy
    # one, not another department's, not the one after the stage deadline.
    assert seen["slots"] == ["d-tue-9", "d-tue-11", "d-wed-10", "d-thu-10"]
    assert seen["labels"][0] == "2026 m. kovo 3 d. 09:00"  # the patient's zone and language
    assert seen["after"].startswith(
        "Ačiū. Paprašėme klinikos užregistruoti jus 2026 m. kovo 3 d. 11:00."
    )

    appointment = await eventually(lambda: _appointment(fhir, "c-rb"), timeout=90)
    assert appointment["status"] == "proposed"
    assert appointment["slot"] == [{"reference": "Slot/d-tue-11"}]
    assert appointment["participant"][0]["actor"] == {"reference": "Patient/p-rb"}
    assert datetime.fromisoformat(appointment["start"].replace("Z", "+00:00")) == TUESDAY_11
    assert _metric("followup_notifier_rebook_slots_offered_total") - offered_before == 4
    requested = _metric(
        "followup_notifier_rebook_requests_total", kind="booking", result="requested"
    )
    assert requested - requested_before == 1

    # What the patient did reaches the case (and the front desk) as outcomes.
    asked = await eventually(lambda: world.outcome("rebook:c-rb:booking_requested"), timeout=90)
    assert (asked.case_id, asked.attempt_number, asked.detail) == ("c-rb", 1, "proposed")
    opened = await eventually(lambda: world.outcome("c-rb:1:link_opened"), timeout=90)
    assert opened.channel == "sms"

    # The link again: used; the request is "requested" until the hospital books it.
    key, _text, state = await asyncio.to_thread(_open, url, "lt")
    assert (key, state) == ("used", "requested")
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 409

    # The hospital's own booking arrives on the usual path: the request is confirmed.
    booked = AppointmentEvent(
        event_id="hospital:appt-77:booked",
        occurred_at=world.clock.now(),
        source="tracker",
        change="booked",
        appointment_id="appt-77",
        patient_id="p-rb",
        start=TUESDAY_11,
        end=TUESDAY_11 + timedelta(minutes=30),
        timezone="Europe/Vilnius",
        department="dental",
        status="booked",
    )
    await world.publisher.publish(world.topics.appointments, booked)

    async def confirmed() -> bool:
        _key, _text, status = await asyncio.to_thread(_open, url, "lt")
        return status == "confirmed"

    await eventually(confirmed, timeout=90)
    opens = [o for o in world.outcomes_of("c-rb") if o.outcome == "link_opened"]
    assert len(opens) == 1  # opened four times, told once


async def test_a_slot_taken_meanwhile_offers_the_next_ones(
    world: World, fhir: FhirR4Server
) -> None:
    url = await _sms_link(world, "c-taken", "p-taken", "+37060000052")
    token = url.rsplit("/", 1)[1]
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as response:
            assert response.status == 200
            page = await response.text()
        assert 'value="d-tue-9"' in page
        # Someone else books Tuesday 9:00 at the hospital while the page is open.
        await asyncio.to_thread(_put, fhir, _slot("d-tue-9", "dental", TUESDAY_9, status="busy"))
        form = f"{world.base_url}/r"
        origin = {"Origin": world.base_url}
        async with http.post(
            form, data={"token": token, "action": "book", "slot": "d-tue-9"}, headers=origin
        ) as response:
            assert response.status == 409
            page = await response.text()
        assert "that time was just taken" in page
        assert 'value="d-tue-9"' not in page and 'value="d-tue-11"' in page
        assert await _appointment(fhir, "c-taken") is None
        async with http.post(
            form, data={"token": token, "action": "book", "slot": "d-wed-10"}, headers=origin
        ) as response:
            assert response.status == 200
            assert "We asked the clinic to book" in await response.text()
    appointment = await eventually(lambda: _appointment(fhir, "c-taken"), timeout=90)
    assert appointment["slot"] == [{"reference": "Slot/d-wed-10"}]


async def test_none_fit_call_me_back_becomes_a_callback_request(world: World) -> None:
    url = await _sms_link(world, "c-call", "p-call", "+37060000053", language="ru")
    token = url.rsplit("/", 1)[1]
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as response:
            page = await response.text()
        choices = re.findall(r'name="call_at" value="([^"]+)"', page)
        assert choices[0] == "soon" and len(choices) == 7
        wanted = choices[2]  # Tuesday afternoon, the patient's zone
        assert datetime.fromisoformat(wanted) == START + DAY + timedelta(hours=5)
        async with http.post(
            f"{world.base_url}/r",
            data={"token": token, "action": "callback", "call_at": wanted},
            headers={"Origin": world.base_url},
        ) as response:
            assert response.status == 200
            assert "Клиника позвонит вам около" in await response.text()
    reported = await eventually(lambda: world.outcome("rebook:c-call:callback"), timeout=90)
    assert (reported.outcome, reported.channel, reported.attempt_number) == (
        "callback_requested",
        "sms",
        1,
    )
    assert reported.respond_by == datetime.fromisoformat(wanted)
    assert reported.idempotency_key == "c-call:1"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 409  # used: one request per case


async def test_the_email_carries_the_link_too(world: World) -> None:
    await world.contact("p-mail", email="ona@example.test")
    await world.send(world.command("c-mail", "p-mail", "email"))
    [mail] = await eventually(lambda: world.inbox.for_key("c-mail:1"), timeout=90)
    text = mail.get_body(("plain",)).get_content()
    found = LINK.search(text)
    assert found
    async with aiohttp.ClientSession() as http, http.get(found.group(0)) as response:
        assert response.status == 200
        assert "Hello, Ona." in await response.text()


async def test_tampered_foreign_and_expired_links_are_refused(world: World) -> None:
    url = await _sms_link(world, "c-bad", "p-bad", "+37060000054")
    token = url.rsplit("/", 1)[1]
    forged = url[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    key, text, _ = await asyncio.to_thread(_open, forged, "en")
    assert key == "invalid" and text.startswith("This link is not valid.")
    async with aiohttp.ClientSession() as http:
        async with http.get(forged) as response:
            assert response.status == 400
        # A call-report link's token (another purpose, another shape) is no rebooking link.
        async with http.get(f"{world.base_url}/r/{token}.{token}") as response:
            assert response.status == 400
        # Hostile input is refused with a 4xx, never a 500.
        async with http.get(f"{world.base_url}/r/%00{token[1:]}") as response:
            assert response.status == 400
        async with http.post(
            f"{world.base_url}/r",
            json={"token": [token]},
            headers={"Origin": world.base_url},
        ) as response:
            assert response.status == 400
        async with http.post(
            f"{world.base_url}/r",
            data={"token": token, "action": "book", "slot": "x" * 5000},
            headers={"Origin": world.base_url},
        ) as response:
            assert response.status == 409  # not a slot we offer: the free ones again
        async with http.post(
            f"{world.base_url}/r",
            data={"token": token, "action": "callback", "call_at": "2026-03-03T15:00"},
            headers={"Origin": world.base_url},
        ) as response:
            assert response.status == 400  # a moment without its zone
        assert world.outcome("rebook:c-bad:callback") is None
        # The full stop a phone's linkifier may take into the link does not break it.
        async with http.get(url + ".") as response:
            assert response.status == 200
        async with http.post(
            f"{world.base_url}/r",
            data={"token": url.rsplit("/", 1)[1], "action": "book", "slot": "d-thu-10"},
            headers={"Origin": "https://evil.example"},
        ) as response:
            assert response.status == 403
        # The message's window (8 h) and the link's 7 days after it: expired.
        world.clock.advance(timedelta(days=7, hours=8, seconds=1))
        async with http.get(url) as response:
            assert response.status == 410
            assert "This link has expired." in await response.text()
