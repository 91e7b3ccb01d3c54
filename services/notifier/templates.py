"""Message templates: per language and channel part, rendered in a Jinja2 sandbox.

Each language is one YAML file under ``templates/``: a care-first ``opening`` per reason
and the parts (sms, email subject/text/html, call script) that build on it. A missing
language or part falls back to the clinic's default language. Everything is rendered once
at start-up with sample data, so a broken template stops the service, not a 3 a.m. send.

The SMS may have its own short ``sms_opening`` per reason, taken when the language the
opening comes from has one (an opening is never half one language, half another). Each
language has an SMS segment budget (``sms_segment_budget``; default 2 segments for a GSM-7
text, 3 for UCS-2), checked at start-up with the longest sample values (``SmsSample``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment

from services.notifier.localise import format_visit_date, format_visit_time
from services.notifier.sms_text import Encoding, segment_count

if TYPE_CHECKING:
    from schemas.events import NotificationCommand, StageEducation
    from services.notifier.contacts import Contact

TEMPLATE_DIR = Path(__file__).parent / "templates"
PARTS = ("sms", "email_subject", "email_text", "email_html", "call_script")
REASONS = (
    "no_show",
    "late_cancellation",
    "unanswered_call",
    "stage_window_at_risk",
    "clinic_cancellation",
    "next_visit_due",
)
Part = Literal["sms", "email_subject", "email_text", "email_html", "call_script"]
# Billed segments an SMS may take when a language sets no sms_segment_budget: 306 GSM-7
# septets, or 201 UTF-16 units (Cyrillic, Lithuanian letters): the same room for words.
DEFAULT_SMS_BUDGET: dict[Encoding, int] = {"gsm7": 2, "ucs2": 3}


@dataclass(frozen=True)
class SmsSample:
    """The values an SMS's length is checked with: the longest we plan for, or a site's own."""

    clinic_name: str = "Sample Clinic of Dental Health"
    clinic_phone: str = "+370 5 200 0000"
    rebook_url: str | None = "https://clinic.example/rebook/online"


class TemplateError(Exception):
    """A template that does not load or render; names the language and part, never data."""


@dataclass(frozen=True)
class MessageContext:
    """What a template may say. ``redacted`` hides every detail of the visit (shared phone)."""

    reason: str
    clinic_name: str
    clinic_phone: str
    rebook_url: str | None
    timezone: str
    name: str | None = None
    appointment_start: datetime | None = None
    stage_name: str | None = None
    stage_deadline: datetime | None = None
    redacted: bool = False
    unsubscribe_url: str | None = None  # email only: the link the body may name
    # The clinic's sign-off in the message's language; None: its name.
    signature: str | None = None
    # The stage explained in the message's language (schemas StageEducation): a health
    # detail, so hidden like the others when ``redacted``.
    education: str | None = None
    education_url: str | None = None
    # A child's case (NotificationCommand.audience): the text addresses the parent or
    # guardian (the ``guardian`` opening) and greets nobody by the child's name.
    guardian: bool = False

    @classmethod
    def for_command(
        cls,
        command: NotificationCommand,
        contact: Contact | None,
        *,
        reason: str,
        clinic_name: str,
        clinic_phone: str,
        rebook_url: str | None,
        redacted: bool = False,
        signature: str | None = None,
        education: StageEducation | None = None,
    ) -> MessageContext:
        """What the command and the contact (if known yet) let a template say."""
        return cls(
            signature=signature,
            education=education.text if education else None,
            education_url=education.url if education else None,
            reason=reason,
            clinic_name=clinic_name,
            clinic_phone=clinic_phone,
            rebook_url=rebook_url,
            timezone=contact.timezone if contact else command.timezone,
            name=contact.given_name if contact else None,
            appointment_start=command.appointment_start,
            stage_name=command.stage_name,
            stage_deadline=command.stage_deadline,
            redacted=redacted,
            guardian=command.audience == "guardian",
        )

    def variables(self, language: str = "en") -> dict[str, Any]:
        """What templates see; dates and times written out in ``language`` and the
        patient's zone (``localise``), never ISO."""
        detail = not self.redacted
        visit = self.appointment_start if detail else None
        deadline = self.stage_deadline if detail else None
        return {
            "clinic_name": self.clinic_name,
            "signature": self.signature,
            "clinic_phone": self.clinic_phone,
            "rebook_url": self.rebook_url,
            "name": self.name if detail and not self.guardian else None,
            "appointment_date": visit and format_visit_time(visit, self.timezone, language),
            "stage_name": self.stage_name if detail else None,
            "deadline_date": deadline and format_visit_date(deadline, self.timezone, language),
            # Without the year, for the SMS (segments are money).
            "appointment_day": visit
            and format_visit_time(visit, self.timezone, language, short=True),
            "deadline_day": deadline
            and format_visit_date(deadline, self.timezone, language, short=True),
            "redacted": self.redacted,
            "unsubscribe_url": self.unsubscribe_url,
            "education": self.education if detail else None,
            "education_url": self.education_url if detail else None,
        }


# Short texts outside the message parts, per language (``phrases:`` in each file): the
# clinic's generic name when the site gives none in that language, the unsubscribe pages,
# the confirmations of STOP/START/HELP, whom a proxy call is for. A language without one
# takes the default language's (a test keeps every shipped language complete: nothing
# English inside another language); these English ones are the last resort.
PHRASES: Mapping[str, str] = {
    "clinic": "Your clinic",
    "unsubscribe_question": "Stop follow-up emails from your clinic?",
    "unsubscribe_button": "Unsubscribe",
    "unsubscribe_done": "Done. You will get no more emails from us.",
    "sms_stopped": "You will get no more texts from us. Reply START to get them again.",
    "sms_started": "You will get our texts again. Reply STOP to stop them.",
    "sms_help": "Texts about your treatment. Call us to rebook. Reply STOP to stop them.",
    "proxy_call": "Call the patient's contact person: {name}.",
    # The same on a chat messenger (WhatsApp, Telegram, Viber): "messages", not "texts".
    "chat_stopped": "You will get no more messages from us here. Write START to get them again.",
    "chat_started": "You will get our messages here again. Write STOP to stop them.",
    "chat_help": "Messages about your treatment. Call us to rebook. Write STOP to stop them.",
    # The one question after a recovered visit was attended (feedback.py), and the thanks.
    "feedback_question": "{name}: how was your visit? Reply with a number from 1 (poor) to 5 "
    "(very good), and a few words if you like. Reply STOP to opt out.",
    "feedback_thanks": "Thank you for your answer. It helps us care for you better.",
    "guardian_call": "The patient is a child: speak with a parent or guardian.",
}


class TemplateBook:
    def __init__(self, sources: Mapping[str, Mapping[str, Any]], default_language: str) -> None:
        if default_language not in sources:
            raise TemplateError(f"no templates for the default language {default_language!r}")
        self.default_language = default_language
        self.languages = frozenset(sources)
        plain = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
        html = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=True)
        self._compiled: dict[tuple[str, str], jinja2.Template] = {}
        self._sms_budgets: dict[str, int] = {}
        self._phrases: dict[str, dict[str, str]] = {}
        for language, source in sources.items():
            phrases = dict(source.get("phrases") or {})
            unknown = sorted(set(phrases) - set(PHRASES))
            if unknown or not all(isinstance(v, str) for v in phrases.values()):
                raise TemplateError(f"{language}: phrases must be texts of {sorted(PHRASES)}")
            self._phrases[language] = phrases
            budget = source.get("sms_segment_budget")
            if budget is not None:
                if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
                    raise TemplateError(
                        f"{language}: sms_segment_budget must be a whole number >= 1"
                    )
                self._sms_budgets[language] = budget
            try:
                for section in ("opening", "sms_opening"):
                    for reason, text in dict(source.get(section, {})).items():
                        self._compiled[(language, f"{section}.{reason}")] = plain.from_string(text)
                for part in PARTS:
                    if part in source:
                        env = html if part == "email_html" else plain
                        self._compiled[(language, part)] = env.from_string(source[part])
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(f"{language}: syntax error on line {exc.lineno}") from None

    @classmethod
    def load(
        cls,
        default_language: str,
        directory: Path = TEMPLATE_DIR,
        sms_sample: SmsSample | None = None,
    ) -> TemplateBook:
        sources = {
            path.stem: yaml.safe_load(path.read_text(encoding="utf-8"))
            for path in sorted(directory.glob("*.yaml"))
        }
        book = cls(sources, default_language)
        book.check(sms_sample)
        return book

    def _candidates(self, language: str) -> tuple[str, ...]:
        # "lt-LT" uses "lt" before falling back to the clinic's default language.
        return (language, language.split("-", 1)[0], self.default_language)

    def _template(self, language: str, name: str) -> jinja2.Template:
        candidates = self._candidates(language)
        found = next((t for c in candidates if (t := self._compiled.get((c, name)))), None)
        if found is None:
            raise TemplateError(f"no template {name!r} in {language!r} or the default language")
        return found

    def _opening(self, language: str, reason: str, part: Part) -> jinja2.Template:
        """The opening of the first language that has one; its short SMS form for an SMS."""
        sections = ("sms_opening", "opening") if part == "sms" else ("opening",)
        for candidate in self._candidates(language):
            for section in sections:
                if found := self._compiled.get((candidate, f"{section}.{reason}")):
                    return found
        raise TemplateError(f"no opening for {reason!r} in {language!r} or the default language")

    def _language(self, language: str) -> str:
        return next(c for c in self._candidates(language) if c in self.languages)

    def phrases(self, language: str) -> Mapping[str, str]:
        """The short texts of ``language``, each from the first language that has it."""
        found = dict(PHRASES)
        for candidate in reversed(self._candidates(language)):
            found.update(self._phrases.get(candidate, {}))
        return found

    def own_phrases(self, language: str) -> frozenset[str]:
        """The phrases ``language``'s own file gives (for the completeness test)."""
        return frozenset(self._phrases.get(language, {}))

    def phrase(self, language: str, key: str, **values: object) -> str:
        return self.phrases(language)[key].format(**values)

    def render(self, part: Part, language: str, context: MessageContext) -> str:
        # Dates, the clinic's generic name and its sign-off in the language whose
        # template is used, so a fallback never mixes two languages.
        language = self._language(language)
        values = context.variables(language)
        values["clinic_name"] = values["clinic_name"] or self.phrase(language, "clinic")
        values["signature"] = values["signature"] or values["clinic_name"]
        reason = (
            "guardian" if context.guardian else "generic" if context.redacted else context.reason
        )
        try:
            opening = self._opening(language, reason, part).render(values)
            return self._template(language, part).render(values, opening=opening).strip()
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{language}/{part}: {type(exc).__name__}") from None

    def opening(self, language: str, context: MessageContext) -> str:
        """The care-first opening of ``context``'s reason alone (the rebooking page's "why
        we write"), as the email says it."""
        language = self._language(language)
        values = context.variables(language)
        reason = "generic" if context.redacted else context.reason
        try:
            return self._opening(language, reason, "email_text").render(values).strip()
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{language}/opening: {type(exc).__name__}") from None

    def sms_budget(self, language: str, encoding: Encoding) -> int:
        """The billed segments one SMS in ``language`` may take."""
        return self._sms_budgets.get(language, DEFAULT_SMS_BUDGET[encoding])

    def check(self, sms_sample: SmsSample | None = None) -> None:
        """Render every part in every language for every reason, with and without details,
        and keep every SMS within its language's segment budget."""
        sample = sms_sample or SmsSample()
        for language in sorted(self.languages):
            for reason in REASONS:
                for context in sample_contexts(reason):
                    for part in PARTS:
                        self.render(part, language, context)  # type: ignore[arg-type]
                for context in sms_budget_contexts(reason, sample):
                    encoding, count = segment_count(self.render("sms", language, context))
                    budget = self.sms_budget(language, encoding)
                    if count > budget:
                        raise TemplateError(
                            f"{language}/sms: {reason} takes {count} {encoding} segments with"
                            f" the longest sample values; the budget is {budget}"
                        )


def sample_contexts(reason: str) -> list[MessageContext]:
    moment = datetime.fromisoformat("2026-03-02T09:30:00+02:00")
    full = MessageContext(
        reason=reason,
        clinic_name="Sample Clinic",
        clinic_phone="+37052000000",
        rebook_url="https://clinic.example/rebook",
        timezone="Europe/Vilnius",
        name="Sample Patient",
        appointment_start=moment,
        stage_name="Implant",
        stage_deadline=moment,
    )
    bare = MessageContext(
        reason=reason,
        clinic_name="Sample Clinic",
        clinic_phone="+37052000000",
        rebook_url=None,
        timezone="UTC",
    )
    redacted = MessageContext(**{**full.__dict__, "redacted": True})
    guardian = MessageContext(**{**full.__dict__, "guardian": True})
    return [
        full,
        bare,
        redacted,
        guardian,
        MessageContext(**{**redacted.__dict__, "guardian": True}),
    ]


def sms_budget_contexts(reason: str, sample: SmsSample) -> list[MessageContext]:
    """The longest SMS of a reason: every detail present, the site's (or the longest) values."""
    full = sample_contexts(reason)[0]
    site = {
        "clinic_name": sample.clinic_name,
        "clinic_phone": sample.clinic_phone,
        "rebook_url": sample.rebook_url,
    }
    longest = MessageContext(**{**full.__dict__, **site})
    return [
        longest,
        MessageContext(**{**longest.__dict__, "redacted": True}),
        MessageContext(**{**longest.__dict__, "guardian": True}),
    ]
