"""An SMS provider that takes the message but answers too slowly: the notifier must not
send it again (a Twilio-style API cannot deduplicate), while a refused connection, where
nothing reached the provider, is retried as before."""

from __future__ import annotations

import pytest

from common.clock import SystemClock
from services.notifier.channels import PermanentSendError, TransientSendError
from services.notifier.sms import SmsMessage, TwilioProvider
from standins.faults import FaultyPort
from standins.sms_provider import SmsProviderStandIn

pytestmark = pytest.mark.integration


async def test_a_lost_answer_is_delivery_unknown_and_a_refusal_is_retried() -> None:
    standin = SmsProviderStandIn("ACslow", "tok-slow")
    await standin.start()
    assert standin.port is not None
    port = FaultyPort(standin.port)
    await port.start()
    provider = TwilioProvider(
        name="primary",
        base_url=f"http://127.0.0.1:{port.port}",
        account_sid="ACslow",
        auth_token="tok-slow",
        from_number="+15005550006",
        clock=SystemClock(),
        timeout=0.5,
    )
    message = SmsMessage("+37060000074", "Hello")
    try:
        await port.slow(1.0)  # the provider answers after the client gave up
        with pytest.raises(PermanentSendError) as lost:
            await provider.send(message)
        assert lost.value.detail == "delivery_unknown"
        assert len(standin.messages) == 1  # it did take the message

        await port.refuse()
        with pytest.raises(TransientSendError):
            await provider.send(message)
        assert len(standin.messages) == 1

        await port.passes()
        receipt = await provider.send(message)
        assert receipt.provider_id == standin.messages[-1].sid
    finally:
        await provider.close()
        await port.stop()
        await standin.stop()
