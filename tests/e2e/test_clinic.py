"""A small clinic end to end: the three services as separate processes on one scaled clock,
fed through HL7 over MLLP, FHIR over HTTP and JSON on Kafka, with the stand-ins playing the
outside world, and the outcome checked against the scenario's ground truth."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo.run import DemoConfig, DemoResult, run_demo

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(280)]

CHECKS = (
    "every_slip_opens_a_case",
    "no_case_for_attendees",
    "first_contact_within_first_step",
    "no_contact_after_opt_out",
    "nothing_in_quiet_hours",
    "recovered_cases_closed",
    "no_contact_after_death",
    "shared_phone_names_no_one",
    "no_message_delivered_twice",
    "no_follow_up_after_deadline",
)


@pytest.fixture(scope="module")
async def clinic(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, database_url: str
) -> DemoResult:
    # 14 patients show every behaviour at least once; a week at two virtual hours a second.
    config = DemoConfig(
        patients=14,
        days=7,
        seed=11,
        speed=7200.0,
        kafka=kafka_bootstrap,
        database_url=database_url,
        output=Path(tmp_path_factory.mktemp("demo")),
        demo_ports=False,
        show_progress=False,
    )
    return await run_demo(config)


@pytest.mark.parametrize("check", CHECKS)
def test_ground_truth_holds(clinic: DemoResult, check: str) -> None:
    finding = next(f for f in clinic.findings if f.check == check)
    assert finding.ok, finding.detail


def test_the_scenario_holds_every_rule_to_check(clinic: DemoResult) -> None:
    # The checks above are only as good as the patients they meet.
    behaviours = {p.behaviour for p in clinic.scenario.patients}
    assert {"opts_out", "dies", "recovers", "declines", "never_answers"} <= behaviours
    assert any(p.shares_phone for p in clinic.scenario.patients)


def test_the_run_itself_was_clean(clinic: DemoResult) -> None:
    assert clinic.services_alive == {"tracker": True, "scheduler": True, "notifier": True}
    assert clinic.simulation_errors == []
    assert clinic.report["dead_letters"] == 0
    assert clinic.report["call_tasks_refused_bad_signature"] == 0


def test_report_matches_the_scenario(clinic: DemoResult) -> None:
    scenario, report = clinic.scenario, clinic.report
    assert report["appointments"] >= sum(len(p.appointments) for p in scenario.patients)
    assert report["no_shows_detected"] == sum(1 for p in scenario.patients if p.misses_visit)
    assert report["opt_outs"] == scenario.count("opts_out")
    assert report["opt_outs_honoured"] == report["opt_outs"]
    # Every path of ingest and every channel was really used.
    assert all(report["deliveries"][channel] > 0 for channel in ("sms", "email", "call_task"))
    assert report["patients_recovered"] >= 1
    languages = set(report["messages_per_language"])
    assert {"lt", "en", "ru", "bg"} <= languages


def test_declining_patients_cases_end_declined(clinic: DemoResult) -> None:
    cases = clinic.observed.cases
    assert cases is not None
    decliners = {p.patient_id for p in clinic.scenario.patients if p.behaviour == "declines"}
    states = {c["patient_id"]: c.get("resolution") or c.get("state") for c in cases}
    assert decliners and all(states.get(pid) == "declined" for pid in decliners), states
