"""Children who were not brought (issue 18) on real PostgreSQL, through the ledger's own
handlers: the child's birth date from followup.patients, missed visits counted across the
patient's cases (a cleared no-show is not one), the birth date kept through an event
without one and gone with an erasure."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import asyncpg
import pytest

from common.clock import ManualClock
from schemas.events import PatientStatusEvent
from services.scheduler.ledger import CaseLedger
from tests.integration.scheduler.conftest import MISSED, no_show
from tests.support.scheduler import missed_visit_now

pytestmark = pytest.mark.integration
CHILD = date(2018, 4, 12)


def child_status(
    at: datetime, birth_date: date | None = CHILD, **extra: object
) -> PatientStatusEvent:
    return PatientStatusEvent.model_validate(
        {
            "event_id": f"patient-status:{at.isoformat()}:{extra.get('status', 'active')}",
            "occurred_at": at,
            "source": "tracker",
            "patient_id": "pat-1",
            "status": "active",
            "effective_at": at,
            "birth_date": birth_date,
        }
        | extra
    )


async def safeguarding(pool: asyncpg.Pool) -> list[tuple[str, bool, bool]]:
    rows = await pool.fetch(
        "SELECT appointment_id, child, safeguarding_at IS NOT NULL AS s FROM cases"
        " ORDER BY opened_at"
    )
    return [(r["appointment_id"], r["child"], r["s"]) for r in rows]


async def test_a_childs_second_missed_visit_a_week_later_is_a_safeguarding_case(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    await ledger.handle_patient_status(child_status(MISSED - timedelta(days=30)))
    await ledger.handle_trigger(no_show("pat-1", "appt-1"))
    assert await safeguarding(pool) == [("appt-1", True, False)]
    # The family rebooked; the next visit a week later is missed again: a new case.
    await pool.execute("UPDATE cases SET state = 'closed', resolution = 'recovered'")
    later = MISSED + timedelta(days=7)
    clock.set(later + timedelta(minutes=20))
    await ledger.handle_trigger(no_show("pat-1", "appt-2", appointment_start=later))
    assert await safeguarding(pool) == [("appt-1", True, False), ("appt-2", True, True)]
    planned = await pool.fetchrow(
        "SELECT purpose, escalate_to, template FROM attempts a JOIN cases c USING (case_id)"
        " WHERE c.appointment_id = 'appt-2' AND a.state = 'planned'"
    )
    assert planned is not None
    assert tuple(planned) == ("escalation", "safeguarding_lead", "safeguarding_escalation")


async def test_a_cleared_no_show_is_no_missed_visit(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    await ledger.handle_patient_status(child_status(MISSED - timedelta(days=30)))
    await ledger.handle_trigger(no_show("pat-1", "appt-1"))
    # The child had come after all (the arrival reached us late): the case is cleared.
    await ledger.handle_appointment(missed_visit_now("arrived", MISSED + timedelta(minutes=30)))
    later = MISSED + timedelta(days=7)
    clock.set(later + timedelta(minutes=20))
    await ledger.handle_trigger(no_show("pat-1", "appt-2", appointment_start=later))
    assert await safeguarding(pool) == [("appt-1", True, False), ("appt-2", True, False)]


async def test_a_birth_date_alone_never_makes_a_deceased_child_contactable(
    ledger: CaseLedger, pool: asyncpg.Pool, clock: ManualClock
) -> None:
    died = MISSED - timedelta(days=3)
    await ledger.handle_patient_status(child_status(died, None, status="deceased"))
    # The hospital's later SIU (a cancellation after the death, no PID-30): PID-7 alone.
    alone = child_status(MISSED - timedelta(days=1)).model_copy(
        update={"event_id": "patient-status:hl7:C:1", "fields_sent": ["birth_date"]}
    )
    await ledger.handle_patient_status(alone)
    row = await pool.fetchrow("SELECT status, birth_date FROM patient_status")
    assert row is not None and (row["status"], row["birth_date"]) == ("deceased", CHILD)
    await ledger.handle_trigger(no_show("pat-1", "appt-1"))
    assert await pool.fetchval("SELECT count(*) FROM cases") == 0
    # Known first by its birth date alone, the child is active, and a death still counts.
    await pool.execute("DELETE FROM patient_status")
    await ledger.handle_patient_status(alone.model_copy(update={"event_id": "p:2"}))
    death = child_status(died, None, status="deceased").model_copy(update={"event_id": "p:3"})
    await ledger.handle_patient_status(death)
    assert await pool.fetchval("SELECT status FROM patient_status") == "deceased"


async def test_the_birth_date_stays_through_an_event_without_it_and_goes_with_an_erasure(
    ledger: CaseLedger, pool: asyncpg.Pool
) -> None:
    await ledger.handle_patient_status(child_status(MISSED - timedelta(days=30)))
    await ledger.handle_patient_status(child_status(MISSED - timedelta(days=20), None))
    born = "SELECT birth_date FROM patient_status WHERE patient_id = 'pat-1'"
    assert await pool.fetchval(born) == CHILD
    erased = child_status(MISSED - timedelta(days=10), None, status="erased")
    await ledger.handle_patient_status(erased)
    assert await pool.fetchval(born) is None
