"""docs/metrics.md is the contract between the services and the dashboards and alerts."""

from __future__ import annotations

import importlib
import re

import pytest
from prometheus_client import REGISTRY

from tests.support import ops

ID_LIKE = re.compile(r"(^|_)(id|ids|uuid|key|patient|phone|email|name)$")
SERVICES = ("tracker", "scheduler", "notifier")


def test_the_catalogue_has_rows_for_every_brief_metric_and_sane_names() -> None:
    docs = ops.catalogue()
    assert "followup_dead_letters_total" in docs
    assert "followup_scheduler_outbox_backlog" in docs
    for doc in docs.values():
        assert doc.type in {"counter", "gauge", "histogram"}, doc
        if doc.type == "counter":
            assert doc.name.endswith("_total"), doc.name
        else:
            assert not doc.name.endswith("_total"), doc.name
        if doc.name.startswith("followup_") and not doc.name.startswith("followup_faust_"):
            # Base units: seconds, never milliseconds (faust's own sensor is the exception).
            assert not re.search(r"_(ms|milliseconds|minutes|hours)(_|$)", doc.name), doc.name
        for label in doc.labels:
            assert not ID_LIKE.search(label), f"{doc.name} has an id-like label {label}"


@pytest.mark.parametrize(
    "query",
    [*(("alert " + a.name, a.expr) for a in ops.alerts())]
    + [(f"panel {p.dashboard}/{p.panel}", p.expr) for p in ops.panel_queries()],
    ids=lambda q: q[0],
)
def test_every_metric_and_label_a_query_uses_is_in_the_catalogue(query: tuple[str, str]) -> None:
    _, expr = query
    docs = ops.catalogue()
    allowed_labels = set(ops.TARGET_LABELS)
    for selector in ops.selectors(expr):
        name = ops.base_metric(selector.metric)
        assert name in docs, f"{selector.metric} is not in docs/metrics.md"
        if selector.metric.endswith("_bucket"):
            assert docs[name].type == "histogram", selector.metric
        allowed_labels |= docs[name].labels
    unknown = ops.labels_used(expr) - allowed_labels
    assert not unknown, f"labels {unknown} are not in the catalogue for {expr}"


def _registered_followup_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    for module in ("common.metrics", "common.kafka", *(f"services.{s}.app" for s in SERVICES)):
        importlib.import_module(module)
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for collector in list(REGISTRY._names_to_collectors.values()):
        describe = getattr(collector, "describe", None)
        if describe is None:
            continue
        for family in describe():
            if not family.name.startswith("followup_"):
                continue
            name = family.name + ("_total" if family.type == "counter" else "")
            labels = tuple(getattr(collector, "_labelnames", ()))
            found[name] = (family.type, labels)
    return found


def test_every_metric_the_services_register_is_catalogued_with_its_labels() -> None:
    # Grows stricter by itself: each service's composition root imports its metrics.
    registered = _registered_followup_metrics()
    assert "followup_dead_letters_total" in registered
    docs = ops.catalogue()
    for name, (kind, labels) in registered.items():
        assert name in docs, f"{name} is registered but not in docs/metrics.md"
        assert docs[name].type == kind, f"{name}: {kind} in code, {docs[name].type} in docs"
        assert set(labels) == docs[name].labels, f"{name}: labels {labels} in code"
