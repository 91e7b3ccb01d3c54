"""Every way a call's result comes back from the front desk, end to end, moves the case.

The real scheduler and the real notifier run on the same topics (one per-module prefix), each
in its own PostgreSQL schema, on one manual clock. A no-show trigger opens a case; the
scheduler's first call task goes through the notifier into every tool at once (the generic
webhook, a CalDAV list on Radicale, Tasks on a HAPI FHIR R4 server, Jira and Zendesk
stand-ins); the result is reported through one way back (the signed link clicked in headless
Chromium, the VTODO completed with a CalDAV client, the FHIR Task completed, the Jira issue
resolved, the Zendesk ticket solved, the webhook's reply, the bearer-token API) and the
scheduler's own case API shows the case advanced: closed recovered or declined, or the next
attempt planned.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import pytest
from caldav.davclient import DAVClient
from selenium.webdriver.common.by import By

from common.db import drop_schema
from common.kafka import delete_topics_with_prefix
from schemas.events import AppointmentEvent
from schemas.topics import TopicNames
from services.notifier.calltasks import FHIR_OUTCOME_SYSTEM, FHIR_OUTPUT_SYSTEM, fhir_task_id
from services.notifier.sink_jira import task_label
from services.scheduler.app import Scheduler
from services.scheduler.cases import case_id_for
from services.scheduler.policy import DEFAULT_POLICY_PATH, CadencePolicy
from standins.jira import JiraStandIn
from standins.zendesk import ZendeskStandIn
from tests.integration.notifier.tool_world import tool_world
from tests.integration.notifier.world import API_TOKEN, VILNIUS, WebhookReceiver, World
from tests.support import infra
from tests.support.browser import chromium
from tests.support.caldav_server import RadicaleServer
from tests.support.fhir_server import FhirR4Server
from tests.support.polling import eventually
from tests.support.scheduler import no_show_trigger, scheduler_settings

pytestmark = pytest.mark.integration
CASE_TOKEN = "case-api-token"
JIRA_SECRET, ZENDESK_SECRET = "jira-hook-secret", "zendesk-signing-secret"
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
SINKS = "webhook,caldav,fhir_task,jira,zendesk"


@dataclass
class Loop:
    """Both services and every tool the front desk might report from."""

    world: World  # the notifier with its readers and clock (the scheduler's clock too)
    scheduler: Scheduler
    fhir: FhirR4Server
    front_desk: Any  # the CalDAV task list, as a CalDAV client sees it
    jira: JiraStandIn
    zendesk: ZendeskStandIn

    async def open_case(self, patient: str, reply: dict[str, Any] | None = None) -> str:
        """The tracker's no-show of ``patient``'s visit an hour ago opens a case; its first
        call task (due now) reaches every tool. Returns the task id. ``reply``: what the
        webhook receiver answers the task with."""
        world = self.world
        await world.contact(patient, phone="+37060000900", language="en")
        missed = world.clock.now() - timedelta(hours=1)
        trigger = no_show_trigger(patient, f"appt-{patient}", missed=missed)
        task_id = f"{case_id_for(trigger.event_id)}:1"
        if reply is not None:
            world.webhook.replies[task_id] = {"report_id": f"reply-{patient}", **reply}
        await world.publisher.publish(world.topics.triggers, trigger)
        await eventually(lambda: world.outcome(f"{task_id}:task_created"), timeout=60)
        if reply is None:  # the front desk reports only once the scheduler knows it is out
            case = await eventually(lambda: self._recorded(task_id, "task_created"))
            assert case["state"] == "contacting"
        return task_id

    async def case(self, case_id: str) -> dict[str, Any]:
        """The case as the scheduler's case API shows it."""
        url = f"http://127.0.0.1:{self.scheduler.ops.port}/cases/{case_id}"
        headers = {"Authorization": f"Bearer {CASE_TOKEN}"}
        async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as reply:
            assert reply.status == 200
            body: dict[str, Any] = await reply.json()
            return body

    async def _recorded(self, task_id: str, outcome: str) -> dict[str, Any] | None:
        case = await self.case(task_id.rsplit(":", 1)[0])
        first = next(a for a in case["attempts"] if a["attempt_number"] == 1)
        return case if first["outcome"] == outcome else None

    async def moved(self, task_id: str, outcome: str) -> dict[str, Any]:
        """The case once the scheduler recorded ``outcome`` on the task's attempt."""
        case: dict[str, Any] = await eventually(
            lambda: self._recorded(task_id, outcome), timeout=60
        )
        return case


@pytest.fixture(scope="module")
def radicale() -> Iterator[RadicaleServer]:
    server = RadicaleServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def fhir() -> Iterator[FhirR4Server]:
    server = FhirR4Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
async def loop(radicale: RadicaleServer, fhir: FhirR4Server) -> AsyncIterator[Loop]:
    client: Any = DAVClient(url=f"{radicale.base_url}/", username="frontdesk", password="pw")
    front_desk = client.principal().make_calendar(
        name="Calls", cal_id="calls", supported_calendar_component_set=["VTODO"]
    )
    jira = JiraStandIn("desk@clinic.example", "jira-token", webhook_secret=JIRA_SECRET)
    zendesk = ZendeskStandIn("desk@clinic.example", "zd-token", signing_secret=ZENDESK_SECRET)
    webhook = WebhookReceiver()
    for standin in (jira, zendesk, webhook):
        await standin.start()
    scheduler_schema = f"t_{uuid.uuid4().hex[:10]}"
    topics: TopicNames | None = None
    try:
        async with tool_world(
            webhook=webhook,
            call_task_sinks=SINKS,
            webhook_url=webhook.url,
            caldav_list_url=f"{radicale.base_url}/frontdesk/calls/",
            caldav_username="frontdesk",
            caldav_password="pw",
            caldav_poll_seconds=0.3,
            fhir_base_url=fhir.base_url,
            fhir_poll_seconds=0.3,
            jira_base_url=jira.base_url,
            jira_email="desk@clinic.example",
            jira_api_token="jira-token",
            jira_project_key="DESK",
            jira_webhook_secret=JIRA_SECRET,
            zendesk_url=zendesk.base_url,
            zendesk_email="desk@clinic.example",
            zendesk_api_token="zd-token",
            zendesk_webhook_secret=ZENDESK_SECRET,
        ) as world:
            jira.webhook_url = f"{world.base_url}/jira/webhook"
            zendesk.webhook_url = f"{world.base_url}/zendesk/webhook"
            zendesk.clock = world.clock
            topics = TopicNames(prefix=world.app.topics.prefix)
            settings = scheduler_settings(
                infra.KAFKA_BOOTSTRAP,
                infra.DATABASE_URL,
                topics,
                scheduler_schema,
                api_token=CASE_TOKEN,
                poll_seconds=0.05,
            )
            scheduler = Scheduler(settings, world.clock, CadencePolicy.load(DEFAULT_POLICY_PATH))
            await scheduler.start()
            try:
                await asyncio.wait_for(scheduler.consumers_assigned(), 30)
                yield Loop(world, scheduler, fhir, front_desk, jira, zendesk)
            finally:
                await scheduler.stop()
    finally:
        for standin in (webhook, zendesk, jira):
            await standin.stop()
        await drop_schema(infra.DATABASE_URL, scheduler_schema)
        if topics is not None:  # both services stopped: nobody is reading them any more
            await delete_topics_with_prefix(infra.KAFKA_BOOTSTRAP, topics.prefix)


# --- the ways back: each reports ``outcome`` for the task the way the front desk would --------

Way = Callable[[Loop, str, str], Awaitable[None]]


def _click(url: str) -> str:
    with chromium("en") as browser:
        browser.get(url)
        browser.find_element(By.ID, "record").click()
        return str(browser.find_element(By.ID, "message").text)


LINK_OF = {"answered_rebooked": "rebooked", "answered_declined": "declined"}


async def by_link(loop: Loop, task_id: str, outcome: str) -> None:
    [hook] = loop.world.webhook.tasks(task_id)
    url = hook["task"]["report_links"][LINK_OF.get(outcome, outcome)]
    said = await asyncio.to_thread(_click, url)
    assert said.startswith("Recorded:")


async def by_caldav(loop: Loop, task_id: str, outcome: str) -> None:
    def complete() -> None:
        [todo] = [
            t
            for t in loop.front_desk.todos(include_completed=True)
            if str(t.icalendar_component["uid"]).startswith(f"{task_id}@")
        ]
        todo.icalendar_component.add("categories", [outcome])
        todo.complete()

    await asyncio.to_thread(complete)


async def by_fhir(loop: Loop, task_id: str, outcome: str) -> None:
    url = f"{loop.fhir.base_url}/Task/{fhir_task_id(task_id)}"
    async with aiohttp.ClientSession(headers=FHIR_JSON) as http:
        async with http.get(url) as reply:
            task = await reply.json(content_type=None)
        task["status"] = "completed"
        task["owner"] = {"reference": "Practitioner/admin-4"}
        task["output"] = [
            {
                "type": {"coding": [{"system": FHIR_OUTPUT_SYSTEM, "code": "call-outcome"}]},
                "valueCodeableConcept": {
                    "coding": [{"system": FHIR_OUTCOME_SYSTEM, "code": outcome}]
                },
            }
        ]
        async with http.put(url, data=json.dumps(task)) as reply:
            assert reply.status == 200


async def by_jira(loop: Loop, task_id: str, outcome: str) -> None:
    [key] = [k for k, i in loop.jira.issues.items() if task_label(task_id) in i["fields"]["labels"]]
    assert await loop.jira.resolve(key, outcome) == 202


async def by_zendesk(loop: Loop, task_id: str, outcome: str) -> None:
    [ticket] = [t for t in loop.zendesk.tickets.values() if t["external_id"] == task_id]
    assert await loop.zendesk.solve(int(str(ticket["id"])), outcome) == 202


async def by_api(loop: Loop, task_id: str, outcome: str) -> None:
    body = {"report_id": f"api-{task_id}", "outcome": outcome, "reported_by": "admin-3"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{loop.world.base_url}/calltasks/{task_id}/result",
            json=body,
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        ) as reply,
    ):
        assert reply.status == 202


WAYS: dict[str, Way] = {
    "link": by_link,
    "caldav": by_caldav,
    "fhir": by_fhir,
    "jira": by_jira,
    "zendesk": by_zendesk,
    "api": by_api,
}


def _closed(case: dict[str, Any], resolution: str) -> None:
    assert (case["state"], case["resolution"]) == ("closed", resolution)


def _next_attempt(case: dict[str, Any]) -> None:
    assert case["state"] == "contacting" and case["resolution"] is None
    planned = [a for a in case["attempts"] if a["state"] == "planned"]
    assert [a["attempt_number"] for a in planned] == [2]


@pytest.mark.parametrize(
    ("way", "outcome", "expect"),
    [
        ("link", "answered_rebooked", lambda c: _closed(c, "recovered")),
        ("caldav", "no_answer", _next_attempt),
        ("fhir", "answered_declined", lambda c: _closed(c, "declined")),
        ("jira", "answered_rebooked", lambda c: _closed(c, "recovered")),
        ("zendesk", "voicemail", _next_attempt),
        ("api", "answered_declined", lambda c: _closed(c, "declined")),
    ],
)
async def test_a_result_reported_through_a_way_back_moves_the_case(
    loop: Loop, way: str, outcome: str, expect: Callable[[dict[str, Any]], None]
) -> None:
    task_id = await loop.open_case(f"p-back-{way}")
    assert loop.world.webhook.tasks(task_id)  # the same task went to every tool
    await WAYS[way](loop, task_id, outcome)
    expect(await loop.moved(task_id, outcome))


async def test_the_webhooks_reply_is_the_result_and_the_call_back_is_planned(loop: Loop) -> None:
    asked = loop.world.clock.now().astimezone(VILNIUS).replace(hour=16, minute=0) + timedelta(
        days=1
    )
    task_id = await loop.open_case(
        "p-back-reply",
        reply={"outcome": "callback_requested", "callback_at": asked.isoformat()},
    )
    case = await loop.moved(task_id, "callback_requested")
    assert case["state"] == "contacting"
    [following] = [a for a in case["attempts"] if a["state"] == "planned"]
    assert following["channel"] == "call_task"
    assert datetime.fromisoformat(following["planned_at"]) == asked


async def test_a_booking_closes_the_case_and_withdraws_the_task_from_every_tool(
    loop: Loop,
) -> None:
    world = loop.world
    task_id = await loop.open_case("p-back-booked")
    # The patient booked a new visit at the hospital before anyone called: the case closes
    # recovered and the scheduler withdraws the call task that is still out.
    now = world.clock.now()
    booked = AppointmentEvent(
        event_id="appt-new-p-back-booked:booked",
        occurred_at=now,
        source="tracker",
        change="booked",
        appointment_id="appt-new-p-back-booked",
        patient_id="p-back-booked",
        start=now + timedelta(days=2),
        timezone="Europe/Vilnius",
        department="dental",
        status="booked",
    )
    await world.publisher.publish(world.topics.appointments, booked)
    withdrawn = await eventually(
        lambda: world.outcome(f"{task_id}:withdrawal:withdrawn"), timeout=60
    )
    assert withdrawn.detail is None  # it reached the sinks: not no_task, not never_sent
    _closed(await loop.case(task_id.rsplit(":", 1)[0]), "recovered")

    assert [h["task"]["action"] for h in world.webhook.tasks(task_id)] == ["create", "withdraw"]
    todos = await asyncio.to_thread(loop.front_desk.todos, include_completed=True)
    assert not [t for t in todos if str(t.icalendar_component["uid"]).startswith(f"{task_id}@")]
    async with (
        aiohttp.ClientSession(headers=FHIR_JSON) as http,
        http.get(f"{loop.fhir.base_url}/Task/{fhir_task_id(task_id)}") as reply,
    ):
        assert (await reply.json(content_type=None))["status"] == "cancelled"
    [issue] = [i for i in loop.jira.issues.values() if task_label(task_id) in i["fields"]["labels"]]
    assert issue["fields"]["status"] == {"name": "Cancelled"}
    [ticket] = [t for t in loop.zendesk.tickets.values() if t["external_id"] == task_id]
    assert ticket["status"] == "solved" and "followup_withdrawn" in ticket["tags"]
