"""Absurd dates are refused at the edge, naming the field, through real sockets (issue 19).

On 0e56ca5 a visit in year 1 or after 9999-12-01 was answered AA (HL7) or 2xx (FHIR) and then
dead-lettered by the detector (datetime overflow); year 200 was stored 16 s off (the zone's
local mean time). The contracts refuse years outside 1900..9998, so the sender hears it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import hl7
import pytest

from common.clock import ManualClock
from schemas.topics import TopicNames
from services.tracker.app import Tracker
from tests.support.kafka import read_all
from tests.support.tracker import tracker_settings
from tests.unit.tracker.fhir_samples import fhir_appointment
from tests.unit.tracker.hl7_samples import siu

pytestmark = pytest.mark.integration


@pytest.fixture
async def tracker(kafka_bootstrap: str, topics: TopicNames) -> AsyncIterator[Tracker]:
    settings = tracker_settings(kafka_bootstrap, topics)
    service = Tracker(settings, ManualClock(datetime(2026, 3, 1, 8, tzinfo=UTC)))
    await service.start()
    yield service
    await service.stop()


@pytest.mark.parametrize("start", ["00010302093000", "02000302093000+0200", "99991201093000"])
async def test_hl7_with_an_absurd_visit_date_gets_ae_naming_the_field(
    tracker: Tracker, kafka_bootstrap: str, topics: TopicNames, start: str
) -> None:
    assert tracker.mllp.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", tracker.mllp.port)
    writer.write(b"\x0b" + siu("S12", "Y1", start=start).encode() + b"\x1c\x0d")
    await writer.drain()
    block = await asyncio.wait_for(reader.readuntil(b"\x1c\x0d"), 30)
    writer.close()
    msa = hl7.parse(block[1:-2].decode()).segment("MSA")
    assert str(msa(1)) == "AE"
    # The HL7 field that carries the start (SCH-11.4 in this sample's shape), and why.
    assert "SCH-11" in str(msa(3)) and "year" in str(msa(3))
    assert await read_all(kafka_bootstrap, topics.appointments, quiet=0.5) == []


@pytest.mark.parametrize("start", ["0001-03-02T09:30:00+02:00", "9999-12-31T23:00:00-02:00"])
async def test_fhir_with_an_absurd_visit_date_gets_a_4xx_naming_the_field(
    tracker: Tracker, kafka_bootstrap: str, topics: TopicNames, start: str
) -> None:
    body = fhir_appointment(start=start, end=None)
    del body["end"]
    url = f"http://127.0.0.1:{tracker.ops.port}/fhir/Appointment/apt-1"
    headers = {"Authorization": "Bearer t", "Content-Type": "application/fhir+json"}
    async with (
        aiohttp.ClientSession() as http,
        http.put(url, data=json.dumps(body).encode(), headers=headers) as response,
    ):
        status, text = response.status, await response.text()
    assert 400 <= status < 500
    assert "start" in text and "year" in text
    assert await read_all(kafka_bootstrap, topics.appointments, quiet=0.5) == []
