"""Free slots and booking requests as HL7 v2.5 scheduling messages (SQM/SQR^S25,
SRM/SRR^S01) over a real MLLP socket, against the hospital stand-in that speaks them; and
the rebooking page working through that adapter."""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
import hl7
import pytest

from common.clock import ManualClock
from services.notifier.slots import BookingRequest, SlotFilter, SlotSourceError, SlotTaken
from services.notifier.slots_hl7 import Hl7Slots, client_tls
from standins.hl7_scheduling import HeldSlot, Hl7SchedulingStandIn
from tests.integration.notifier.conftest import messaging_world
from tests.integration.notifier.world import START, World
from tests.support import mllp
from tests.support.polling import eventually
from tests.support.secure_infra import Certificates, make_certificates

pytestmark = pytest.mark.integration
DAY = timedelta(days=1)
HALF_HOUR = timedelta(minutes=30)


def _held() -> list[HeldSlot]:
    def slot(
        slot_id: str,
        start: datetime,
        department: str = "dental",
        practitioner_id: str | None = None,
        status: str = "free",
    ) -> HeldSlot:
        return HeldSlot(slot_id, department, start, start + HALF_HOUR, practitioner_id, status)

    return [
        slot("h-tue-9", START + DAY - timedelta(hours=1)),
        slot("h-tue-10", START + DAY, status="busy"),
        slot("h-tue-11", START + DAY + timedelta(hours=1), practitioner_id="dr-7"),
        slot("h-wed-10", START + 2 * DAY),
        slot("h-eye", START + DAY, department="eye"),
        slot("h-late", START + 30 * DAY),
    ]


@pytest.fixture
async def hospital() -> AsyncIterator[Hl7SchedulingStandIn]:
    stand_in = Hl7SchedulingStandIn(slots=_held())
    await stand_in.start()
    try:
        yield stand_in
    finally:
        await stand_in.stop()


WANTED = SlotFilter("dental", START + timedelta(hours=2), START + 20 * DAY)


async def test_free_slots_and_a_booking_request_cross_a_real_mllp_socket(
    hospital: Hl7SchedulingStandIn,
) -> None:
    source = Hl7Slots("127.0.0.1", hospital.port, ManualClock(START))
    slots = await source.free_slots(WANTED, 6)
    assert [s.slot_id for s in slots] == ["h-tue-9", "h-tue-11", "h-wed-10"]
    assert (
        slots[0].start == START + DAY - timedelta(hours=1)
        and slots[0].end - slots[0].start == HALF_HOUR
    )
    query = hl7.parse(hospital.received[-1])
    assert str(query.segment("MSH")(9)) == "SQM^S25^SQM_S25"
    assert str(query.segment("AIL")(3)) == "^^^dental"
    by_doctor = SlotFilter("dental", WANTED.after, WANTED.before, practitioner_id="dr-7")
    assert [s.slot_id for s in await source.free_slots(by_doctor, 6)] == ["h-tue-11"]
    assert [s.slot_id for s in await source.free_slots(WANTED, 1)] == ["h-tue-9"]

    request = BookingRequest("rebook:c-h1", "c-h1", "p-h1", slots[0], "dental")
    receipt = await source.request_booking(request)
    assert (receipt.reference, receipt.state) == ("APT-1", "proposed")  # SCH-25 Pending
    srm = hl7.parse(hospital.received[-1])
    assert str(srm.segment("MSH")(9)) == "SRM^S01^SRM_S01"
    assert str(srm.segment("ARQ")(1)) == "rebook:c-h1^FOLLOWUP"
    assert str(srm.segment("ARQ")(2)) == "h-tue-9^HOSPITAL"
    assert str(srm.segment("PID")(3)) == "p-h1^^^HOSPITAL^MR"
    assert len(srm.segment("PID")) == 4  # no PID-5: no name, the hospital knows its patient

    # The same request again (a resubmitted page): the same appointment, nothing new.
    assert (await source.request_booking(request)).reference == "APT-1"
    assert len(hospital.bookings) == 1
    # The slot is taken now: another case asking for it is told so.
    other = BookingRequest("rebook:c-h2", "c-h2", "p-h2", slots[0], "dental")
    with pytest.raises(SlotTaken):
        await source.request_booking(other)
    assert [s.slot_id for s in await source.free_slots(WANTED, 6)] == ["h-tue-11", "h-wed-10"]


def _engine_tls(certs: Certificates, client_ca: bool) -> ssl.SSLContext:
    """The hospital interface engine's TLS listener (optionally asking for our certificate)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.directory / "server.crt", certs.directory / "server.key")
    if client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(certs.ca)
    return context


async def test_slots_and_booking_over_mllp_with_mutual_tls(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "pki")
    engine = Hl7SchedulingStandIn(slots=_held())
    await engine.start(tls=_engine_tls(certs, client_ca=True))
    try:
        ours = client_tls(str(certs.ca), str(certs.client_cert), str(certs.client_key))
        source = Hl7Slots("127.0.0.1", engine.port, ManualClock(START), tls=ours)
        slots = await source.free_slots(WANTED, 6)
        assert [s.slot_id for s in slots] == ["h-tue-9", "h-tue-11", "h-wed-10"]
        request = BookingRequest("rebook:c-t1", "c-t1", "p-t1", slots[0], "dental")
        assert (await source.request_booking(request)).reference == "APT-1"

        # Without our certificate the engine hangs up: an error, never a guess.
        anonymous = Hl7Slots(
            "127.0.0.1", engine.port, ManualClock(START), tls=client_tls(str(certs.ca)), timeout=5
        )
        with pytest.raises(SlotSourceError):
            await anonymous.free_slots(WANTED, 6)
        # An engine whose certificate our CA did not sign is refused, saying so.
        other = make_certificates(tmp_path / "other")
        untrusting = Hl7Slots(
            "127.0.0.1", engine.port, ManualClock(START), tls=client_tls(str(other.ca)), timeout=5
        )
        with pytest.raises(SlotSourceError, match="not trusted"):
            await untrusting.free_slots(WANTED, 6)
        assert len(engine.bookings) == 1
    finally:
        await engine.stop()


async def test_the_stand_in_refuses_what_is_not_a_scheduling_message(
    hospital: Hl7SchedulingStandIn,
) -> None:
    sender = await mllp.connect(hospital.port)
    try:
        await sender.send(b"MSH|^~\\&|X|Y|SCHEDULING|HOSPITAL|20260302||ADT^A01|c-9|P|2.5\r")
        ack = await sender.ack()
        assert mllp.msa(ack) == ("AR", "c-9")
        assert str(ack.segment("ERR")(3)).startswith("200")
    finally:
        sender.writer.close()


@pytest.fixture
async def world(hospital: Hl7SchedulingStandIn) -> AsyncIterator[World]:
    async with messaging_world(
        slots_source="hl7", slots_hl7_host="127.0.0.1", slots_hl7_port=hospital.port
    ) as running:
        yield running


async def test_the_rebooking_page_books_through_hl7(
    world: World, hospital: Hl7SchedulingStandIn
) -> None:
    await world.contact("p-hl7", phone="+37060000061")
    await world.send(world.command("c-hl7", "p-hl7", "sms"))
    [message] = await eventually(
        lambda: [m for m in world.primary.messages if m.to == "+37060000061"], timeout=90
    )
    found = re.search(r"http://127\.0\.0\.1:\d+/r/[A-Za-z0-9_-]{12}", message.body)
    assert found
    url = found.group(0)
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as response:
            assert response.status == 200
            page = await response.text()
        assert re.findall(r'name="slot" value="([^"]+)"', page) == [
            "h-tue-9",
            "h-tue-11",
            "h-wed-10",
        ]
        async with http.post(
            f"{world.base_url}/r",
            data={"token": url.rsplit("/", 1)[1], "action": "book", "slot": "h-wed-10"},
            headers={"Origin": world.base_url},
        ) as response:
            assert response.status == 200
            assert "We asked the clinic to book" in await response.text()
    [booking] = hospital.bookings
    assert (booking.placer_id, booking.slot_id, booking.patient_id) == (
        "rebook:c-hl7",
        "h-wed-10",
        "p-hl7",
    )
