"""What a valid record leaves in the tracker's state can never stop the timer.

The worker dead-letters a record whose handler raises; but a record that is accepted and
leaves a state on which ``due()`` raises would end the timer loop at every restart (the
state is restored from the changelog). Property: for any sequence of valid appointment
snapshots at the edges of the calendar and of the contract, ``due()`` at any moment
returns, and the state survives its changelog round trip."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone
from typing import get_args

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.base import EARLIEST_YEAR, LATEST_YEAR
from schemas.events import AppointmentChange, AppointmentEvent, AppointmentStatus
from services.tracker.detection import DetectionRules, Detector, PatientState

moments = st.datetimes(
    min_value=datetime(EARLIEST_YEAR, 1, 2), max_value=datetime(LATEST_YEAR, 12, 30)
).flatmap(
    lambda naive: st.sampled_from([timezone(timedelta(hours=h)) for h in (-12, -5, 0, 2, 14)]).map(
        lambda zone: naive.replace(tzinfo=zone)
    )
)
snapshots = st.builds(
    AppointmentEvent,
    event_id=st.sampled_from(["e-1", "e-2", "e-3"]),
    occurred_at=moments,
    source=st.just("fuzz"),
    change=st.sampled_from(get_args(AppointmentChange)),
    appointment_id=st.sampled_from(["a-1", "a-2"]),
    patient_id=st.just("p-1"),
    start=moments,
    timezone=st.sampled_from(["Europe/Vilnius", "Pacific/Kiritimati", "UTC"]),
    department=st.just("dental"),
    status=st.sampled_from(get_args(AppointmentStatus)),
    status_at=st.none() | moments,
    cancelled_by=st.none() | st.sampled_from(["patient", "clinic"]),
    plan_id=st.none() | st.just("plan-1"),
    stage_id=st.none() | st.just("s-1"),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(snapshots, moments), min_size=1, max_size=6), moments)
def test_no_accepted_snapshot_leaves_a_state_that_stops_the_timer(
    events: list[tuple[AppointmentEvent, datetime]], later: datetime
) -> None:
    detector = Detector(DetectionRules())
    for event, now in events:
        # A snapshot whose handler raises is dead-lettered: the state must stay usable.
        with contextlib.suppress(Exception):
            detector.on_appointment(event, now)
        detector.due(now)
    detector.due(later)
    detector.due(datetime(LATEST_YEAR, 12, 31, tzinfo=UTC))
    state = detector.patients.get("p-1")
    if state is not None:
        again = PatientState.from_json(state.to_json())
        assert again.to_json() == state.to_json()
