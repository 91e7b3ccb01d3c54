from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from tests.integration.notifier.world import World
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


async def test_sms_waits_for_the_patients_morning_or_fails_quiet_hours(world: World) -> None:
    # 10:00 in Vilnius is 22:00 on Kiritimati (UTC+14): the patient's night.
    await world.contact("p-night", phone="+37060000041", timezone="Pacific/Kiritimati")
    held = REGISTRY.get_sample_value("followup_notifier_held_total", {"rule": "quiet_hours"}) or 0
    await world.send(
        world.command(
            "c-night", "p-night", "sms", window_end=world.clock.now() + timedelta(hours=12)
        )
    )
    await world.send(
        world.command(
            "c-short", "p-night", "sms", window_end=world.clock.now() + timedelta(hours=4)
        )
    )
    failed = await eventually(lambda: world.outcome("c-short:1:failed"))
    assert failed.detail == "quiet_hours"
    await eventually(
        lambda: (
            (
                REGISTRY.get_sample_value("followup_notifier_held_total", {"rule": "quiet_hours"})
                or 0
            )
            >= held + 2
        )
    )
    await world.advance(9 * 3600)  # 07:00 on Kiritimati: still quiet
    assert world.outcome("c-night:1:sent") is None
    assert all(m.to != "+37060000041" for m in world.primary.messages)
    await world.advance(3600)  # 08:00 local
    await eventually(lambda: world.outcome("c-night:1:sent"))
    assert [m.to for m in world.primary.messages].count("+37060000041") == 1
