"""Issue 15 on real PostgreSQL: the patient's preferences arrive on followup.patients (ids
and planning facts, no contact details), are kept per patient and honoured by every case."""

from __future__ import annotations

import asyncpg
import pytest

from common.clock import ManualClock
from schemas.events import ContactWindow, PatientStatusEvent
from services.scheduler.cases import case_id_for
from services.scheduler.ledger import CaseLedger
from tests.integration.scheduler.conftest import no_show

pytestmark = pytest.mark.integration
CASE = case_id_for("no_show:appt-1")


def preferences(clock: ManualClock, n: int, **fields: object) -> PatientStatusEvent:
    return PatientStatusEvent.model_validate(
        {
            "event_id": f"patient:pat-1:{n}",
            "occurred_at": clock.now(),
            "source": "tracker.fhir",
            "patient_id": "pat-1",
            "status": "active",
            "effective_at": clock.now(),
            **fields,
        }
    )


async def planned_channel(pool: asyncpg.Pool) -> str:
    channel: str = await pool.fetchval(
        "SELECT channel FROM attempts WHERE case_id = $1 AND state = 'planned'", CASE
    )
    return channel


async def test_a_case_opened_later_takes_the_stored_preferences(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    window = ContactWindow(start="17:00", end="20:00")
    await ledger.handle_patient_status(
        preferences(clock, 1, preferred_channel="email", contact_window=window,
                    timezone="Europe/Riga")
    )  # fmt: skip
    await ledger.handle_trigger(no_show())
    case = await pool.fetchrow("SELECT * FROM cases WHERE case_id = $1", CASE)
    assert case is not None
    assert (case["preferred_channel"], case["contact_window"], case["patient_timezone"]) == (
        "email",
        "17:00-20:00",
        "Europe/Riga",
    )
    assert await planned_channel(pool) == "email"


async def test_new_preferences_replan_an_open_case_and_are_saved_with_it(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    await ledger.handle_trigger(no_show())
    assert await planned_channel(pool) == "call_task"
    await ledger.handle_patient_status(preferences(clock, 2, preferred_channel="sms"))
    assert await planned_channel(pool) == "sms"
    saved = await pool.fetchval("SELECT preferred_channel FROM cases WHERE case_id = $1", CASE)
    assert saved == "sms"
    # A replay of the same event changes nothing (processed once).
    await ledger.handle_patient_status(preferences(clock, 2, preferred_channel="sms"))
    events = await pool.fetchval("SELECT count(*) FROM case_history WHERE event = 'preferences'")
    assert events == 1
