"""Free slots and booking requests at the hospital's scheduling system: the port.

The hospital owns slots and bookings. followup asks for free slots and requests a booking
through the hospital's own interface, and believes the booking only when the hospital's own
booking event comes back on the usual ingest path (the tracker -> the scheduler closes the
case recovered). Two adapters: FHIR R4 (``slots_fhir.py``) and HL7 v2 SRM/SRR over MLLP
(``slots_hl7.py``). ``CachedSlots`` keeps an answer a few minutes at most, on the injected
clock; a conflict drops it at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

from common.clock import Clock
from schemas.events import NotificationCommand

BookingState = Literal["proposed", "booked"]


@dataclass(frozen=True)
class SlotFilter:
    """Which slots fit the case's stage: its department, practitioner or service type (from
    the command the scheduler built from the plan), between ``after`` and ``before`` (the
    stage deadline, or the horizon when the stage has none)."""

    department: str
    after: datetime
    before: datetime
    practitioner_id: str | None = None
    service_type: str | None = None

    @classmethod
    def for_command(
        cls, command: NotificationCommand, now: datetime, lead: timedelta, horizon: timedelta
    ) -> SlotFilter:
        before = now + horizon
        if command.stage_deadline is not None:
            before = min(before, command.stage_deadline)
        return cls(
            department=command.department,
            after=now + lead,
            before=before,
            practitioner_id=command.practitioner_id,
        )


@dataclass(frozen=True)
class FreeSlot:
    """One free time at the hospital; ``slot_id`` is the hospital's own id."""

    slot_id: str
    start: datetime
    end: datetime
    schedule_id: str | None = None


@dataclass(frozen=True)
class BookingRequest:
    """What followup asks the hospital to book: ``request_id`` is derived from the case, so
    a repeated request is the same request (the adapters send it idempotently)."""

    request_id: str
    case_id: str
    patient_id: str
    slot: FreeSlot
    department: str
    practitioner_id: str | None = None


@dataclass(frozen=True)
class BookingReceipt:
    """The hospital took the request (``state`` as it was asked for); not yet a booking."""

    reference: str  # the hospital's id of the request (Appointment id, SRM placer id)
    state: BookingState


class SlotTaken(Exception):
    """The slot was taken meanwhile (or is no longer free): offer the next ones."""


class SlotSourceError(Exception):
    """The hospital's system did not answer usefully; names no patient."""


class SlotSource(Protocol):
    name: str

    async def free_slots(self, wanted: SlotFilter, limit: int) -> Sequence[FreeSlot]:
        """Free slots fitting ``wanted``, earliest first, at most ``limit``."""
        ...

    async def request_booking(self, request: BookingRequest) -> BookingReceipt:
        """Ask the hospital to book; SlotTaken when the slot is gone."""
        ...

    async def close(self) -> None: ...


class CachedSlots:
    """A SlotSource that answers a repeated question from memory for ``ttl`` at most."""

    def __init__(self, source: SlotSource, clock: Clock, ttl: timedelta) -> None:
        self.name = source.name
        self._source = source
        self._clock = clock
        self._ttl = ttl
        self._answers: dict[tuple[SlotFilter, int], tuple[datetime, Sequence[FreeSlot]]] = {}

    async def free_slots(self, wanted: SlotFilter, limit: int) -> Sequence[FreeSlot]:
        now = self._clock.now()
        # Pages opened within the same minute ask the same question.
        key = (_to_minute(wanted), limit)
        cached = self._answers.get(key)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        slots = await self._source.free_slots(key[0], limit)
        self._answers = {k: v for k, v in self._answers.items() if now - v[0] < self._ttl}
        self._answers[key] = (now, slots)
        return slots

    async def request_booking(self, request: BookingRequest) -> BookingReceipt:
        try:
            return await self._source.request_booking(request)
        except SlotTaken:
            self.forget()
            raise

    def forget(self) -> None:
        self._answers.clear()

    async def close(self) -> None:
        await self._source.close()


def _to_minute(wanted: SlotFilter) -> SlotFilter:
    after = wanted.after.replace(second=0, microsecond=0)
    return SlotFilter(
        wanted.department, after, wanted.before, wanted.practitioner_id, wanted.service_type
    )


def next_after(slots: Sequence[FreeSlot], taken: FreeSlot, count: int) -> list[FreeSlot]:
    """The slots to offer after ``taken`` went: the others, earliest first."""
    return [s for s in slots if s.slot_id != taken.slot_id][:count]
