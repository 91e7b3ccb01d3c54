"""Each idempotency key gives one message at the receiving server, whatever repeats or dies."""

from __future__ import annotations

import asyncio
import functools
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from common.db import create_pool
from services.notifier.ledger import Ledger
from tests.integration.notifier.world import World
from tests.support import infra
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


def sms_to(world: World, phone: str) -> int:
    return sum(m.to == phone for m in world.primary.messages + world.secondary.messages)


async def test_each_command_twice_gives_one_message_per_key(world: World) -> None:
    await world.contact("p-twice", phone="+37060000031", email="twice@example.org")
    dropped = REGISTRY.get_sample_value(
        "followup_notifier_duplicates_dropped_total", {"channel": "sms"}
    )
    sms = world.command("c-twice-s", "p-twice", "sms")
    mail = world.command("c-twice-e", "p-twice", "email")
    task = world.command("c-twice-t", "p-twice", "call_task")
    for command in (sms, mail, task, sms, mail, task):
        await world.send(command)
    for key in ("c-twice-s:1:sent", "c-twice-e:1:sent", "c-twice-t:1:task_created"):
        await eventually(functools.partial(world.outcome, key))
    await eventually(
        lambda: REGISTRY.get_sample_value(
            "followup_notifier_duplicates_dropped_total", {"channel": "call_task"}
        )
    )
    await world.advance(1)
    assert sms_to(world, "+37060000031") == 1
    assert len(world.inbox.for_key("c-twice-e:1")) == 1
    assert len(world.webhook.tasks("c-twice-t:1")) == 1
    after = REGISTRY.get_sample_value(
        "followup_notifier_duplicates_dropped_total", {"channel": "sms"}
    )
    assert (after or 0) == (dropped or 0) + 1
    assert sum(o.event_id == "c-twice-s:1:sent" for o in world.outcomes.events) == 1


async def test_a_notifier_killed_between_claim_and_send_sends_once(world: World) -> None:
    """The dead process claimed the keys (its consumer ran) but never sent: the ledger rows
    are 'pending'. Its offsets were not committed, so the commands come again."""
    await world.contact("p-kill", phone="+37060000032", email="kill@example.org")
    sms = world.command("c-kill-s", "p-kill", "sms")
    mail = world.command("c-kill-e", "p-kill", "email")
    # The dead process: its own pool, claims, then is gone before any send.
    pool = await create_pool(infra.DATABASE_URL, world.app.settings.db_schema)
    dead = Ledger(pool, sending_lease=timedelta(seconds=60))
    assert await dead.claim(sms, world.clock.now())
    assert await dead.claim(mail, world.clock.now())
    await pool.close()
    # Redelivered commands find their keys claimed; the live worker sends the pending rows.
    await world.send(sms)
    await world.send(mail)
    await eventually(lambda: world.outcome("c-kill-s:1:sent"))
    await eventually(lambda: world.outcome("c-kill-e:1:sent"))
    await world.advance(1)
    assert sms_to(world, "+37060000032") == 1
    assert len(world.inbox.for_key("c-kill-e:1")) == 1


async def test_killed_while_sending_email_resends_same_id_sms_reports_unknown(
    world: World,
) -> None:
    """The dead process had marked the rows 'sending' (it was about to call the provider)."""
    await world.contact("p-mid", phone="+37060000033", email="mid@example.org")
    sms = world.command(
        "c-mid-s", "p-mid", "sms", window_start=world.clock.now() + timedelta(hours=1)
    )
    mail = world.command("c-mid-e", "p-mid", "email", window_start=sms.window_start)
    pool = await create_pool(infra.DATABASE_URL, world.app.settings.db_schema)
    dead = Ledger(pool, sending_lease=timedelta(seconds=60))
    # Claimed as due when the window opens (so the live worker leaves them alone until
    # then); then the dead worker takes them and dies.
    assert await dead.claim(sms, sms.window_start)
    assert await dead.claim(mail, sms.window_start)
    world.clock.set(sms.window_start)
    taken = await dead.take_due(world.clock.now(), limit=100)
    assert {d.command.case_id for d in taken} >= {"c-mid-s", "c-mid-e"}
    await pool.close()
    await world.advance(30)  # within the lease: nobody touches them
    await asyncio.sleep(0.3)
    assert world.outcome("c-mid-e:1:sent") is None
    await world.advance(61)  # the lease is over
    await eventually(lambda: world.outcome("c-mid-e:1:sent"))
    unknown = await eventually(lambda: world.outcome("c-mid-s:1:failed"))
    assert unknown.detail == "delivery_unknown"
    assert sms_to(world, "+37060000033") == 0  # at most once for SMS
    assert len(world.inbox.for_key("c-mid-e:1")) == 1
