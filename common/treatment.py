"""Treatment-plan arithmetic shared by the tracker and the scheduler: the stage deadline.

The stage deadline is the latest moment the next stage can still happen: the end of the
clinic's day that falls ``max_interval_days`` after the previous stage was completed.
Calendar days are counted in the clinic's zone, so a daylight-saving change does not
shift the deadline by an hour. Given the clinic's closed days (``closed``), a deadline
on one of them moves back to the end of the last open day.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from schemas.events import TreatmentPlanEvent, TreatmentStage


@dataclass(frozen=True)
class StageDeadline:
    plan_id: str
    stage: TreatmentStage
    previous_completed_at: datetime
    deadline: datetime


def end_of_local_day(moment: datetime, zone: ZoneInfo, days_later: int = 0) -> datetime:
    local_date = moment.astimezone(zone).date() + timedelta(days=days_later)
    return datetime.combine(local_date, time(23, 59, 59), tzinfo=zone)


def last_open_moment(
    deadline: datetime, zone: ZoneInfo, closed: Callable[[date], bool] | None = None
) -> datetime:
    """A deadline that falls on a day the clinic is closed (a public holiday, its own
    closure) moves back to the end of the last open day before it; the stage must happen
    while the clinic is open. At most a month back: a clinic closed longer keeps it."""
    if closed is None:
        return deadline
    local = deadline.astimezone(zone)
    day = local.date()
    for _ in range(31):
        if not closed(day):
            moved = (day - local.date()).days
            return deadline if moved == 0 else end_of_local_day(local, zone, moved)
        day -= timedelta(days=1)
    return deadline


def next_stage_deadline(
    plan: TreatmentPlanEvent,
    completed: Mapping[str, datetime] | None = None,
    closed: Callable[[date], bool] | None = None,
) -> StageDeadline | None:
    """The deadline of the first stage not yet completed, if the stage before it is done.

    ``completed`` adds completions observed elsewhere (a fulfilled visit for a stage) to
    those the plan itself carries. None when the plan is finished, has not started, or the
    next stage has no maximum interval.
    """
    completed = completed or {}
    zone = ZoneInfo(plan.timezone)
    previous_done: datetime | None = None
    for stage in plan.stages:
        done = completed.get(stage.stage_id) or stage.completed_at
        if done is not None:
            previous_done = done
            continue
        if previous_done is None or stage.max_interval_days is None:
            return None
        return StageDeadline(
            plan_id=plan.plan_id,
            stage=stage,
            previous_completed_at=previous_done,
            deadline=last_open_moment(
                end_of_local_day(previous_done, zone, stage.max_interval_days), zone, closed
            ),
        )
    return None
