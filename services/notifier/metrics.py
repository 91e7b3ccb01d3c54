"""The notifier's metrics, named exactly as the ops dashboards expect. No ids in labels."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# The clinic's main figures carry a bounded ``site`` (the sites file's ids, "other" for a
# name none of them has, "none" in a deployment without a file: common/sites.py).
SENDS = Counter(
    "followup_notifier_sends_total",
    "Deliveries attempted, by channel, provider, result and site.",
    ["channel", "provider", "result", "site"],
)
SEND_DURATION = Histogram(
    "followup_notifier_send_duration_seconds",
    "Time one send took at the provider or sink.",
    ["channel"],
)
RETRIES = Counter(
    "followup_notifier_retries_total", "Transient failures that were retried.", ["channel"]
)
DUPLICATES_DROPPED = Counter(
    "followup_notifier_duplicates_dropped_total",
    "Commands dropped because their idempotency key was already claimed.",
    ["channel"],
)
SMS_SEGMENTS = Counter(
    "followup_notifier_sms_segments_total", "SMS segments sent, by encoding.", ["encoding"]
)
CALL_TASKS = Counter(
    "followup_notifier_call_tasks_total",
    "Call tasks handed to a sink, by result and site.",
    ["sink", "result", "site"],
)
OPT_OUTS = Counter(
    "followup_notifier_opt_outs_total", "Opt-outs recorded, by channel.", ["channel"]
)
CARRIER_ERRORS = Counter(
    "followup_notifier_carrier_errors_total",
    "SMS provider errors by triage class (landline, invalid_number, unreachable, ...).",
    ["error_class"],
)
HELD = Counter(
    "followup_notifier_held_total",
    "Sends held back or refused by a rule (quiet_hours, runaway_guard, not_contactable, ...).",
    ["rule"],
)
RUNAWAY_GUARD_TRIPS = Counter(
    "followup_notifier_runaway_guard_trips_total",
    "Sends refused because a patient reached the daily hard cap.",
)

# Per site of a chain (a bounded label: the ids of the sites file, "other" for none of
# them, "none" in a deployment without one).
SITE_SENDS = Counter(
    "followup_notifier_site_sends_total",
    "Commands sent (SMS, email, call task), by site, channel and outcome.",
    ["site", "channel", "outcome"],
)
# Rebooking by link (rebooking.py). No ids in labels.
REBOOK_LINKS = Counter(
    "followup_notifier_rebook_links_sent_total",
    "Rebooking links put into patient messages, by channel.",
    ["channel"],
)
REBOOK_PAGES = Counter(
    "followup_notifier_rebook_pages_total",
    "Rebooking pages served: opened, or refused (expired, invalid, used, cross_site).",
    ["result"],
)
REBOOK_SLOTS_OFFERED = Counter(
    "followup_notifier_rebook_slots_offered_total", "Free slots shown on rebooking pages."
)
REBOOK_REQUESTS = Counter(
    "followup_notifier_rebook_requests_total",
    "What patients asked for on the page: kind booking or callback; result requested, taken"
    " (the slot was gone: next slots offered) or error (the hospital's system did not answer).",
    ["kind", "result"],
)
REBOOK_CONFIRMED = Counter(
    "followup_notifier_rebook_confirmed_total",
    "Booking requests the hospital's own booking event confirmed.",
)
