"""Call tasks in a real CalDAV task list (Radicale), the front desk's side played by a real
CalDAV client library (``caldav``), results read back onto the real followup.outcomes topic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest
from caldav.davclient import DAVClient

from common.clock import ManualClock
from services.notifier.call_task_channel import CallTaskChannel
from services.notifier.channels import Parts
from services.notifier.sink_caldav import CalDavSink
from tests.integration.notifier.tool_world import fresh_names, notifier_world, tool_world, withdraw
from tests.integration.notifier.world import START, World
from tests.support.caldav_server import RadicaleServer
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def radicale() -> Iterator[RadicaleServer]:
    server = RadicaleServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def front_desk(radicale: RadicaleServer) -> Any:
    """The front desk's task list, as Thunderbird or DAVx5 would see it."""
    client: Any = DAVClient(url=f"{radicale.base_url}/", username="frontdesk", password="pw")
    principal: Any = client.principal()
    return principal.make_calendar(
        name="Calls", cal_id="calls", supported_calendar_component_set=["VTODO"]
    )


@pytest.fixture(scope="module")
async def world(radicale: RadicaleServer, front_desk: Any) -> AsyncIterator[World]:
    async with tool_world(
        call_task_sinks="caldav",
        caldav_list_url=f"{radicale.base_url}/frontdesk/calls/",
        caldav_username="frontdesk",
        caldav_password="pw",
        caldav_poll_seconds=0.3,
    ) as running:
        yield running


def _todo(front_desk: Any, task_id: str) -> Any:
    for todo in front_desk.todos(include_completed=True):
        if str(todo.icalendar_component["uid"]) == f"{task_id}@clinic.example":
            return todo
    return None


async def _created(world: World, front_desk: Any, case_id: str, patient_id: str) -> Any:
    await world.contact(patient_id, phone="+37060000051")
    await world.send(world.command(case_id, patient_id, "call_task"))
    await eventually(lambda: world.outcome(f"{case_id}:1:task_created"))
    return await asyncio.to_thread(_todo, front_desk, f"{case_id}:1")


async def test_a_task_completed_with_a_category_is_the_result(
    world: World, front_desk: Any
) -> None:
    todo = await _created(world, front_desk, "c-dav", "p-dav")
    component = todo.icalendar_component
    assert str(component["summary"]) == "Call patient p-dav: no show"  # no name on a lock screen
    notes = str(component["description"])
    assert "+37060000051" in notes and "Ona Petraitė" in notes
    assert "Check healing first." not in notes  # clinical notes stay out unless configured
    assert "METHOD" not in todo.data  # a CalDAV resource, not an invitation

    def complete() -> None:
        todo.icalendar_component.add("categories", ["No answer"])
        todo.complete()  # STATUS:COMPLETED, COMPLETED:<now>, saved with the client's PUT

    await asyncio.to_thread(complete)
    result = await eventually(lambda: world.outcome("c-dav:1:caldav:no_answer"))
    assert result.outcome == "no_answer" and result.idempotency_key == "c-dav:1"
    await asyncio.sleep(1.0)  # further syncs: nothing more
    assert [o.event_id for o in world.outcomes_of("c-dav")] == [
        "c-dav:1:task_created",
        "c-dav:1:caldav:no_answer",
    ]


async def test_a_result_line_in_the_notes_with_a_call_back_time(
    world: World, front_desk: Any
) -> None:
    todo = await _created(world, front_desk, "c-dav-cb", "p-dav-cb")

    def complete() -> None:
        component = todo.icalendar_component
        notes = str(component["description"])
        component["description"] = (
            f"Result: callback requested\nCallback: 2026-03-04 09:30\n{notes}"
        )
        todo.complete()

    await asyncio.to_thread(complete)
    result = await eventually(lambda: world.outcome("c-dav-cb:1:caldav:callback_requested"))
    assert result.respond_by is not None
    assert result.respond_by.isoformat() == "2026-03-04T09:30:00+02:00"  # the clinic's zone


async def test_completed_without_a_result_is_not_guessed(world: World, front_desk: Any) -> None:
    todo = await _created(world, front_desk, "c-dav-none", "p-dav-none")
    await asyncio.to_thread(todo.complete)
    await asyncio.sleep(1.5)
    assert [o.outcome for o in world.outcomes_of("c-dav-none")] == ["task_created"]


async def test_a_withdrawal_removes_the_task_from_the_list(world: World, front_desk: Any) -> None:
    assert await _created(world, front_desk, "c-dav-w", "p-dav-w") is not None
    done = await withdraw(world, "c-dav-w", "p-dav-w")
    assert done.detail is None
    assert await asyncio.to_thread(_todo, front_desk, "c-dav-w:1") is None


async def test_a_redelivered_task_never_overwrites_what_the_front_desk_did(
    world: World, front_desk: Any, radicale: RadicaleServer
) -> None:
    todo = await _created(world, front_desk, "c-dav-again", "p-dav-again")
    await asyncio.to_thread(todo.complete)
    # The notifier crashed after the PUT and delivers the same task again (same UID).
    sink = CalDavSink(
        cast(Parts, SimpleNamespace(clock=world.clock)),
        f"{radicale.base_url}/frontdesk/calls/",
        username="frontdesk",
        password="pw",
        domain="clinic.example",
        poll_seconds=0,
    )
    command = world.command("c-dav-again", "p-dav-again", "call_task")
    channel = world.app.dispatcher.channels["call_task"]
    assert isinstance(channel, CallTaskChannel)
    try:
        receipt = await sink.deliver(channel.render(command, None))
    finally:
        await sink.close()
    assert receipt.provider_id is not None  # 412 from If-None-Match: taken as delivered
    again = await asyncio.to_thread(_todo, front_desk, "c-dav-again:1")
    assert str(again.icalendar_component["status"]) == "COMPLETED"


async def test_a_restart_in_between_loses_no_completion_and_repeats_none(
    radicale: RadicaleServer, front_desk: Any
) -> None:
    settings: dict[str, Any] = {
        "call_task_sinks": "caldav",
        "caldav_list_url": f"{radicale.base_url}/frontdesk/calls/",
        "caldav_username": "frontdesk",
        "caldav_password": "pw",
        "caldav_poll_seconds": 0.3,
    }
    clock = ManualClock(START)
    async with fresh_names() as (prefix, schema):
        async with notifier_world(prefix, schema, clock, **settings) as first:
            first_todo = await _created(first, front_desk, "c-dav-r1", "p-dav-r1")
            other_todo = await _created(first, front_desk, "c-dav-r2", "p-dav-r2")
            await asyncio.to_thread(_complete, first_todo, "no_answer")
            await eventually(lambda: first.outcome("c-dav-r1:1:caldav:no_answer"))
        # Down (a deployment): the other task is completed in the list meanwhile.
        await asyncio.to_thread(_complete, other_todo, "answered_declined")
        async with notifier_world(prefix, schema, clock, **settings) as second:
            await eventually(lambda: second.outcome("c-dav-r2:1:caldav:answered_declined"))
            await asyncio.sleep(1.5)  # further syncs
            published = [o.event_id for o in second.outcomes.events]
    # Not read again from the start of the list: the first result is not published twice.
    assert published.count("c-dav-r1:1:caldav:no_answer") == 1
    assert published.count("c-dav-r2:1:caldav:answered_declined") == 1


def _complete(todo: Any, outcome: str) -> None:
    todo.icalendar_component.add("categories", [outcome])
    todo.complete()
