"""The scheduler's metrics, named exactly as the dashboards and alerts expect. No ids in labels."""

from __future__ import annotations

from collections.abc import Iterable
from typing import get_args

from prometheus_client import Counter, Gauge, Histogram

from schemas.base import MESSENGERS
from services.scheduler.cadence import Resolution

# The clinic's main figures carry a bounded ``site`` (the sites file's ids, "other" for a
# name none of them has, "none" in a deployment without a file: common/sites.py).
CASES_OPENED = Counter(
    "followup_scheduler_cases_opened_total",
    "Cases opened, by trigger kind and site.",
    ["reason", "site"],
)
CASES_CLOSED = Counter(
    "followup_scheduler_cases_closed_total",
    "Cases closed, by resolution and site.",
    ["resolution", "site"],
)
OPEN_CASES = Gauge("followup_scheduler_open_cases", "Cases not closed, by state.", ["state"])
ATTEMPTS_PLANNED = Counter(
    "followup_scheduler_attempts_planned_total", "Attempts planned, by channel.", ["channel"]
)
ATTEMPTS_FIRED = Counter(
    "followup_scheduler_attempts_fired_total",
    "Attempts fired (their command is in the outbox), by channel and site.",
    ["channel", "site"],
)
FIRING_LATENESS = Histogram(
    "followup_scheduler_firing_lateness_seconds",
    "How long after its planned moment an attempt fired, by site.",
    ["site"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600),
)
TIME_TO_FIRST_CONTACT = Histogram(
    "followup_scheduler_time_to_first_contact_seconds",
    "From the trigger's detection to the case's first fired attempt.",
    buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 172800, 604800),
)
ESCALATIONS = Counter(
    "followup_scheduler_escalations_total",
    "Escalation call tasks planned for a doctor, supervisor, clinician on call or the"
    " safeguarding lead, by reason and site.",
    ["reason", "site"],
)
# What the clinic's Escalations stat counts: a planned escalation may be withdrawn (the
# patient rebooked first) or replanned, and only the ones that went out reach a doctor.
ESCALATIONS_SENT = Counter(
    "followup_scheduler_escalations_sent_total",
    "Escalation call tasks sent to the notifier (published to followup.notifications), by site.",
    ["site"],
)
DEADLINE_MISSES = Counter(
    "followup_scheduler_deadline_misses_total",
    "Cases whose stage deadline could no longer be met by the cadence, by site.",
    ["site"],
)
# From the ledger on a slow interval (FOLLOWUP_SLOW_GAUGE_SECONDS); no labels, no ids.
OLDEST_OPEN_CASE_AGE = Gauge(
    "followup_scheduler_oldest_open_case_age_seconds",
    "Seconds since the oldest case not closed yet was opened (0 when none is open).",
)
CALL_TASKS_PAST_WINDOW = Gauge(
    "followup_scheduler_call_tasks_past_window",
    "Call tasks handed to the desk whose window has passed without a call result, "
    "on cases still open.",
)
OUTBOX_BACKLOG = Gauge("followup_scheduler_outbox_backlog", "Outbox commands not yet published.")
OUTBOX_PUBLISHED = Counter(
    "followup_scheduler_outbox_published_total", "Outbox commands published to Kafka."
)
HELD = Counter(
    "followup_scheduler_held_total",
    "Due attempts held back and moved later, by rule.",
    ["rule"],
)
CORRECTIONS = Counter(
    "followup_scheduler_corrections_total", "Outcomes corrected by an administrator."
)

# Per department (a bounded label: the departments the policy file names, else "other"),
# for the no-show, recovery and escalation rates of each desk.
DEPARTMENT_OPENED = Counter(
    "followup_scheduler_department_cases_opened_total",
    "Cases opened, by department and trigger kind.",
    ["department", "reason"],
)
DEPARTMENT_CLOSED = Counter(
    "followup_scheduler_department_cases_closed_total",
    "Cases closed, by department and resolution.",
    ["department", "resolution"],
)
# Feedback after a recovered visit (issue 21): questions asked, answers by rating, and the
# ratings' sum, so a department's mean rating is points / answers (the dashboard's).
FEEDBACK_ASKED = Counter(
    "followup_scheduler_feedback_asked_total",
    "Feedback questions asked after a recovered visit, by department and channel.",
    ["department", "channel"],
)
FEEDBACK_RATINGS = Counter(
    "followup_scheduler_feedback_ratings_total",
    "Feedback answers, by department and rating (1-5).",
    ["department", "rating"],
)
FEEDBACK_POINTS = Counter(
    "followup_scheduler_feedback_rating_points_total",
    "The sum of the feedback ratings given, by department (mean = points / answers).",
    ["department"],
)
DEPARTMENT_ESCALATIONS = Counter(
    "followup_scheduler_department_escalations_total",
    "Escalation call tasks planned, by department.",
    ["department"],
)

# Per site of a chain (a bounded label: the ids of the sites file, else "other"; "none" in
# a deployment without one), for each clinic's no-show and recovery figures.
SITE_CASES_OPENED = Counter(
    "followup_scheduler_site_cases_opened_total",
    "Cases opened, by site and trigger kind.",
    ["site", "reason"],
)


def start_at_zero(departments: Iterable[str], sites: Iterable[str] = ("none",)) -> None:
    """Every resolution's closing counters exist from the start, at 0: increase() over a
    range misses the first closing of a series born at 1, and the dashboard's recovery rate
    (common/recovery.py) must count every case the ledger closed (per site: ``sites``, the
    labels of the sites file in force)."""
    departments = (*departments, "other")
    sites = tuple(sites)
    for resolution in get_args(Resolution):
        for site in sites:
            CASES_CLOSED.labels(resolution, site)
        for department in departments:
            DEPARTMENT_CLOSED.labels(department, resolution)
    # The per-site counters too: a clinic with no deadline missed shows 0, not "no data".
    for site in sites:
        DEADLINE_MISSES.labels(site)
        ESCALATIONS_SENT.labels(site)
    # Feedback likewise: a department's first question or rating is counted, not lost.
    for department in departments:
        FEEDBACK_POINTS.labels(department)
        for rating in range(1, 6):
            FEEDBACK_RATINGS.labels(department, str(rating))
        for channel in ("sms", *MESSENGERS):
            FEEDBACK_ASKED.labels(department, channel)
