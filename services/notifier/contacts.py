"""Who the patient is and whether a channel may reach them: plain data and rules, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import phonenumbers

from schemas.base import MESSENGERS, Channel
from schemas.events import ChannelConsent, ContactEvent

if TYPE_CHECKING:
    from services.notifier.channels import ChannelRules

# erased: until the hospital sends the patient again (a newer contact), nobody calls.
NOT_CONTACTABLE = frozenset({"deceased", "transferred_out", "erased"})


def normalise_phone(raw: str | None, default_region: str) -> str | None:
    """E.164 form of ``raw``, or None when it is not a valid number (SMS is then impossible)."""
    if not raw:
        return None
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@dataclass(frozen=True)
class Contact:
    patient_id: str
    given_name: str | None
    family_name: str | None
    phone_raw: str | None
    phone: str | None  # E.164, None when missing or invalid
    email: str | None
    language: str
    timezone: str
    consent: dict[str, bool]
    status: str = "active"
    opted_out: frozenset[str] = field(default_factory=frozenset)  # channels
    phone_shared_by: int = 1  # how many patients' contacts normalise to this phone
    # What the carrier said of ``phone`` (vocabulary.NUMBER_MARKS), until another arrives.
    phone_mark: str | None = None
    # Written to instead of the patient (schemas ProxyContact.relationship): phone_raw,
    # phone and email above are then the proxy's; the names stay the patient's (for the
    # front desk only: messages to a proxy name no one).
    proxy: str | None = None
    proxy_name: str | None = None
    # The patient's ids on Telegram and Viber (channel -> id); WhatsApp uses ``phone``.
    # None of them while a proxy is written to: the ids are the patient's own.
    chat_ids: dict[str, str] = field(default_factory=dict)

    @property
    def display_name(self) -> str | None:
        parts = [p for p in (self.given_name, self.family_name) if p]
        return " ".join(parts) or None

    @classmethod
    def from_event(cls, event: ContactEvent, default_region: str) -> Contact:
        """As the directory gives it: a proxy's addresses in place of the patient's."""
        proxy = event.proxy
        phone, email = (proxy.phone, proxy.email) if proxy else (event.phone, event.email)
        return cls(
            patient_id=event.patient_id,
            given_name=event.given_name,
            family_name=event.family_name,
            phone_raw=phone,
            phone=normalise_phone(phone, default_region),
            email=email,
            language=event.language,
            timezone=event.timezone,
            consent=consents(event.consent),
            status=event.status,
            proxy=proxy.relationship if proxy else None,
            proxy_name=" ".join(p for p in (proxy.given_name, proxy.family_name) if p) or None
            if proxy
            else None,
            chat_ids={} if proxy else chat_ids(event),
        )


def consents(consent: ChannelConsent) -> dict[str, bool]:
    """The consent flags by name (``ChannelRules.consent``): sms, email, call, messengers."""
    flags = {"sms": consent.sms, "email": consent.email, "call": consent.call}
    return flags | {m: bool(getattr(consent, m)) for m in MESSENGERS}  # None: not given


def chat_ids(event: ContactEvent) -> dict[str, str]:
    ids = event.messengers
    found = {"telegram": ids.telegram_chat_id, "viber": ids.viber_user_id} if ids else {}
    return {channel: value for channel, value in found.items() if value}


def why_impossible(
    contact: Contact | None,
    channel: Channel,
    rules: ChannelRules,
    patient_status: str | None = None,
) -> str | None:
    """The reason code when ``channel`` must not or cannot reach the patient, else None.

    Order matters: not-contactable and opt-outs win over anything a command asks for.
    What the channel needs of a contact (consent flag, address) comes from its rules.
    """
    if patient_status in NOT_CONTACTABLE or (contact and contact.status in NOT_CONTACTABLE):
        return "not_contactable"
    if contact is None:
        return "no_contact"
    if channel in contact.opted_out:
        return "opted_out"
    if not contact.consent.get(rules.consent, False):
        return "no_consent"
    return rules.missing(contact)
