"""The Grafana dashboards, as code (Grafana's own grafana-foundation-sdk; grafanalib has had
no release since January 2024). `python -m deploy.generate` writes them to
deploy/grafana/dashboards/*.json; a test fails when the committed JSON is not current.

Two views: the clinic's (is follow-up working for patients?) and the system's (is the
pipeline healthy?). Every query filters on the `$namespace` variable so one Grafana can
watch dev and prod; without Kubernetes the label is absent and `.*` still matches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import common, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import dashboard as d
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    GridPos,
    VariableOption,
)

from common.recovery import recovery_rate_promql

NS = 'namespace=~"$namespace"'
JOBS = f'job=~"followup-(tracker|scheduler|notifier)", {NS}'
RATE = "$__rate_interval"
# Per site of a chain (issue 22): the `$site` selector filters every panel of a metric that
# carries the bounded label ("other" for a name none of the sites has, "none" without a
# sites file); the other panels (gauges of the ledger, opt-outs, holds) are the deployment's.
SITE = 'site=~"$site"'
SITED = frozenset(
    {
        "followup_tracker_triggers_total",
        "followup_scheduler_cases_opened_total",
        "followup_scheduler_cases_closed_total",
        "followup_scheduler_attempts_fired_total",
        "followup_scheduler_escalations_total",
        "followup_scheduler_escalations_sent_total",
        "followup_scheduler_deadline_misses_total",
        "followup_scheduler_firing_lateness_seconds",
        "followup_notifier_sends_total",
        "followup_notifier_call_tasks_total",
    }
)


def sel(metric: str, matchers: str = "") -> str:
    """The label matchers of a panel's query of ``metric``: the namespace, the site where the
    metric has one, then ``matchers``."""
    return ", ".join(m for m in (NS, SITE if metric in SITED else "", matchers) if m)


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    """One panel: a title, what it shows, and its queries. Layout is computed."""

    title: str
    queries: tuple[Query, ...]
    description: str
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    width: int = 8


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class View:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]


def q(expr: str, legend: str = "") -> Query:
    return Query(" ".join(expr.split()), legend)


def quantiles(metric: str, by: str = "") -> tuple[Query, ...]:
    group = f"le, {by}" if by else "le"
    suffix = f" {{{{{by}}}}}" if by else ""
    return tuple(
        q(
            f"histogram_quantile({p}, sum by ({group}) "
            f"(rate({metric}_bucket{{{sel(metric)}}}[{RATE}])))",
            f"p{int(p * 100)}{suffix}",
        )
        for p in (0.5, 0.95)
    )


def per_window(metric: str, by: str, window: str, legend: str) -> Query:
    """How many in each window (per hour, per day), split by one label."""
    return q(f"sum by ({by}) (increase({metric}{{{sel(metric)}}}[{window}]))", legend)


def hourly(title: str, metric: str, by: str, description: str, legend: str) -> Panel:
    """A panel of how many per hour, split by labels."""
    return Panel(title, (per_window(metric, by, "1h", legend),), description)


def in_range(metric: str, matchers: str = "") -> str:
    return f"sum(increase({metric}{{{sel(metric, matchers)}}}[$__range]))"


def range_stat(title: str, metric: str, description: str, matchers: str = "") -> Panel:
    """A small stat: how many in the dashboard's selected time range."""
    return Panel(title, (q(in_range(metric, matchers)),), description, kind="stat", width=4)


def by_department(metric: str, matchers: str = "") -> str:
    """How many in the selected range, per department (the policy's departments, else
    ``other``: a bounded label)."""
    matched = f"{NS}, {matchers}" if matchers else NS
    return f"sum by (department) (increase({metric}{{{matched}}}[$__range]))"


DEPT_OPENED = "followup_scheduler_department_cases_opened_total"
DEPT_CLOSED = "followup_scheduler_department_cases_closed_total"
DEPT_ESCALATIONS = "followup_scheduler_department_escalations_total"
FEEDBACK_POINTS = "followup_scheduler_feedback_rating_points_total"
FEEDBACK_ANSWERS = "followup_scheduler_feedback_ratings_total"
FEEDBACK_ASKED = "followup_scheduler_feedback_asked_total"

DEPARTMENTS = Row(
    "By department",
    (
        Panel(
            "No-shows by department",
            (q(by_department(DEPT_OPENED, 'reason="no_show"'), "{{department}}"),),
            "No-show cases opened in the selected range, per department.",
        ),
        Panel(
            "Recovery rate by department",
            (
                q(
                    recovery_rate_promql(NS, "$__range", metric=DEPT_CLOSED, by="department"),
                    "{{department}}",
                ),
            ),
            "Recovery rate per department (common/recovery.py): of the cases closed in the "
            "selected range, the share closed recovered; cleared cases (no real no-show) "
            "do not count.",
            unit="percentunit",
        ),
        Panel(
            "Escalation rate by department",
            (
                q(
                    f"{by_department(DEPT_ESCALATIONS)} / {by_department(DEPT_OPENED)}",
                    "{{department}}",
                ),
            ),
            "Escalation tasks planned per case opened, per department.",
            unit="percentunit",
        ),
        Panel(
            "Feedback after a recovered visit by department",
            (
                q(
                    f"{by_department(FEEDBACK_POINTS)} / {by_department(FEEDBACK_ANSWERS)}",
                    "mean rating {{department}}",
                ),
                q(
                    f"{by_department(FEEDBACK_ANSWERS)} / {by_department(FEEDBACK_ASKED)}",
                    "answered {{department}}",
                ),
            ),
            "The patients' mean rating (1-5) of their rebooked visit, and the share of "
            "questions answered, per department. Comments: the case API only.",
        ),
    ),
)


def by_site(metric: str, by: str = "site", matchers: str = "") -> str:
    """How many in the selected range per site (the `$site` selector's sites)."""
    matched = ", ".join(m for m in (NS, SITE, matchers) if m)
    return f"sum by ({by}) (increase({metric}{{{matched}}}[$__range]))"


SITES = Row(
    "By site",
    (
        Panel(
            "No-shows by site",
            (
                q(
                    by_site(
                        "followup_scheduler_site_cases_opened_total", matchers='reason="no_show"'
                    ),
                    "{{site}}",
                ),
            ),
            "No-show cases opened in the selected range, per clinic of the chain.",
        ),
        Panel(
            "Triggers by site",
            (
                q(
                    by_site("followup_tracker_site_triggers_total", "site, kind"),
                    "{{site}} {{kind}}",
                ),
            ),
            "What the tracker detected in the selected range, per clinic and kind.",
        ),
        Panel(
            "Sends by site",
            (
                q(
                    by_site("followup_notifier_site_sends_total", "site, channel"),
                    "{{site}} {{channel}}",
                ),
            ),
            "SMS, emails and call tasks that went out in the selected range, per clinic.",
        ),
    ),
)

# Rebooking by link (issue 20): what patients did with the link in their messages, and the
# share of recoveries that came without a call (the hospital's booking of a link request).
REBOOK_CONFIRMED = "followup_notifier_rebook_confirmed_total"
RECOVERED = 'resolution="recovered"'

REBOOKING = Row(
    "Rebooking by link",
    (
        Panel(
            "Recoveries without a call",
            (
                q(
                    f"{in_range(REBOOK_CONFIRMED)}"
                    f" / {in_range('followup_scheduler_cases_closed_total', RECOVERED)}"
                ),
            ),
            "Of the cases recovered in the selected range, the share whose booking the "
            "patient asked for by the link in a message and the hospital's own booking "
            "confirmed (no call needed). docs/rebooking.md.",
            unit="percentunit",
            kind="stat",
            width=4,
        ),
        Panel(
            "Rebooking links (per hour)",
            (
                per_window(
                    "followup_notifier_rebook_links_sent_total", "channel", "1h", "sent {{channel}}"
                ),
                per_window(
                    "followup_notifier_rebook_pages_total", "result", "1h", "page {{result}}"
                ),
                q(
                    f"sum(increase(followup_notifier_rebook_slots_offered_total{{{NS}}}[1h]))",
                    "slots offered",
                ),
            ),
            "Links put into SMS, emails and chat messages; pages opened or refused (expired, "
            "invalid, used, another site's form); free slots shown.",
            width=10,
        ),
        Panel(
            "What patients asked for by link (per hour)",
            (
                per_window(
                    "followup_notifier_rebook_requests_total",
                    "kind, result",
                    "1h",
                    "{{kind}} {{result}}",
                ),
                q(f"sum(increase({REBOOK_CONFIRMED}{{{NS}}}[1h]))", "confirmed by the hospital"),
            ),
            "Bookings requested at the hospital, slots taken meanwhile (the next ones "
            "offered), the hospital's system not answering, call-backs asked for; and the "
            "requests the hospital's own booking confirmed.",
            width=10,
        ),
    ),
)

CLINIC = View(
    uid="followup-clinic",
    title="followup / clinic",
    description="Is follow-up working for patients? No-shows, cases, recovery, contact, "
    "escalations, deadline misses, opt-outs. Counts are over the selected time range.",
    rows=(
        Row(
            "In the selected range",
            (
                range_stat(
                    "No-shows",
                    "followup_tracker_triggers_total",
                    "Missed visits the tracker detected.",
                    'kind="no_show"',
                ),
                Panel(
                    "Open cases",
                    (q(f"sum(max by (state) (followup_scheduler_open_cases{{{NS}}}))"),),
                    "Follow-up cases not closed yet (now).",
                    kind="stat",
                    width=4,
                ),
                Panel(
                    "Recovery rate",
                    (q(recovery_rate_promql(f"{NS}, {SITE}", "$__range")),),
                    "Of the cases closed in the selected range, the share closed recovered "
                    "(the patient rebooked after followup reached them); cleared cases (no "
                    "real no-show) do not count. Cases, not patients: the demo report's "
                    "recovery rate is the same (common/recovery.py).",
                    unit="percentunit",
                    kind="stat",
                    width=4,
                ),
                range_stat(
                    "Escalations",
                    "followup_scheduler_escalations_sent_total",
                    "Escalation call tasks sent to a doctor or supervisor (published to the "
                    "notifier). A planned escalation withdrawn before it went out (the "
                    "patient rebooked first) does not count; the demo report's escalations "
                    "are the same commands.",
                ),
                range_stat(
                    "Deadline misses",
                    "followup_scheduler_deadline_misses_total",
                    "Cases whose treatment stage deadline could no longer be met.",
                ),
                range_stat(
                    "Opt-outs",
                    "followup_notifier_opt_outs_total",
                    "Patients who opted out of a channel.",
                ),
            ),
        ),
        Row(
            "Cases",
            (
                hourly(
                    "Triggers by kind (per hour)",
                    "followup_tracker_triggers_total",
                    "kind",
                    "No-shows, late cancellations, unanswered calls, stage windows at risk.",
                    "{{kind}}",
                ),
                Panel(
                    "Open cases by state",
                    (q(f"max by (state) (followup_scheduler_open_cases{{{NS}}})", "{{state}}"),),
                    "Cases not closed, by state.",
                ),
                hourly(
                    "Cases closed by resolution (per hour)",
                    "followup_scheduler_cases_closed_total",
                    "resolution",
                    "Recovered, declined, opted out, unreachable, escalated, superseded, ...",
                    "{{resolution}}",
                ),
                Panel(
                    "Oldest open case",
                    (
                        q(
                            f"max(followup_scheduler_oldest_open_case_age_seconds{{{NS}}})",
                            "age",
                        ),
                    ),
                    "How long ago the oldest case not closed yet was opened (the scheduler's "
                    "ledger, refreshed every minute). A cadence ends in about 8 days; "
                    "alert FollowupCaseOpenTooLong past 21.",
                    unit="s",
                ),
                Panel(
                    "Time to first contact",
                    quantiles("followup_scheduler_time_to_first_contact_seconds"),
                    "From detection to the case's first fired attempt.",
                    unit="s",
                ),
                hourly(
                    "Attempts fired by channel (per hour)",
                    "followup_scheduler_attempts_fired_total",
                    "channel",
                    "SMS, email and call tasks sent out.",
                    "{{channel}}",
                ),
                hourly(
                    "Escalations planned by reason (per hour)",
                    "followup_scheduler_escalations_total",
                    "reason",
                    "Why cases were to go to a doctor or supervisor: escalations planned, "
                    "withdrawn and replanned ones included (the Escalations stat counts "
                    "those sent).",
                    "{{reason}}",
                ),
            ),
        ),
        Row(
            "Front desk",
            (
                Panel(
                    "Call tasks past their window",
                    (
                        q(
                            f"max(followup_scheduler_call_tasks_past_window{{{NS}}})",
                            "past their window",
                        ),
                    ),
                    "Call tasks handed to the desk whose window has passed without a call "
                    "result, on cases still open (now; the scheduler's ledger, refreshed "
                    "every minute). Alert: FollowupCallTasksUnanswered.",
                ),
                hourly(
                    "Call tasks handed to the desk (per hour)",
                    "followup_notifier_call_tasks_total",
                    "sink, result",
                    "Created, withdrawn or failed, by sink (webhook, mail + .ics, topic).",
                    "{{sink}} {{result}}",
                ),
                Panel(
                    "Cases opened by reason (per day)",
                    (
                        q(
                            "sum by (reason) (increase(followup_scheduler_cases_opened_total"
                            f"{{{sel('followup_scheduler_cases_opened_total')}}}[1d]))",
                            "{{reason}}",
                        ),
                    ),
                    "Cases opened per day, by what the tracker detected.",
                ),
            ),
        ),
        Row(
            "Patients' preferences and protections",
            (
                Panel(
                    "Opt-outs by channel (per day)",
                    (
                        per_window(
                            "followup_notifier_opt_outs_total", "channel", "1d", "{{channel}}"
                        ),
                    ),
                    "STOP replies and unsubscribes.",
                ),
                Panel(
                    "Held by rule (per hour)",
                    (
                        per_window(
                            "followup_scheduler_held_total", "rule", "1h", "scheduler {{rule}}"
                        ),
                        per_window(
                            "followup_notifier_held_total", "rule", "1h", "notifier {{rule}}"
                        ),
                    ),
                    "Messages moved later or refused: quiet hours, frequency caps, open "
                    "conversations, runaway guard, not contactable.",
                ),
                Panel(
                    "Deadline misses (per day)",
                    (
                        q(
                            "sum(increase(followup_scheduler_deadline_misses_total"
                            f"{{{sel('followup_scheduler_deadline_misses_total')}}}[1d]))",
                            "misses",
                        ),
                    ),
                    "Cases whose stage deadline could no longer be met.",
                ),
            ),
        ),
        REBOOKING,
        DEPARTMENTS,
        SITES,
    ),
)

SYSTEM = View(
    uid="followup-system",
    title="followup / system",
    description="Is the pipeline healthy? Throughput, consumer lag, dead letters, send "
    "failures by provider, outbox backlog, firing lateness, processes.",
    rows=(
        Row(
            "Processes",
            (
                Panel(
                    "Replicas up",
                    (q(f"sum by (job) (up{{{JOBS}}})", "{{job}}"),),
                    "Replicas Prometheus scrapes successfully, per service.",
                    kind="stat",
                ),
                Panel(
                    "Resident memory",
                    (q(f"process_resident_memory_bytes{{{JOBS}}}", "{{job}} {{instance}}"),),
                    "Memory per replica.",
                    unit="bytes",
                ),
                Panel(
                    "CPU",
                    (
                        q(
                            f"rate(process_cpu_seconds_total{{{JOBS}}}[{RATE}])",
                            "{{job}} {{instance}}",
                        ),
                    ),
                    "CPU cores used per replica.",
                ),
            ),
        ),
        Row(
            "Throughput",
            (
                Panel(
                    "Consumed by service and topic",
                    (
                        q(
                            "sum by (service, topic, result) (rate("
                            f"followup_events_consumed_total{{{NS}}}[{RATE}]))",
                            "{{service}} {{topic}} {{result}}",
                        ),
                    ),
                    "Messages per second read from Kafka.",
                    unit="ops",
                ),
                Panel(
                    "Tracker input by way in",
                    (
                        q(
                            "sum by (source, type) (rate("
                            f"followup_tracker_events_total{{{NS}}}[{RATE}]))",
                            "{{source}} {{type}}",
                        ),
                        q(
                            "sum by (source) (rate("
                            f"followup_tracker_ingest_rejected_total{{{NS}}}[{RATE}]))",
                            "rejected {{source}}",
                        ),
                    ),
                    "HL7, FHIR and Kafka input, and what was refused.",
                    unit="ops",
                ),
                Panel(
                    "Sends by channel and result",
                    (
                        q(
                            "sum by (channel, result) (rate("
                            f"followup_notifier_sends_total{{{NS}, {SITE}}}[{RATE}]))",
                            "{{channel}} {{result}}",
                        ),
                    ),
                    "Deliveries attempted per second.",
                    unit="ops",
                ),
            ),
        ),
        Row(
            "Kafka consumers",
            (
                Panel(
                    "Consumer lag",
                    (
                        q(
                            f"sum by (service, topic) (followup_kafka_consumer_lag{{{NS}}})",
                            "{{service}} {{topic}}",
                        ),
                    ),
                    "Messages behind the high-water mark, summed over replicas.",
                ),
                Panel(
                    "Rebalances",
                    (
                        q(
                            "sum by (service) (increase("
                            f"followup_kafka_rebalances_total{{{NS}}}[{RATE}]))",
                            "{{service}}",
                        ),
                    ),
                    "Partition assignment changes; a steady stream means a rebalance loop.",
                ),
                Panel(
                    "Offset commit latency",
                    quantiles("followup_kafka_commit_duration_seconds", "service"),
                    "Time one offset commit takes.",
                    unit="s",
                ),
            ),
        ),
        Row(
            "Failures",
            (
                Panel(
                    "Dead letters",
                    (
                        q(
                            "sum by (service, error_type) (rate("
                            f"followup_dead_letters_total{{{NS}}}[{RATE}]))",
                            "{{service}} {{error_type}}",
                        ),
                    ),
                    "Messages refused to followup.deadletter, per second.",
                    unit="ops",
                ),
                Panel(
                    "Send failure ratio by provider",
                    (
                        q(
                            # "or ... * 0": 0 rather than no data while nothing failed.
                            "(sum by (channel, provider) (rate(followup_notifier_sends_total"
                            f'{{{NS}, {SITE}, result=~"failed|transient_error"}}[{RATE}])) or '
                            "sum by (channel, provider) (rate("
                            f"followup_notifier_sends_total{{{NS}, {SITE}}}[{RATE}])) * 0) / sum "
                            "by (channel, provider) (rate("
                            f"followup_notifier_sends_total{{{NS}, {SITE}}}[{RATE}]))",
                            "{{channel}} {{provider}}",
                        ),
                    ),
                    "Share of sends that failed, per provider (alert above 20%).",
                    unit="percentunit",
                ),
                Panel(
                    "Retries and duplicates dropped",
                    (
                        q(
                            "sum by (channel) (rate("
                            f"followup_notifier_retries_total{{{NS}}}[{RATE}]))",
                            "retries {{channel}}",
                        ),
                        q(
                            "sum by (channel) (rate("
                            f"followup_notifier_duplicates_dropped_total{{{NS}}}[{RATE}]))",
                            "duplicates {{channel}}",
                        ),
                    ),
                    "Transient provider errors retried; repeated commands dropped by key.",
                    unit="ops",
                ),
            ),
        ),
        Row(
            "Inputs and outputs in detail",
            (
                hourly(
                    "Ingest rejected by reason (per hour)",
                    "followup_tracker_ingest_rejected_total",
                    "source, reason",
                    "Why the tracker refused input: negative ACKs, HTTP 4xx, dead letters.",
                    "{{source}} {{reason}}",
                ),
                hourly(
                    "Call tasks by sink and result (per hour)",
                    "followup_notifier_call_tasks_total",
                    "sink, result",
                    "Call tasks handed to the clinic's tools (webhook, mail, topic, FHIR Task).",
                    "{{sink}} {{result}}",
                ),
                hourly(
                    "SMS segments by encoding (per hour)",
                    "followup_notifier_sms_segments_total",
                    "encoding",
                    "What the SMS provider bills: UCS-2 texts take more segments.",
                    "{{encoding}}",
                ),
            ),
        ),
        Row(
            "Scheduler and timing",
            (
                Panel(
                    "Outbox backlog",
                    (
                        q(f"max(followup_scheduler_outbox_backlog{{{NS}}})", "backlog"),
                        q(
                            f"sum(rate(followup_scheduler_outbox_published_total{{{NS}}}[{RATE}]))",
                            "published/s",
                        ),
                    ),
                    "Commands waiting in the outbox, and the publish rate.",
                ),
                Panel(
                    "Firing lateness",
                    quantiles("followup_scheduler_firing_lateness_seconds"),
                    "How late attempts fire after their planned moment.",
                    unit="s",
                ),
                Panel(
                    "Detection lag and send duration",
                    (
                        *quantiles("followup_tracker_detection_lag_seconds"),
                        q(
                            "histogram_quantile(0.95, sum by (le, channel) (rate("
                            f"followup_notifier_send_duration_seconds_bucket{{{NS}}}[{RATE}])))",
                            "send p95 {{channel}}",
                        ),
                    ),
                    "Tracker: fact detectable to trigger emitted. Notifier: one send.",
                    unit="s",
                ),
            ),
        ),
    ),
)

VIEWS = (CLINIC, SYSTEM)


DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")


def _panel(panel: Panel, panel_id: int, pos: GridPos) -> Any:
    built: Any = stat.Panel() if panel.kind == "stat" else timeseries.Panel()
    if panel.kind == "stat":
        built.reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
    built.id(panel_id).title(panel.title).description(panel.description).unit(panel.unit)
    built.datasource(DATASOURCE).grid_pos(pos)
    for i, query in enumerate(panel.queries):
        target = prometheus.Dataquery().expr(query.expr).ref_id(chr(ord("A") + i))
        built.with_target(target.legend_format(query.legend).datasource(DATASOURCE))
    return built


def _variables(board: d.Dashboard) -> None:
    board.with_variable(
        d.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .current(VariableOption(text="Prometheus", value="Prometheus"))
    )
    board.with_variable(
        d.QueryVariable("namespace")
        .label("Namespace")
        .query('label_values(up{job=~"followup-.*"}, namespace)')
        .datasource(DATASOURCE)
        .include_all(True)
        .multi(True)
        .all_value(".*")
        .current(VariableOption(text="All", value="$__all"))
    )
    board.with_variable(
        d.QueryVariable("site")
        .label("Site")
        .query("label_values(followup_scheduler_site_cases_opened_total, site)")
        .datasource(DATASOURCE)
        .include_all(True)
        .multi(True)
        .all_value(".*")
        .current(VariableOption(text="All", value="$__all"))
    )


def build(view: View) -> Any:
    board = (
        d.Dashboard(view.title)
        .uid(view.uid)
        .description(view.description)
        .tags(["followup"])
        .timezone("browser")
        .time("now-24h", "now")
        .refresh("1m")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .link(
            d.DashboardLink("followup")
            .type(DashboardLinkType.DASHBOARDS)
            .tags(["followup"])
            .as_dropdown(False)
            .include_vars(True)
            .keep_time(True)
        )
    )
    _variables(board)
    y, panel_id = 0, 0
    for row in view.rows:
        panel_id += 1
        board.with_row(d.Row(row.title).id(panel_id).grid_pos(GridPos(h=1, w=24, x=0, y=y)))
        y += 1
        x = 0
        height = 4 if all(p.kind == "stat" for p in row.panels) else 8
        for panel in row.panels:
            if x + panel.width > 24:
                x, y = 0, y + height
            panel_id += 1
            board.with_panel(_panel(panel, panel_id, GridPos(h=height, w=panel.width, x=x, y=y)))
            x += panel.width
        y += height
    return board.build()


def render(view: View) -> str:
    return json.dumps(build(view), cls=JSONEncoder, indent=2, sort_keys=True)
