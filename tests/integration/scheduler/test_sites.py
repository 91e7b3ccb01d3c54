"""Many clinics, one scheduler (issue 22), as a running service on the real broker and
database: each case is planned in its site's zone, hours, quiet hours and cadence, and a
token scoped to one site is refused the other site's cases and call tasks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY

from common.clock import ManualClock
from common.kafka import KafkaPublisher
from common.sites import SiteRegistry
from schemas.events import NotificationCommand
from schemas.topics import TopicNames
from services.scheduler.app import Scheduler
from services.scheduler.cases import case_id_for
from services.scheduler.policy import CadencePolicy
from tests.support.kafka import read_events
from tests.support.polling import eventually
from tests.support.scheduler import no_show_trigger, scheduler_settings

pytestmark = pytest.mark.integration
ADMIN = "admin-token-not-secret"
VILNIUS_DESK = "vilnius-desk-token-not-secret"
LISBON_DESK = "lisbon-desk-token-not-secret"
# Monday 2 March 2026, 15:30 UTC: 17:30 in Vilnius (UTC+2), 15:30 in Lisbon (UTC+0).
MISSED = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)
SITES = """\
sites:
  vilnius:
    facilities: [VLN]
    timezone: Europe/Vilnius
    api_token_env: TEST_VILNIUS_DESK_TOKEN
  lisbon:
    facilities: [LIS]
    timezone: Europe/Lisbon
    holidays_country: PT
    api_token_env: TEST_LISBON_DESK_TOKEN
  faro:
    timezone: Europe/Lisbon
    quiet_hours: {hours: "16:00-09:00", channels: [sms, email]}
    cadence:
      defaults:
        steps:
          - {delay: PT1H, channel: sms}
          - {delay: P1D, channel: call_task}
"""


@pytest.fixture
async def scheduler(
    kafka_bootstrap: str,
    database_url: str,
    topics: TopicNames,
    pg_schema: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Scheduler]:
    monkeypatch.setenv("TEST_VILNIUS_DESK_TOKEN", VILNIUS_DESK)
    monkeypatch.setenv("TEST_LISBON_DESK_TOKEN", LISBON_DESK)
    path = tmp_path / "sites.yaml"
    path.write_text(SITES)
    settings = scheduler_settings(
        kafka_bootstrap,
        database_url,
        topics,
        pg_schema,
        api_token=ADMIN,
        poll_seconds=0.05,
        sites_path=str(path),
        sites_recheck_seconds=0.1,
    )
    policy = CadencePolicy.load(settings.policy_path)
    service = Scheduler(settings, ManualClock(MISSED + timedelta(minutes=20)), policy)
    assert isinstance(service.sites, SiteRegistry) and service.sites.current().explicit
    await service.start()
    await asyncio.wait_for(service.consumers_assigned(), 30)
    yield service
    await service.stop()


def missed_at(site: str) -> Any:
    # The tracker of a deployment configured for one zone would stamp Vilnius on every
    # trigger: the site's profile decides the zone, not the trigger.
    return no_show_trigger(
        f"pat-{site}", f"appt-{site}", missed=MISSED, site=site, timezone="Europe/Vilnius"
    )


async def test_each_case_is_planned_in_its_sites_zone_hours_and_quiet_hours(
    scheduler: Scheduler, publisher: KafkaPublisher, topics: TopicNames
) -> None:
    pool = scheduler.pool
    assert pool is not None
    for site in ("vilnius", "lisbon", "faro"):
        await publisher.publish(topics.triggers, missed_at(site))

    async def first_attempts() -> dict[str, tuple[str, str, datetime]]:
        rows = await pool.fetch(
            "SELECT c.site, c.timezone, a.channel, a.planned_at FROM cases c "
            "JOIN attempts a ON a.case_id = c.case_id AND a.attempt_number = 1"
        )
        return {r["site"]: (r["timezone"], r["channel"], r["planned_at"]) for r in rows}

    await eventually(lambda: _has_three(first_attempts()))
    found = await first_attempts()
    # Vilnius: 18:30 local is past the desk's 18:00, so the call is tomorrow at 08:00.
    assert found["vilnius"] == ("Europe/Vilnius", "call_task", datetime(2026, 3, 3, 6, tzinfo=UTC))
    # Lisbon: 16:30 local is inside the desk's hours: the call is in an hour.
    assert found["lisbon"] == ("Europe/Lisbon", "call_task", MISSED + timedelta(hours=1))
    # Faro: its cadence texts first, and 16:30 is inside its quiet hours (to 09:00).
    assert found["faro"] == ("Europe/Lisbon", "sms", datetime(2026, 3, 3, 9, tzinfo=UTC))
    # The command carries the site across the real topic, for the notifier.
    assert isinstance(scheduler.clock, ManualClock)
    scheduler.clock.set(MISSED + timedelta(hours=1))
    [command] = await read_events(
        scheduler.settings.kafka_bootstrap, topics.notifications, NotificationCommand, 1
    )
    assert (command.site, command.channel) == ("lisbon", "call_task")
    opened = REGISTRY.get_sample_value(
        "followup_scheduler_site_cases_opened_total", {"site": "faro", "reason": "no_show"}
    )
    assert opened is not None and opened >= 1
    # The clinic dashboard's own counters carry the bounded site label too.
    for name, labels in (
        ("followup_scheduler_cases_opened_total", {"reason": "no_show"}),
        ("followup_scheduler_attempts_fired_total", {"channel": "call_task"}),
    ):
        counted = REGISTRY.get_sample_value(name, {**labels, "site": "lisbon"})
        assert counted is not None and counted >= 1, name


async def _has_three(found: Any) -> bool:
    return len(await found) == 3


async def test_a_token_scoped_to_one_site_is_refused_the_other_sites_cases_and_call_tasks(
    scheduler: Scheduler, publisher: KafkaPublisher, topics: TopicNames
) -> None:
    pool = scheduler.pool
    assert pool is not None
    for site in ("vilnius", "lisbon"):
        await publisher.publish(topics.triggers, missed_at(site))
    await eventually(lambda: _count(pool.fetchval("SELECT count(*) FROM attempts"), 2))
    vilnius_case = case_id_for("no_show:appt-vilnius")
    lisbon_case = case_id_for("no_show:appt-lisbon")

    async with aiohttp.ClientSession(f"http://127.0.0.1:{scheduler.ops.port}") as http:

        async def get(path: str, token: str) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {token}"}
            async with http.get(path, headers=headers) as answer:
                return answer.status, await answer.json()

        # The worklist: each desk sees its own open cases only; the administrator all.
        status, page = await get("/cases?open=true", VILNIUS_DESK)
        assert status == 200
        assert [(c["case_id"], c["site"]) for c in page["cases"]] == [(vilnius_case, "vilnius")]
        status, page = await get("/cases?open=true", LISBON_DESK)
        assert [c["case_id"] for c in page["cases"]] == [lisbon_case]
        status, page = await get("/cases?open=true", ADMIN)
        assert sorted(c["case_id"] for c in page["cases"]) == sorted([vilnius_case, lisbon_case])

        # A case (and its call task) of the other site is answered as absent.
        status, body = await get(f"/cases/{vilnius_case}", VILNIUS_DESK)
        assert status == 200 and body["attempts"][0]["channel"] == "call_task"
        status, body = await get(f"/cases/{lisbon_case}", VILNIUS_DESK)
        assert (status, body) == (404, {"error": "no such case"})

        # Nor may it correct the other site's call result.
        correction = {"correction_id": "c-1", "outcome": "no_answer", "reported_by": "desk-1"}
        async with http.post(
            f"/cases/{lisbon_case}/attempts/1/corrections",
            json=correction,
            headers={"Authorization": f"Bearer {VILNIUS_DESK}"},
        ) as answer:
            assert answer.status == 404
        status, _ = await get("/cases", "not-a-token")
        assert status == 401


async def _count(value: Any, wanted: int) -> bool:
    return bool(await value == wanted)


async def test_a_changed_sites_file_is_taken_without_a_restart(
    scheduler: Scheduler,
    publisher: KafkaPublisher,
    topics: TopicNames,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = scheduler.pool
    assert pool is not None and scheduler.sites.path is not None
    monkeypatch.setenv("TEST_PORTO_DESK_TOKEN", "porto-desk-token-not-secret")
    # A fourth clinic joins the chain: Porto, in Lisbon's zone, calling from 17:00 only.
    scheduler.sites.path.write_text(
        SITES
        + """  porto:
    timezone: Europe/Lisbon
    business_hours: {mon: "17:00-20:00", tue: "17:00-20:00", wed: "17:00-20:00",
                     thu: "17:00-20:00", fri: "17:00-20:00", sat: null, sun: null}
    call_slots: {evening: "17:00-20:00"}
    api_token_env: TEST_PORTO_DESK_TOKEN
"""
    )
    await eventually(lambda: "porto" in scheduler.sites.current().profiles)
    await publisher.publish(topics.triggers, missed_at("porto"))

    async def planned() -> tuple[str, datetime] | None:
        row = await pool.fetchrow(
            "SELECT c.timezone, a.planned_at FROM cases c JOIN attempts a USING (case_id) "
            "WHERE c.site = 'porto'"
        )
        return None if row is None else (row["timezone"], row["planned_at"])

    # 16:30 in Porto is before its desk opens: the call is at 17:00 local (17:00 UTC).
    assert await eventually(planned) == ("Europe/Lisbon", datetime(2026, 3, 2, 17, tzinfo=UTC))
    await publisher.publish(topics.triggers, missed_at("vilnius"))
    vilnius_case = case_id_for("no_show:appt-vilnius")
    await eventually(lambda: pool.fetchval("SELECT 1 FROM cases WHERE case_id = $1", vilnius_case))

    # The new clinic's desk token counts at once: its worklist, and nobody else's case.
    porto = {"Authorization": "Bearer porto-desk-token-not-secret"}
    async with aiohttp.ClientSession(f"http://127.0.0.1:{scheduler.ops.port}") as http:
        async with http.get("/cases", headers=porto) as answer:
            assert answer.status == 200
            page = await answer.json()
        assert [c["site"] for c in page["cases"]] == ["porto"]
        async with http.get(f"/cases/{vilnius_case}", headers=porto) as answer:
            assert answer.status == 404
