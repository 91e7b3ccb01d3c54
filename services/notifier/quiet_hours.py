"""Quiet hours in the patient's own time zone: when may a message land, if at all."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class QuietHours:
    start: time = time(21, 0)  # quiet from here ...
    end: time = time(8, 0)  # ... until here, next morning

    def is_quiet(self, local: time) -> bool:
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


def next_allowed_moment(
    now: datetime,
    window_start: datetime,
    window_end: datetime,
    zone: ZoneInfo,
    quiet: QuietHours,
) -> datetime | None:
    """The first moment >= max(now, window_start) outside quiet hours and before window_end.

    None when the window closes before any allowed moment (the caller reports quiet_hours).
    """
    candidate = max(now, window_start)
    # Two steps are enough: quiet hours never span more than one night.
    for _ in range(3):
        if candidate >= window_end:
            return None
        local = candidate.astimezone(zone)
        if not quiet.is_quiet(local.time().replace(tzinfo=None)):
            return candidate
        end_date = local.date()
        if quiet.start > quiet.end and local.time() >= quiet.start:
            end_date += timedelta(days=1)
        # Combine in local wall time, so a DST change moves the wake-up with the clock.
        candidate = datetime.combine(end_date, quiet.end, tzinfo=zone)
    return None
