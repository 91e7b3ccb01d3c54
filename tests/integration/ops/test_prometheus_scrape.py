"""A real Prometheus scrapes the three services, run as processes against the real broker and
database, and answers every dashboard query and alert expression.

What "the panels return data" means, so the test grows stricter as the services do:
- every panel whose series exist in Prometheus (each selector of its query matches at least
  one scraped series) must return data: this covers each metric as soon as a service exports
  it with a value;
- the panels in MUST_HAVE_DATA must return data whatever the services export today.
The services are fed one unreadable message on each input topic, so consumption and dead
letter metrics get values once the services consume.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest
import yaml
from kafka import KafkaProducer

from common.db import drop_schema
from common.kafka import delete_topics_with_prefix, ensure_topics
from common.launcher import ServiceProcess
from schemas.topics import TopicNames
from tests.support import infra, ops
from tests.support.polling import free_port
from tests.support.prometheus import PrometheusServer, PromQLError, service_jobs

pytestmark = pytest.mark.integration

SERVICES = ("tracker", "scheduler", "notifier")
# Panels that must show data in every run. Extend this as the end-to-end run feeds the
# services (e.g. "Consumed by service and topic", "Dead letters", "Open cases by state").
MUST_HAVE_DATA = {
    ("followup / system", "Replicas up"),
    ("followup / system", "Resident memory"),
    ("followup / system", "CPU"),
    ("followup / clinic", "Open cases"),
    ("followup / clinic", "Open cases by state"),
    ("followup / system", "Consumed by service and topic"),
    ("followup / system", "Dead letters"),
    ("followup / system", "Consumer lag"),
    ("followup / system", "Rebalances"),
    ("followup / system", "Offset commit latency"),
    ("followup / system", "Outbox backlog"),
}


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    infra.ensure_up()
    unique = uuid.uuid4().hex[:10]
    names = TopicNames(prefix=f"t{unique}.")
    asyncio.run(ensure_topics(infra.KAFKA_BOOTSTRAP, names))
    workdir = tmp_path_factory.mktemp("prometheus")
    ports = {service: free_port() for service in SERVICES}
    schemas = {service: f"t_{unique}_{service}" for service in SERVICES}
    processes: dict[str, ServiceProcess] = {}
    try:
        for service in SERVICES:
            env = {
                "FOLLOWUP_KAFKA_BOOTSTRAP": infra.KAFKA_BOOTSTRAP,
                "FOLLOWUP_DATABASE_URL": infra.DATABASE_URL,
                "FOLLOWUP_TOPIC_PREFIX": names.prefix,
                "FOLLOWUP_DB_SCHEMA": schemas[service],
                "FOLLOWUP_CONSUMER_GROUP": f"{names.prefix}{service}",
                "FOLLOWUP_MLLP_PORT": str(free_port()),
                "FOLLOWUP_API_TOKEN": "test-token",
                "FOLLOWUP_INGEST_TOKEN": "test-token",
                "FOLLOWUP_LINK_SECRET": "test-link-secret",
                "FOLLOWUP_LOG_FORMAT": "json",
            }
            log = workdir / f"{service}.log"
            processes[service] = ServiceProcess(service, ports[service], env, log=log).start()
        for process in processes.values():
            process.wait_ready_blocking()
        feed_unreadable_messages(names)
        with PrometheusServer(service_jobs(ports), workdir) as prom:
            prom.wait_for_targets()
            yield prom
    finally:
        for process in processes.values():
            process.terminate(timeout=30)
        for schema in schemas.values():
            asyncio.run(drop_schema(infra.DATABASE_URL, schema))
        asyncio.run(delete_topics_with_prefix(infra.KAFKA_BOOTSTRAP, names.prefix))


def feed_unreadable_messages(names: TopicNames) -> None:
    producer = KafkaProducer(bootstrap_servers=infra.KAFKA_BOOTSTRAP)
    try:
        for topic in (names.appointments, names.triggers, names.notifications, names.outcomes):
            producer.send(topic, key=b"ops-test", value=b"this is not JSON")
        producer.flush(timeout=30)
    finally:
        producer.close()


def test_every_alert_expression_and_panel_query_parses(prometheus: PrometheusServer) -> None:
    refused = prometheus.refused()
    assert not refused, "\n".join(refused)


def test_prometheus_refuses_a_broken_query(prometheus: PrometheusServer) -> None:
    with pytest.raises(PromQLError, match="bad_data"):
        prometheus.query("sum(rate(up[5m])")


def test_the_rules_load_and_evaluate_without_errors(prometheus: PrometheusServer) -> None:
    rules = prometheus.rules()
    recorded = {
        rule["record"]
        for path in ops.RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    assert recorded == {"followup:clinic_open"}
    assert {r["name"] for r in rules} == {a.name for a in ops.alerts()} | recorded
    time.sleep(1.5)  # one more evaluation round
    unhealthy = [(r["name"], r.get("lastError")) for r in prometheus.rules() if r["health"] != "ok"]
    assert not unhealthy


def test_no_availability_alert_while_every_service_is_up(prometheus: PrometheusServer) -> None:
    up = prometheus.query('up{job=~"followup-.*"} == 1')
    assert {r["metric"]["job"] for r in up} == {f"followup-{s}" for s in SERVICES}
    active = {r["name"] for r in prometheus.rules() if r.get("alerts")}
    assert not active & {"FollowupServiceDown", "FollowupServiceAbsent", "FollowupReplicaDown"}


def has_data(prometheus: PrometheusServer, expr: str, patience: float = 20.0) -> bool:
    # A rate needs two scrapes after a series first appears; a series born late in the run
    # (a counter created on first use) gets a few more scrape intervals.
    deadline = time.monotonic() + patience
    while not prometheus.query(expr):
        if time.monotonic() > deadline:
            return False
        time.sleep(1.0)
    return True


def test_panels_return_data(prometheus: PrometheusServer) -> None:
    expected: set[tuple[str, str]] = set()
    empty: list[str] = []
    for panel in ops.panel_queries():
        key = (panel.dashboard, panel.panel)
        expr = ops.concrete(panel.expr, range_="5m")
        exists = all(
            prometheus.series(ops.concrete(f"{s.metric}{s.matchers}"))
            for s in ops.selectors(panel.expr)
        )
        if not (exists or key in MUST_HAVE_DATA):
            continue
        expected.add(key)
        if not has_data(prometheus, expr):
            empty.append(f"{panel.dashboard} / {panel.panel}: {expr}")
    assert expected >= MUST_HAVE_DATA
    assert not empty, "panels without data although their series exist:\n" + "\n".join(empty)
    panels = {(p.dashboard, p.panel) for p in ops.panel_queries()}
    print(f"\n{len(expected)} of {len(panels)} panels returned data:")
    print("\n".join(f"  {dashboard} / {panel}" for dashboard, panel in sorted(expected)))


def test_prometheus_log_has_no_rule_or_scrape_errors(prometheus: PrometheusServer) -> None:
    errors = [line for line in prometheus.log().splitlines() if "level=error" in line]
    assert not errors, "\n".join(errors)
