"""The generated files are current, the dashboards are well formed, every alert has a runbook."""

from __future__ import annotations

import re

import pytest

from deploy import generate
from tests.support import ops


def test_generated_files_are_current() -> None:
    stale = [
        str(path.relative_to(ops.REPO))
        for path, text in generate.generated().items()
        if not path.exists() or path.read_text() != text
    ]
    assert not stale, f"run `python -m deploy.generate`: {stale} are not current"


def test_there_is_a_clinic_view_and_a_system_view() -> None:
    titles = {d["title"]: d for d in ops.dashboards()}
    assert set(titles) == {"followup / clinic", "followup / system"}
    clinic = {p["title"] for p in titles["followup / clinic"]["panels"]}
    for wanted in ("No-shows", "Open cases", "Recovery rate", "Time to first contact"):
        assert wanted in clinic
    system = {p["title"] for p in titles["followup / system"]["panels"]}
    for wanted in ("Consumer lag", "Dead letters", "Send failure ratio by provider"):
        assert wanted in system
    for wanted in ("Outbox backlog", "Firing lateness"):
        assert wanted in system


@pytest.mark.parametrize("dashboard", ops.dashboards(), ids=lambda d: d["uid"])
def test_panels_have_unique_ids_a_datasource_and_do_not_overlap(dashboard: dict) -> None:  # type: ignore[type-arg]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])
            assert panel["description"]


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section() -> None:
    anchors = {
        re.sub(r"[^a-z0-9-]", "", line[3:].strip().lower().replace(" ", "-"))
        for line in ops.RUNBOOK.read_text().splitlines()
        if line.startswith("## ")
    }
    names = [a.name for a in ops.alerts()]
    assert len(names) == len(set(names))
    for alert in ops.alerts():
        assert alert.labels.get("severity") in {"warning", "critical"}, alert.name
        assert alert.annotations.get("summary"), alert.name
        url = alert.annotations["runbook_url"]
        assert url.startswith("docs/runbook.md#"), url
        assert url.split("#", 1)[1] in anchors, f"{alert.name}: no runbook section"
    # The list: each kind of failure has an alert.
    for wanted in (
        "FollowupDeadLettersRising",
        "FollowupConsumerLagHigh",
        "FollowupOutboxBacklog",
        "FollowupProviderFailureRate",
        "FollowupFiringLate",
        "FollowupDeadlineMissed",
        "FollowupServiceDown",
    ):
        assert wanted in names
