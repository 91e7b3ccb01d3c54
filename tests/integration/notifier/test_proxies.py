"""A guardian or carer is written to and called instead of the patient, through the real
notifier: their number, a text that names no one, their STOP."""

from __future__ import annotations

import pytest

from schemas.events import ProxyContact
from tests.integration.notifier.world import World
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

GUARDIAN = ProxyContact(
    relationship="parent", given_name="Rasa", family_name="Petraitienė",
    phone="+37060000051", reason="minor",
)  # fmt: skip


async def test_messages_and_call_tasks_go_to_the_proxy_naming_no_more_than_needed(
    world: World,
) -> None:
    await world.contact("p-child", phone="+37060000050", language="lt", proxy=GUARDIAN)
    await world.send(world.command("c-child", "p-child", "sms"))
    await eventually(lambda: world.outcome("c-child:1:sent"))
    [text] = [m for m in world.primary.messages if m.to == "+37060000051"]
    assert "+37060000050" not in [m.to for m in world.primary.messages]  # not the child's
    assert "Ona" not in text.body and "Rasa" not in text.body and "Implant" not in text.body
    assert text.body.startswith("Norime padėti Jums tęsti gydymą")  # the generic opening

    await world.send(world.command("c-child2", "p-child", "call_task"))
    [task] = await eventually(lambda: world.calltask_events("c-child2:1") or None)
    assert task.phone == "+37060000051" and task.patient_name == "Ona Petraitė"
    assert task.script.startswith("Skambinkite paciento kontaktiniam asmeniui: Rasa Petraitienė.")

    # The guardian's STOP is the patient's opt-out, confirmed in the patient's language.
    url = f"{world.base_url}/sms/inbound"
    assert await world.primary.send_reply(url, "+37060000051", "STOP") == 200
    opt_out = await eventually(
        lambda: next(
            (o for o in world.outcomes.events if o.outcome == "opt_out"
             and o.patient_id == "p-child"), None,
        )
    )  # fmt: skip
    assert opt_out.channel == "sms"
    assert world.primary.answers[-1] == ("+37060000051", "SMS iš mūsų nebegausite. "
                                         "Norėdami vėl gauti, atsakykite START.")  # fmt: skip
    await world.send(world.command("c-child3", "p-child", "sms"))
    refused = await eventually(lambda: world.outcome("c-child3:1:channel_impossible"))
    assert refused.detail == "opted_out"

    # The hospital says there is no proxy any more: the patient's own number again.
    await world.contact(
        "p-child", event_id="contact:p-child:2", phone="+37060000050", language="lt"
    )
    await world.send(world.command("c-child4", "p-child", "sms"))
    await eventually(lambda: world.outcome("c-child4:1:sent"))
    assert "+37060000050" in [m.to for m in world.primary.messages]
