"""The breach protocol's record in the notifier: a report-link page names the patient,
so opening it is a read, kept by the link's fingerprint (never the token) in the audit
log; a page that names nobody (a tampered link) records nothing."""

from __future__ import annotations

import uuid

import aiohttp
import pytest

from common.audit import credential_id, seen_since
from tests.integration.notifier.world import World
from tests.support.polling import eventually

pytestmark = pytest.mark.integration


async def test_opening_a_report_link_is_a_recorded_read_of_the_first_name(world: World) -> None:
    # The audit schema is one for every run, and links are derived from the task id and
    # the secret: this run's own ids, so an earlier run's reads are not counted.
    run = uuid.uuid4().hex[:8]
    patient, case = f"p-audit-{run}", f"c-audit-{run}"
    await world.contact(patient, phone="+37060000301", given_name="Rūta")
    since = world.clock.now()
    await world.send(world.command(case, patient, "call_task"))
    [task] = await eventually(lambda: world.calltask_events(f"{case}:1") or None)
    url = next(iter(task.report_links.values()))
    token = url.rstrip("/").rsplit("/", 1)[-1]
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as page:
            assert page.status == 200 and "Rūta" in await page.text()
        async with http.get(url[:-3] + "xyz") as tampered:
            assert tampered.status == 400
    credential = credential_id("report_link", token)
    [seen] = await seen_since(world.app.pool, "audit", credential, since)
    assert seen.patient_id == patient and seen.fields == ("given_name",)
    assert seen.routes == ("GET /call-tasks/report/{token}",) and seen.reads == 1
    leaked = await world.app.pool.fetchval(
        'SELECT count(*) FROM "audit".reads WHERE credential_id LIKE $1', f"%{token}%"
    )
    assert leaked == 0
