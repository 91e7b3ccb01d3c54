"""Issue 19: an erasure request removes the doctor's notes from every scheduler table and
keeps ids, codes and an audit row; the retention sweep strips notes only past their period."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from common.clock import ManualClock
from common.erasure import erasure_request
from schemas.events import TreatmentPlanEvent
from services.scheduler.ledger import CaseLedger
from tests.integration.scheduler.conftest import MISSED, booking, deceased, no_show
from tests.support.privacy import every_row_as_text

NOTES = "Allergic to latex; check healing before the implant."


def plan(patient: str = "pat-1", plan_id: str = "plan-1") -> TreatmentPlanEvent:
    return TreatmentPlanEvent.model_validate(
        {
            "event_id": f"{plan_id}:v1",
            "occurred_at": MISSED - timedelta(days=30),
            "source": "tracker",
            "plan_id": plan_id,
            "patient_id": patient,
            "department": "dental",
            "timezone": "Europe/Vilnius",
            "stages": [
                {"stage_id": "s1", "sequence": 1, "name": "Extraction"},
                {"stage_id": "s2", "sequence": 2, "name": "Implant", "max_interval_days": 60,
                 "notes": NOTES},
            ],
        }
    )  # fmt: skip


async def test_an_erasure_removes_the_notes_everywhere_and_keeps_ids_and_an_audit_row(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    await ledger.handle_plan(plan())
    await ledger.handle_trigger(no_show(plan_id="plan-1", stage_id="s2"))
    clock.set(MISSED + timedelta(hours=1))
    assert await ledger.fire_due() == 1  # the command, notes and all, is in the outbox
    assert NOTES in await every_row_as_text(pool)

    erasure = erasure_request("pat-1", requested_by="dpo-3", source="test", now=clock.now())
    await ledger.handle_patient_status(erasure)
    await ledger.handle_patient_status(erasure)  # redelivered: nothing new

    stored = await every_row_as_text(pool)
    assert NOTES not in stored
    commands = [r[0] for r in await pool.fetch("SELECT payload::text FROM outbox")]
    assert commands and not any("Implant" in c for c in commands)  # the stage's name too
    case = await pool.fetchrow("SELECT * FROM cases")
    assert case is not None
    assert (case["state"], case["resolution"], case["patient_id"]) == ("closed", "erased", "pat-1")
    assert case["doctor_notes"] is None and case["stage_name"] is None
    assert case["plan_id"] == "plan-1" and case["stage_id"] == "s2"  # ids stay
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE patient_id = 'pat-1'") >= 1
    audit = await pool.fetch("SELECT * FROM erasures")
    assert [(a["patient_id"], a["requested_by"], a["event_id"]) for a in audit] == [
        ("pat-1", "dpo-3", erasure.event_id)
    ]
    status = await pool.fetchval("SELECT status FROM patient_status WHERE patient_id = 'pat-1'")
    assert status == "erased"
    # Not contactable: a later trigger opens nothing.
    await ledger.handle_trigger(no_show(appointment="appt-2", event_id="no_show:appt-2"))
    assert await pool.fetchval("SELECT count(*) FROM cases") == 1
    # Until the hospital sends the patient again: a visit booked after the erasure.
    clock.advance(timedelta(minutes=5))
    await ledger.handle_appointment(booking("pat-1", "dental", clock.now(), "appt-3"))
    status = await pool.fetchval("SELECT status FROM patient_status WHERE patient_id = 'pat-1'")
    assert status == "active"


async def test_retention_strips_notes_of_cases_closed_and_plans_older_than_the_period(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    await ledger.handle_plan(plan("pat-1", "plan-1"))
    await ledger.handle_plan(plan("pat-2", "plan-2"))
    await ledger.handle_trigger(no_show("pat-1", plan_id="plan-1", stage_id="s2"))
    await ledger.handle_trigger(no_show("pat-2", "appt-2", plan_id="plan-2", stage_id="s2"))
    # pat-1's case closes now (deceased, the quickest close); pat-2's stays open.
    await ledger.handle_patient_status(deceased("pat-1", clock.now()))
    keep = timedelta(days=30)

    clock.advance(timedelta(days=29))
    assert await ledger.prune_free_text(keep) == 0
    clock.advance(timedelta(days=2))
    assert await ledger.prune_free_text(keep) == 2  # pat-1's closed case and its plan
    assert await ledger.prune_free_text(keep) == 0  # nothing left past its period

    notes = {
        r["patient_id"]: r["doctor_notes"]
        for r in await pool.fetch("SELECT patient_id, doctor_notes FROM cases")
    }
    assert notes == {"pat-1": None, "pat-2": NOTES}  # the open case keeps what it needs
    plans = {r["plan_id"]: r["payload"] for r in await pool.fetch("SELECT * FROM plans")}
    assert NOTES not in plans["plan-1"] and NOTES in plans["plan-2"]
    assert '"Implant"' in plans["plan-1"]  # stage names and ids stay in the plan
