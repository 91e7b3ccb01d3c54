"""Each idempotency key gives one message at the receiving server, whatever repeats or dies."""

from __future__ import annotations

import asyncio
import functools
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from common.db import create_pool
from services.notifier.ledger import Delivery, Finish, Ledger
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


async def test_the_dispatcher_takes_one_row_per_patient_in_due_order(world: World) -> None:
    """Deliveries go concurrently across patients but one after the other per patient: a
    take holds at most one row of a patient, the earliest, none of a patient with a row
    still 'sending', and no more of a channel than it has room for."""
    opens = world.clock.now() + timedelta(hours=1)
    pool = await create_pool(infra.DATABASE_URL, world.app.settings.db_schema)
    ledger = Ledger(pool, sending_lease=timedelta(seconds=60))
    try:
        for n, (patient, channel) in enumerate(
            [("p-a", "sms"), ("p-a", "sms"), ("p-b", "email"), ("p-c", "sms"), ("p-d", "sms")]
        ):
            command = world.command(f"c-take{n}", patient, channel, window_start=opens)
            assert await ledger.claim(command, opens + timedelta(seconds=n))
        later = opens + timedelta(minutes=1)
        taken = await ledger.take_due(
            later, limit=10, channel_room={"sms": 1, "email": 5}, one_per_patient=True
        )
        assert [d.command.case_id for d in taken] == ["c-take0", "c-take2"]
        # p-a's second row waits while its first is 'sending'.
        again = await ledger.take_due(later, limit=10, one_per_patient=True)
        assert [d.command.case_id for d in again] == ["c-take3", "c-take4"]
        assert await ledger.take_due(later, limit=10, one_per_patient=True) == []
        await ledger.finish(taken[0].command, later, "sent")
        last = await ledger.take_due(later, limit=10, one_per_patient=True)
        assert [d.command.case_id for d in last] == ["c-take1"]
    finally:
        await pool.close()


async def test_a_row_under_way_is_not_taken_again_when_its_lease_runs_out(world: World) -> None:
    """The lease recovers rows a dead process left 'sending'; the dispatcher's own rows
    under way are never among them, however long the send takes by the clock (a scaled
    clock makes a 120 s lease last milliseconds: the demo mailed the same email twice)."""
    opens = world.clock.now() + timedelta(hours=1)
    pool = await create_pool(infra.DATABASE_URL, world.app.settings.db_schema)
    ledger = Ledger(pool, sending_lease=timedelta(seconds=60))
    try:
        for n, patient in enumerate(["p-lease-a", "p-lease-a", "p-lease-b"]):
            command = world.command(f"c-lease{n}", patient, "email", window_start=opens)
            assert await ledger.claim(command, opens + timedelta(seconds=n))
        # (The module's world is shared: other tests' rows are left out of what is judged.)
        taken = [
            d
            for d in await ledger.take_due(
                opens + timedelta(seconds=5), limit=50, one_per_patient=True
            )
            if d.command.case_id.startswith("c-lease")
        ]
        assert [d.command.case_id for d in taken] == ["c-lease0", "c-lease2"]
        past_lease = opens + timedelta(minutes=5)
        busy = {d.command.idempotency_key: d.command.patient_id for d in taken}
        again = await ledger.take_due(
            past_lease,
            limit=50,
            one_per_patient=True,
            busy_keys=list(busy),
            busy_patients=list(set(busy.values())),
        )
        # Neither row under way, nor p-lease-a's next one.
        assert not [d for d in again if d.command.case_id.startswith("c-lease")]
        # Without the caller's word, past the lease they are abandoned rows, recovered.
        recovered = [
            d
            for d in await ledger.take_due(past_lease, limit=50, one_per_patient=True)
            if d.command.case_id.startswith("c-lease")
        ]
        assert sorted(d.command.case_id for d in recovered) == ["c-lease0", "c-lease2"]
        assert all(d.recovered for d in recovered)
    finally:
        await pool.close()


async def test_a_patients_deliveries_go_out_in_due_order(world: World) -> None:
    await world.contact("p-order", phone="+37060000034")
    for n in range(5):
        await world.contact(f"p-other{n}", phone=f"+3706000004{n}")
    opens = world.clock.now() + timedelta(hours=1)
    for n in range(3):
        due = opens + timedelta(seconds=n)
        command = world.command(f"c-order{n}", "p-order", "sms", window_start=due)
        await world.send(command)
    for n in range(5):
        await world.send(world.command(f"c-other{n}", f"p-other{n}", "sms", window_start=opens))

    async def all_waiting() -> bool:
        waiting = await world.app.pool.fetchval(
            "SELECT count(*) FROM deliveries WHERE case_id LIKE 'c-o%' AND state = 'pending' "
            "AND due_at >= $1",
            opens,
        )
        return bool(waiting == 8)

    while not await all_waiting():
        await asyncio.sleep(0.05)
    await world.advance(3600 + 10)
    for n in range(3):
        await eventually(functools.partial(world.outcome, f"c-order{n}:1:sent"))
    # The provider got them in due order (each status callback carries its key).
    sent = [m.status_callback or "" for m in world.primary.messages if m.to == "+37060000034"]
    assert [url.rpartition("key=")[2] for url in sent] == [f"c-order{n}%3A1" for n in range(3)]


async def test_a_round_is_recorded_in_one_statement_and_the_guard_counts_each_patient(
    world: World,
) -> None:
    """``finish_all`` records a round's results (each its own outcome and provider id), and
    ``sent_since_each`` counts per delivery what reached a provider for its patient that day,
    not the delivery itself, as ``sent_since`` does for one."""
    opens = world.clock.now() + timedelta(hours=1)

    def ours(taken: list[Delivery]) -> list[str]:  # the module's other tests left rows too
        return [d.command.case_id for d in taken if d.command.case_id.startswith("c-round")]

    pool = await create_pool(infra.DATABASE_URL, world.app.settings.db_schema)
    ledger = Ledger(pool, sending_lease=timedelta(seconds=60))
    try:
        rows = [("p-r1", "sms"), ("p-r1", "email"), ("p-r2", "sms"), ("p-r1", "sms")]
        commands = [
            world.command(f"c-round{n}", patient, channel, window_start=opens)
            for n, (patient, channel) in enumerate(rows)
        ]
        for command in commands:
            assert await ledger.claim(command, opens)
        later = opens + timedelta(minutes=1)
        first = await ledger.take_due(later, limit=50, one_per_patient=True)
        assert ours(first) == ["c-round0", "c-round2"]
        await ledger.finish_all(
            [
                Finish(commands[0], later, "sent", provider="primary", provider_id="SM1"),
                Finish(commands[2], later, "failed", detail="window_passed"),
            ]
        )
        done = {
            r["case_id"]: (r["state"], r["outcome"], r["detail"], r["provider_id"])
            for r in await pool.fetch("SELECT * FROM deliveries WHERE case_id LIKE 'c-round%'")
        }
        assert done["c-round0"] == ("done", "sent", None, "SM1")
        assert done["c-round2"] == ("done", "failed", "window_passed", None)
        assert done["c-round1"][0] == "pending"
        second = await ledger.take_due(later, limit=50, one_per_patient=True)
        assert ours(second) == ["c-round1"]
        day = later - timedelta(hours=1)
        asked = [
            (commands[1].idempotency_key, "p-r1", day),  # c-round0 went; itself not counted
            (commands[3].idempotency_key, "p-r1", day),  # c-round0 went, c-round1 is sending
            (commands[2].idempotency_key, "p-r2", day),  # its own failure reached nobody
        ]
        counts = await ledger.sent_since_each(asked, ["sms", "email"])
        assert counts == {
            commands[1].idempotency_key: 1,
            commands[3].idempotency_key: 2,
            commands[2].idempotency_key: 0,
        }
        one = await ledger.sent_since("p-r1", day, commands[3].idempotency_key, ["sms", "email"])
        assert one == 2
        assert await ledger.sent_since_each([], ["sms"]) == {}
    finally:
        await pool.close()
