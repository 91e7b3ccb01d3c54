"""Contract across services, notifier -> scheduler: every outcome the notifier learns from the
outside world, through the real outcomes topic, moves the real scheduler's case as the
clinic expects, and the scheduler's next command reaches the notifier's sinks.

The real notifier (Twilio-compatible SMS stand-ins, a real SMTP server, the signed webhook
receiver) and the real scheduler run on the same topics and one manual clock, each in its
own PostgreSQL schema. The outside world speaks through the notifier's own doors: the SMS
provider's status callbacks and inbound replies, an RFC 3464 bounce report, the front desk's
call-result API. Nothing here hands either service an event built by the other's test.
(The call results reported through each of the front desk's tools: ``test_ways_back.py``.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import aiohttp
import pytest

from schemas.base import Channel
from schemas.events import AppointmentEvent
from schemas.topics import TopicNames
from services.notifier.dispatcher import CONTACT_GRACE
from services.scheduler.cases import case_id_for
from services.scheduler.policy import DEFAULT_POLICY_PATH, CadencePolicy
from tests.integration.notifier.conftest import world as world  # the notifier's fixture
from tests.integration.notifier.world import API_TOKEN, World
from tests.support.both import CASE_TOKEN, Both
from tests.support.dsn import dsn_report
from tests.support.polling import eventually
from tests.support.scheduler import (
    case_if_open,
    scheduler_beside,
    stage_at_risk_trigger,
)

pytestmark = pytest.mark.integration
SUPERVISOR = "sup-1"


@pytest.fixture(scope="module")
async def both(world: World) -> AsyncIterator[Both]:
    topics = TopicNames(prefix=world.app.topics.prefix)
    # The default policy, with a clinic-wide supervisor for escalations nobody handled.
    text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")
    text = text.replace("  escalation:\n", f"  escalation:\n    supervisor_id: {SUPERVISOR}\n", 1)
    policy = CadencePolicy.from_text(text, "<with a supervisor>")
    async with scheduler_beside(
        topics, world.clock, api_token=CASE_TOKEN, policy=policy
    ) as scheduler:
        yield Both(world, scheduler)


def _text(mail: EmailMessage) -> str:
    body = mail.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


# --- call results --------------------------------------------------------------------------


async def test_a_clinical_concern_goes_at_once_to_the_clinician_with_what_was_written(
    both: Both,
) -> None:
    world = both.world
    note = "Swelling and fever since the extraction"
    case_id = await both.open_case("p-k-concern", phone="+37060000701")
    task_id = f"{case_id}:1"
    await eventually(lambda: world.outcome(f"{task_id}:task_created"), timeout=60)
    await both.recorded(case_id, 1, "task_created")

    await both.report(task_id, "clinical_concern", note=note)
    # At once: no clock moves; the scheduler escalates and the notifier delivers it.
    escalation = await both.attempt(
        case_id, 2, lambda a: a["purpose"] == "escalation" and a["state"] == "fired"
    )
    assert escalation["escalate_to"] == "dr-7"
    key = f"calltask:{case_id}:2:create"
    [mail] = await eventually(lambda: world.inbox.for_key(key) or None, timeout=60)
    assert mail["To"] == "doctor@clinic.example"  # the escalation address, not the desk's
    assert note in _text(mail)
    [hook] = await eventually(lambda: world.webhook.tasks(f"{case_id}:2") or None)
    assert hook["task"]["purpose"] == "escalation" and hook["task"]["note"] == note
    case = await both.case(case_id)
    assert case["state"] == "escalating" and case["concern_at"] is not None
    assert all(note not in str(h["detail"]) for h in case["history"])  # ids and codes only


@pytest.mark.parametrize(
    ("outcome", "lost", "next_channel"),
    [
        ("busy", [], "sms"),  # unanswered: the cadence's next step, a text
        ("wrong_number", ["call_task", "sms"], "email"),  # the number is no use at all
    ],
)
async def test_a_call_result_from_the_desk_plans_the_next_step(
    both: Both, outcome: str, lost: list[str], next_channel: Channel
) -> None:
    world = both.world
    case_id = await both.open_case(f"p-k-{outcome}", phone="+37060000711")
    task_id = f"{case_id}:1"
    await eventually(lambda: world.outcome(f"{task_id}:task_created"), timeout=60)
    await both.recorded(case_id, 1, "task_created")
    await both.report(task_id, outcome)
    await both.recorded(case_id, 1, outcome)
    following = await both.attempt(case_id, 2, lambda a: a["state"] == "planned")
    assert following["channel"] == next_channel
    assert following["planned_at"] > world.clock.now().isoformat()  # on the cadence
    case = await both.case(case_id)
    assert sorted(case["impossible_channels"] or []) == lost


async def test_a_patient_the_notifier_cannot_reach_at_all_escalates_to_the_doctor(
    both: Both,
) -> None:
    """No contact details reached the notifier: the call task is refused (no_contact), every
    channel is lost, and the scheduler's no_channel escalation reaches the doctor at once."""
    world = both.world
    case_id = await both.open_case("p-k-nobody", known=False)
    await both.attempt(case_id, 1, lambda a: a["state"] == "fired")
    await eventually(lambda: world.calltask_events(f"{case_id}:1") == [])  # nothing yet
    # The notifier waits a little for a contact still on its way, then calls it missing.
    await world.advance((CONTACT_GRACE + timedelta(seconds=1)).total_seconds())
    refused = await eventually(lambda: world.outcome(f"{case_id}:1:channel_impossible"), timeout=60)
    assert refused.detail == "no_contact"
    await both.recorded(case_id, 1, "channel_impossible")
    escalation = await both.attempt(
        case_id, 2, lambda a: a["purpose"] == "escalation" and a["state"] == "fired"
    )
    assert escalation["escalate_to"] == "dr-7"
    key = f"calltask:{case_id}:2:create"
    # No wait this time: the escalation is for the doctor, who needs no patient's contact.
    [mail] = await eventually(lambda: world.inbox.for_key(key) or None, timeout=60)
    assert mail["To"] == "doctor@clinic.example"
    [hook] = await eventually(lambda: world.webhook.tasks(f"{case_id}:2") or None)
    assert hook["task"]["purpose"] == "escalation"
    case = await both.case(case_id)
    assert sorted(case["impossible_channels"]) == ["call_task", "email", "sms"]


async def test_an_escalation_nobody_answered_goes_to_the_supervisor(both: Both) -> None:
    world = both.world
    case_id = await both.open_case("p-k-unheard", phone="+37060000702")
    task_id = f"{case_id}:1"
    await eventually(lambda: world.outcome(f"{task_id}:task_created"), timeout=60)
    await both.recorded(case_id, 1, "task_created")
    await both.report(task_id, "clinical_concern", note="Bleeding that does not stop")
    await both.attempt(case_id, 2, lambda a: a["purpose"] == "escalation" and a["state"] == "fired")
    await eventually(lambda: world.outcome(f"{case_id}:2:task_created"), timeout=60)
    await both.recorded(case_id, 2, "task_created")
    # The clinician on call did not answer the escalation call: the supervisor, at once.
    await both.report(f"{case_id}:2", "no_answer")
    third = await both.attempt(
        case_id, 3, lambda a: a["purpose"] == "escalation" and a["state"] == "fired"
    )
    assert third["escalate_to"] == SUPERVISOR
    [hook] = await eventually(lambda: world.webhook.tasks(f"{case_id}:3") or None, timeout=60)
    assert hook["task"]["purpose"] == "escalation"
    key = f"calltask:{case_id}:3:create"
    [mail] = await eventually(lambda: world.inbox.for_key(key) or None, timeout=60)
    assert mail["To"] == "doctor@clinic.example"


async def test_a_stage_deadline_too_close_for_the_cadence_escalates_to_the_doctor(
    both: Both,
) -> None:
    world = both.world
    await world.contact("p-k-deadline", phone="+37060000703")
    now = world.clock.now()
    trigger = stage_at_risk_trigger(
        "plan-k-deadline",
        "s2",
        missed=now - timedelta(minutes=20),
        patient_id="p-k-deadline",
        stage_deadline=now + timedelta(days=1),  # inside the rebooking lead: no step fits
    )
    await world.publisher.publish(world.topics.triggers, trigger)
    case_id = case_id_for(trigger.event_id)
    escalation = await both.attempt(
        case_id, 1, lambda a: a["purpose"] == "escalation" and a["state"] == "fired"
    )
    assert escalation["escalate_to"] == "dr-7"
    key = f"calltask:{case_id}:1:create"
    [mail] = await eventually(lambda: world.inbox.for_key(key) or None, timeout=60)
    assert mail["To"] == "doctor@clinic.example"
    assert "Deadline at risk" in _text(mail)


# --- carrier triage: what the SMS provider said about the number ---------------------------


@dataclass(frozen=True)
class Carrier:
    """One carrier answer and what both services make of it."""

    name: str
    at_send: bool  # the provider refused the send (else: a later status callback)
    code: int
    outcome: str
    detail: str
    next_channel: Channel  # the scheduler's attempt 2
    at_once: bool  # attempt 2 fires now (the same step on another channel) or on the cadence
    sms_lost: bool  # the case sends no more texts


CARRIER = [
    # The number takes no SMS / does not exist: refused, so the same step goes at once as a
    # call task (to confirm a mobile number / to find the right one).
    Carrier("landline", False, 30006, "channel_impossible", "landline", "call_task", True, True),
    Carrier("invalid", True, 21211, "channel_impossible", "number_wrong", "call_task", True, True),
    # The handset was off: the number is kept, the cadence tries again later.
    Carrier("switched_off", False, 30003, "failed", "unreachable", "sms", False, False),
    # The patient told the carrier to stop us: no more texts in this case; the next step
    # (on the cadence) is a call.
    Carrier("carrier_opt_out", False, 21610, "failed", "opted_out", "call_task", False, True),
    # Our sender was filtered: the text reached nobody, so the same step goes at once as a
    # call (the number is fine: it goes to the desk).
    Carrier(
        "sender", False, 30007, "channel_impossible", "provider_30007", "call_task", True, True
    ),
]


@pytest.mark.parametrize("carrier", CARRIER, ids=lambda c: c.name)
async def test_the_carriers_verdict_on_a_text_moves_the_case(both: Both, carrier: Carrier) -> None:
    world = both.world
    phone = f"+3706000072{CARRIER.index(carrier)}"
    if carrier.at_send:
        world.primary.fail_next(400, code=carrier.code)
    case_id = await both.open_case(f"p-k-{carrier.name}", prefers="sms", phone=phone)
    first = f"{case_id}:1"
    if not carrier.at_send:
        await eventually(lambda: world.outcome(f"{first}:sent"), timeout=60)
        [message] = [m for m in world.primary.messages if m.to == phone]
        status = "failed" if carrier.code < 30000 else "undelivered"
        assert await world.primary.send_status(message, status, error_code=str(carrier.code)) == 204
    said = await eventually(lambda: world.outcome(f"{first}:{carrier.outcome}"), timeout=60)
    assert said.detail == carrier.detail

    attempt = await both.recorded(case_id, 1, carrier.outcome)
    assert attempt["outcome_detail"] == carrier.detail
    wanted = ("fired",) if carrier.at_once else ("planned",)
    following = await both.attempt(case_id, 2, lambda a: a["state"] in wanted)
    assert following["channel"] == carrier.next_channel
    case = await both.case(case_id)
    if carrier.at_once:
        assert following["state"] == "fired"
        [task] = await eventually(lambda: world.calltask_events(f"{case_id}:2") or None)
        # A landline takes calls: its number goes to the desk (to confirm a mobile); a wrong
        # one does not (the desk finds the right one).
        expected = None if carrier.detail == "number_wrong" else phone
        assert task.phone == expected
    else:
        assert following["state"] == "planned"
        assert following["planned_at"] > world.clock.now().isoformat()
    assert ("sms" in (case["impossible_channels"] or [])) == carrier.sms_lost


# --- the patient's replies by SMS -----------------------------------------------------------


async def test_stop_by_sms_is_respected_by_the_scheduler(both: Both) -> None:
    world = both.world
    phone = "+37060000731"
    await world.contact("p-k-stop", phone=phone)
    assert await world.primary.send_reply(f"{world.base_url}/sms/inbound", phone, "STOP") == 200
    pool = both.scheduler.pool
    assert pool is not None

    async def opted() -> bool:
        found = await pool.fetchval(
            "SELECT count(*) FROM channel_opt_outs WHERE patient_id = 'p-k-stop' "
            "AND channel = 'sms'"
        )
        return bool(found)

    await eventually(opted, timeout=60)
    # The patient prefers texts, but said STOP: the first attempt is a call task instead.
    case_id = await both.open_case("p-k-stop", prefers="sms", phone=phone)
    first = await both.attempt(case_id, 1, lambda a: a["state"] == "fired")
    assert first["channel"] == "call_task"
    await eventually(lambda: world.calltask_events(f"{case_id}:1") or None, timeout=60)
    assert [m.to for m in world.primary.messages + world.secondary.messages].count(phone) == 0


async def test_a_plain_reply_holds_the_automated_messages(both: Both) -> None:
    """ "Yes, I want to rebook" is a conversation: no automated text or email goes to the
    patient while it is unanswered; a call task still does."""
    world = both.world
    phone = "+37060000732"
    await world.contact("p-k-reply", phone=phone)
    url = f"{world.base_url}/sms/inbound"
    assert await world.primary.send_reply(url, phone, "Yes, I want to rebook") == 200
    await eventually(
        lambda: next((o for o in world.outcomes.events if o.patient_id == "p-k-reply"), None),
        timeout=60,
    )
    pool = both.scheduler.pool
    assert pool is not None

    async def noted() -> bool:
        found = await pool.fetchval(
            "SELECT count(*) FROM open_replies WHERE patient_id = 'p-k-reply'"
        )
        return bool(found)

    await eventually(noted, timeout=60)
    case_id = await both.open_case("p-k-reply", prefers="sms", phone=phone)
    case = await eventually(
        lambda: _when(
            case_if_open(both.scheduler, case_id, CASE_TOKEN),
            lambda c: any(h["event"] == "held" for h in c["history"]),
        ),
        timeout=60,
    )
    [held] = [h for h in case["history"] if h["event"] == "held"]
    assert held["detail"]["rule"] == "conversation_open", held
    [first] = case["attempts"]
    assert (first["channel"], first["state"]) == ("sms", "planned")
    assert first["planned_at"] > world.clock.now().isoformat()
    assert phone not in [m.to for m in world.primary.messages + world.secondary.messages]


async def test_a_delivery_receipt_is_recorded_on_the_attempt(both: Both) -> None:
    world = both.world
    phone = "+37060000733"
    case_id = await both.open_case("p-k-delivered", prefers="sms", phone=phone)
    await eventually(lambda: world.outcome(f"{case_id}:1:sent"), timeout=60)
    await both.recorded(case_id, 1, "sent")
    [message] = [m for m in world.primary.messages if m.to == phone]
    assert await world.primary.send_status(message, "delivered") == 204
    await eventually(lambda: world.outcome(f"{case_id}:1:delivered"), timeout=60)
    await both.recorded(case_id, 1, "delivered")
    case = await both.case(case_id)
    assert case["state"] == "contacting" and not case["impossible_channels"]


async def test_start_after_stop_lets_the_scheduler_text_again_and_help_changes_nothing(
    both: Both,
) -> None:
    world = both.world
    phone = "+37060000734"
    await world.contact("p-k-start", phone=phone)
    url = f"{world.base_url}/sms/inbound"
    pool = both.scheduler.pool
    assert pool is not None

    async def opted_out() -> bool:
        found = await pool.fetchval(
            "SELECT count(*) FROM channel_opt_outs WHERE patient_id = 'p-k-start'"
        )
        return bool(found)

    assert await world.primary.send_reply(url, phone, "STOP") == 200
    await eventually(opted_out, timeout=60)
    assert await world.primary.send_reply(url, phone, "HELP") == 200
    help_ = await eventually(
        lambda: next(
            (
                o
                for o in world.outcomes.events
                if o.patient_id == "p-k-start" and o.outcome == "help"
            ),
            None,
        )
    )

    async def consumed() -> bool:
        found = await pool.fetchval(
            "SELECT count(*) FROM processed_events WHERE topic = 'outcomes' AND event_id = $1",
            help_.event_id,
        )
        return bool(found)

    await eventually(consumed, timeout=60)
    assert await opted_out()  # HELP is answered by the notifier; it is not START
    assert await world.primary.send_reply(url, phone, "START") == 200
    await eventually(
        lambda: next(
            (
                o
                for o in world.outcomes.events
                if o.patient_id == "p-k-start" and o.outcome == "opt_in"
            ),
            None,
        )
    )
    await eventually(lambda: _not(opted_out()), timeout=60)
    case_id = await both.open_case("p-k-start", prefers="sms", phone=phone)
    await eventually(lambda: world.outcome(f"{case_id}:1:sent"), timeout=60)
    assert phone in [m.to for m in world.primary.messages + world.secondary.messages]


async def _not(check: Awaitable[bool]) -> bool:
    return not await check


# --- email bounces --------------------------------------------------------------------------


async def test_a_bounced_email_is_not_used_again_for_the_case(both: Both) -> None:
    world = both.world
    case_id = await both.open_case(
        "p-k-bounce", prefers="email", email="gone@example.org", phone="+37060000741"
    )
    key = f"{case_id}:1"
    await eventually(lambda: world.outcome(f"{key}:sent"), timeout=60)
    [sent] = world.inbox.for_key(key)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{world.base_url}/email/bounces",
            data=dsn_report(sent["Message-ID"]),
            headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "message/rfc822"},
        ) as reply,
    ):
        assert reply.status == 202
    attempt = await both.recorded(case_id, 1, "bounced")
    assert attempt["outcome_detail"] == "dsn_5.1.1"
    case = await eventually(
        lambda: _when(both.case(case_id), lambda c: "email" in (c["impossible_channels"] or [])),
        timeout=60,
    )
    assert all(a["channel"] != "email" for a in case["attempts"][1:])


async def _when(
    read: Awaitable[dict[str, Any] | None], holds: Callable[[dict[str, Any]], bool]
) -> dict[str, Any] | None:
    value = await read
    return value if value is not None and holds(value) else None


async def test_the_feedback_question_goes_out_and_its_answer_comes_back(both: Both) -> None:
    """Feedback across both services: the scheduler asks once the rebooked visit was
    attended, the notifier texts the question, the patient's reply comes back as the
    ``feedback`` outcome and the scheduler keeps the rating."""
    world = both.world
    phone = "+37060000781"
    patient = "p-k-feedback"
    case_id = await both.open_case(patient, phone=phone)
    await both.attempt(case_id, 1, lambda a: a["state"] == "fired")
    visit = world.clock.now() + timedelta(days=2)

    def appointment(change: str, status: str) -> AppointmentEvent:
        return AppointmentEvent(
            event_id=f"appt-new-{patient}:{status}",
            occurred_at=world.clock.now(),
            source="tracker",
            change=change,  # type: ignore[arg-type]
            appointment_id=f"appt-new-{patient}",
            patient_id=patient,
            start=visit,
            timezone="Europe/Vilnius",
            department="dental",
            status=status,  # type: ignore[arg-type]
        )

    await world.publisher.publish(world.topics.appointments, appointment("booked", "booked"))
    await eventually(lambda: _resolution(both, case_id, "recovered"), timeout=60)
    await world.advance(2 * 86400 + 3600)
    await world.publisher.publish(
        world.topics.appointments, appointment("status_changed", "fulfilled")
    )

    def question() -> object:
        return next((m for m in world.primary.messages if m.to == phone), None)

    asked = await eventually(question, timeout=60)
    # The text is the feedback question of this case (its status callback names the key).
    assert f"{case_id}%3Afeedback" in (getattr(asked, "status_callback", "") or "")
    assert await world.primary.send_reply(f"{world.base_url}/sms/inbound", phone, "5") == 200
    pool = both.scheduler.pool
    assert pool is not None

    async def rated() -> bool:
        rating = await pool.fetchval("SELECT rating FROM feedback WHERE case_id = $1", case_id)
        return bool(rating == 5)

    await eventually(rated, timeout=60)


async def _resolution(both: Both, case_id: str, expected: str) -> bool:
    case = await case_if_open(both.scheduler, case_id, CASE_TOKEN)
    return case is not None and case.get("resolution") == expected
