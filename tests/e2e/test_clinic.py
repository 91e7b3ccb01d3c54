"""A small clinic end to end: the three services as separate processes on one scaled clock,
fed through HL7 over MLLP, FHIR over HTTP and JSON on Kafka, with the stand-ins playing the
outside world, and the outcome checked against the scenario's ground truth. A real Prometheus
scrapes the services throughout the run, and every dashboard panel shows the run's data."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.deployment import SERVICES, Ports
from demo.report import case_state
from demo.run import DemoConfig, DemoResult, run_demo
from tests.support import ops
from tests.support.prometheus import PrometheusServer, service_jobs

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
    "withdrawals_reach_every_sink",
    "no_english_in_other_languages",
)


# Panel queries (dashboard, panel, metric) whose data this clinic cannot produce: it runs
# cleanly, with well-formed input and stand-ins that accept every send. Every other query of
# both dashboards must return data from the run. (The ops scrape test feeds unreadable
# messages, which gives "Dead letters" data there.)
NO_DATA_IN_A_SMALL_CLEAN_CLINIC = {
    # No dead letters: test_the_run_itself_was_clean asserts there are none.
    ("followup / system", "Dead letters", "followup_dead_letters_total"),
    # The clinic's systems send only well-formed HL7, FHIR and JSON: nothing is rejected.
    ("followup / system", "Tracker input by way in", "followup_tracker_ingest_rejected_total"),
    (
        "followup / system",
        "Ingest rejected by reason (per hour)",
        "followup_tracker_ingest_rejected_total",
    ),
    # The SMS, mail and call-task stand-ins never fail a send transiently (a landline or a
    # wrong number fails for good, at once), so nothing is retried.
    ("followup / system", "Retries and duplicates dropped", "followup_notifier_retries_total"),
    # Every command reaches the notifier once: no process dies, so nothing is redelivered.
    (
        "followup / system",
        "Retries and duplicates dropped",
        "followup_notifier_duplicates_dropped_total",
    ),
    # This small clinic runs without the hospital's slot source (rebooking by link is on in
    # `python -m demo`, against its FHIR R4 server): no links, pages or requests to count.
    (
        "followup / clinic",
        "Rebooking links (per hour)",
        "followup_notifier_rebook_links_sent_total",
    ),
    ("followup / clinic", "Rebooking links (per hour)", "followup_notifier_rebook_pages_total"),
    (
        "followup / clinic",
        "What patients asked for by link (per hour)",
        "followup_notifier_rebook_requests_total",
    ),
}


@pytest.fixture(scope="module")
def ports() -> Ports:
    return Ports.pick(use_demo_ports=False)


@pytest.fixture(scope="module")
def prometheus(
    ports: Ports, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    # Started before the services, so it scrapes them (every second) from their first moment
    # to the clinic's end; it outlives them, so the tests query what it kept of the run.
    jobs = service_jobs({service: ports.http(service) for service in SERVICES})
    with PrometheusServer(jobs, tmp_path_factory.mktemp("prometheus")) as prom:
        yield prom


@pytest.fixture(scope="module")
async def clinic(
    tmp_path_factory: pytest.TempPathFactory,
    kafka_bootstrap: str,
    database_url: str,
    ports: Ports,
    prometheus: PrometheusServer,
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
        ports=ports,
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
    assert report["cases_recovered"] >= 1
    languages = set(report["messages_per_language"])
    assert {"lt", "en", "ru", "bg"} <= languages


def test_declining_patients_cases_end_declined(clinic: DemoResult) -> None:
    cases = clinic.observed.cases
    assert cases is not None
    decliners = {p.patient_id for p in clinic.scenario.patients if p.behaviour == "declines"}
    states = {c["patient_id"]: case_state(c) for c in cases}
    assert decliners and all(states.get(pid) == "declined" for pid in decliners), states


def test_every_alert_expression_and_panel_query_parses(
    clinic: DemoResult, prometheus: PrometheusServer
) -> None:
    refused = prometheus.refused()
    assert not refused, "\n".join(refused)


def test_every_panel_shows_the_runs_data(clinic: DemoResult, prometheus: PrometheusServer) -> None:
    since = prometheus.started
    scraped = [
        s for s in SERVICES if prometheus.returned_data(f'up{{job="followup-{s}"}} == 1', since)
    ]
    assert scraped == list(SERVICES), "Prometheus did not scrape every service during the run"
    # As Grafana draws a dashboard whose time range is the run ($__range: all of it).
    whole_run = f"{math.ceil(time.time() - since)}s"
    queries = [
        ((panel.dashboard, panel.panel, selector.metric), panel.expr)
        for panel in ops.panel_queries()
        for selector in ops.selectors(panel.expr)
    ]
    assert {key for key, _ in queries} >= NO_DATA_IN_A_SMALL_CLEAN_CLINIC, (
        "the allow-list names a query no panel has"
    )
    empty = {
        key
        for key, expr in queries
        if not prometheus.returned_data(ops.concrete(expr, range_=whole_run), since)
    }
    unexpected = sorted(empty - NO_DATA_IN_A_SMALL_CLEAN_CLINIC)
    assert not unexpected, "panels without data from the run:\n" + "\n".join(map(str, unexpected))
    panels = {(dashboard, panel) for (dashboard, panel, _), _ in queries}
    shown = {(key[0], key[1]) for key, _ in queries if key not in empty}
    print(f"\n{len(shown)} of {len(panels)} panels showed the run's data")
