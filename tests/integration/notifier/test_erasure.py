"""Issue 19: a patient's erasure through the tracker's API route reaches the notifier over
the real topics: contact, opt-outs and notes gone, ids and an audit row kept, the contacts
topic's tombstone honoured (not dead-lettered), the patient not contacted again until the
hospital sends them anew; and the retention sweep on a manual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import aiohttp
import pytest
from aiohttp import web

from common.codec import decode
from common.erasure import erasure_request
from common.topic_reader import read_to_end
from schemas.events import DeadLetter
from services.notifier.privacy import RetentionPeriods
from services.tracker.erasure_api import ErasureApi
from tests.integration.notifier.world import World
from tests.support import infra
from tests.support.polling import eventually, free_port
from tests.support.privacy import every_row_as_text

TOKEN = "erasure-token"
PHONE, EMAIL, NOTES = "+37060000091", "ruta.erased@example.org", "Check healing first."


@pytest.fixture
async def erasure_url(world: World) -> AsyncIterator[str]:
    """The tracker's erasure route on a real socket, publishing with the real broker."""
    app = web.Application()
    ErasureApi(world.publisher, world.topics, world.clock, TOKEN, "tracker").mount(app)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def post(url: str, body: object = None, token: str = TOKEN) -> tuple[int, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, json=body, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        return response.status, await response.json()


async def test_an_erasure_removes_the_patient_everywhere_and_keeps_ids(
    world: World, erasure_url: str
) -> None:
    patient = "p-erase"
    contact = await world.contact(
        patient, given_name="Rūta", family_name="Žemaitytė", phone=PHONE, email=EMAIL
    )
    await world.send(world.command("c-erase", patient, "sms", doctor_notes=NOTES))
    await eventually(lambda: world.outcome("c-erase:1:sent"))
    await world.app.directory.set_opt_out(EMAIL, "email", True, world.clock.now(), "stop-1")
    before = await every_row_as_text(world.app.pool)
    assert all(text in before for text in ("Žemaitytė", PHONE, EMAIL, NOTES))

    # The route refuses without the token and names a bad id, keeping the value out.
    assert (await post(f"{erasure_url}/patients/{patient}/erasure", token="wrong"))[0] == 401
    status, body = await post(f"{erasure_url}/patients/%20x/erasure")
    assert status == 400 and "patient_id" in body["error"]
    status, body = await post(f"{erasure_url}/patients/{patient}/erasure", {"requested_by": "dpo"})
    assert status == 202
    event_id = body["event_id"]

    async def audited() -> object:
        return await world.app.pool.fetchrow("SELECT * FROM erasures WHERE event_id = $1", event_id)

    audit = await eventually(audited)
    assert (audit["patient_id"], audit["requested_by"]) == (patient, "dpo")
    await eventually(
        lambda: world.app.pool.fetchval(
            "SELECT count(*) = 0 FROM contacts WHERE patient_id = $1", patient
        )
    )
    after = await every_row_as_text(world.app.pool)
    for text in ("Rūta", "Žemaitytė", PHONE, EMAIL, NOTES):
        assert text not in after, "personal data left in the notifier's tables"
    # Ids and codes stay for the audit trail: the delivery, its outcome, the status.
    delivery = await world.app.pool.fetchrow(
        "SELECT * FROM deliveries WHERE idempotency_key = 'c-erase:1'"
    )
    assert delivery["patient_id"] == patient and delivery["case_id"] == "c-erase"
    assert delivery["outcome"] == "sent"

    # The contacts topic: the tombstone is the patient's latest record, so compaction
    # leaves nothing of them; it was honoured, not dead-lettered.
    records = [
        r for r in await read_to_end(infra.KAFKA_BOOTSTRAP, world.topics.contacts)
        if r.key == patient.encode()
    ]  # fmt: skip
    assert records[-1].value is None and len(records) == 2
    letters = [
        decode(DeadLetter, r.value)
        for r in await read_to_end(infra.KAFKA_BOOTSTRAP, world.topics.deadletter)
    ]
    assert not [d for d in letters if d.source_topic == world.topics.contacts]

    # A replay of the old contact (before compaction) is not stored again; nobody writes.
    await world.publisher.publish(world.topics.contacts, contact)
    await world.send(world.command("c-erase2", patient, "sms"))
    refused = await eventually(lambda: world.outcome("c-erase2:1:channel_impossible"))
    assert refused.detail == "not_contactable"
    assert "Žemaitytė" not in await every_row_as_text(world.app.pool)

    # The hospital sends the patient again (a newer contact): contactable anew.
    world.clock.advance(timedelta(minutes=5))
    await world.contact(patient, event_id="contact:p-erase:2", phone=PHONE)
    status_now = await world.app.directory.patient_status(patient)
    assert status_now == "active"


async def test_an_erasure_read_after_the_contacts_tombstone_still_removes_the_opt_outs(
    world: World,
) -> None:
    """The erasure and the tombstone travel on two topics, read by two consumers in no
    order. Here the tombstone is read first: the erasure then finds no contact, and must
    still delete the opt-outs of the patient's addresses (once flaky under load)."""
    patient, phone, email = "p-late", "+37060000093", "late.erased@example.org"
    await world.contact(patient, family_name="Vėlyvaitė", phone=phone, email=email)
    now = world.clock.now()
    await world.app.directory.set_opt_out(email, "email", True, now, "stop-late-1")
    await world.app.directory.set_opt_out(phone, "sms", True, now, "stop-late-2")

    await world.publisher.publish_raw(world.topics.contacts, None, patient.encode())
    await eventually(
        lambda: world.app.pool.fetchval(
            "SELECT count(*) = 0 FROM contacts WHERE patient_id = $1", patient
        )
    )
    # A tombstone alone keeps the opt-outs: they protect whoever holds the address.
    assert email in await every_row_as_text(world.app.pool)

    event = erasure_request(patient, requested_by="dpo", source="test", now=world.clock.now())
    await world.publisher.publish(world.topics.patients, event)
    await eventually(
        lambda: world.app.pool.fetchval(
            "SELECT 1 FROM erasures WHERE event_id = $1", event.event_id
        )
    )
    after = await every_row_as_text(world.app.pool)
    for text in ("Vėlyvaitė", phone, email):
        assert text not in after, "personal data left in the notifier's tables"


@pytest.mark.parametrize("tombstone_first", [True, False], ids=["tombstone-first", "erasure-first"])
async def test_either_order_twice_over_leaves_the_same_and_keeps_a_shared_opt_out(
    world: World, tombstone_first: bool
) -> None:
    """Each message delivered twice (at least once), in either order: the erased patient's
    own opt-out goes, the one of an address another patient still holds stays."""
    n = 5 if tombstone_first else 6
    patient, sibling = f"p-twice-{n}", f"p-sibling-{n}"
    shared, own = f"+3706000009{n}", f"twice{n}.erased@example.org"
    await world.contact(patient, phone=shared, email=own)
    await world.contact(sibling, phone=shared)
    now = world.clock.now()
    await world.app.directory.set_opt_out(own, "email", True, now, f"stop-twice-{n}-1")
    await world.app.directory.set_opt_out(shared, "sms", True, now, f"stop-twice-{n}-2")
    event = erasure_request(patient, requested_by="dpo", source="test", now=now)
    privacy = world.app.privacy
    for _ in range(2):
        if tombstone_first:
            await privacy.forget_contact(patient)
            await privacy.erase(event)
        else:
            await privacy.erase(event)
            await privacy.forget_contact(patient)
    kept = await world.app.pool.fetch(
        "SELECT address, channel FROM opt_outs WHERE address = ANY($1::text[])", [shared, own]
    )
    assert [(r["address"], r["channel"]) for r in kept] == [(shared, "sms")]
    assert await world.app.directory.contact(patient) is None
    assert await world.app.directory.contact(sibling) is not None
    audits = await world.app.pool.fetchval(
        "SELECT count(*) FROM erasures WHERE patient_id = $1", patient
    )
    assert audits == 1


async def test_retention_strips_notes_and_old_contacts_only_past_their_period(
    world: World,
) -> None:
    patient = "p-retain"
    await world.contact(patient, family_name="Retained", phone="+37060000092")
    await world.send(world.command("c-retain", patient, "sms", doctor_notes=NOTES))
    await eventually(lambda: world.outcome("c-retain:1:sent"))
    periods = RetentionPeriods(
        message_bodies=timedelta(days=30),
        contacts=timedelta(days=365),
        opt_outs=timedelta(days=730),
    )

    async def command_notes() -> str | None:
        raw = await world.app.pool.fetchval(
            "SELECT command ->> 'doctor_notes' FROM deliveries WHERE idempotency_key = $1",
            "c-retain:1",
        )
        return str(raw) if raw is not None else None

    world.clock.advance(timedelta(days=29))
    await world.app.privacy.prune(periods)
    assert await command_notes() == NOTES
    world.clock.advance(timedelta(days=2))
    assert await world.app.privacy.prune(periods) >= 1
    assert await command_notes() is None
    assert await world.app.directory.contact(patient) is not None  # a year is not over
    world.clock.advance(timedelta(days=365))
    await world.app.privacy.prune(periods)
    assert await world.app.directory.contact(patient) is None
    kept = await world.app.pool.fetchval(
        "SELECT count(*) FROM deliveries WHERE idempotency_key = 'c-retain:1'"
    )
    assert kept == 1  # the ledger's ids stay: a replayed command is still a repeat


async def test_a_tombstone_without_a_key_or_on_another_topic_is_still_a_dead_letter(
    world: World,
) -> None:
    await world.publisher.publish_raw(world.topics.contacts, None, b"")  # an empty key
    await world.publisher.publish_raw(world.topics.notifications, None, b"p-other")

    async def letters() -> list[DeadLetter]:
        found = [
            decode(DeadLetter, r.value)
            for r in await read_to_end(infra.KAFKA_BOOTSTRAP, world.topics.deadletter)
        ]
        return [d for d in found if d.error_type in ("no_key", "empty")]

    found = await eventually(lambda: _two(letters))
    assert {(d.source_topic, d.error_type) for d in found} == {
        (world.topics.contacts, "no_key"),
        (world.topics.notifications, "empty"),
    }


async def _two(letters: Callable[[], Awaitable[list[DeadLetter]]]) -> list[DeadLetter] | None:
    found = await letters()
    return found if len(found) >= 2 else None
