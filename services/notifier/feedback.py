"""The one short question after a recovered visit, and the patient's answer to it.

The scheduler asks for it (a command with ``purpose: feedback``) once the rebooked visit
was attended; the channel writes ``feedback_question`` in the patient's language instead
of its follow-up text. A reply on that channel within ``OPEN_FOR`` that starts with a
number from 1 to 5 is the answer: the rating, and what follows it as an optional comment.
It goes to the scheduler once, as an ``OutcomeEvent`` ``feedback`` with ids, the rating
and the comment in ``note`` (shown through the case API, never logged or counted).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from common.logs import get_logger
from schemas.events import NotificationCommand
from services.notifier.channels import Parts
from services.notifier.contacts import Contact
from services.notifier.outcomes import command_outcome

log = get_logger(__name__)

# A question answered later than this is a plain reply (for the front desk).
OPEN_FOR = timedelta(days=7)
COMMENT_LIMIT = 1000
# "4", "4/5", "4 - great", "5! Ačiū", "3. Ilgai laukiau": a single digit 1-5 first, never
# part of a longer number or a time ("12", "3:30", "4.5").
_RATING = re.compile(
    r"^\s*([1-5])(?:\s*/\s*5)?(?![0-9]|[.,:][0-9])[\s.,;:!?)\-\u2013\u2014]*(.*)$", re.S
)


@dataclass(frozen=True)
class Answer:
    rating: int
    comment: str | None


def read_answer(text: str) -> Answer | None:
    """The rating and comment in a reply, or None when it does not start with one."""
    found = _RATING.match(text)
    if found is None:
        return None
    comment = " ".join(found.group(2).split())[:COMMENT_LIMIT]
    return Answer(int(found.group(1)), comment or None)


def question(parts: Parts, contact: Contact, command: NotificationCommand) -> str:
    language = contact.language
    voice = parts.voice.for_site(command.site)  # a chain's clinic asks in its own name
    clinic = voice.name_for(language) or parts.book.phrase(language, "clinic")
    return parts.book.phrase(language, "feedback_question", name=clinic)  # {name}: the clinic


def is_feedback(command: NotificationCommand) -> bool:
    return command.purpose == "feedback"


async def take_answer(parts: Parts, patients: list[str], channel: str, text: str) -> list[str]:
    """The patients among ``patients`` whose open question ``text`` answers (each once);
    their answer is published. The others' message is a plain reply."""
    answer = read_answer(text)
    if answer is None:
        return []
    now = parts.clock.now()
    answered = []
    for patient_id in patients:
        command = await parts.ledger.open_feedback(patient_id, channel, now - OPEN_FOR)
        if command is None:
            continue
        retention = timedelta(days=parts.settings.callback_retention_days)
        if not await parts.ledger.first_callback(
            f"feedback:{command.idempotency_key}", now, retention
        ):
            continue  # answered already: a second number is a plain reply
        await parts.publish_outcome(
            command_outcome(command, "feedback", now, rating=answer.rating, note=answer.comment)
        )
        log.info("feedback_answered", key=command.idempotency_key)  # no rating, no comment
        answered.append(patient_id)
    return answered
