"""When the cadence policy allows a contact, read through the scheduler's own policy module.

The checks never parse ``policy.yaml`` themselves: ``load_policy`` is the scheduler's
``CadencePolicy.load`` on the file the scheduler runs with (``FOLLOWUP_POLICY_PATH`` or its
default), so whatever the scheduler accepts the checks accept, with the same rules per
department and reason. From those rules two questions are answered:

- ``allowed``: may a contact on this channel start at this moment? A call task needs an
  open day (no public holiday of the policy's ``country``, none of its ``closures``), the
  day's business hours and a call slot with at least ``min_call_window`` left of both; an
  SMS or email must be outside the quiet hours (for the channels they cover).
- ``earliest_allowed``: the first such moment at or after a given one. Only the moments
  where the answer can change are tried (the given moment, and each day's slot and quiet
  ends), each with ``allowed``: no second copy of the scheduler's placement.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from schemas.base import Channel
from services.scheduler.policy import (
    DEFAULT_POLICY_PATH,
    WEEKDAYS,
    CadencePolicy,
    CadenceRules,
    TimeRange,
)

SEARCH_DAYS = 15


def load_policy(path: Path | None = None) -> CadencePolicy:
    """The policy the scheduler of this deployment loads (same file, same parser)."""
    return CadencePolicy.load(
        path or Path(os.environ.get("FOLLOWUP_POLICY_PATH", DEFAULT_POLICY_PATH))
    )


def _minutes(t: time) -> float:
    return t.hour * 60 + t.minute + t.second / 60


def _call_time_left(rules: CadenceRules, local: datetime) -> timedelta | None:
    """How long a call starting at ``local`` could last inside business hours and one slot."""
    hours = rules.business_hours.get(WEEKDAYS[local.weekday()])
    now = local.time()
    if hours is None or not hours.contains(now):
        return None
    for slot in rules.call_slots.values():
        if slot.contains(now):
            end = min(_minutes(hours.end), _minutes(slot.end))
            return timedelta(minutes=end - _minutes(now))
    return None


def _quiet(hours: TimeRange, local: datetime) -> bool:
    return hours.contains(local.time())


def allowed(rules: CadenceRules, channel: Channel, moment: datetime, zone: str) -> bool:
    local = moment.astimezone(ZoneInfo(zone))
    if channel == "call_task":
        if rules.closed_on(local.date()):
            return False  # a public holiday or one of the clinic's own closure dates
        left = _call_time_left(rules, local)
        return left is not None and left >= rules.min_call_window
    quiet = rules.quiet_hours
    return channel not in quiet.channels or not _quiet(quiet.hours, local)


def _turning_points(
    rules: CadenceRules, channel: Channel, day: date, zone: ZoneInfo
) -> list[datetime]:
    """The local moments of ``day`` at which a contact on ``channel`` may become allowed."""
    if channel == "call_task":
        hours = rules.business_hours.get(WEEKDAYS[day.weekday()])
        if hours is None:
            return []
        starts = [hours.start] + [s.start for s in rules.call_slots.values()]
    else:
        starts = [rules.quiet_hours.hours.end]
    return [datetime.combine(day, t, tzinfo=zone) for t in starts]


def earliest_allowed(
    rules: CadenceRules, channel: Channel, after: datetime, zone: str
) -> datetime | None:
    """The first moment at or after ``after`` when ``allowed`` holds (None within 15 days)."""
    tz = ZoneInfo(zone)
    first_day = after.astimezone(tz).date()
    candidates = [after] + [
        point
        for offset in range(SEARCH_DAYS)
        for point in _turning_points(rules, channel, first_day + timedelta(days=offset), tz)
        if point > after
    ]
    for moment in sorted(candidates):
        if allowed(rules, channel, moment, zone):
            return moment.astimezone(UTC)
    return None


def wall_add(moment: datetime, delay: timedelta, zone: str) -> datetime:
    """``delay`` on the wall clock of ``zone``, as the policy counts delays (P1D keeps the hour)."""
    return (moment.astimezone(ZoneInfo(zone)) + delay).astimezone(UTC)
