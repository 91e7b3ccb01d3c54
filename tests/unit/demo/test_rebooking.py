"""Issue 20's rebooking by link in the demo, without I/O: who uses the link and how
(``rebooking_population``, ``decide_link``, ``decide_call``), the hospital's schedule as FHIR
R4 resources, reading the page a phone got, the privacy check of the page, and the report's
counts and checks (``demo.rebooking``)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fhir.resources.R4B.schedule import Schedule
from fhir.resources.R4B.slot import Slot

from common.clock import ManualClock
from demo import rebooking
from demo.rebooking import Hospital, HospitalBooking, PageSeen
from demo.report import Observed
from demo.scenario import DEPARTMENTS, Patient, ScenarioConfig, build
from demo.simulator.patients import NOT_REACHED, ScriptedReactions, decide_call, decide_link
from schemas.events import AppointmentEvent, NotificationCommand, OutcomeEvent
from services.notifier import rebook_links
from services.notifier.slots import FreeSlot
from standins.calltasks import ReceivedTask

VILNIUS = ZoneInfo("Europe/Vilnius")
SCENARIO = rebooking.rebooking_population(
    build(config=ScenarioConfig(patients=40, days=14, seed=7, workflow=True))
)
USERS = [p for p in SCENARIO.patients if p.link_use is not None]
T0 = datetime(2026, 3, 4, 9, 0, tzinfo=UTC)


def user(use: str) -> Patient:
    return next(p for p in USERS if p.link_use == use)


# --- who uses the link, and how ------------------------------------------------------------


def test_each_way_of_using_the_link_has_a_patient_who_recovers_by_their_own_text() -> None:
    assert [p.link_use for p in USERS][: len(rebooking.LINK_USES)] == list(rebooking.LINK_USES)
    assert {p.link_use for p in USERS[len(rebooking.LINK_USES) :]} <= {"opens"}
    for p in USERS:
        assert p.behaviour == "recovers" and p.answers_on == 2
        assert not p.shares_phone and not p.books_first and not p.reports_concern
        assert p.phone_line == "mobile"
    assert all(p.link_use is None for p in SCENARIO.patients if p.behaviour != "recovers")


def test_the_first_text_decides_what_the_patient_does_with_its_link() -> None:
    assert decide_link(user("picks"), "sms", 1) == "pick"
    assert decide_link(user("picks_taken"), "sms", 1) == "pick_taken"
    assert decide_link(user("calls_back"), "sms", 1) == "callback"
    assert decide_link(user("picks"), "sms", 2) is None  # the first text only
    assert decide_link(user("picks"), "email", 1) is None
    assert decide_link(user("picks_while_called"), "sms", 1) == "open"  # picks when called
    plain = next(p for p in SCENARIO.patients if p.behaviour == "recovers" and not p.link_use)
    assert decide_link(plain, "sms", 1) is None
    reaction = ScriptedReactions().message(user("calls_back"), "sms", 1, T0)
    assert reaction.link == "callback" and reaction.reply is None


def test_who_picks_while_the_desk_calls_leaves_the_task_open_and_picks_by_link() -> None:
    import random

    patient = user("picks_while_called")
    first = decide_call(patient, 1, random.Random(1), 0.0)
    assert first.result in NOT_REACHED and first.link is None
    second = decide_call(patient, 2, random.Random(1), 0.0)
    assert second.result is None and second.link == "pick_later" and not second.rebook


# --- the hospital's schedule -----------------------------------------------------------------


def test_the_schedule_is_valid_fhir_r4_on_open_days_only() -> None:
    holiday = date(2026, 3, 11)
    resources = rebooking.schedule_resources(SCENARIO, lambda d: d == holiday)
    schedules = [r for r in resources if r["resourceType"] == "Schedule"]
    slots = [r for r in resources if r["resourceType"] == "Slot"]
    assert [s["id"] for s in schedules] == [f"sched-{d}" for d in rebooking.DOCTORS]
    for schedule in schedules:
        Schedule.model_validate(schedule)
        actors = {a["reference"] for a in schedule["actor"]}
        assert {f"HealthcareService/{d}" for d in DEPARTMENTS} < actors
    for slot in slots[:20]:
        Slot.model_validate(slot)
    assert len({s["id"] for s in slots}) == len(slots)
    days = {datetime.fromisoformat(s["start"]).date() for s in slots}
    assert holiday not in days and all(d.weekday() < 5 for d in days)
    assert min(days) == SCENARIO.start.date()
    assert max(days) <= (SCENARIO.end + rebooking.SLOTS_AFTER_THE_RUN).date()
    assert all(s["status"] == "free" for s in slots)


def test_a_slot_names_its_doctor() -> None:
    start = datetime(2026, 3, 4, 11, 0, tzinfo=VILNIUS)
    assert rebooking.slot_id("dr-2", start) == "slot-dr-2-202603041100"
    assert rebooking.doctor_of_slot("Slot/slot-dr-2-202603041100") == "dr-2"
    assert rebooking.doctor_of_slot("Slot/someone-else") is None


def test_the_notifier_asks_the_fhir_server_for_slots() -> None:
    env = rebooking.deployment_env("http://127.0.0.1:1/fhir")
    assert env["FOLLOWUP_SLOTS_SOURCE"] == "fhir"
    assert env["FOLLOWUP_SLOTS_FHIR_URL"] == "http://127.0.0.1:1/fhir"


# --- the page a phone got --------------------------------------------------------------------


def page_html(patient: Patient, opening: str = "We missed you at your visit.") -> str:
    facts = rebook_links.PageFacts(
        language="en",
        zone="Europe/Vilnius",
        token="AbCdEfGhIjKl",
        first_name=patient.given_name,
        opening=opening,
        stage_name="Treatment",
        stage_deadline=T0 + timedelta(days=10),
        clinic_phone="+37052000000",
    )
    slots = [
        FreeSlot("slot-dr-1-202603051100", T0 + timedelta(days=1), T0 + timedelta(days=1, hours=1)),
        FreeSlot("slot-dr-1-202603061100", T0 + timedelta(days=2), T0 + timedelta(days=2, hours=1)),
    ]
    callbacks = rebook_links.callback_choices(T0, "Europe/Vilnius", days=1)
    return rebook_links.choice_page(facts, slots, callbacks)


def test_the_phone_reads_the_token_the_slots_and_the_call_back_times_off_the_page() -> None:
    page = PageSeen("p", "open", 200, page_html(user("picks")))
    assert page.token == "AbCdEfGhIjKl"
    assert page.slots == ["slot-dr-1-202603051100", "slot-dr-1-202603061100"]
    assert page.call_times[0] == "soon" and len(page.call_times) == 3
    done = PageSeen("p", "book", 200, rebook_links.message_page("en", "requested", time="x"))
    assert done.keys == ["requested"] and done.slots == []


def test_the_privacy_check_passes_a_first_name_page_and_catches_a_family_name() -> None:
    patient = user("picks")
    clean = PageSeen(patient.patient_id, "open", 200, page_html(patient))
    assert rebooking.personal_data_on(clean, patient, SCENARIO.patients) == []
    leaky = PageSeen(
        patient.patient_id, "open", 200, page_html(patient, f"Dear {patient.family_name}")
    )
    assert rebooking.personal_data_on(leaky, patient, SCENARIO.patients) == [
        f"{patient.patient_id}'s open page shows the family name"
    ]
    other = next(p for p in SCENARIO.patients if p.phone != patient.phone and not p.shares_phone)
    theirs = PageSeen(patient.patient_id, "open", 200, page_html(patient, other.phone))
    assert rebooking.personal_data_on(theirs, patient, SCENARIO.patients) == [
        f"{patient.patient_id}'s open page shows the phone of {other.patient_id}"
    ]


# --- the report's counts and checks ------------------------------------------------------------

CASE = "case-picker"


def outcome(kind: str, at: datetime, attempt: int = 2, case: str = CASE) -> OutcomeEvent:
    return OutcomeEvent.model_validate(
        {
            "event_id": f"{case}:{attempt}:{kind}",
            "occurred_at": at,
            "source": "notifier",
            "outcome": kind,
            "patient_id": user("picks_while_called").patient_id,
            "channel": "sms" if attempt == 2 else "call_task",
            "case_id": case,
            "attempt_number": attempt,
        }
    )


def call_task(attempt: int, start: datetime, purpose: str = "follow_up") -> NotificationCommand:
    p = user("picks_while_called")
    return NotificationCommand.model_validate(
        {
            "event_id": f"{CASE}:{attempt}:{purpose}",
            "occurred_at": start,
            "source": "scheduler",
            "idempotency_key": f"{CASE}:{attempt}"
            + (":withdrawal" if purpose != "follow_up" else ""),
            "case_id": CASE,
            "attempt_number": attempt,
            "patient_id": p.patient_id,
            "purpose": purpose,
            "channel": "call_task",
            "template": "no_show_call",
            "reason": "no_show",
            "department": p.department,
            "timezone": "Europe/Vilnius",
            "window_start": start,
            "window_end": start + timedelta(hours=3),
        }
    )


def booked(appointment_id: str, at: datetime) -> AppointmentEvent:
    p = user("picks_while_called")
    return AppointmentEvent.model_validate(
        {
            "event_id": f"appt:{appointment_id}:{at.isoformat()}",
            "occurred_at": at,
            "source": "tracker",
            "change": "booked",
            "appointment_id": appointment_id,
            "patient_id": p.patient_id,
            "start": at + timedelta(days=2),
            "end": at + timedelta(days=2, minutes=30),
            "timezone": "Europe/Vilnius",
            "department": p.department,
            "status": "booked",
        }
    )


def world(
    closed_at: datetime, booked_at: datetime, *, withdrawn: bool
) -> tuple[Observed, Hospital, list[PageSeen]]:
    p = user("picks_while_called")
    hospital = Hospital(SCENARIO, ManualClock(T0), Path("/nonexistent"))
    hospital.bookings[CASE] = HospitalBooking(
        CASE, p.patient_id, "followup-abc", booked_at + timedelta(days=2), booked_at
    )
    pages = [PageSeen(p.patient_id, "open", 200, page_html(p))]
    notifications = [call_task(3, T0)] + (
        [call_task(3, closed_at, "withdrawal")] if withdrawn else []
    )
    observed = Observed(
        appointments=[booked("followup-abc", booked_at)],
        notifications=notifications,
        outcomes=[
            outcome("link_opened", T0 + timedelta(minutes=10)),
            outcome("booking_requested", T0 + timedelta(minutes=20)),
        ],
        cases=[
            {
                "case_id": CASE,
                "patient_id": p.patient_id,
                "state": "closed",
                "resolution": "recovered",
                "closed_at": closed_at.isoformat(),
            }
        ],
        case_details={
            CASE: {"history": [{"event": "booked", "detail": {"appointment": "followup-abc"}}]}
        },
    )
    return observed, hospital, pages


def findings(observed: Observed, hospital: Hospital, pages: list[PageSeen]) -> dict[str, Any]:
    return {f.check: f for f in rebooking.check(observed, SCENARIO, hospital, pages)}


def test_a_recovery_by_link_closed_on_the_hospitals_booking_passes_every_check() -> None:
    observed, hospital, pages = world(
        T0 + timedelta(minutes=40), T0 + timedelta(minutes=30), withdrawn=False
    )
    # The withdrawal the scheduler commanded, at the sink too: add both.
    observed.notifications.append(call_task(3, T0 + timedelta(minutes=40), "withdrawal"))
    observed.call_tasks.append(
        ReceivedTask(
            at=T0 + timedelta(minutes=41),
            path="/",
            payload={"task": {"action": "withdraw", "case_id": CASE, "attempt_number": 3}},
        )
    )
    result = findings(observed, hospital, pages)
    assert all(f.ok for f in result.values()), [f.detail for f in result.values()]
    assert "1/1 call tasks" in result["call_task_withdrawn_on_link_rebooking"].detail
    assert rebooking.recoveries(observed) == {"by_link": 1, "with_a_call": 0, "patient_phoned": 0}


def test_a_case_closed_before_the_hospitals_booking_fails() -> None:
    observed, hospital, pages = world(
        T0 + timedelta(minutes=25), T0 + timedelta(minutes=30), withdrawn=True
    )
    result = findings(observed, hospital, pages)
    assert not result["no_recovery_by_link_before_the_hospital_booking"].ok


def test_a_task_still_out_at_the_close_and_not_withdrawn_fails() -> None:
    observed, hospital, pages = world(
        T0 + timedelta(minutes=40), T0 + timedelta(minutes=30), withdrawn=False
    )
    result = findings(observed, hospital, pages)
    assert not result["call_task_withdrawn_on_link_rebooking"].ok
    assert rebooking.tasks_out_at_close(observed, CASE, T0 + timedelta(minutes=40)) == [3]
    # Reported before the close (a call result), or past its window: not out any more.
    observed.outcomes.append(outcome("no_answer", T0 + timedelta(minutes=5), attempt=3))
    assert rebooking.tasks_out_at_close(observed, CASE, T0 + timedelta(minutes=40)) == []
    assert rebooking.tasks_out_at_close(observed, "other", T0 + timedelta(hours=4)) == []


def test_a_recovery_closed_on_another_visit_is_not_the_hospitals_booking() -> None:
    observed, hospital, pages = world(
        T0 + timedelta(minutes=40), T0 + timedelta(minutes=30), withdrawn=True
    )
    observed.case_details[CASE]["history"][0]["detail"]["appointment"] = "appt-phoned"
    result = findings(observed, hospital, pages)
    assert not result["self_service_recoveries_booked_by_the_hospital"].ok


def test_a_call_answered_makes_it_a_recovery_with_a_call() -> None:
    observed, _, _ = world(T0 + timedelta(minutes=40), T0 + timedelta(minutes=30), withdrawn=True)
    observed.outcomes.append(outcome("answered_rebooked", T0 + timedelta(minutes=35), attempt=3))
    assert rebooking.recoveries(observed) == {"by_link": 0, "with_a_call": 1, "patient_phoned": 0}
