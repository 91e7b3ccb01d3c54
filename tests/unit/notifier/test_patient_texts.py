"""What the patient reads: every text in its own language, dates written out, email as mail
providers expect it (headers parsed back with the standard library), replies by email."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from aiosmtplib.email import flatten_message

from services.notifier.channels import ClinicVoice, Parts
from services.notifier.email_channel import (
    EmailChannel,
    InboundEmailError,
    build_message,
    message_id,
    parse_inbound_email,
)
from services.notifier.localise import format_visit_date, format_visit_time
from services.notifier.templates import PARTS, PHRASES, REASONS, MessageContext, TemplateBook
from tests.unit.notifier.samples import VILNIUS, command, contact
from tests.unit.notifier.test_channels import parts as parts

BOOK = TemplateBook.load("en")
LANGUAGES = ("lt", "ru", "bg")
# Words of the English templates that must never show in another language's text.
ENGLISH = re.compile(
    r"\b(the|clinic|visit|treatment|reply|please|call|rebook|dear|hello|your|missed|"
    r"unsubscribe|emails?|texts?|stop these|next step|book)\b",
    re.IGNORECASE,
)
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
URL = re.compile(r"https?://\S+")


def contexts(reason: str) -> list[MessageContext]:
    moment = datetime(2026, 3, 4, 15, 0, tzinfo=VILNIUS)
    full = MessageContext(
        reason=reason,
        clinic_name="",  # the site names none: each language's own generic word
        clinic_phone="+37052000000",
        rebook_url="https://x.example/r",
        timezone="Europe/Vilnius",
        name="Ona",
        appointment_start=moment,
        stage_name="X-1",
        stage_deadline=moment + timedelta(days=10),
        unsubscribe_url="https://x.example/u?patient=p&token=t",
    )
    return [full, MessageContext(**{**full.__dict__, "redacted": True})]


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_english_inside_another_language_and_no_iso_dates(language: str) -> None:
    for reason in REASONS:
        for context in contexts(reason):
            for part in PARTS:
                text = URL.sub("", BOOK.render(part, language, context))  # type: ignore[arg-type]
                found = ENGLISH.findall(text)
                assert not found, f"{language}/{part}/{reason}: English {found}"
                assert not ISO_DATE.search(text), f"{language}/{part}/{reason}: ISO date"
    for key in PHRASES:
        text = BOOK.phrase(language, key, count=2, name="Ona")
        assert not ENGLISH.findall(text), f"{language}/phrases.{key}"


@pytest.mark.parametrize("language", ["en", *LANGUAGES])
def test_every_shipped_language_has_every_phrase_of_its_own(language: str) -> None:
    assert BOOK.own_phrases(language) == frozenset(PHRASES)


def test_dates_in_the_patients_language_and_zone() -> None:
    moment = datetime.fromisoformat("2026-03-04T13:00:00+00:00")  # 15:00 in Vilnius
    assert format_visit_time(moment, "Europe/Vilnius", "lt") == "2026 m. kovo 4 d. 15:00"
    assert format_visit_time(moment, "Europe/Vilnius", "ru") == "4 марта 2026 г., 15:00"  # noqa: RUF001  # noqa: RUF001
    assert format_visit_time(moment, "Europe/Sofia", "bg") == "4 март 2026 г., 15:00"  # noqa: RUF001  # noqa: RUF001
    assert format_visit_time(moment, "Europe/London", "en") == "March 4, 2026, 1:00 PM"
    assert format_visit_date(moment, "Europe/Vilnius", "lt", short=True) == "kovo 4 d."
    # The English SMS stays GSM-7: CLDR's narrow no-break space is not in the alphabet.
    assert "\u202f" not in format_visit_time(moment, "UTC", "en", short=True)


def test_the_clinic_is_named_per_language_and_signs_in_it() -> None:
    voice = ClinicVoice(
        "Šypsena", "+37052000000", None, "en", names={"ru": "Клиника «Улыбка»"},
        signatures={"lt": "Jūsų „Šypsenos“ komanda"},
    )  # fmt: skip
    ru = voice.context(command("email"), contact(language="ru"))
    assert ru.clinic_name == "Клиника «Улыбка»" and ru.signature is None
    lt = voice.context(command("email"), contact(language="lt-LT"))
    assert lt.clinic_name == "Šypsena"
    assert BOOK.render("email_text", "lt", lt).splitlines()[-2] == "Jūsų „Šypsenos“ komanda"
    plain = ClinicVoice("", "+37052000000", None, "en").context(command(), contact())
    assert "Jūsų klinika." in BOOK.render("sms", "lt", plain)


def test_email_headers_as_mail_providers_read_them(parts: Parts) -> None:
    channel = EmailChannel(parts)
    patient = "p-" + "x" * 100  # a long id: the URL is far past 78 characters
    email = channel.render(command("email", patient_id=patient), contact(patient_id=patient))
    raw = flatten_message(build_message(email, "Klinika <followup@clinic.example>"))
    assert b"=?" not in raw.split(b"List-Unsubscribe:", 1)[1].split(b"\r\n", 1)[0]
    msg: Any = message_from_bytes(raw, policy=policy.default)
    assert parsedate_to_datetime(msg["Date"]) == parts.clock.now()
    assert msg["Message-ID"] == message_id("case-1:1", "followup@clinic.example")
    link = channel.unsubscribe_link(patient)
    assert link.startswith("https://") and len(link) > 140
    assert msg["List-Unsubscribe"] == f"<{link}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(preferencelist=("plain",)).get_content()
    html = msg.get_body(preferencelist=("html",)).get_content()
    # The body names the link it carries, in the patient's language (lt here).
    assert link in plain and "atsakykite „atsisakyti“" in plain
    assert link.replace("&", "&amp;") in html


def test_a_mailto_beside_the_link_is_folded_between_the_two_never_inside(parts: Parts) -> None:
    s = parts.settings.model_copy(update={"unsubscribe_mailto": "stop@clinic.example"})
    channel = EmailChannel(Parts(**{**parts.__dict__, "settings": s}))
    email = channel.render(command("email"), contact())
    raw = flatten_message(build_message(email, "followup@clinic.example"))
    msg: Any = message_from_bytes(raw, policy=policy.default)
    link = channel.unsubscribe_link("pat-1")
    assert msg["List-Unsubscribe"] == (
        f"<mailto:stop@clinic.example?subject=unsubscribe>, <{link}>"
    )


def reply(body: str, subject: str = "Re: Jūsų gydymas") -> bytes:
    return (
        "From: Ona <Ona@Example.org>\r\nTo: followup@clinic.example\r\n"
        f"Subject: {subject}\r\nMessage-ID: <r1@example.org>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body
    ).encode()


@pytest.mark.parametrize(
    ("body", "first"),
    [
        ("atsisakyti\r\n\r\nOn Mon, Mar 2, 2026 Klinika wrote:\r\n> Pasigedome", "atsisakyti"),
        ("\r\nUnsubscribe!\r\n--\r\nSent from my phone", "Unsubscribe!"),
        ("> quoted only\r\n", "Jūsų gydymas"),  # the subject, "Re:" left out
        ("Ar galiu ateiti rytoj?\r\nOna", "Ar galiu ateiti rytoj?"),
    ],
)
def test_an_email_reply_is_read_by_its_first_own_line(body: str, first: str) -> None:
    found = parse_inbound_email(reply(body), "message/rfc822")
    assert (found.sender, found.message_id, found.first_line) == (
        "ona@example.org",
        "<r1@example.org>",
        first,
    )


def test_an_unreadable_email_reply_is_refused_naming_fields() -> None:
    with pytest.raises(InboundEmailError, match="Message-ID and From"):
        parse_inbound_email(b"Subject: x\r\n\r\nstop", "message/rfc822")
    with pytest.raises(InboundEmailError, match="message_id, from and text"):
        parse_inbound_email(b'{"from": "a@b.c"}', "application/json")


def test_the_header_class_cache_changes_no_byte_of_the_message(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The channel keeps the header classes the stdlib registry would build anew each time:
    # the mail must come out exactly as with a fresh stdlib registry.
    from email.headerregistry import HeaderRegistry

    from services.notifier import email_channel

    email = EmailChannel(parts).render(command("email"), contact())

    def mail() -> bytes:  # the multipart boundary is random; nothing else is
        raw = flatten_message(build_message(email, "Klinika <fu@clinic.example>"))
        return re.sub(rb"={15}\d+==", b"BOUNDARY", raw)

    cached = [mail(), mail()]
    stdlib = HeaderRegistry()
    # (typeshed asks for the class mixed with BaseHeader, which the registry does itself)
    stdlib.map_to_type("list-unsubscribe", email_channel.UriListHeader)  # type: ignore[arg-type]
    monkeypatch.setattr(email_channel, "MESSAGE_POLICY", policy.SMTP.clone(header_factory=stdlib))
    assert cached[0] == cached[1] == mail()
    assert b"BOUNDARY" in cached[0]
    assert email_channel._HEADERS["subject"] is email_channel._HEADERS["Subject"]
