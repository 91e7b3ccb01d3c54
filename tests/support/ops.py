"""What the operations tests share: the tools, the catalogue, the rules, the dashboards."""

from __future__ import annotations

import functools
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RULE_FILES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
RULE_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
DASHBOARD_FILES = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
CATALOGUE = REPO / "docs" / "metrics.md"
RUNBOOK = REPO / "docs" / "runbook.md"

# Labels Prometheus (or a histogram) adds: allowed in queries though no service sets them.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "le", "__name__"}
_FUNCTIONS_AND_KEYWORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "on", "ignoring", "group_left",
    "group_right", "and", "or", "unless", "rate", "increase", "irate", "histogram_quantile",
    "absent", "changes", "label_values", "bool", "offset", "topk", "bottomk", "delta",
}  # fmt: skip


@functools.cache
def ops_tools() -> dict[str, str]:
    """Installs what is missing (idempotent, cached in .cache/ops) and says where it is."""
    out = subprocess.run(
        ["bash", str(DEPLOY / "ops-tools.sh"), "install"],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@dataclass(frozen=True)
class MetricDoc:
    name: str
    type: str
    labels: frozenset[str]


@functools.cache
def catalogue() -> dict[str, MetricDoc]:
    """docs/metrics.md's rows: | `name` | type | unit | `label`, ... | meaning |."""
    docs: dict[str, MetricDoc] = {}
    for line in CATALOGUE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[0].startswith("`"):
            continue
        name = cells[0].strip("`")
        labels = frozenset(re.findall(r"`([a-z_]+)`", cells[3]))
        docs[name] = MetricDoc(name, cells[1], labels)
    return docs


def base_metric(name: str) -> str:
    """The catalogue's name for a series name: histograms' _bucket/_sum/_count stripped."""
    docs = catalogue()
    if name in docs:
        return name
    for suffix in ("_bucket", "_sum", "_count", "_created"):
        if name.endswith(suffix) and name.removesuffix(suffix) in docs:
            return name.removesuffix(suffix)
    return name


_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: str  # "{...}" or ""


def selectors(expr: str) -> list[Selector]:
    """The vector selectors of a PromQL expression (metric name and matchers)."""
    found: list[Selector] = []
    without_groupings = _GROUPING.sub(" ", expr)
    for match in _SELECTOR.finditer(without_groupings):
        name, matchers = match.group(1), match.group(2) or ""
        if name in _FUNCTIONS_AND_KEYWORDS or re.fullmatch(r"\d+[smhdwy]?", name):
            continue
        # Range durations like [5m] and label names inside {...} are not metric names.
        before = without_groupings[: match.start()]
        if before.count("{") > before.count("}") or before.count("[") > before.count("]"):
            continue
        if before.count('"') % 2 == 1:
            continue
        found.append(Selector(name, matchers))
    return found


def labels_used(expr: str) -> set[str]:
    labels: set[str] = set()
    for group in _GROUPING.findall(expr):
        labels.update(part.strip() for part in group.split(",") if part.strip())
    for selector in selectors(expr):
        labels.update(_MATCHER_LABEL.findall(_STRINGS.sub('""', selector.matchers)))
    return labels


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    labels: dict[str, str]
    annotations: dict[str, str]


def alerts() -> list[Alert]:
    found = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    found.append(
                        Alert(
                            rule["alert"],
                            rule["expr"],
                            rule.get("labels", {}),
                            rule.get("annotations", {}),
                        )
                    )
    return found


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    expr: str


def dashboards() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in DASHBOARD_FILES]


def panel_queries() -> list[PanelQuery]:
    found = []
    for dashboard in dashboards():
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                found.append(PanelQuery(dashboard["title"], panel["title"], target["expr"]))
    return found


def concrete(expr: str, range_: str = "10m") -> str:
    """A dashboard query with Grafana's variables replaced, as Grafana would send it."""
    return (
        expr.replace("$namespace", ".*")
        .replace("$site", ".*")
        .replace("$__rate_interval", "1m")
        .replace("$__range", range_)
    )
