"""The contacts directory in PostgreSQL: contact details, patient status, opt-outs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg
from asyncpg import Record

from schemas.base import MESSENGERS
from schemas.events import ContactEvent, PatientStatusEvent, ProxyContact
from schemas.vocabulary import NUMBER_WRONG
from services.notifier.contacts import Contact, normalise_phone


class Directory:
    def __init__(self, pool: asyncpg.Pool, default_region: str) -> None:
        self._pool = pool
        self._region = default_region

    async def record_contact(self, event: ContactEvent) -> None:
        proxy, messengers = event.proxy, event.messengers
        # Compacted topic, possibly replayed: an older snapshot never overwrites a newer one.
        # A partial event (fields_sent, as HL7 sends) changes only the fields it names.
        await self._pool.execute(
            f"""INSERT INTO contacts (patient_id, given_name, family_name, phone_raw, phone_e164,
                   email, language, timezone, consent_sms, consent_email, consent_call, status,
                   occurred_at, event_id, proxy, proxy_phone_e164, proxy_email,
                   consent_whatsapp, consent_telegram, consent_viber, telegram_chat_id,
                   viber_user_id)
               VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$16,$17,$18,
                   COALESCE($19, false), COALESCE($20, false), COALESCE($21, false), $22, $23)
               ON CONFLICT (patient_id) DO UPDATE SET
                   {_merge("given_name", "given_name")}, {_merge("family_name", "family_name")},
                   {_merge("phone", "phone_raw")}, {_merge("phone", "phone_e164")},
                   {_merge("email", "email")}, {_merge("language", "language")},
                   {_merge("timezone", "timezone")}, {_merge("consent", "consent_sms")},
                   {_merge("consent", "consent_email")}, {_merge("consent", "consent_call")},
                   {_merge("status", "status")},
                   {_clear_mark("phone_mark")}, {_clear_mark("phone_marked_at")},
                   {_merge("proxy", "proxy")}, {_merge("proxy", "proxy_phone_e164")},
                   {_merge("proxy", "proxy_email")},
                   {_said("consent_whatsapp", "$19")}, {_said("consent_telegram", "$20")},
                   {_said("consent_viber", "$21")},
                   {_given("telegram_chat_id")}, {_given("viber_user_id")},
                   occurred_at=EXCLUDED.occurred_at,
                   event_id=EXCLUDED.event_id
               WHERE contacts.occurred_at <= EXCLUDED.occurred_at""",
            event.patient_id,
            event.given_name,
            event.family_name,
            event.phone,
            normalise_phone(event.phone, self._region),
            event.email.strip().lower() if event.email else None,
            event.language,
            event.timezone,
            event.consent.sms,
            event.consent.email,
            event.consent.call,
            event.status,
            event.occurred_at,
            event.event_id,
            event.fields_sent,
            proxy.model_dump_json() if proxy else None,
            normalise_phone(proxy.phone, self._region) if proxy else None,
            proxy.email.strip().lower() if proxy and proxy.email else None,
            event.consent.whatsapp,
            event.consent.telegram,
            event.consent.viber,
            messengers.telegram_chat_id if messengers else None,
            messengers.viber_user_id if messengers else None,
            messengers is not None,
        )

    async def record_patient_status(self, event: PatientStatusEvent) -> None:
        if event.fields_sent is not None:
            return  # a birth date alone: no news of the status, and none is kept here
        await self._pool.execute(
            """INSERT INTO patient_status (patient_id, status, effective_at, event_id)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (patient_id) DO UPDATE SET status=EXCLUDED.status,
                   effective_at=EXCLUDED.effective_at, event_id=EXCLUDED.event_id
               WHERE patient_status.effective_at <= EXCLUDED.effective_at""",
            event.patient_id,
            event.status,
            event.effective_at,
            event.event_id,
        )

    async def patient_status(self, patient_id: str) -> str | None:
        status: str | None = await self._pool.fetchval(
            "SELECT status FROM patient_status WHERE patient_id = $1", patient_id
        )
        return status

    async def contact(self, patient_id: str) -> Contact | None:
        contact, _status = await self.recipient(patient_id)
        return contact

    async def recipient(self, patient_id: str) -> tuple[Contact | None, str | None]:
        """The patient's contact and status, either possibly unknown, in one round trip."""
        return (await self.recipients([patient_id]))[patient_id]

    async def recipients(
        self, patient_ids: Sequence[str]
    ) -> dict[str, tuple[Contact | None, str | None]]:
        """``recipient`` for many patients in one round trip (the dispatcher's take)."""
        rows = await self._pool.fetch(
            """SELECT p.id AS wanted, s.status AS patient_status, c.*,
                   (SELECT count(*) FROM contacts o WHERE o.phone_e164 = c.to_phone) AS shared,
                   ARRAY(SELECT channel FROM opt_outs WHERE opted_out AND
                         ((channel = 'sms' AND address = c.to_phone) OR
                          (channel = 'email' AND address = c.to_email) OR
                          (channel = 'whatsapp' AND address = c.to_phone) OR
                          (channel = 'telegram' AND address = c.to_telegram) OR
                          (channel = 'viber' AND address = c.to_viber) OR
                          (channel IN ('call_task', 'all') AND address = c.patient_id)))
                     AS opted_out
               FROM (SELECT DISTINCT unnest($1::text[]) AS id) p
               -- A proxy is written to instead of the patient: their addresses, their STOP.
               LEFT JOIN (SELECT *,
                     CASE WHEN proxy IS NULL THEN phone_raw ELSE proxy->>'phone' END AS to_raw,
                     CASE WHEN proxy IS NULL THEN phone_e164 ELSE proxy_phone_e164 END
                       AS to_phone,
                     CASE WHEN proxy IS NULL THEN email ELSE proxy_email END AS to_email,
                     CASE WHEN proxy IS NULL THEN telegram_chat_id END AS to_telegram,
                     CASE WHEN proxy IS NULL THEN viber_user_id END AS to_viber
                   FROM contacts) c ON c.patient_id = p.id
               LEFT JOIN patient_status s ON s.patient_id = p.id""",
            list(patient_ids),
        )
        return {row["wanted"]: _recipient(row) for row in rows}

    async def set_opt_out(
        self, address: str, channel: str, opted_out: bool, at: datetime, event_id: str
    ) -> None:
        await self._pool.execute(
            """INSERT INTO opt_outs (address, channel, opted_out, changed_at, event_id)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (address, channel) DO UPDATE SET opted_out=EXCLUDED.opted_out,
                   changed_at=EXCLUDED.changed_at, event_id=EXCLUDED.event_id
               WHERE opt_outs.changed_at <= EXCLUDED.changed_at""",
            address,
            channel,
            opted_out,
            at,
            event_id,
        )

    async def mark_phone(self, phone_e164: str, mark: str, at: datetime) -> int:
        """The carrier said ``phone_e164`` is a landline or wrong: marked on every contact
        with it (a wrong number is wrong for everyone; it outranks a landline)."""
        result: str = await self._pool.execute(
            """UPDATE contacts SET phone_mark = CASE WHEN phone_mark = $3 THEN phone_mark
                   ELSE $2 END, phone_marked_at = $4
               WHERE phone_e164 = $1""",
            phone_e164,
            mark,
            NUMBER_WRONG,
            at,
        )
        return int(result.split()[-1])

    async def patients_with_phone(self, phone_e164: str) -> list[str]:
        rows = await self._pool.fetch(
            """SELECT patient_id FROM contacts WHERE phone_e164 = $1 AND proxy IS NULL
               UNION SELECT patient_id FROM contacts WHERE proxy_phone_e164 = $1
               ORDER BY patient_id""",
            phone_e164,
        )
        return [r["patient_id"] for r in rows]

    async def patients_with_chat_id(self, channel: str, address: str) -> list[str]:
        """Whose Telegram chat or Viber user ``address`` is (a proxy's contact has none)."""
        column = {"telegram": "telegram_chat_id", "viber": "viber_user_id"}[channel]
        rows = await self._pool.fetch(
            f"""SELECT patient_id FROM contacts WHERE {column} = $1 AND proxy IS NULL
                ORDER BY patient_id""",
            address,
        )
        return [r["patient_id"] for r in rows]

    async def patient_wrote(self, channel: str, address: str, at: datetime) -> None:
        """The patient wrote on a messenger: WhatsApp's 24-hour window opens again."""
        await self._pool.execute(
            """INSERT INTO chat_sessions (channel, address, last_inbound_at) VALUES ($1,$2,$3)
               ON CONFLICT (channel, address) DO UPDATE SET last_inbound_at =
                   GREATEST(chat_sessions.last_inbound_at, EXCLUDED.last_inbound_at)""",
            channel,
            address,
            at,
        )

    async def last_written(self, channel: str, address: str) -> datetime | None:
        at: datetime | None = await self._pool.fetchval(
            "SELECT last_inbound_at FROM chat_sessions WHERE channel = $1 AND address = $2",
            channel,
            address,
        )
        return at

    async def patients_with_email(self, email: str) -> list[str]:
        rows = await self._pool.fetch(
            """SELECT patient_id FROM contacts WHERE email = $1 AND proxy IS NULL
               UNION SELECT patient_id FROM contacts WHERE proxy_email = $1
               ORDER BY patient_id""",
            email.lower(),
        )
        return [r["patient_id"] for r in rows]


def _name(given: str | None, family: str | None) -> str | None:
    return " ".join(p for p in (given, family) if p) or None


def _clear_mark(column: str) -> str:
    """SET clause: a carrier's mark lasts as long as the number it was said of."""
    new_phone = (
        "CASE WHEN $15::text[] IS NULL OR 'phone' = ANY($15::text[]) "
        "THEN EXCLUDED.phone_e164 ELSE contacts.phone_e164 END"
    )
    return (
        f"{column} = CASE WHEN ({new_phone}) IS DISTINCT FROM contacts.phone_e164 "
        f"THEN NULL ELSE contacts.{column} END"
    )


def _said(column: str, value: str) -> str:
    """SET clause of a messenger consent: changed only when the event says it (not null),
    in a full snapshot or with ``consent`` among the fields sent."""
    return (
        f"{column} = CASE WHEN ($15::text[] IS NULL OR 'consent' = ANY($15::text[])) "
        f"AND {value}::boolean IS NOT NULL THEN {value}::boolean ELSE contacts.{column} END"
    )


def _given(column: str) -> str:
    """SET clause of a messenger id: changed when the event carries ``messengers`` or
    names it among the fields sent (a snapshot from a source that knows nothing of the
    messengers leaves the enrolled ids alone)."""
    return (
        f"{column} = CASE WHEN $24::boolean OR 'messengers' = ANY(COALESCE($15::text[], '{{}}'))"
        f" THEN EXCLUDED.{column} ELSE contacts.{column} END"
    )


def _merge(field: str, column: str) -> str:
    """SET clause: the event's value when it is a full snapshot or names ``field``."""
    return (
        f"{column} = CASE WHEN $15::text[] IS NULL OR '{field}' = ANY($15::text[]) "
        f"THEN EXCLUDED.{column} ELSE contacts.{column} END"
    )


def _recipient(row: Record) -> tuple[Contact | None, str | None]:
    if row["patient_id"] is None:
        return None, row["patient_status"]
    proxy = ProxyContact.model_validate_json(row["proxy"]) if row["proxy"] else None
    contact = Contact(
        patient_id=row["patient_id"],
        given_name=row["given_name"],
        family_name=row["family_name"],
        phone_raw=row["to_raw"],
        phone=row["to_phone"],
        email=row["to_email"],
        language=row["language"],
        timezone=row["timezone"],
        consent={
            "sms": row["consent_sms"],
            "email": row["consent_email"],
            "call": row["consent_call"],
        }
        | {m: row[f"consent_{m}"] for m in MESSENGERS},
        status=row["status"],
        opted_out=frozenset(row["opted_out"]),
        phone_shared_by=max(1, int(row["shared"] or 1)),
        phone_mark=None if proxy else row["phone_mark"],
        proxy=proxy.relationship if proxy else None,
        proxy_name=_name(proxy.given_name, proxy.family_name) if proxy else None,
        chat_ids={
            channel: row[column]
            for channel, column in (("telegram", "to_telegram"), ("viber", "to_viber"))
            if row[column]
        },
    )
    return contact, row["patient_status"]
