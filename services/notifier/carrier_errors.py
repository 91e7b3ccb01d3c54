"""Carrier-error triage: what an SMS provider's error code means for the patient's number.

A landline, a wrong number, a phone switched off and a carrier opt-out are different facts
about a number, and each asks for a different next step. This module only names the class
and its effect; the notifier's dispatcher and the scheduler act on it.

- ``landline``: the number cannot receive SMS (landline, not a mobile, SMS barred): no SMS
  to it in any case of the patient until the hospital sends another number; this attempt
  falls back; a call task to confirm a mobile number.
- ``invalid_number``: it does not exist or is out of service: marked wrong everywhere (SMS
  and calls) until a new number arrives; the case falls back; a task to correct it.
- ``unreachable``: it exists but the handset cannot be reached now (off, no signal): the
  number is kept; the cadence tries again later.
- ``carrier_opt_out``: the person asked the carrier to stop our messages: an SMS opt-out,
  as if they had replied STOP; the case's next step (on its cadence) takes another channel.
- ``sender``: our side (account, sender registration, content filter): the number is fine;
  the text reached nobody, so the attempt is refused and the same step goes at once on
  another channel; operators look at the sender.
- ``transient``: the provider or network was busy: retried with backoff.
- ``unknown``: the provider does not say: this attempt failed; the number is kept.

Codes come from the providers' public references (docs/patient-words.md lists the sources):
Twilio's error dictionary (the Twilio-compatible stand-in answers with the same codes) and
Vonage's SMS delivery-receipt ``err-code``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

ErrorClass = Literal[
    "landline", "invalid_number", "unreachable", "carrier_opt_out", "sender", "transient",
    "unknown",
]  # fmt: skip


@dataclass(frozen=True)
class Effect:
    """What a class asks for, for this case and for the patient's later cases."""

    retry: Literal["backoff", "cadence", "none"]
    number: Literal["keep", "no_sms", "wrong"]  # "no_sms"/"wrong" last until a new number
    opt_out: bool
    fall_back: bool  # the case leaves this channel (at once when the attempt was refused)
    task: Literal["confirm_number", "correct_number"] | None


EFFECTS: Mapping[ErrorClass, Effect] = {
    "landline": Effect("none", "no_sms", False, True, "confirm_number"),
    "invalid_number": Effect("none", "wrong", False, True, "correct_number"),
    "unreachable": Effect("cadence", "keep", False, False, None),
    "carrier_opt_out": Effect("none", "keep", True, True, None),
    "sender": Effect("none", "keep", False, True, None),
    "transient": Effect("backoff", "keep", False, False, None),
    "unknown": Effect("cadence", "keep", False, False, None),
}

# Twilio error dictionary (https://www.twilio.com/docs/api/errors): API answers (21xxx,
# 20xxx) and delivery errors in status callbacks (30xxx).
TWILIO: Mapping[int, tuple[ErrorClass, str]] = {
    20003: ("sender", "authentication failed"),
    20429: ("transient", "too many requests"),
    21211: ("invalid_number", "invalid 'To' phone number"),
    21217: ("invalid_number", "phone number does not appear to be valid"),
    21401: ("invalid_number", "invalid phone number"),
    21407: ("landline", "this phone number type does not support SMS"),
    21408: ("sender", "sending to this region is not enabled"),
    21602: ("sender", "message body is required"),
    21606: ("sender", "'From' is not an SMS-capable number of this account"),
    21608: ("sender", "'To' is not verified (trial account)"),
    21610: ("carrier_opt_out", "attempt to send to an unsubscribed recipient"),
    21611: ("transient", "'From' has too many queued messages"),
    # Not reachable with this 'To'/'From' combination: a route, not a fact about the
    # number, so the cadence may try again (perhaps through the other provider).
    21612: ("unreachable", "'To' is not currently reachable via SMS from this sender"),
    21614: ("landline", "'To' is not a valid mobile number"),
    21617: ("sender", "message body exceeds 1600 characters"),
    21635: ("landline", "'To' number cannot be a landline"),
    30001: ("transient", "queue overflow"),
    30002: ("sender", "account suspended"),
    30003: ("unreachable", "unreachable destination handset"),
    # "Message blocked": a block at the carrier or handset, sometimes a device that is off.
    # Not an opt-out the patient asked us for (that is 21610), so it is not recorded as one.
    30004: ("unreachable", "message blocked"),
    30005: ("invalid_number", "unknown destination handset"),
    30006: ("landline", "landline or unreachable carrier"),
    30007: ("sender", "message filtered"),
    30008: ("unknown", "unknown error"),
    30009: ("transient", "missing segment"),
    30010: ("sender", "message price exceeds max price"),
    30017: ("transient", "carrier network congestion"),
    30018: ("sender", "destination carrier requires sender ID pre-registration"),
    30022: ("transient", "A2P 10DLC rate limit exceeded"),
    30023: ("transient", "A2P 10DLC daily cap reached"),
    30032: ("sender", "toll-free number has not been verified"),
    30034: ("sender", "message from an unregistered number (A2P 10DLC)"),
    30410: ("transient", "provider timeout"),
    30450: ("transient", "temporarily blocked by SMS pumping protection"),
}

# Vonage SMS API delivery receipts, ``err-code``
# (https://api.support.vonage.com/hc/en-us/articles/204014733).
VONAGE: Mapping[int, tuple[ErrorClass, str]] = {
    1: ("unknown", "unknown"),
    2: ("unreachable", "absent subscriber, temporary"),
    3: ("invalid_number", "absent subscriber, permanent (number no longer active)"),
    4: ("landline", "call barred by user (SMS barred on the number)"),
    5: ("unknown", "portability error"),
    6: ("sender", "anti-spam rejection"),
    7: ("unreachable", "handset busy"),
    8: ("transient", "network error"),
    9: ("carrier_opt_out", "illegal number: the user asked not to receive this service"),
    10: ("sender", "illegal message"),
    11: ("unknown", "unroutable"),
    12: ("invalid_number", "destination unreachable: confirm the recipient's number"),
    13: ("unknown", "subscriber age restriction"),
    14: ("landline", "number blocked by carrier for SMS"),
    99: ("unknown", "general error"),
}

PROVIDERS: Mapping[str, Mapping[int, tuple[ErrorClass, str]]] = {
    "twilio": TWILIO,
    "vonage": VONAGE,
}


@dataclass(frozen=True)
class Triage:
    """One provider code read as a class with its effect. ``meaning`` is for operators."""

    provider: str
    code: int | None
    error_class: ErrorClass
    meaning: str

    @property
    def effect(self) -> Effect:
        return EFFECTS[self.error_class]


def triage(provider: str, code: int | str | None) -> Triage:
    """The class of ``provider``'s error ``code``; a code nobody documented is ``unknown``."""
    table = PROVIDERS.get(provider)
    if table is None:
        raise ValueError(f"no carrier-error table for provider {provider!r}")
    number = _as_int(code)
    if number is None:
        return Triage(provider, None, "unknown", "no error code")
    error_class, meaning = table.get(number, ("unknown", "undocumented code"))
    return Triage(provider, number, error_class, meaning)


def _as_int(code: int | str | None) -> int | None:
    if isinstance(code, int):
        return code
    if code is None or not code.strip().isdigit():
        return None
    return int(code.strip())


_PROVIDER_DETAIL = re.compile(r"provider_(\d+)")
_HTTP_DETAIL = re.compile(r"(?:gave_up_)?http_(\d{3})")


def triage_detail(detail: str | None, provider: str = "twilio") -> Triage:
    """Read a ``failed`` outcome's detail as the notifier writes it today.

    ``provider_<code>`` (a provider code, or the HTTP status when the answer had none),
    ``gave_up_<reason>`` (transient errors until the retries ran out): the triage of it.
    """
    if detail is None:
        return Triage(provider, None, "unknown", "no detail")
    if match := _PROVIDER_DETAIL.fullmatch(detail):
        value = match.group(1)
        if len(value) == 3:  # an HTTP status without a provider code
            return _http_status(provider, int(value))
        return triage(provider, value)
    if match := _HTTP_DETAIL.fullmatch(detail):
        return _http_status(provider, int(match.group(1)))
    if detail.startswith("gave_up_"):
        return Triage(provider, None, "transient", "transient errors until the retries ran out")
    return Triage(provider, None, "unknown", "undocumented detail")


def _http_status(provider: str, status: int) -> Triage:
    if status in (401, 403):
        return Triage(provider, None, "sender", f"HTTP {status}: credentials or permissions")
    if status == 429 or status >= 500:
        return Triage(provider, None, "transient", f"HTTP {status}")
    return Triage(provider, None, "unknown", f"HTTP {status} without an error code")
