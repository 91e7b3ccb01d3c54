"""Both services on one set of topics and one manual clock: the real notifier (with its
outside world, ``tests/integration/notifier/world.py``) and the real scheduler, driven as
the tracker and the patients would (the cross-service contract tests)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp

from schemas.base import Channel
from schemas.events import PatientStatusEvent
from services.scheduler.app import Scheduler
from services.scheduler.cases import case_id_for
from tests.integration.notifier.world import API_TOKEN, World
from tests.support.polling import eventually
from tests.support.scheduler import case_from_api, case_if_open, no_show_trigger

CASE_TOKEN = "case-api-token"  # the scheduler's case API, beside the notifier


@dataclass
class Both:
    """The notifier (with its outside world) and the scheduler, on one set of topics."""

    world: World
    scheduler: Scheduler

    async def open_case(
        self,
        patient: str,
        *,
        prefers: Channel | None = None,
        trigger_fields: dict[str, Any] | None = None,
        **contact: Any,
    ) -> str:
        """The patient's contact reaches the notifier (and a preferred channel the
        scheduler, as the tracker sends them); then the tracker's no-show of their visit an
        hour ago opens a case whose first attempt is due now (``trigger_fields``: more of
        the trigger, e.g. its department or plan and stage). Returns the case id."""
        world = self.world
        if contact.pop("known", True):
            await world.contact(patient, **contact)
        if prefers is not None:
            await self.prefer(patient, prefers)
        trigger = no_show_trigger(
            patient,
            f"appt-{patient}",
            missed=world.clock.now() - timedelta(hours=1),
            **(trigger_fields or {}),
        )
        await world.publisher.publish(world.topics.triggers, trigger)
        return case_id_for(trigger.event_id)

    async def prefer(self, patient: str, channel: Channel) -> None:
        now = self.world.clock.now()
        status = PatientStatusEvent(
            event_id=f"status:{patient}",
            occurred_at=now,
            source="tracker",
            patient_id=patient,
            status="active",
            effective_at=now,
            preferred_channel=channel,
        )
        await self.world.publisher.publish(self.world.topics.patients, status)
        pool = self.scheduler.pool
        assert pool is not None

        async def stored() -> bool:
            found = await pool.fetchval(
                "SELECT preferred_channel FROM patient_status WHERE patient_id = $1", patient
            )
            return bool(found == channel)

        await eventually(stored, timeout=30)

    async def case(self, case_id: str) -> dict[str, Any]:
        return await case_from_api(self.scheduler, case_id, CASE_TOKEN)

    async def attempt(
        self, case_id: str, number: int, done: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        """Attempt ``number`` of the case once ``done`` holds for it (the scheduler's view)."""

        async def found() -> dict[str, Any] | None:
            case = await case_if_open(self.scheduler, case_id, CASE_TOKEN)
            if case is None:
                return None
            mine = [a for a in case["attempts"] if a["attempt_number"] == number]
            return mine[0] if mine and done(mine[0]) else None

        attempt: dict[str, Any] = await eventually(found, timeout=60)
        return attempt

    async def recorded(self, case_id: str, number: int, outcome: str) -> dict[str, Any]:
        return await self.attempt(case_id, number, lambda a: a["outcome"] == outcome)

    async def report(self, task_id: str, outcome: str, **extra: Any) -> None:
        """The front desk reports the call's result through the notifier's API."""
        body = {"report_id": f"api-{task_id}", "outcome": outcome, "reported_by": "admin-3"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{self.world.base_url}/calltasks/{task_id}/result",
                json={**body, **extra},
                headers={"Authorization": f"Bearer {API_TOKEN}"},
            ) as reply,
        ):
            assert reply.status == 202, await reply.text()
