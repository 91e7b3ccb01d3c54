"""The cadence policy's first step per reason, as the checks need it.

Read from the scheduler's policy file (``services/scheduler/policy.yaml`` or
``FOLLOWUP_POLICY_PATH``), the same file the scheduler runs with, so the check follows the
policy rather than a copy of it. Only what "the first contact is due by" needs: the first
step's delay and channel, business hours for call tasks, quiet hours for messages.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_POLICY = REPO / "services" / "scheduler" / "policy.yaml"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DURATION = re.compile(r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?$")


def duration(value: Any) -> timedelta:
    """ISO 8601 durations as the policy writes them (PT1H, P1DT12H), or a number of hours."""
    if isinstance(value, int | float):
        return timedelta(hours=float(value))
    match = _DURATION.match(str(value).strip())
    if not match:
        raise ValueError(f"not a duration: {value!r}")
    parts = {k: int(v) if v else 0 for k, v in match.groupdict().items()}
    return timedelta(days=parts["d"], hours=parts["h"], minutes=parts["m"], seconds=parts["s"])


def _hours(span: str | None) -> tuple[time, time] | None:
    if not span:
        return None
    start, end = span.split("-")
    return time.fromisoformat(start.strip()), time.fromisoformat(end.strip())


@dataclass(frozen=True)
class FirstStep:
    delay: timedelta
    channel: str


@dataclass
class FirstSteps:
    steps: dict[str, FirstStep]
    default: FirstStep
    business_hours: dict[int, tuple[time, time] | None] = field(default_factory=dict)
    quiet: tuple[time, time] = (time(21), time(8))

    @classmethod
    def load(cls, path: Path | None = None) -> FirstSteps:
        path = path or Path(os.environ.get("FOLLOWUP_POLICY_PATH", DEFAULT_POLICY))
        if not path.exists():
            return cls.fallback()
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        defaults = data.get("defaults", {})

        def first(section: dict[str, Any]) -> FirstStep | None:
            steps = section.get("steps") or []
            if not steps:
                return None
            return FirstStep(duration(steps[0].get("delay", 0)), str(steps[0].get("channel")))

        default = first(defaults) or FirstStep(timedelta(hours=1), "call_task")
        reasons = {
            name: step
            for name, section in (data.get("reasons") or {}).items()
            if (step := first(section or {})) is not None
        }
        hours = defaults.get("business_hours") or {}
        business = {i: _hours(hours.get(day)) for i, day in enumerate(DAYS)}
        quiet_span = _hours((defaults.get("quiet_hours") or {}).get("hours")) or (time(21), time(8))
        return cls(reasons, default, business, quiet_span)

    @classmethod
    def fallback(cls) -> FirstSteps:
        weekday = (time(8), time(18))
        business: dict[int, tuple[time, time] | None] = {i: weekday for i in range(5)}
        business.update({5: None, 6: None})
        return cls({}, FirstStep(timedelta(hours=1), "call_task"), business)

    def step(self, reason: str) -> FirstStep:
        return self.steps.get(reason, self.default)

    def first_contact_by(self, reason: str, detected_at: datetime, zone: str) -> datetime:
        """The latest moment the first contact may be planned for: the first step's delay,
        moved to the next business hours (calls) or out of quiet hours (messages)."""
        step = self.step(reason)
        due = (detected_at + step.delay).astimezone(ZoneInfo(zone))
        if step.channel == "call_task":
            return self._next_business(due)
        return self._out_of_quiet(due)

    def _next_business(self, moment: datetime) -> datetime:
        for offset in range(8):
            day = moment.date() + timedelta(days=offset)
            span = self.business_hours.get(day.weekday())
            if span is None:
                continue
            start = datetime.combine(day, span[0], tzinfo=moment.tzinfo)
            end = datetime.combine(day, span[1], tzinfo=moment.tzinfo)
            if moment < end:
                return max(moment, start)
        return moment

    def _out_of_quiet(self, moment: datetime) -> datetime:
        begin, end = self.quiet
        local = moment.timetz().replace(tzinfo=None)
        if local >= begin:
            return datetime.combine(moment.date() + timedelta(days=1), end, tzinfo=moment.tzinfo)
        if local < end:
            return datetime.combine(moment.date(), end, tzinfo=moment.tzinfo)
        return moment
