"""A patient's age in whole years on a day: one rule for the tracker (a minor's guardian)
and the scheduler (children who were not brought)."""

from __future__ import annotations

from datetime import date


def age_on(birth_date: date, day: date) -> int:
    """Whole years on ``day``; a 29 February birthday comes on 1 March in other years."""
    return day.year - birth_date.year - ((day.month, day.day) < (birth_date.month, birth_date.day))
