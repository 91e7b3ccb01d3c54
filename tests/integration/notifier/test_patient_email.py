"""Email as mail providers expect it, through a real SMTP server and the real notifier:
headers read back from the bytes on the wire, one-click unsubscribe, replies by email."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import pytest

from tests.integration.notifier.world import API_TOKEN, World
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


async def test_headers_on_the_wire_and_one_click_unsubscribe(world: World) -> None:
    patient = "p-long-" + "9" * 90  # a long id: the URL is far past one header line
    await world.contact(patient, email="ona.long@example.org", language="lt")
    await world.send(world.command("c-hdr", patient, "email"))
    await eventually(lambda: world.outcome("c-hdr:1:sent"))
    [raw] = [r for r in world.inbox.raw if b"X-Followup-Key: c-hdr:1" in r]
    head = raw.split(b"\r\n\r\n", 1)[0]
    line = head.split(b"List-Unsubscribe:", 1)[1].split(b"\r\n", 1)[0]
    # One unfolded <URI> (the test's base URL is http; production's is https), no encoded-words.
    assert b"=?" not in line and line.strip().startswith(b"<") and line.strip().endswith(b">")
    link = line.strip()[1:-1].decode()
    assert link.startswith(f"{world.base_url}/unsubscribe?") and len(link) > 120
    msg: Any = message_from_bytes(raw, policy=policy.default)
    assert parsedate_to_datetime(msg["Date"]) == world.clock.now().replace(microsecond=0)
    assert msg["Message-ID"].startswith("<followup.")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    assert link in text  # the body names the link it carries

    async with aiohttp.ClientSession() as http:
        # A person (or a link scanner) opening the link sees a question, nothing more.
        async with http.get(link) as page:
            body = await page.text()
            assert page.status == 200 and 'method="post"' in body and "Atsisakyti" in body
        assert world.outcome(f"unsubscribe:{patient}:email") is None
        # The mail provider's one-click POST (RFC 8058) records the opt-out.
        async with http.post(link, data={"List-Unsubscribe": "One-Click"}) as done:
            assert done.status == 200 and "nebegausite" in await done.text()
    opt_out = await eventually(lambda: world.outcome(f"unsubscribe:{patient}:email"))
    assert (opt_out.outcome, opt_out.channel) == ("opt_out", "email")


async def test_a_reply_saying_unsubscribe_in_the_patients_language_is_an_opt_out(
    world: World,
) -> None:
    await world.contact("p-reply-mail", email="ivan@example.org", language="ru")
    url = f"{world.base_url}/email/inbound"
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    reply = (
        "From: Ivan <Ivan@Example.org>\r\nTo: followup@clinic.example\r\n"
        "Subject: Re: =?utf-8?q?=D0=92=D0=B0=D1=88=D0=B5?=\r\nMessage-ID: <r-ru-1@example.org>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        "Отписаться\r\n\r\n> Чтобы не получать писем, ответьте «отписаться»\r\n"
    ).encode()
    headers = {**auth, "Content-Type": "message/rfc822"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=reply, headers={"Content-Type": "message/rfc822"}) as r:
            assert r.status == 401
        async with http.post(url, data=b"Subject: x\r\n\r\n", headers=headers) as bad:
            assert bad.status == 400 and "Message-ID" in await bad.text()
        async with http.post(url, data=reply, headers=headers) as ok:
            assert ok.status == 202 and (await ok.json())["result"] == "opt_out"
        text = "А можно в пятницу?"  # noqa: RUF001
        question = {"message_id": "<r-ru-2@example.org>", "from": "ivan@example.org", "text": text}
        async with http.post(url, json=question, headers=auth) as conversation:
            assert (await conversation.json())["result"] == "reply"

    def kinds() -> set[str]:
        return {o.outcome for o in world.outcomes.events if o.patient_id == "p-reply-mail"}

    await eventually(lambda: kinds() >= {"opt_out", "reply"} or None)
    await world.send(world.command("c-reply-mail", "p-reply-mail", "email"))
    refused = await eventually(lambda: world.outcome("c-reply-mail:1:channel_impossible"))
    assert refused.detail == "opted_out"
