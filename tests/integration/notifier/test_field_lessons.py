"""Issue 8 on the notifier's side: shared phone numbers and the runaway guard."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from tests.integration.notifier.world import World
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


async def test_a_shared_number_gets_no_other_patients_details(world: World) -> None:
    # A mother and her son share one phone, written two ways.
    await world.contact("p-mother", given_name="Rasa", phone="+37060000051")
    await world.contact("p-son", given_name="Jonas", phone="8 600 00051")
    labels = {"rule": "shared_number_redacted"}
    redacted = REGISTRY.get_sample_value("followup_notifier_held_total", labels)
    await world.send(world.command("c-son", "p-son", "sms", stage_name="Root canal"))
    await eventually(lambda: world.outcome("c-son:1:sent"))
    [message] = [m for m in world.primary.messages if m.to == "+37060000051"]
    assert "Jonas" not in message.body and "Root canal" not in message.body
    assert "visit on" not in message.body  # no appointment details
    assert message.body.startswith("We would like to help you continue your treatment")
    assert (
        REGISTRY.get_sample_value(
            "followup_notifier_held_total", {"rule": "shared_number_redacted"}
        )
        or 0
    ) == (redacted or 0) + 1

    await world.send(world.command("c-son-call", "p-son", "call_task"))
    [task] = await eventually(lambda: world.calltask_events("c-son-call:1") or None)
    assert task.phone_shared and task.script.startswith("Number shared by 2 patients")


async def test_the_runaway_guard_stops_a_flood_whatever_the_cause(world: World) -> None:
    await world.contact("p-flood", phone="+37060000052")
    trips = REGISTRY.get_sample_value("followup_notifier_runaway_guard_trips_total") or 0
    # A buggy upstream sends six different attempts for one day, all due at once.
    opens = world.clock.now() + timedelta(hours=1)
    for n in range(1, 7):
        await world.send(world.command(f"c-flood{n}", "p-flood", "sms", window_start=opens))

    async def all_waiting() -> bool:
        waiting = await world.app.pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE patient_id = 'p-flood' AND due_at = $1", opens
        )
        return bool(waiting == 6)

    while not await all_waiting():
        await asyncio.sleep(0.05)
    await world.advance(3600)

    def settled() -> list[str] | None:
        found = [o for o in world.outcomes.events if o.patient_id == "p-flood"]
        return [o.outcome for o in found] if len(found) == 6 else None

    outcomes = await eventually(settled)
    # Two workers race here (the service's own loop and the test's): a message in flight
    # counts as sent, so the guard may refuse one early, but it never lets a fifth through.
    assert outcomes.count("sent") <= 4 and outcomes.count("failed") >= 2
    assert outcomes.count("sent") + outcomes.count("failed") == 6
    refused = [
        o for o in world.outcomes.events if o.patient_id == "p-flood" and o.outcome == "failed"
    ]
    assert {o.detail for o in refused} == {"runaway_guard"}
    assert [m.to for m in world.primary.messages].count("+37060000052") == outcomes.count("sent")
    trips_now = REGISTRY.get_sample_value("followup_notifier_runaway_guard_trips_total")
    assert trips_now == trips + outcomes.count("failed")
