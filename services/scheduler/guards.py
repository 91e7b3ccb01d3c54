"""What holds a due attempt back, per patient and across all cases: pure, no I/O.

- **Frequency caps**: at most ``per_day`` automated messages (SMS, email) in any 24 hours
  and ``per_week`` in any 7 days; call tasks are counted separately with their own caps.
  Rolling windows, so the rule is the same in every time zone and across DST changes.
- **Conversation in progress**: while a call task of the patient is open (handed out, no
  result yet) or a reply of the patient waits for an answer, no automated message goes
  out, until the result arrives or the quiet period after it has passed.

The ledger evaluates these under a per-patient row lock, so they hold across replicas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from schemas.base import Channel
from schemas.vocabulary import FiringHold
from schemas.vocabulary import Hold as Hold  # one shape for both services

HoldRule = FiringHold
# A hold at firing (the shape is the one in schemas.vocabulary, shared with the notifier).
FiringHeld = Hold[FiringHold]
ChannelClass = Literal["message", "call"]
DAY = timedelta(days=1)
WEEK = timedelta(days=7)


def channel_class(channel: Channel) -> ChannelClass:
    return "call" if channel == "call_task" else "message"


@dataclass(frozen=True)
class Cap:
    per_day: int
    per_week: int


@dataclass(frozen=True)
class ContactRules:
    messages: Cap = Cap(per_day=1, per_week=3)
    calls: Cap = Cap(per_day=2, per_week=5)
    conversation_quiet: timedelta = timedelta(hours=24)

    def cap(self, kind: ChannelClass) -> Cap:
        return self.calls if kind == "call" else self.messages


def cap_free_at(sent: Sequence[datetime], cap: Cap, now: datetime) -> datetime:
    """The earliest moment from ``now`` on when one more contact stays within ``cap``."""
    moment = now
    for _ in range(len(sent) + 2):  # each round lets at least one past contact drop out
        moved = False
        for window, limit in ((DAY, cap.per_day), (WEEK, cap.per_week)):
            recent = sorted(t for t in sent if moment - window < t <= moment)
            if len(recent) >= limit:
                # The oldest contacts must leave the window until one place is free.
                moment = recent[len(recent) - limit] + window
                moved = True
        if not moved:
            return moment
    return moment


def conversation_until(
    open_tasks: Sequence[tuple[datetime, datetime]],
    reply_at: datetime | None,
    rules: ContactRules,
    now: datetime,
) -> datetime | None:
    """Until when a conversation in progress holds automated messages; None if none is open.

    ``open_tasks``: (handed out at, window end) of the patient's call tasks without a
    result; a task is a conversation until its window ends or the quiet period passed.
    ``reply_at``: when the patient's reply that nobody has answered yet arrived.
    """
    ends = [min(window_end, start + rules.conversation_quiet) for start, window_end in open_tasks]
    if reply_at is not None:
        ends.append(reply_at + rules.conversation_quiet)
    until = max(ends, default=None)
    return until if until is not None and until > now else None


def hold_for(
    channel: Channel,
    sent: Sequence[datetime],
    conversation_ends: datetime | None,
    rules: ContactRules,
    now: datetime,
) -> FiringHeld | None:
    """Why and until when a contact on ``channel`` must wait; None when it may go now.

    ``sent``: the patient's contacts of the same class (messages or calls) in the last
    week, over all cases. ``conversation_ends``: from ``conversation_until``.
    """
    kind = channel_class(channel)
    if kind == "message" and conversation_ends is not None and conversation_ends > now:
        return Hold("conversation_open", conversation_ends)
    free = cap_free_at(sent, rules.cap(kind), now)
    if free > now:
        return Hold("frequency_cap", free)
    return None


def desk_hold(
    calls_today: int, calls_per_day: int | None, next_open: datetime
) -> FiringHeld | None:
    """A front desk at its calls for the clinic day: the call task waits for the next open
    day (``next_open``); the ones nearest their deadline and with the highest risk are
    fired first (the ledger's order), and one that cannot wait escalates."""
    if calls_per_day is None or calls_today < calls_per_day:
        return None
    return Hold("desk_capacity", next_open)
