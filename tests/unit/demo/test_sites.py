"""The demo as a chain of three clinics (issue 22), without I/O: the population spread over
the sites, each site's feeds as the tracker reads them, the sites file, the per-site split of
what happened and of the checks, and the chain's own checks on cases that must fail."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from common.sites import Sites
from demo import sites
from demo.bounds import load_policy
from demo.report import Finding, Observed
from demo.scenario import Patient, ScenarioConfig, build
from demo.simulator import canonical, fhir, hl7v2
from demo.workflow import demo_policy
from schemas.events import NotificationCommand, OutcomeEvent
from services.tracker.fhir_mapping import site_names
from services.tracker.hl7_siu import read
from standins.calltasks import ReceivedTask
from standins.twilio import SmsRecord

SOFIA = ZoneInfo("Europe/Sofia")
VILNIUS = ZoneInfo("Europe/Vilnius")
SCENARIO = sites.population(
    build(config=ScenarioConfig(patients=40, days=14, seed=7, workflow=True))
)
ENV = {c.secret_env: "s" * 24 for c in sites.CHAIN} | {c.token_env: c.site for c in sites.CHAIN}
WEBHOOKS = {"vilnius": "http://127.0.0.1:1/call-tasks", "kaunas": "http://127.0.0.1:2/call-tasks"}


@pytest.fixture(scope="module")
def sites_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sites.sites_file(tmp_path_factory.mktemp("sites"), WEBHOOKS, ENV)


def at(site: str) -> list[Patient]:
    return [p for p in SCENARIO.patients if p.site == site]


def command(p: Patient, n: int, start: datetime, **extra: object) -> NotificationCommand:
    values: dict[str, object] = {
        "event_id": f"case-{p.patient_id}:{n}",
        "occurred_at": start,
        "source": "scheduler",
        "idempotency_key": f"case-{p.patient_id}:{n}",
        "case_id": f"case-{p.patient_id}",
        "attempt_number": n,
        "patient_id": p.patient_id,
        "purpose": "follow_up",
        "channel": "call_task",
        "template": "no_show_call",
        "reason": "no_show",
        "department": p.department,
        "timezone": sites.BY_SITE[p.site or "vilnius"].zone,
        "window_start": start,
        "window_end": start + timedelta(hours=3),
        "site": p.site,
    }
    return NotificationCommand.model_validate(values | extra)


# --- the population -------------------------------------------------------------------------


def test_every_clinic_treats_every_behaviour_that_recovers_and_bulgarians_go_to_sofia() -> None:
    assert all(p.site in sites.SITES for p in SCENARIO.patients)
    for site in sites.SITES:
        behaviours = {p.behaviour for p in at(site)}
        assert {"attends", "recovers", "never_answers"} <= behaviours, site
        assert {p.path for p in at(site)} == {"hl7", "fhir", "json"}, site
    bulgarian = [p for p in SCENARIO.patients if p.language == "bg"]
    assert sum(p.site == "sofia" for p in bulgarian) > len(bulgarian) / 2


def test_a_family_sharing_a_phone_is_treated_at_one_clinic() -> None:
    by_id = {p.patient_id: p for p in SCENARIO.patients}
    families = [p for p in SCENARIO.patients if p.phone_shared_with]
    assert families
    for p in families:
        assert by_id[p.phone_shared_with or ""].site == p.site


def test_no_visit_is_booked_on_a_day_its_clinic_is_shut() -> None:
    for p in SCENARIO.patients:
        clinic = sites.BY_SITE[p.site or ""]
        for appt in p.appointments:
            local = appt.start.astimezone(ZoneInfo(clinic.zone))
            assert not sites.closed_on(clinic, local.date()), (p.patient_id, local)
            assert appt.start.utcoffset() == local.utcoffset()
    sofia = sites.BY_SITE["sofia"]
    assert sites.closed_on(sofia, date(2026, 3, 3))  # Liberation Day
    assert not sites.closed_on(sofia, date(2026, 3, 11))  # Lithuania's day, not Bulgaria's
    assert sites.closed_on(sites.BY_SITE["kaunas"], date(2026, 3, 13))  # its own closure


def test_a_visit_on_the_holiday_moves_to_the_next_open_day_at_the_same_local_time() -> None:
    p = at("sofia")[0]
    holiday = datetime(2026, 3, 3, 10, 30, tzinfo=VILNIUS)
    moved = sites.at_the_clinic(replace(p.appointments[0], start=holiday), sites.BY_SITE["sofia"])
    assert moved.start == datetime(2026, 3, 4, 10, 30, tzinfo=SOFIA)


# --- the feeds, as the tracker reads them ----------------------------------------------------


def test_the_sites_file_is_the_services_own_and_names_every_way_in(sites_path: Path) -> None:
    chain = Sites.load(sites_path, ENV)
    assert set(chain.profiles) == set(sites.SITES)
    assert chain.profiles["sofia"].default_language == "bg"
    assert chain.profiles["sofia"].timezone == "Europe/Sofia"
    assert chain.tokens(ENV) == {c.site: frozenset({c.site}) for c in sites.CHAIN}
    with pytest.raises(Exception, match="is not set"):
        Sites.load(sites_path, {})  # a webhook's Secret missing stops the notifier


def test_each_clinics_hl7_names_it_in_msh4_or_pv1_and_the_tracker_attributes_it(
    sites_path: Path,
) -> None:
    chain = Sites.load(sites_path)
    for site in sites.SITES:
        p = next(p for p in at(site) if p.appointments)
        appt = p.appointments[0]
        message = hl7v2.siu("S12", p, appt, status="Booked", sent_at=appt.start, control_id="1")
        result = read(
            message.text.encode(), zone=VILNIUS, now=appt.start, department="x", sites=chain
        )
        assert result.appointment is not None and result.appointment.site == site
    kaunas = next(p for p in at("kaunas") if p.appointments)
    text = hl7v2.siu(
        "S12",
        kaunas,
        kaunas.appointments[0],
        status="Booked",
        sent_at=kaunas.appointments[0].start,
        control_id="2",
    ).text
    assert text.split("\r")[0].split("|")[3] == ""  # MSH-4 empty: PV1-3.4 decides


def test_each_clinics_fhir_and_json_name_it(sites_path: Path) -> None:
    chain = Sites.load(sites_path)
    for site in sites.SITES:
        p = next(p for p in at(site) if p.appointments)
        appointment = fhir.appointment_resource(p, p.appointments[0], "booked")
        assert chain.attribute(site_names("Appointment", appointment)).id == site  # type: ignore[union-attr]
        plan = fhir.care_plan_resource(p)
        assert chain.attribute(site_names("CarePlan", plan)).id == site  # type: ignore[union-attr]
        # The doctor stays the plan's responsible practitioner (first contributor).
        assert plan["contributor"][0] == {"reference": f"Practitioner/{p.practitioner_id}"}
        event = canonical.appointment(
            p, p.appointments[0], change="booked", status="booked", now=p.appointments[0].start
        )
        assert chain.check_event(event).site == site
        assert event.timezone == sites.BY_SITE[site].zone
        assert chain.check_event(canonical.plan(p, event.occurred_at)).site == site


# --- the checks per site -------------------------------------------------------------------


def test_combine_holds_only_when_the_check_holds_at_every_site() -> None:
    per_site = {
        "vilnius": [Finding("a", True, "fine"), Finding("b", True, "fine")],
        "kaunas": [Finding("a", True, "fine"), Finding("b", False, "x late")],
        "sofia": [Finding("a", True, "fine")],
    }
    a, b = sites.combine(per_site)
    assert a.ok and a.detail.startswith("ok at vilnius, kaunas, sofia")
    assert not b.ok
    assert b.detail.startswith("kaunas FAIL: x late")  # the failing site first
    assert "sofia: no such check" in b.detail


def test_split_gives_each_site_its_patients_alone() -> None:
    vilnius, sofia = at("vilnius")[0], at("sofia")[0]
    start = datetime(2026, 3, 4, 10, 0, tzinfo=VILNIUS)
    observed = Observed(
        notifications=[command(vilnius, 1, start), command(sofia, 1, start)],
        sms=[
            SmsRecord(
                "SM1", vilnius.phone, "+1", "hi", start, 1, key=f"case-{vilnius.patient_id}:1"
            ),
            SmsRecord("SM2", sofia.phone, "+1", "hi", start, 1),
        ],
        call_tasks=[ReceivedTask({"task": {"patient_id": sofia.patient_id}}, start)],
        cases=[
            {"case_id": "c1", "patient_id": sofia.patient_id},
            {"case_id": "c2", "patient_id": vilnius.patient_id},
        ],
        case_details={"c1": {}, "c2": {}},
    )
    part, people = sites.split(observed, SCENARIO, "sofia")
    assert {p.site for p in people.patients} == {"sofia"}
    assert [n.patient_id for n in part.notifications] == [sofia.patient_id]
    assert [m.sid for m in part.sms] == ["SM2"]
    assert len(part.call_tasks) == 1
    assert part.cases == [{"case_id": "c1", "patient_id": sofia.patient_id}]
    assert set(part.case_details) == {"c1"}
    assert part.sinks == ("kafka", "email")


def test_a_command_on_a_sites_own_holiday_fails_and_another_countrys_does_not(
    sites_path: Path,
) -> None:
    policy = sites.site_policy(load_policy(demo_policy(sites_path.parent)), sites_path)
    sofia, vilnius = at("sofia")[0], at("vilnius")[0]
    liberation_day = datetime(2026, 3, 3, 10, 0, tzinfo=SOFIA)
    ok = Observed(notifications=[command(vilnius, 1, liberation_day)])
    closed, problems = sites.calendar_problems(ok, SCENARIO, policy)
    assert problems == []
    assert closed["sofia"] == ["2026-03-03"]
    assert closed["vilnius"] == ["2026-03-11"]
    assert closed["kaunas"] == ["2026-03-11", "2026-03-13"]
    assert sites.open_while_others_close(ok, SCENARIO, closed) == {"vilnius": 1}
    bad = Observed(notifications=[command(sofia, 1, liberation_day)])
    assert any("closed 2026-03-03" in p for p in sites.calendar_problems(bad, SCENARIO, policy)[1])
    wrong_zone = Observed(
        notifications=[
            command(sofia, 1, liberation_day + timedelta(days=1), timezone="Europe/Vilnius")
        ]
    )
    assert any(
        "not Europe/Sofia" in p for p in sites.calendar_problems(wrong_zone, SCENARIO, policy)[1]
    )


def test_an_event_naming_another_site_is_an_attribution_problem() -> None:
    sofia = at("sofia")[0]
    start = datetime(2026, 3, 4, 10, 0, tzinfo=SOFIA)
    right = Observed(
        notifications=[command(sofia, 1, start)],
        cases=[{"case_id": "c", "patient_id": sofia.patient_id, "site": "sofia"}],
    )
    seen, problems = sites.attribution_problems(right, SCENARIO)
    assert seen == {"commands": 1, "cases": 1} and problems == []
    wrong = Observed(
        notifications=[command(sofia, 1, start, site="kaunas")],
        cases=[{"case_id": "c", "patient_id": sofia.patient_id}],
    )
    _, problems = sites.attribution_problems(wrong, SCENARIO)
    assert len(problems) == 2 and "site kaunas, not sofia" in problems[0]


def task(p: Patient, script: str, **extra: object) -> dict[str, object]:
    return {
        "task_id": f"case-{p.patient_id}:1",
        "patient_id": p.patient_id,
        "language": p.language,
        "script": script,
    } | extra


def test_a_call_script_must_name_its_own_clinic_and_phone_and_no_other() -> None:
    sofia = next(p for p in at("sofia") if p.language == "bg")
    truth = sites.sites_of(SCENARIO)
    clinic = sites.BY_SITE["sofia"]
    good = f"Здравейте! {clinic.names['bg']}. {clinic.phone}"
    assert sites.script_problems(task(sofia, good), truth) == []
    assert sites.script_problems(task(sofia, "Здравейте"), truth)
    other = good + " " + sites.BY_SITE["vilnius"].phone
    assert any("names vilnius" in p for p in sites.script_problems(task(sofia, other), truth))


def test_a_sites_task_at_another_sites_webhook_or_missing_from_its_own_sinks_fails() -> None:
    kaunas = at("kaunas")[0]
    start = datetime(2026, 3, 4, 10, 0, tzinfo=SOFIA)
    n = command(kaunas, 1, start)
    created = OutcomeEvent(
        event_id="o1",
        occurred_at=start,
        source="notifier",
        outcome="task_created",
        patient_id=kaunas.patient_id,
        channel="call_task",
        idempotency_key=n.idempotency_key,
    )
    clinic = sites.BY_SITE["kaunas"]
    script = f"{clinic.names[kaunas.language]} {clinic.phone}"
    at_vilnius = ReceivedTask(
        {"task": task(kaunas, script, site="kaunas", action="create", purpose="follow_up")}, start
    )
    observed = Observed(notifications=[n], outcomes=[created])
    desks = sites.Desks({"vilnius": [at_vilnius], "kaunas": []}, [], [], "desk@x")
    _, problems = sites.sink_problems(observed, SCENARIO, desks)
    assert any("at vilnius webhook" in p for p in problems)
    assert any("not at its webhook" in p for p in problems)
    assert any("not at its email" in p for p in problems)


def test_a_text_naming_another_clinic_fails() -> None:
    sofia = next(p for p in at("sofia") if not p.shares_phone)
    start = datetime(2026, 3, 4, 10, 0, tzinfo=SOFIA)
    n = command(sofia, 1, start, channel="sms", template="no_show_sms")
    own = sites.BY_SITE["sofia"].names[sofia.language]
    sender = sites.BY_SITE["sofia"].sms_from
    assert sender is not None
    fine = SmsRecord("SM1", sofia.phone, sender, f"{own}. STOP", start, 1, key=n.idempotency_key)
    checked, problems = sites.voice_problems(Observed(notifications=[n], sms=[fine]), SCENARIO)
    assert checked == 1 and problems == []
    wrong = SmsRecord(
        "SM2", sofia.phone, "+1", "Kauno šeimos klinika", start, 1, key=n.idempotency_key
    )
    _, problems = sites.voice_problems(Observed(notifications=[n], sms=[wrong]), SCENARIO)
    assert any("names kaunas" in p for p in problems)
    assert any("names not sofia" in p for p in problems)
    assert any("not from sofia's number" in p for p in problems)
    # A Kaunas patient's text from Sofia's number is another clinic speaking.
    kaunas = next(p for p in at("kaunas") if not p.shares_phone)
    k = command(kaunas, 1, start, channel="sms", template="no_show_sms")
    name = sites.BY_SITE["kaunas"].names[kaunas.language]
    borrowed = SmsRecord("SM3", kaunas.phone, sender, name, start, 1, key=k.idempotency_key)
    _, problems = sites.voice_problems(Observed(notifications=[k], sms=[borrowed]), SCENARIO)
    assert problems == [f"sms {k.idempotency_key} to {kaunas.patient_id} from sofia's number"]


def test_a_site_token_that_sees_another_sites_case_fails() -> None:
    cases = [
        {"case_id": f"c{i}", "patient_id": p.patient_id} for i, p in enumerate(SCENARIO.patients)
    ]
    observed = Observed(cases=cases)
    own = sum(1 for p in SCENARIO.patients if p.site == "sofia")
    good = sites.TokenProbe("sofia", ["sofia"] * own, 200, 404, 404)
    assert sites.token_problems([good], observed, SCENARIO) == []
    leaky = sites.TokenProbe("sofia", ["sofia"] * own + ["vilnius"], 200, 200, 202)
    problems = sites.token_problems([leaky], observed, SCENARIO)
    assert any("listed cases of vilnius" in p for p in problems)
    assert any("another site's case answered 200" in p for p in problems)
    assert any("another site's call task answered 202" in p for p in problems)
    short = sites.TokenProbe("sofia", ["sofia"], 200, 404, 404)
    assert any("listed 1 of its" in p for p in sites.token_problems([short], observed, SCENARIO))
    assert sites.token_problems([], observed, SCENARIO) == ["no site's token was tried"]
