"""Contract across services: the scheduler's own commands, through the real topic, into the
real notifier, with the effect asserted where the clinic sees it.

The commands are built by the scheduler's pure command builder (``services.scheduler.cases``),
not by a notifier test's idea of them: the withdrawal once failed exactly there (the
scheduler keys it ``<case>:<n>:withdrawal``, the notifier looked the task up by that key,
found nothing and recorded ``withdrawn / no_task``; no tool ever heard of it).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from email.message import EmailMessage

import icalendar
import pytest

from schemas.base import Channel
from schemas.events import NotificationCommand
from services.scheduler.cadence import AttemptRecord
from services.scheduler.cases import CaseFacts, build_command, withdrawal_key
from tests.integration.notifier.world import World
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

TEMPLATES: dict[Channel, str] = {"call_task": "no_show", "sms": "no_show", "email": "no_show"}


def _case(case_id: str, patient_id: str, now: datetime) -> CaseFacts:
    return CaseFacts(
        case_id=case_id,
        patient_id=patient_id,
        reason="no_show",
        department="dental",
        timezone="Europe/Vilnius",
        appointment_id=f"appt-{case_id}",
        appointment_start=now - timedelta(hours=2),
        stage_name="Implant",
        stage_deadline=now + timedelta(days=20),
        doctor_notes="Check healing first.",
        opened_at=now - timedelta(hours=2),
        contacted=True,
    )


def _attempt(channel: Channel, now: datetime, state: str = "planned") -> AttemptRecord:
    return AttemptRecord(
        number=1,
        purpose="follow_up",
        channel=channel,
        state=state,  # type: ignore[arg-type]
        planned_at=now,
        window_end=now + timedelta(hours=8),
    )


def scheduler_command(
    world: World, case_id: str, patient_id: str, channel: Channel
) -> NotificationCommand:
    now = world.clock.now()
    attempt = _attempt(channel, now)
    return build_command(_case(case_id, patient_id, now), attempt, TEMPLATES[channel], [], now)


def scheduler_withdrawal(world: World, created: NotificationCommand) -> NotificationCommand:
    """What the scheduler's ledger emits when a case closes under a call task still out."""
    now = world.clock.now()
    facts = _case(created.case_id, created.patient_id, created.window_start)
    fired = _attempt("call_task", created.window_start, state="fired")
    key = withdrawal_key(created.case_id, fired.number)
    return build_command(
        facts, fired, created.template, [fired], now, purpose="withdrawal", key=key
    )


def _vtodo(message: EmailMessage) -> tuple[str, icalendar.Component]:
    [attachment] = list(message.iter_attachments())
    calendar = icalendar.Calendar.from_ical(attachment.get_content())
    return str(calendar["method"]), next(iter(calendar.walk("VTODO")))


@pytest.mark.parametrize("channel", ["call_task", "sms", "email"])
async def test_a_scheduler_command_reaches_its_receivers(world: World, channel: Channel) -> None:
    case_id, patient_id = f"case-contract-{channel}", f"p-contract-{channel}"
    await world.contact(patient_id, phone="+37060000301", email="ona@example.org")
    command = scheduler_command(world, case_id, patient_id, channel)
    key = command.idempotency_key
    await world.send(command)

    if channel == "call_task":
        created = await eventually(lambda: world.outcome(f"{key}:task_created"))
        assert created.case_id == case_id and created.attempt_number == 1
        [hook] = world.webhook.tasks(key)
        assert hook["task"]["action"] == "create" and hook["task"]["patient_id"] == patient_id
        method, todo = _vtodo(world.inbox.for_key(f"calltask:{key}:create")[0])
        assert method == "REQUEST" and str(todo["uid"]).startswith(f"{key}@")
        [event] = await eventually(lambda: world.calltask_events(key) or None)
        assert event.action == "create" and event.case_id == case_id
    elif channel == "sms":
        sent = await eventually(lambda: world.outcome(f"{key}:sent"))
        assert sent.case_id == case_id
        [sms] = [m for m in world.primary.messages if m.to == "+37060000301"]
        assert "Sample Clinic" in sms.body
    else:
        await eventually(lambda: world.outcome(f"{key}:sent"))
        [mail] = world.inbox.for_key(key)
        assert mail["To"] == "ona@example.org"


async def test_the_schedulers_withdrawal_reaches_every_sink(world: World) -> None:
    case_id, patient_id = "case-contract-withdrawn", "p-contract-withdrawn"
    await world.contact(patient_id, phone="+37060000302")
    created = scheduler_command(world, case_id, patient_id, "call_task")
    task_id = created.idempotency_key
    await world.send(created)
    await eventually(lambda: world.outcome(f"{task_id}:task_created"))

    # The patient rebooked elsewhere: the case closes and the scheduler withdraws the task.
    await world.advance(60)
    withdrawal = scheduler_withdrawal(world, created)
    assert withdrawal.idempotency_key != task_id  # its own key, never a repeat of the task
    await world.send(withdrawal)
    withdrawn = await eventually(lambda: world.outcome(f"{withdrawal.idempotency_key}:withdrawn"))
    assert withdrawn.detail is None  # it reached the sinks (not no_task, not never_sent)
    assert (withdrawn.case_id, withdrawn.attempt_number) == (case_id, 1)

    # Webhook: the same task id, action withdraw, signed like the create.
    assert [h["task"]["action"] for h in world.webhook.tasks(task_id)] == ["create", "withdraw"]
    assert world.webhook.tasks(task_id)[1]["fhir"]["status"] == "cancelled"
    # Email: an iCalendar CANCEL for the same VTODO, one sequence later.
    _, first = _vtodo(world.inbox.for_key(f"calltask:{task_id}:create")[0])
    method, cancel = _vtodo(world.inbox.for_key(f"calltask:{task_id}:withdraw")[0])
    assert method == "CANCEL" and str(cancel["status"]) == "CANCELLED"
    assert str(cancel["uid"]) == str(first["uid"])
    assert int(str(cancel["sequence"])) == int(str(first["sequence"])) + 1
    # Topic: action withdraw for the same task id.
    events = await eventually(lambda: world.calltask_events(task_id)[1:] or None)
    assert [e.action for e in events] == ["withdraw"]


async def test_a_withdrawal_before_the_task_went_out_cancels_it_quietly(world: World) -> None:
    case_id, patient_id = "case-contract-early", "p-contract-early"
    await world.contact(patient_id, phone="+37060000303")
    now = world.clock.now()
    later = _attempt("call_task", now + timedelta(hours=2))
    created = build_command(_case(case_id, patient_id, now), later, "no_show", [], now)
    await world.send(created)
    await world.send(scheduler_withdrawal(world, created))
    wkey = withdrawal_key(case_id, 1)
    withdrawn = await eventually(lambda: world.outcome(f"{wkey}:withdrawn"))
    assert withdrawn.detail == "never_sent"
    await world.advance(3 * 3600)
    assert world.webhook.tasks(created.idempotency_key) == []
    assert world.inbox.for_key(f"calltask:{created.idempotency_key}:create") == []


async def test_a_withdrawal_waits_while_its_task_is_being_sent(world: World) -> None:
    # Another replica is handing the task to the sinks right now: a withdraw sent at once
    # could reach a receiver before the create. The withdrawal waits for it.
    case_id, patient_id = "case-contract-racing", "p-contract-racing"
    await world.contact(patient_id, phone="+37060000304")
    now = world.clock.now()
    later = _attempt("call_task", now + timedelta(hours=2))
    created = build_command(_case(case_id, patient_id, now), later, "no_show", [], now)
    task_id = created.idempotency_key
    await world.send(created)

    async def waiting(key: str) -> bool:
        # Not taken while the patient's task is 'sending' (one row per patient at a time),
        # or taken and held for a retry: either way still pending, nothing sent.
        row = await world.app.pool.fetchrow(
            "SELECT state FROM deliveries WHERE idempotency_key = $1", key
        )
        return row is not None and row["state"] == "pending"

    async def held_for_its_window() -> bool:
        due = await world.app.pool.fetchval(
            "SELECT due_at FROM deliveries WHERE idempotency_key = $1", task_id
        )
        return bool(due == later.planned_at)

    await eventually(held_for_its_window)
    await world.app.pool.execute(
        "UPDATE deliveries SET state = 'sending', sending_since = $2 WHERE idempotency_key = $1",
        task_id,
        now,
    )
    withdrawal = scheduler_withdrawal(world, created)
    await world.send(withdrawal)
    wkey = withdrawal.idempotency_key
    await eventually(lambda: waiting(wkey))
    await world.app.dispatcher.work_once()  # a whole pass: the withdrawal stays back
    assert await waiting(wkey)
    assert world.outcome(f"{wkey}:withdrawn") is None
    assert world.webhook.tasks(task_id) == []

    # The other replica is done with the create: now the withdraw goes out.
    await world.app.pool.execute(
        "UPDATE deliveries SET state = 'done', outcome = 'task_created', finished_at = $2, "
        "outcome_published = true WHERE idempotency_key = $1",
        task_id,
        now,
    )
    await world.advance(10)
    withdrawn = await eventually(lambda: world.outcome(f"{wkey}:withdrawn"))
    assert withdrawn.detail is None
    assert [h["task"]["action"] for h in world.webhook.tasks(task_id)] == ["withdraw"]
