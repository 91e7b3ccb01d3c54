"""The report and the ground-truth checks, from synthetic observations (no I/O)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from demo.bounds import allowed, earliest_allowed, load_policy
from demo.observe import Metrics
from demo.report import Finding, Observed, check, compute, detect_language, table, within
from demo.scenario import Patient, Scenario, build, carrier_errors, e164
from schemas.events import (
    AppointmentEvent,
    CallTaskEvent,
    NotificationCommand,
    OutcomeEvent,
    TriggerEvent,
)
from schemas.topics import CALLTASKS
from services.scheduler.policy import DEFAULT_POLICY_PATH
from standins.calltasks import ReceivedTask
from standins.mailbox import MailRecord
from standins.twilio import SmsRecord
from tests.support.samples import sample_events

SCENARIO = build(patients=14, days=7, seed=11)
T0 = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
TOLERANCE = timedelta(minutes=10)
VILNIUS = ZoneInfo("Europe/Vilnius")
POLICY = load_policy()  # the scheduler's own file, through its own parser


def patient(behaviour: str) -> Patient:
    return next(p for p in SCENARIO.patients if p.behaviour == behaviour)


def trigger(p: Patient, at: datetime) -> TriggerEvent:
    appt = p.appointments[0] if p.appointments else None
    return TriggerEvent(
        event_id=f"no_show:{p.patient_id}",
        occurred_at=at,
        source="tracker",
        kind="no_show",
        patient_id=p.patient_id,
        department=p.department,
        timezone="Europe/Vilnius",
        appointment_id=appt.appointment_id if appt else None,
        detected_at=at,
    )


def command(
    p: Patient,
    n: int,
    start: datetime,
    channel: str = "call_task",
    deadline: datetime | None = None,
) -> NotificationCommand:
    appt = p.appointments[0] if p.appointments else None
    return NotificationCommand(
        event_id=f"case-{p.patient_id}:{n}",
        occurred_at=start,
        source="scheduler",
        idempotency_key=f"case-{p.patient_id}:{n}",
        case_id=f"case-{p.patient_id}",
        attempt_number=n,
        patient_id=p.patient_id,
        channel=channel,  # type: ignore[arg-type]
        template="t",
        reason="no_show",
        department=p.department,
        timezone="Europe/Vilnius",
        appointment_id=appt.appointment_id if appt else None,
        stage_deadline=deadline,
        window_start=start,
        window_end=start + timedelta(hours=3),
    )


def outcome(p: Patient, kind: str, at: datetime, event_id: str) -> OutcomeEvent:
    return OutcomeEvent(
        event_id=event_id,
        occurred_at=at,
        source="notifier",
        outcome=kind,  # type: ignore[arg-type]
        patient_id=p.patient_id,
        channel="sms" if kind == "opt_out" else "call_task",
    )


def sms(p: Patient, at: datetime, body: str = "We missed you at your visit") -> SmsRecord:
    return SmsRecord(
        sid=f"SM{at.timestamp()}", to=p.phone, from_="+1", body=body, at=at, segments=1
    )


def by_name(findings: list[Finding]) -> dict[str, bool]:
    return {f.check: f.ok for f in findings}


def a_clean_week() -> Observed:
    slipped = [p for p in SCENARIO.patients if p.expected_trigger]
    observed = Observed(
        triggers=[trigger(p, T0) for p in slipped],
        notifications=[command(p, 1, T0 + timedelta(hours=1)) for p in slipped],
        cases=[
            {"case_id": f"case-{p.patient_id}", "patient_id": p.patient_id, "state": "contacting"}
            for p in slipped
        ],
    )
    # The stage-window and unanswered-call patients got their own trigger kinds.
    for p in slipped:
        kind = p.expected_trigger
        assert kind is not None
        observed.triggers = [
            t.model_copy(update={"kind": kind}) if t.patient_id == p.patient_id else t
            for t in observed.triggers
        ]
        # The stage window's first step has no delay (services/scheduler/policy.yaml).
        start = T0 if kind == "stage_window_at_risk" else T0 + timedelta(hours=1)
        observed.notifications = [
            n.model_copy(update={"reason": kind, "window_start": start})
            if n.patient_id == p.patient_id
            else n
            for n in observed.notifications
        ]
    return observed


def test_a_clean_week_passes_every_check() -> None:
    observed = a_clean_week()
    rebooked = patient("recovers")
    observed.outcomes.append(outcome(rebooked, "answered_rebooked", T0 + timedelta(hours=2), "r1"))
    assert observed.cases is not None
    for case in observed.cases:
        if case["patient_id"] == rebooked.patient_id:
            case["state"], case["resolution"] = "closed", "recovered"
    dead = patient("dies")
    for case in observed.cases:
        if case["patient_id"] == dead.patient_id:
            case["state"], case["resolution"] = "closed", "deceased"
    findings = check(observed, SCENARIO, POLICY, TOLERANCE)
    assert all(f.ok for f in findings), [f for f in findings if not f.ok]


def test_each_broken_promise_is_caught() -> None:
    observed = a_clean_week()
    stopper, late = patient("opts_out"), patient("declines")
    # a text after STOP, a duplicate text, a text at 23:30 local time, a late first call,
    # a follow-up after its stage deadline, and an attendee with a case
    observed.outcomes.append(outcome(stopper, "opt_out", T0 + timedelta(hours=4), "SM-stop"))
    evening = datetime(2026, 3, 3, 21, 30, tzinfo=UTC)  # 23:30 in Vilnius
    observed.sms += [sms(stopper, T0 + timedelta(hours=6)), sms(stopper, evening)]
    observed.notifications = [n for n in observed.notifications if n.patient_id != late.patient_id]
    observed.notifications.append(command(late, 1, T0 + timedelta(days=3)))
    observed.notifications.append(
        command(late, 2, T0 + timedelta(days=4), deadline=T0 + timedelta(days=3))
    )
    attendee = patient("attends")
    observed.notifications.append(command(attendee, 1, T0))
    result = by_name(check(observed, SCENARIO, POLICY, TOLERANCE))
    assert result == {
        "every_slip_opens_a_case": True,
        "no_case_for_attendees": False,
        "first_contact_within_first_step": False,
        "no_contact_after_opt_out": False,
        "nothing_in_quiet_hours": False,
        "recovered_cases_closed": False,  # nobody rebooked: nothing shows it
        "no_contact_after_death": False,  # the deceased patient's case is still open
        "shared_phone_names_no_one": True,
        "no_message_delivered_twice": False,
        "no_follow_up_after_deadline": False,
        "withdrawals_reach_every_sink": True,  # none commanded
        # The English text went to a patient who reads another language.
        "no_english_in_other_languages": stopper.language == "en",
    }


def test_a_shared_phone_must_not_hear_names_or_visits() -> None:
    observed = a_clean_week()
    family = [p for p in SCENARIO.patients if p.shares_phone]
    slipped = next(p for p in family if p.slips)
    named = f"{slipped.given_name}, you missed your visit"
    observed.sms = [sms(slipped, T0, "We missed you at a visit"), sms(slipped, T0, named)]
    finding = next(
        f
        for f in check(observed, SCENARIO, POLICY, TOLERANCE)
        if f.check == "shared_phone_names_no_one"
    )
    assert not finding.ok and "2 texts" in finding.detail


def test_a_text_after_death_is_caught() -> None:
    observed = a_clean_week()
    dead = patient("dies")
    observed.sms = [sms(dead, dead.death_at - timedelta(hours=1))]
    assert (
        by_name(check(observed, SCENARIO, POLICY, TOLERANCE))["no_contact_after_death"] is False
    )  # the case is not closed as deceased
    assert observed.cases is not None
    for case in observed.cases:
        if case["patient_id"] == dead.patient_id:
            case["resolution"] = "deceased"
    assert by_name(check(observed, SCENARIO, POLICY, TOLERANCE))["no_contact_after_death"]
    observed.sms.append(sms(dead, dead.death_at + timedelta(hours=5)))
    assert not by_name(check(observed, SCENARIO, POLICY, TOLERANCE))["no_contact_after_death"]


def test_a_missing_case_is_named() -> None:
    observed = a_clean_week()
    lost = patient("never_answers")
    observed.triggers = [t for t in observed.triggers if t.patient_id != lost.patient_id]
    finding = next(
        f
        for f in check(observed, SCENARIO, POLICY, TOLERANCE)
        if f.check == "every_slip_opens_a_case"
    )
    assert not finding.ok and lost.patient_id in finding.detail


def test_report_counts_what_happened_not_what_was_meant() -> None:
    observed = a_clean_week()
    stopper = patient("opts_out")
    observed.outcomes.append(outcome(stopper, "opt_out", T0, "SM-stop"))
    observed.sms.append(sms(stopper, T0 - timedelta(hours=1), "Мы ждали вас на приёме"))
    observed.call_tasks.append(
        ReceivedTask(payload={"task": {"language": "lt", "task_id": "c:1"}}, at=T0)
    )
    observed.metrics["notifier"] = Metrics.parse(
        "# TYPE followup_notifier_held_total counter\n"
        'followup_notifier_held_total{rule="quiet_hours"} 3.0\n'
    )
    report = compute(observed, SCENARIO)
    slipped = sum(1 for p in SCENARIO.patients if p.expected_trigger)
    assert report["cases_opened"] == slipped
    assert report["attempts_by_channel"] == {"call_task": slipped}
    assert report["opt_outs"] == 1 and report["opt_outs_honoured"] == 1
    assert report["messages_per_language"] == {"ru": 1, "lt": 1}
    assert report["held_by_rule"]["notifier"] == {"quiet_hours": 3.0}
    text = table(report, [], {"captured mailbox": str(Path("/tmp/mail"))})
    assert "held by notifier rule" in text and "quiet_hours 3" in text


def test_within_drops_what_happened_after_the_clinic_closed() -> None:
    observed = a_clean_week()
    p = patient("recovers")
    observed.sms = [sms(p, T0), sms(p, T0 + timedelta(days=30))]
    assert len(within(observed, T0 + timedelta(days=1)).sms) == 1


def test_languages_of_the_templates_are_told_apart() -> None:
    assert detect_language("Pasigedome Jūsų vizito metu") == "lt"
    assert detect_language("Мы ждали вас на приёме") == "ru"
    assert detect_language("Липсвахте ни на прегледа и искаме да ви помогнем") == "bg"
    assert detect_language("We missed you at your visit") == "en"


def test_first_contact_moves_to_business_hours_for_calls() -> None:
    rules = POLICY.rules_for("surgery", "no_show")
    friday_evening = datetime(2026, 3, 6, 17, 30, tzinfo=UTC)  # 19:30 in Vilnius
    due = earliest_allowed(rules, "call_task", friday_evening, "Europe/Vilnius")
    assert due is not None and due.astimezone(VILNIUS).isoformat() == "2026-03-09T08:00:00+02:00"
    # The dental department also calls on Saturday mornings (its own override).
    dental = POLICY.rules_for("dental", "no_show")
    due = earliest_allowed(dental, "call_task", friday_evening, "Europe/Vilnius")
    assert due is not None and due.astimezone(VILNIUS).isoformat() == "2026-03-07T09:00:00+02:00"


def test_first_call_skips_a_slot_with_less_than_the_minimum_window_left() -> None:
    # The failure of a fresh clone: due 11:43, but the morning slot ends at 12:00 and a call
    # task needs 30 minutes, so the scheduler plans it at 12:00, which is in time.
    rules = POLICY.rules_for("surgery", "unanswered_call")
    due = datetime(2026, 3, 3, 11, 43, tzinfo=VILNIUS)
    planned = earliest_allowed(rules, "call_task", due, "Europe/Vilnius")
    assert planned is not None and planned.astimezone(VILNIUS).time() == time(12, 0)
    assert not allowed(rules, "call_task", due, "Europe/Vilnius")
    assert allowed(rules, "call_task", due.replace(minute=29), "Europe/Vilnius")


def test_messages_wait_for_the_end_of_quiet_hours() -> None:
    rules = POLICY.rules_for("surgery", "no_show")
    late = datetime(2026, 3, 3, 22, 15, tzinfo=VILNIUS)
    planned = earliest_allowed(rules, "sms", late, "Europe/Vilnius")
    assert planned is not None and planned.astimezone(VILNIUS).isoformat() == (
        "2026-03-04T08:00:00+02:00"
    )
    assert earliest_allowed(rules, "sms", T0, "Europe/Vilnius") == T0


def test_the_checks_accept_every_policy_the_scheduler_accepts(tmp_path: Path) -> None:
    # demo/policy.py refused these; the scheduler's parser takes them, so the checks do.
    text = (
        Path(DEFAULT_POLICY_PATH)
        .read_text(encoding="utf-8")
        .replace("{delay: P2D, channel: email}", "{delay: P1W, channel: email}")
        .replace('mon: "08:00-18:00"', 'mon: "08:00-24:00"')
    )
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    rules = load_policy(path).rules_for("surgery", "no_show")
    assert rules.steps[3].delay == timedelta(weeks=1)
    monday_night = datetime(2026, 3, 2, 23, 0, tzinfo=VILNIUS)
    assert not allowed(rules, "call_task", monday_night, "Europe/Vilnius")  # no slot open


def test_a_first_contact_is_judged_from_when_the_scheduler_had_the_case() -> None:
    # Under load the scheduler may open the case an hour of virtual time after detection:
    # its plan then counts from its own opened_at (a stamp), not from the wall clock.
    observed = a_clean_week()
    assert observed.cases is not None
    case = observed.cases[0]
    late = observed.notifications[0]
    assert late.case_id == case["case_id"]
    observed.notifications[0] = late.model_copy(
        update={"window_start": late.window_start + timedelta(hours=2)}
    )
    assert not by_name(check(observed, SCENARIO, POLICY, TOLERANCE))[
        "first_contact_within_first_step"
    ]
    case["opened_at"] = (late.window_start + timedelta(hours=2)).isoformat()
    assert by_name(check(observed, SCENARIO, POLICY, TOLERANCE))["first_contact_within_first_step"]
    # A hold the case's history records before the first firing moves the bound too.
    del case["opened_at"]
    observed.case_details[case["case_id"]] = {
        "history": [
            {"event": "opened", "detail": {}},
            {"event": "held", "detail": {"until": (T0 + timedelta(hours=3)).isoformat()}},
            {"event": "fired", "detail": {}},
        ]
    }
    assert by_name(check(observed, SCENARIO, POLICY, TOLERANCE))["first_contact_within_first_step"]


def test_quiet_hours_are_judged_by_the_notifiers_decision_not_the_arrival() -> None:
    observed = a_clean_week()
    p = patient("recovers")
    decided = datetime(2026, 3, 3, 20, 59, tzinfo=VILNIUS)
    arrived = decided + timedelta(hours=1)  # a busy machine: an hour of virtual latency
    observed.sms = [replace(sms(p, arrived), key="case-x:2")]
    observed.outcomes.append(
        OutcomeEvent(
            event_id="sent-x2",
            occurred_at=decided,
            source="notifier",
            outcome="sent",
            patient_id=p.patient_id,
            channel="sms",
            idempotency_key="case-x:2",
        )
    )
    assert by_name(check(observed, SCENARIO, POLICY, TOLERANCE))["nothing_in_quiet_hours"]
    observed.outcomes[-1] = observed.outcomes[-1].model_copy(
        update={"occurred_at": decided + timedelta(minutes=2)}
    )
    assert not by_name(check(observed, SCENARIO, POLICY, TOLERANCE))["nothing_in_quiet_hours"]


def test_scenario_is_seeded_and_shows_every_behaviour() -> None:
    again = build(patients=14, days=7, seed=11)
    assert [p.phone for p in again.patients] == [p.phone for p in SCENARIO.patients]
    assert {p.behaviour for p in SCENARIO.patients} == {
        "attends",
        "recovers",
        "declines",
        "never_answers",
        "opts_out",
        "late_cancels",
        "misses_invitation",
        "drifts",
        "dies",
    }
    slipping = [p for p in SCENARIO.patients if p.slips]
    assert {p.language for p in slipping} == {"lt", "en", "ru", "bg"}
    assert {p.path for p in slipping} == {"hl7", "fhir", "json"}
    kinds = [a.kind for a in SCENARIO.actions()]
    assert kinds.index("register") < kinds.index("book")
    assert isinstance(SCENARIO, Scenario)


def _notifier(p: Patient, kind: str, key: str, detail: str | None = None) -> OutcomeEvent:
    return OutcomeEvent(
        event_id=f"{key}:{kind}",
        occurred_at=T0 + timedelta(hours=2),
        source="notifier",
        outcome=kind,  # type: ignore[arg-type]
        patient_id=p.patient_id,
        channel="sms" if kind in ("channel_impossible", "failed", "opt_out") else "call_task",
        idempotency_key=key,
        detail=detail,
    )


def _withdrawal(p: Patient, n: int) -> NotificationCommand:
    created = command(p, n, T0 + timedelta(hours=1))
    key = f"{created.idempotency_key}:withdrawal"
    return created.model_copy(
        update={"purpose": "withdrawal", "idempotency_key": key, "event_id": key}
    )


def _withdrawn_at_every_sink(observed: Observed, task_id: str) -> None:
    observed.call_tasks.append(
        ReceivedTask(payload={"task": {"task_id": task_id, "action": "withdraw"}}, at=T0)
    )
    observed.mail.append(
        MailRecord(
            mail_from="followup@clinic.example",
            rcpt_to=("front-desk@clinic.example",),
            subject="withdrawn",
            text="",
            headers={"X-Followup-Key": f"calltask:{task_id}:withdraw"},
            at=T0,
            path=None,
            calendar_method="CANCEL",
        )
    )
    sample = sample_events()[CALLTASKS]
    assert isinstance(sample, CallTaskEvent)
    observed.topic_call_tasks.append(
        sample.model_copy(update={"task_id": task_id, "action": "withdraw", "event_id": task_id})
    )


def test_every_withdrawal_of_a_sent_task_must_reach_every_sink() -> None:
    observed = a_clean_week()
    observed.sinks = ("webhook", "email", "kafka")
    rebooked, unsent = patient("recovers"), patient("declines")
    for p in (rebooked, unsent):
        observed.notifications.append(_withdrawal(p, 1))
    observed.outcomes += [
        _notifier(rebooked, "task_created", f"case-{rebooked.patient_id}:1"),
        _notifier(rebooked, "withdrawn", f"case-{rebooked.patient_id}:1:withdrawal"),
        _notifier(unsent, "withdrawn", f"case-{unsent.patient_id}:1:withdrawal", "never_sent"),
    ]
    _withdrawn_at_every_sink(observed, f"case-{rebooked.patient_id}:1")
    finding = next(
        f
        for f in check(observed, SCENARIO, POLICY, TOLERANCE)
        if f.check == "withdrawals_reach_every_sink"
    )
    assert finding.ok and "1/1" in finding.detail and "never_sent 1" in finding.detail
    counts = compute(observed, SCENARIO)["withdrawals"]
    assert counts["commanded"] == 2 and counts["of_created_tasks"] == 1
    assert counts["received"] == {"webhook": 1, "email": 1, "kafka": 1}
    assert counts["apart"] == {"never_sent": 1}
    # The front desk's mail without its CANCEL is not a withdrawal in a calendar.
    observed.mail[-1] = replace(observed.mail[-1], calendar_method="REQUEST")
    finding = next(
        f
        for f in check(observed, SCENARIO, POLICY, TOLERANCE)
        if f.check == "withdrawals_reach_every_sink"
    )
    assert not finding.ok and "not at email" in finding.detail and "0/1" in finding.detail
    assert "withdrawals" in table(compute(observed, SCENARIO), [], {})


def test_english_words_and_iso_dates_in_other_languages_are_caught() -> None:
    observed = a_clean_week()
    lt = next(p for p in SCENARIO.patients if p.language == "lt")
    en = next(p for p in SCENARIO.patients if p.language == "en")
    clean = (
        "Pasigedome Jūsų kovo 4 d. 15:00. Skambinkite +37052000000"
        " arba https://x.example/book/2026-03-04. Klinika"
    )
    observed.sms = [sms(lt, T0, clean), sms(en, T0, "We missed you on 2026-03-04. the clinic")]
    assert by_name(check(observed, SCENARIO, POLICY, TOLERANCE))["no_english_in_other_languages"]
    observed.sms.append(sms(lt, T0, "Pasigedome Jūsų 2026-03-04 15:00. the clinic"))
    finding = next(
        f
        for f in check(observed, SCENARIO, POLICY, TOLERANCE)
        if f.check == "no_english_in_other_languages"
    )
    assert not finding.ok and finding.detail == "1 sms in lt (YYYY-MM-DD, the clinic)"


def test_segments_per_language_and_the_carrier_triage_are_reported() -> None:
    observed = a_clean_week()
    ru = next(p for p in SCENARIO.patients if p.language == "ru" and not p.shares_phone)
    en = next(p for p in SCENARIO.patients if p.language == "en" and not p.shares_phone)
    observed.sms = [sms(ru, T0, "ж" * 71), sms(ru, T0, "ж" * 10), sms(en, T0, "a" * 161)]
    observed.outcomes += [
        _notifier(ru, "channel_impossible", "k1", "landline"),
        _notifier(ru, "failed", "k2", "unreachable"),
        _notifier(en, "opt_out", "k3", "carrier_21610"),
    ]
    report = compute(observed, SCENARIO)
    assert report["sms_segments_per_language"] == {
        "ru": {"texts": 2, "segments": 3},
        "en": {"texts": 1, "segments": 2},
    }
    assert report["sms_triage"] == {
        "channel_impossible landline": 1,
        "failed unreachable": 1,
        "opt_out carrier_21610": 1,
    }
    text = table(report, [], {})
    assert "ru 3/2 texts" in text and "failed unreachable 1" in text


def test_the_demo_clinic_has_a_landline_a_wrong_number_and_a_phone_switched_off() -> None:
    clinic = build(patients=40, days=14, seed=7)
    lines = {p.phone_line: p for p in clinic.patients if p.phone_line != "mobile"}
    assert set(lines) == {"landline", "invalid", "switched_off"}
    assert all(p.behaviour == "never_answers" and not p.shares_phone for p in lines.values())
    assert carrier_errors(clinic) == {
        e164(lines["landline"].phone): 21614,
        e164(lines["invalid"].phone): 21211,
        e164(lines["switched_off"].phone): 30003,
    }


def arrival(p: Patient, stamped: datetime) -> AppointmentEvent:
    appt = p.appointments[0]
    return AppointmentEvent(
        event_id=f"fhir:Appointment/{appt.appointment_id}/arrived",
        occurred_at=stamped,
        source="tracker.fhir",
        change="status_changed",
        appointment_id=appt.appointment_id,
        patient_id=p.patient_id,
        start=appt.start,
        timezone="Europe/Vilnius",
        department=p.department,
        status="arrived",
        status_at=stamped,
    )


def test_an_attendee_whose_arrival_the_clinic_stamped_late_is_no_broken_promise() -> None:
    # The demo's pat-7-0005: the simulator, starved of CPU, posted the check-in 3.5 virtual
    # hours late (stamped when sent); the tracker judged by the stamp and fired. The
    # verdict must not depend on the machine's load.
    attendee = patient("attends")
    start = attendee.appointments[0].start
    no_show_moment = start + timedelta(minutes=15)
    observed = a_clean_week()
    observed.triggers.append(trigger(attendee, no_show_moment))
    observed.notifications.append(command(attendee, 1, no_show_moment + timedelta(hours=1)))
    observed.appointments.append(arrival(attendee, no_show_moment + timedelta(hours=3)))
    finding = next(
        f
        for f in check(observed, SCENARIO, POLICY, TOLERANCE)
        if f.check == "no_case_for_attendees"
    )
    assert finding.ok and attendee.patient_id in finding.detail
    # Stamped before the no-show moment (in time for the tracker): a case is a failure.
    observed.appointments = [arrival(attendee, start - timedelta(minutes=5))]
    assert not by_name(check(observed, SCENARIO, POLICY, TOLERANCE))["no_case_for_attendees"]
    # ... unless the tracker itself wrote it only after that moment (a starved machine
    # delivered the clinic's message late), but not when it had it in time.
    [on_time] = observed.appointments
    observed.appointments_received = {on_time.event_id: no_show_moment + timedelta(minutes=2)}
    assert by_name(check(observed, SCENARIO, POLICY, TOLERANCE))["no_case_for_attendees"]
    observed.appointments_received = {on_time.event_id: no_show_moment - timedelta(minutes=2)}
    assert not by_name(check(observed, SCENARIO, POLICY, TOLERANCE))["no_case_for_attendees"]
    observed.appointments_received = {}
    # No arrival at all, or a case without any trigger: a failure too.
    observed.appointments = []
    assert not by_name(check(observed, SCENARIO, POLICY, TOLERANCE))["no_case_for_attendees"]
    observed.triggers = [t for t in observed.triggers if t.patient_id != attendee.patient_id]
    observed.appointments = [arrival(attendee, no_show_moment + timedelta(hours=3))]
    assert not by_name(check(observed, SCENARIO, POLICY, TOLERANCE))["no_case_for_attendees"]


def test_the_feedback_question_is_asked_once_not_a_message_delivered_twice() -> None:
    """After a recovered visit the scheduler asks one feedback question (purpose
    ``feedback``): its SMS is one asked for, and a second copy of it is still caught."""
    observed = a_clean_week()
    p = next(p for p in SCENARIO.patients if p.expected_trigger)
    asked = command(p, 9, T0 + timedelta(days=2), channel="sms")
    key = f"case-{p.patient_id}:feedback"
    observed.notifications.append(
        asked.model_copy(update={"purpose": "feedback", "idempotency_key": key, "event_id": key})
    )
    observed.sms = [sms(p, T0 + timedelta(days=2, minutes=1), body="How was your visit?")]
    assert by_name(check(observed, SCENARIO, POLICY, TOLERANCE))["no_message_delivered_twice"]
    observed.sms.append(sms(p, T0 + timedelta(days=2, minutes=2), body="How was your visit?"))
    assert not by_name(check(observed, SCENARIO, POLICY, TOLERANCE))["no_message_delivered_twice"]
