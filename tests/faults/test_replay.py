"""Replay protection of signed provider callbacks: a captured, validly signed START sent
again after the patient's STOP does not re-subscribe them (Twilio-style signatures carry no
timestamp, so only remembering the provider's message ids stops a replay)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import yarl

from common.clock import ManualClock
from common.db import drop_schema
from common.kafka import delete_topics_with_prefix
from services.notifier.app import NotifierApp
from standins.sms_provider import SmsProviderStandIn, sign
from tests.faults.events import contact, notifier_settings
from tests.support import infra

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 2, 10, 0, tzinfo=ZoneInfo("Europe/Vilnius"))
PHONE = "+37060000073"
TOKEN = "tok-replay"


@pytest.fixture
async def app() -> AsyncIterator[NotifierApp]:
    infra.ensure_up()
    provider = SmsProviderStandIn("ACreplay", TOKEN)
    await provider.start()
    settings, prefix, schema = notifier_settings(
        sms_primary_url=provider.base_url,
        sms_primary_sid="ACreplay",
        sms_primary_token=TOKEN,
        sms_primary_from="+15005550006",
    )
    notifier = NotifierApp(settings, ManualClock(START))
    await notifier.start()
    try:
        yield notifier
    finally:
        await notifier.stop()
        await provider.stop()
        await drop_schema(infra.DATABASE_URL, schema)
        await delete_topics_with_prefix(infra.KAFKA_BOOTSTRAP, prefix)


async def post_signed(url: str, params: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            yarl.URL(url, encoded=True),
            data=params,
            headers={"X-Twilio-Signature": sign(TOKEN, url, params)},
        ) as response,
    ):
        await response.read()
        return response.status


def reply(sid: str, body: str) -> dict[str, str]:
    return {"MessageSid": sid, "AccountSid": "ACreplay", "From": PHONE, "To": "+15005550006",
            "Body": body, "NumMedia": "0"}  # fmt: skip


async def opted_out(app: NotifierApp) -> bool | None:
    value: bool | None = await app.pool.fetchval(
        "SELECT opted_out FROM opt_outs WHERE address = $1 AND channel = 'sms'", PHONE
    )
    return value


async def test_a_replayed_signed_start_after_stop_does_not_resubscribe(app: NotifierApp) -> None:
    clock = app.clock
    assert isinstance(clock, ManualClock)
    await app.directory.record_contact(contact("p-replay", PHONE, START))
    url = f"http://127.0.0.1:{app.ops.port}/sms/inbound"
    start = reply("SM" + "a" * 32, "START")
    assert await post_signed(url, start) == 200
    assert await opted_out(app) is False
    clock.advance(timedelta(hours=1))
    assert await post_signed(url, reply("SM" + "b" * 32, "STOP")) == 200
    assert await opted_out(app) is True

    clock.advance(timedelta(hours=1))
    # The captured START, byte for byte, validly signed: acknowledged (2xx, so a provider's
    # retry stops) and without effect.
    assert await post_signed(url, start) == 200
    assert await opted_out(app) is True

    # A new START (a new MessageSid) is the patient's own and still opts back in.
    clock.advance(timedelta(hours=1))
    assert await post_signed(url, reply("SM" + "c" * 32, "START")) == 200
    assert await opted_out(app) is False


async def test_a_replayed_status_callback_has_no_effect(app: NotifierApp) -> None:
    url = f"http://127.0.0.1:{app.ops.port}/sms/status?key=nothing%3A1"
    params = {"MessageSid": "SM" + "d" * 32, "MessageStatus": "delivered", "AccountSid": "ACreplay"}
    # No such message: 404, and not remembered (the provider's retry is looked at again).
    assert await post_signed(url, params) == 404
    assert await post_signed(url, params) == 404
    seen = await app.pool.fetchval("SELECT count(*) FROM seen_callbacks")
    assert seen == 0
