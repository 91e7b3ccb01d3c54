"""The call task as a FHIR R4 Task, and a completed Task read back as the call's result."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fhir.resources.R4B.task import Task as R4Task
from fhir.resources.task import Task as R5Task
from pydantic import ValidationError

from schemas.events import CallTaskEvent
from services.notifier.call_reports import ReportError
from services.notifier.calltasks import (
    FHIR_OUTCOME_SYSTEM,
    FHIR_OUTPUT_SYSTEM,
    fhir_task,
    fhir_task_id,
)
from services.notifier.sink_fhir_task import task_result
from tests.unit.notifier.samples import call_task


def test_the_task_validates_as_r4_and_not_as_r5() -> None:
    resource = fhir_task(call_task())
    R4Task.model_validate(resource)  # raises when an element is not R4's
    with pytest.raises(ValidationError):
        R5Task.model_validate(resource)  # reasonCode, restriction: R4 names R5 dropped
    assert "requestedPeriod" not in resource and "reason" not in resource
    assert resource["restriction"]["period"]["end"] == "2026-03-02T18:00:00+02:00"
    assert resource["reasonCode"]["coding"][0]["code"] == "no_show"
    assert resource["for"] == {"reference": "Patient/pat-9"}
    assert resource["owner"] == {"reference": "Practitioner/dr-7"}
    assert resource["identifier"] == [{"system": "urn:followup:calltask", "value": "case-9:3"}]


@pytest.mark.parametrize(
    "task",
    [
        call_task(),
        call_task("withdraw"),
        call_task(purpose="escalation", phone_shared=True),
        call_task(practitioner_id=None, doctor_notes=None, report_url=None),
        call_task(occurred_at=datetime(2026, 3, 2, 8, 0, 0, 123456, tzinfo=UTC)),
        call_task(window_start=datetime(2026, 1, 5, 9, 0, tzinfo=ZoneInfo("Europe/London"))),
    ],
    ids=["create", "withdraw", "escalation", "bare", "utc-microseconds", "zero-offset-zone"],
)
def test_the_task_built_without_the_model_is_what_the_model_would_send(
    task: CallTaskEvent,
) -> None:
    # fhir_task builds plain JSON (the hot path does not validate): it must be exactly what
    # fhir.resources would make of it, so nothing the model normalises is left to chance.
    resource = fhir_task(task)
    dumped = R4Task.model_validate(resource).model_dump(
        mode="json", exclude_none=True, by_alias=True
    )
    assert dumped == resource


def test_the_task_carries_no_name_or_phone() -> None:
    text = str(fhir_task(call_task()))
    assert "Petraitiene" not in text and "+37060000009" not in text


def test_withdrawal_is_the_same_task_cancelled() -> None:
    created, withdrawn = fhir_task(call_task()), fhir_task(call_task("withdraw"))
    assert created["id"] == withdrawn["id"] == fhir_task_id("case-9:3")
    assert (created["status"], withdrawn["status"]) == ("requested", "cancelled")
    assert withdrawn["businessStatus"]["text"] == "withdrawn"


def test_fhir_ids_are_valid_and_distinct() -> None:
    one, two = fhir_task_id("case-9:3"), fhir_task_id("case-9:4")
    assert one != two and len(one) <= 64
    assert set(one) <= set("abcdefghijklmnopqrstuvwxyz0123456789-.")


def _completed(outcome: str, **more: Any) -> dict[str, Any]:
    resource = fhir_task(call_task())
    resource["status"] = "completed"
    resource["output"] = [
        {
            "type": {"coding": [{"system": FHIR_OUTPUT_SYSTEM, "code": "call-outcome"}]},
            "valueCodeableConcept": {"coding": [{"system": FHIR_OUTCOME_SYSTEM, "code": outcome}]},
        },
        *more.pop("outputs", []),
    ]
    resource.update(more)
    R4Task.model_validate(resource)  # what an administrator's FHIR app writes is R4 too
    return resource


def test_a_completed_task_is_the_call_report() -> None:
    found = task_result(_completed("no_answer"))
    assert found is not None
    task_id, report = found
    assert task_id == "case-9:3"
    assert (report.outcome, report.report_id) == ("no_answer", "case-9:3:fhir:no_answer")
    assert report.reported_by == "dr-7"


def test_callback_time_comes_from_its_output() -> None:
    callback = {
        "type": {"coding": [{"system": FHIR_OUTPUT_SYSTEM, "code": "callback-at"}]},
        "valueDateTime": "2026-03-03T09:30:00+02:00",
    }
    found = task_result(_completed("callback_requested", outputs=[callback]))
    assert found is not None and found[1].callback_at is not None
    assert found[1].callback_at.isoformat() == "2026-03-03T09:30:00+02:00"


def test_open_or_unrelated_tasks_are_no_result() -> None:
    assert task_result(fhir_task(call_task())) is None  # still requested
    completed = _completed("no_answer")
    completed["identifier"] = [{"system": "urn:other", "value": "x"}]
    assert task_result(completed) is None
    no_output = fhir_task(call_task())
    no_output["status"] = "completed"
    assert task_result(no_output) is None


def test_an_unknown_result_code_is_refused_by_field() -> None:
    with pytest.raises(ReportError, match=r"^outcome"):
        task_result(_completed("patient_sang"))


def test_the_subscription_is_r4_rest_hook_with_no_payload() -> None:
    from fhir.resources.R4B.subscription import Subscription as R4Subscription

    from services.notifier.sink_fhir_task import notification_token, subscription

    token = notification_token("link-secret")
    resource = subscription("https://notifier.clinic.lt/fhir/subscription", token)
    R4Subscription.model_validate(resource)
    assert resource["criteria"] == "Task?identifier=urn:followup:calltask|"
    assert resource["channel"]["type"] == "rest-hook" and "payload" not in resource["channel"]
    assert resource["channel"]["header"] == [f"Authorization: Bearer {token}"]
    assert resource["id"] == subscription("https://notifier.clinic.lt/fhir/subscription", "")["id"]
    assert len(resource["id"]) <= 64
    assert notification_token("other") != token and "link-secret" not in token


def test_a_subscription_needs_the_link_secret_and_polling() -> None:
    from common.config import ConfigError
    from services.notifier import registry
    from services.notifier.settings import NotifierSettings

    base = {"call_task_sinks": "fhir_task", "fhir_base_url": "http://f", "fhir_subscription": True}
    with pytest.raises(ConfigError, match="FOLLOWUP_LINK_SECRET"):
        registry.wanted_sinks(NotifierSettings.model_validate(base))
    with pytest.raises(ConfigError, match="FOLLOWUP_FHIR_POLL_SECONDS"):
        registry.wanted_sinks(
            NotifierSettings.model_validate({**base, "link_secret": "s", "fhir_poll_seconds": 0})
        )


async def test_a_nudge_brings_the_next_poll_forward_and_a_burst_is_one_poll() -> None:
    import asyncio

    from services.notifier.tool_results import Poller
    from tests.support.polling import eventually

    polls: list[int] = []

    async def poll_once() -> int:
        polls.append(len(polls))
        return 0

    poller = Poller("fhir_task", poll_once, seconds=3600)
    poller.start()
    try:
        await eventually(lambda: len(polls) == 1)  # the first turn, at start
        for _ in range(5):
            poller.nudge()
        await eventually(lambda: len(polls) >= 2)  # not in an hour: now
        await asyncio.sleep(Poller.NUDGE_GAP * 2)
        assert len(polls) == 2  # five notifications at once: one poll
    finally:
        await poller.stop()
