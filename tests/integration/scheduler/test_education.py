"""The stage explained for the patient: from the plan, kept with the case in PostgreSQL,
on the command the outbox holds for the notifier."""

from __future__ import annotations

import json
from datetime import timedelta

import asyncpg
import pytest

from common.clock import ManualClock
from schemas.events import StageEducation, TreatmentPlanEvent
from schemas.topics import PLANS
from services.scheduler.ledger import CaseLedger
from tests.integration.scheduler.conftest import MISSED, no_show
from tests.support.samples import sample_events

pytestmark = pytest.mark.integration


async def test_the_plans_explanation_reaches_the_command(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    plan = sample_events()[PLANS]
    assert isinstance(plan, TreatmentPlanEvent)
    education = [
        StageEducation(language="lt", text="Implantas turi sugyti.", url="https://x.example/i"),
        StageEducation(language="ru", text="Имплант должен прижиться."),
    ]
    stages = [s.model_copy(update={"education": education}) for s in plan.stages]
    await ledger.handle_plan(plan.model_copy(update={"stages": stages}))
    await ledger.handle_trigger(no_show(plan_id=plan.plan_id, stage_id="stage-2"))
    clock.set(MISSED + timedelta(hours=1))
    assert await ledger.fire_due() == 1
    payload = await pool.fetchval("SELECT payload FROM outbox ORDER BY id LIMIT 1")
    command = json.loads(payload)
    assert command["education"] == [e.model_dump() for e in education]
