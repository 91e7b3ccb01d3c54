"""Issue 21 in the demo, without I/O: the chat-preferring patients and what the feeds send of
them, the stages explained in the plans, the patients' answers, and the pure checks of
``demo.chat`` (each shown failing on what it is there to catch)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from demo import chat
from demo.report import Observed
from demo.scenario import ScenarioConfig, build
from demo.simulator import canonical, fhir
from demo.simulator.messengers import ChatRecord, address_of
from demo.simulator.patients import decide_chat_reply, decide_feedback
from schemas.events import AppointmentEvent, NotificationCommand, OutcomeEvent
from services.notifier.feedback import read_answer
from services.scheduler.policy import CadencePolicy
from services.tracker.fhir_mapping import care_plan_event

T0 = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
SCENARIO = build(config=ScenarioConfig(patients=40, days=14, seed=7, workflow=True))
chat.population(SCENARIO)
CHATTY = chat.chat_patients(SCENARIO)
BY_CHANNEL = {p.chat: p for p in CHATTY}
WA = BY_CHANNEL["whatsapp"]


def record(**given: Any) -> ChatRecord:
    values: dict[str, Any] = {
        "channel": "whatsapp",
        "direction": "out",
        "address": address_of(WA),
        "at": T0,
        "kind": "template",
        "text": "",
        "message_id": "wamid.1",
        "status": 0,
    }
    return ChatRecord(**(values | given))


def command(**given: Any) -> NotificationCommand:
    values: dict[str, Any] = {
        "event_id": "case-1:1",
        "occurred_at": T0,
        "source": "scheduler",
        "idempotency_key": "case-1:1",
        "case_id": "case-1",
        "attempt_number": 1,
        "patient_id": WA.patient_id,
        "purpose": "follow_up",
        "channel": "whatsapp",
        "template": "no_show_whatsapp",
        "reason": "no_show",
        "department": "dental",
        "timezone": "Europe/Vilnius",
        "window_start": T0,
        "window_end": T0 + timedelta(hours=12),
    }
    return NotificationCommand.model_validate(values | given)


def outcome(kind: str, **given: Any) -> OutcomeEvent:
    values: dict[str, Any] = {
        "event_id": f"case-1:1:{kind}",
        "occurred_at": T0,
        "source": "notifier",
        "outcome": kind,
        "patient_id": WA.patient_id,
        "channel": "whatsapp",
        "case_id": "case-1",
        "attempt_number": 1,
        "idempotency_key": "case-1:1",
    }
    return OutcomeEvent.model_validate(values | given)


# --- the population ---------------------------------------------------------------------------


def test_every_messenger_has_its_patients_on_the_json_path_with_consent() -> None:
    assert set(BY_CHANNEL) == {"whatsapp", "telegram", "viber"}
    assert any(p.behaviour == "opts_out" and p.chat == "telegram" for p in CHATTY)
    for p in CHATTY:
        assert p.path == "json" and not p.shares_phone and p.phone_line == "mobile"
        contact = canonical.contact(p, T0)
        assert getattr(contact.consent, str(p.chat)) is True
        others = {"whatsapp", "telegram", "viber"} - {p.chat}
        assert all(getattr(contact.consent, o) is None for o in others)
        status = canonical.preferences(p, T0)
        assert status is not None and status.preferred_channel == p.chat
    assert canonical.contact(BY_CHANNEL["telegram"], T0).messengers is not None
    assert canonical.preferences(SCENARIO.patients[0], T0) is None or SCENARIO.patients[0].chat


def test_plans_explain_the_treatment_stage_on_json_and_fhir() -> None:
    patient = next(p for p in SCENARIO.patients if p.path == "fhir")
    stages = canonical.plan(patient, T0).stages
    assert {e.language for e in stages[1].education} == {"lt", "en", "ru", "bg"}
    assert stages[0].education == [] and stages[2].education == []
    # The tracker reads the FHIR CarePlan's activity detail extension back to the same.
    event = care_plan_event(
        fhir.care_plan_resource(patient),
        path_id=None,
        zone="Europe/Vilnius",
        department=patient.department,
        now=T0,
    )
    assert [e.text for e in event.stages[1].education] == [e.text for e in stages[1].education]


def test_the_demo_policy_opens_the_cadence_on_a_preferred_messenger(tmp_path: Path) -> None:
    policy = CadencePolicy.load(chat.demo_policy(tmp_path))
    rules = policy.rules_for("dental", "no_show")
    assert list(rules.fallback[:3]) == ["call_task", "sms", "email"]
    assert set(rules.fallback[3:]) == {"whatsapp", "telegram", "viber"}
    assert {"whatsapp", "telegram", "viber"} <= set(rules.channels())


def test_the_patients_answers() -> None:
    stop = next(p for p in CHATTY if p.behaviour == "opts_out")
    assert decide_chat_reply(stop, 1) == "STOP" and decide_chat_reply(stop, 2) is None
    assert decide_chat_reply(WA, 1) is not None
    assert decide_chat_reply(BY_CHANNEL["viber"], 1) is None  # reads only
    for p in SCENARIO.patients[:12]:
        answer = read_answer(decide_feedback(p))
        assert answer is not None and 1 <= answer.rating <= 5


# --- the checks ----------------------------------------------------------------------------------


def test_a_free_text_outside_the_window_is_caught() -> None:
    wrote = record(direction="in", kind="reply", status=200, at=T0)
    inside = record(kind="text", at=T0 + timedelta(hours=23), message_id="wamid.2")
    late = record(kind="text", at=T0 + timedelta(hours=25), message_id="wamid.3")
    template = record(kind="template", at=T0 + timedelta(hours=30), message_id="wamid.4")
    assert chat.whatsapp_window_problems([wrote, inside, template]) == []
    assert chat.whatsapp_window_problems([wrote, inside, late]) == [
        "text wamid.3 outside the 24-hour window"
    ]
    # A message the patient sent that the notifier refused opens no window.
    refused = record(direction="in", kind="reply", status=403, at=T0)
    assert chat.whatsapp_window_problems([refused, inside]) != []


def test_a_message_after_a_chat_stop_is_caught() -> None:
    tg = BY_CHANNEL["telegram"]
    address = address_of(tg) or ""
    stop = record(channel="telegram", direction="in", kind="stop", status=200, address=address)
    confirmation = record(channel="telegram", kind="text", address=address, answer=True)
    later = record(
        channel="telegram", kind="text", address=address, at=T0 + timedelta(days=1), message_id="9"
    )
    observed = Observed(outcomes=[outcome("opt_out", channel="telegram", patient_id=tg.patient_id)])
    tolerance = timedelta(minutes=30)
    stops, problems = chat.after_chat_stop(observed, SCENARIO, [stop, confirmation], tolerance)
    assert (stops, problems) == (1, [])
    _, problems = chat.after_chat_stop(observed, SCENARIO, [stop, later], tolerance)
    assert len(problems) == 1 and "after STOP" in problems[0]
    # By the notifier's own stamp: a sent outcome after its opt-out.
    observed.outcomes.append(
        outcome(
            "sent",
            channel="telegram",
            patient_id=tg.patient_id,
            event_id="x:sent",
            occurred_at=T0 + timedelta(hours=2),
        )
    )
    _, problems = chat.after_chat_stop(observed, SCENARIO, [stop], tolerance)
    assert len(problems) == 1


def test_receipts_must_each_be_counted_once() -> None:
    sent = record()
    receipts = [
        record(direction="receipt", kind="delivered", status=200),
        record(direction="receipt", kind="read", status=200),
    ]
    both = Observed(outcomes=[outcome("delivered"), outcome("read")])
    assert chat.receipt_problems(both, [sent, *receipts]) == (2, [])
    lost = Observed(outcomes=[outcome("delivered")])
    assert chat.receipt_problems(lost, [sent, *receipts])[1] == [
        "whatsapp read: 1 posted, 0 counted"
    ]
    # A receipt of the bot's confirmation is no outcome, and is not expected to be one.
    answer = record(answer=True, message_id="wamid.9")
    of_answer = record(direction="receipt", kind="delivered", status=200, message_id="wamid.9")
    assert chat.receipt_problems(both, [sent, *receipts, answer, of_answer]) == (2, [])


def test_the_first_follow_up_must_go_to_the_preferred_messenger() -> None:
    cases = [{"case_id": "case-1", "patient_id": WA.patient_id}]
    on_chat = Observed(notifications=[command()], cases=cases)
    assert chat.not_reached_on_chat(on_chat, SCENARIO, [record()]) == (1, [])
    by_phone = Observed(notifications=[command(channel="call_task")], cases=cases)
    checked, problems = chat.not_reached_on_chat(by_phone, SCENARIO, [])
    assert checked == 1 and len(problems) == 2


def feedback_world(asked_at: datetime, state: str = "closed") -> Observed:
    question = command(
        event_id="case-1:feedback",
        idempotency_key="case-1:feedback",
        attempt_number=900,
        purpose="feedback",
        template="visit_feedback",
        appointment_id="appt-r1",
        occurred_at=asked_at,
    )
    visit = AppointmentEvent.model_validate(
        {
            "event_id": "appt-r1:fulfilled",
            "occurred_at": T0,
            "source": "clinic-sim",
            "change": "status_changed",
            "appointment_id": "appt-r1",
            "patient_id": WA.patient_id,
            "start": T0 - timedelta(minutes=30),
            "end": T0,
            "timezone": "Europe/Vilnius",
            "department": "dental",
            "status": "fulfilled",
            "status_at": T0,
        }
    )
    answer = outcome(
        "feedback",
        event_id="case-1:feedback:feedback",
        idempotency_key="case-1:feedback",
        rating=4,
        note="ok",
    )
    case = {"case_id": "case-1", "patient_id": WA.patient_id, "state": state}
    case |= {"resolution": "recovered"} if state == "closed" else {}
    return Observed(appointments=[visit], notifications=[question], outcomes=[answer], cases=[case])


def test_feedback_only_once_and_after_the_attended_visit() -> None:
    view, problems = chat.feedback_view(feedback_world(T0 + timedelta(hours=1)))
    assert problems == [] and view["asked"] == 1 and view["answered"] == 1
    assert view["mean_rating"] == 4 and view["with_comment"] == 1
    assert view["by_department"]["dental"]["mean_rating"] == 4
    _, problems = chat.feedback_view(feedback_world(T0 - timedelta(hours=1)))
    assert problems and "before its visit" in problems[0]
    twice = feedback_world(T0 + timedelta(hours=1))
    twice.notifications.append(
        twice.notifications[0].model_copy(
            update={"event_id": "case-2:feedback", "idempotency_key": "case-2:feedback"}
        )
    )
    assert any("asked 2 times" in p for p in chat.feedback_view(twice)[1])


def test_education_in_another_language_or_missing_is_caught() -> None:
    from standins.mailbox import MailRecord  # the mailbox's record of one message

    lt = next(p for p in SCENARIO.patients if p.language == "lt" and p.birth_date is None)
    texts = chat.education_texts()

    def mail(body: str) -> MailRecord:
        return MailRecord(
            mail_from="followup@clinic.example",
            rcpt_to=(lt.email,),
            subject="Vizitas",
            text=body,
            headers={},
            at=T0,
            path=None,
        )

    own = Observed(mail=[mail("Kodėl tai svarbu: " + sorted(texts["lt"])[0])])
    view, problems = chat.education_view(own, SCENARIO, [])
    assert view["carrying"] == 1 and problems == []
    foreign = Observed(mail=[mail(sorted(texts["en"])[0])])
    _, problems = chat.education_view(foreign, SCENARIO, [])
    assert any("explanation in en" in p for p in problems)
    assert any("without the stage explained" in p for p in problems)


def test_the_audit_answer_must_exist_hold_reads_and_no_personal_data() -> None:
    good = {
        "credential_id": "api_token:0123456789ab",
        "patients": 1,
        "reads": [{"patient_id": WA.patient_id, "fields": ["patient_id"], "reads": 2}],
    }
    assert chat.audit_problems(chat.AuditAnswer(0, good), SCENARIO) == []
    assert chat.audit_summary(chat.AuditAnswer(0, good))["reads"] == 2
    assert chat.audit_problems(chat.AuditAnswer(1, None, "boom"), SCENARIO)
    empty = good | {"reads": [], "patients": 0}
    assert chat.audit_problems(chat.AuditAnswer(0, empty), SCENARIO) == [
        "no read recorded for the demo's API token"
    ]
    leaky = good | {"note": WA.phone}
    assert any(
        "personal data" in p for p in chat.audit_problems(chat.AuditAnswer(0, leaky), SCENARIO)
    )
