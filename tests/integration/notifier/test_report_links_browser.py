"""An administrator reports a call's result from the link in the task, in a real browser.

The task reaches the webhook receiver (signature checked), the test opens its "rebooked"
link in headless Chromium, clicks the one button and finds the OutcomeEvent on the real
followup.outcomes topic; a second click records nothing new; a tampered or expired link
gets a clear page with a 4xx.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import aiohttp
import pytest
from selenium.webdriver.common.by import By

from tests.integration.notifier.world import VILNIUS, World
from tests.support.browser import chromium
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


def _open_and_click(url: str, language: str) -> tuple[str, str, str]:
    """Opens ``url``, notes what the page says, clicks its button: (patient, button, after)."""
    with chromium(language) as browser:
        browser.get(url)
        patient = browser.find_element(By.ID, "patient").text
        button = browser.find_element(By.ID, "record")
        label = button.text
        button.click()
        after = browser.find_element(By.ID, "message").text
        return patient, label, after


def _open(url: str, language: str) -> str:
    with chromium(language) as browser:
        browser.get(url)
        return str(browser.find_element(By.ID, "message").text)


async def test_a_result_is_recorded_from_the_link_in_one_click(world: World) -> None:
    await world.contact("p-link", phone="+37060000041", language="lt")
    await world.send(world.command("c-link", "p-link", "call_task"))
    [hook] = await eventually(lambda: world.webhook.tasks("c-link:1"))
    links = hook["task"]["report_links"]
    assert set(links) == {
        "rebooked",
        "declined",
        "no_answer",
        "voicemail",
        "wrong_number",
        "call_back",
    }
    assert all(url.startswith(world.base_url + "/call-tasks/report/") for url in links.values())

    patient, label, after = await asyncio.to_thread(_open_and_click, links["rebooked"], "lt")
    assert patient == "Pacientas: Ona"  # first name only
    assert label == "Įrašyti: užregistruotas iš naujo"
    assert after == "Įrašyta: užregistruotas iš naujo. Ačiū."

    reported = await eventually(lambda: world.outcome("link:c-link:1"))
    assert (reported.outcome, reported.case_id, reported.attempt_number) == (
        "answered_rebooked",
        "c-link",
        1,
    )
    assert (reported.channel, reported.idempotency_key) == ("call_task", "c-link:1")

    # Opening the link again, or another result's link: already recorded.
    again = await asyncio.to_thread(_open, links["rebooked"], "en")
    assert again == "Already recorded: rebooked. Nothing was changed."
    other = await asyncio.to_thread(_open, links["declined"], "bg")
    assert other == "Вече е записано: записан отново. Нищо не е променено."  # noqa: RUF001

    # The form sent twice (a double click, a resubmitted page): the same event again.
    async with aiohttp.ClientSession() as http:
        for token, outcome in (
            (links["rebooked"], "Already recorded: rebooked."),
            (links["declined"], "Already recorded: rebooked."),
        ):
            async with http.post(
                f"{world.base_url}/call-tasks/report",
                data={"token": token.rsplit("/", 1)[1]},
                headers={"Origin": world.base_url, "Accept-Language": "en"},
            ) as response:
                assert response.status == 200
                assert outcome in await response.text()
    await asyncio.sleep(0.5)
    from_links = [o for o in world.outcomes_of("c-link") if o.event_id.startswith("link:")]
    # The first click and the repeated rebooked form (the same event id: dropped
    # downstream); the declined link published nothing.
    assert [o.outcome for o in from_links] == ["answered_rebooked", "answered_rebooked"]


async def test_a_tampered_or_expired_link_gets_a_clear_refusal(world: World) -> None:
    await world.contact("p-bad", phone="+37060000042")
    await world.send(world.command("c-bad", "p-bad", "call_task"))
    [hook] = await eventually(lambda: world.webhook.tasks("c-bad:1"))
    url = hook["task"]["report_links"]["no_answer"]
    _payload, mac = url.rsplit("/", 1)[1].split(".")
    forged = url.replace(mac, mac[:-2] + ("AA" if mac[-2:] != "AA" else "BB"))

    said = await asyncio.to_thread(_open, forged, "en")
    assert said.startswith("This link is not valid.")
    async with aiohttp.ClientSession() as http:
        async with http.get(forged) as response:
            assert response.status == 400
        # A POST from another site is refused even with a good token.
        token = url.rsplit("/", 1)[1]
        async with http.post(
            f"{world.base_url}/call-tasks/report",
            data={"token": token},
            headers={"Origin": "https://evil.example"},
        ) as response:
            assert response.status == 403
        assert world.outcome("link:c-bad:1") is None

        # After the window and its grace the link has expired.
        world.clock.advance(timedelta(hours=8 + 72, seconds=1))
        async with http.get(url) as response:
            assert response.status == 410
            assert "This link has expired." in await response.text()
    said = await asyncio.to_thread(_open, url, "ru")
    assert said.startswith("Срок действия ссылки истёк.")
    assert world.outcome("link:c-bad:1") is None


async def test_a_call_back_link_asks_when_and_the_scheduler_gets_that_moment(world: World) -> None:
    await world.contact("p-back", phone="+37060000043")
    await world.send(world.command("c-back", "p-back", "call_task"))
    [hook] = await eventually(lambda: world.webhook.tasks("c-back:1"))
    token = hook["task"]["report_links"]["call_back"].rsplit("/", 1)[1]
    form = f"{world.base_url}/call-tasks/report"
    async with aiohttp.ClientSession() as http:
        async with http.get(hook["task"]["report_links"]["call_back"]) as response:
            page = await response.text()
            assert 'type="datetime-local" name="callback_at" required' in page
            assert "Call back at (Europe/Vilnius)" in page
        origin = {"Origin": world.base_url}
        async with http.post(form, data={"token": token}, headers=origin) as response:
            assert response.status == 400  # no time given: nothing recorded
        assert world.outcome("link:c-back:1") is None
        async with http.post(
            form, data={"token": token, "callback_at": "2026-03-03T17:30"}, headers=origin
        ) as response:
            assert response.status == 200
    reported = await eventually(lambda: world.outcome("link:c-back:1"))
    assert reported.outcome == "callback_requested"
    assert reported.respond_by == datetime(2026, 3, 3, 17, 30, tzinfo=VILNIUS)  # clinic's zone
