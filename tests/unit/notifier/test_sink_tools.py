"""The connectors' pure parts: what each tool gets, and how its answer becomes a report."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from zoneinfo import ZoneInfo

import icalendar
import pytest

from services.notifier.call_reports import ReportError
from services.notifier.sink_caldav import caldav_todo, changed_todos, todo_result
from services.notifier.sink_chat import (
    DEFAULT_FIELDS,
    mattermost_message,
    notice_facts,
    slack_message,
    teams_message,
)
from services.notifier.sink_jira import (
    adf,
    issue_fields,
    jira_signature,
    resolution_report,
    task_label,
    task_of_label,
)
from services.notifier.sink_zendesk import solved_report, ticket_body, zendesk_signature
from tests.unit.notifier.samples import call_task

VILNIUS = ZoneInfo("Europe/Vilnius")


# --- CalDAV ----------------------------------------------------------------------------


def _completed(ical: bytes, **props: object) -> bytes:
    cal = icalendar.Calendar.from_ical(ical)
    todo = next(iter(cal.walk("VTODO")))
    todo["status"] = "COMPLETED"
    for name, value in props.items():
        todo.add(name, value)
    out: bytes = cal.to_ical()
    return out


def test_the_caldav_todo_has_no_method_no_notes_and_a_stable_uid() -> None:
    ical = caldav_todo(call_task(), "clinic.example")
    cal = icalendar.Calendar.from_ical(ical)
    assert "method" not in cal
    todo = next(iter(cal.walk("VTODO")))
    assert str(todo["uid"]) == "case-9:3@clinic.example"
    assert "Petraitiene" not in str(todo["summary"])
    assert "Suspected infection" not in str(todo["description"])
    with_notes = caldav_todo(call_task(), "clinic.example", include_notes=True)
    assert b"Suspected infection" in with_notes


@pytest.mark.parametrize("category", ["no_answer", "No answer", "no-answer"])
def test_a_category_names_the_result(category: str) -> None:
    found = todo_result(_completed(caldav_todo(call_task(), "x"), categories=[category]), VILNIUS)
    assert found is not None
    assert (found[0], found[1].outcome) == ("case-9:3", "no_answer")
    assert found[1].report_id == "case-9:3:caldav:no_answer"


def test_open_tasks_and_our_own_instructions_are_no_result() -> None:
    ical = caldav_todo(call_task(), "x")
    assert todo_result(ical, VILNIUS) is None  # NEEDS-ACTION
    assert todo_result(_completed(ical), VILNIUS) is None  # done, no result picked


def test_a_result_line_that_is_no_result_is_refused_by_field() -> None:
    cal = icalendar.Calendar.from_ical(_completed(caldav_todo(call_task(), "x")))
    todo = next(iter(cal.walk("VTODO")))
    todo["description"] = "Result: she was happy"
    with pytest.raises(ReportError, match=r"^outcome"):
        todo_result(cal.to_ical(), VILNIUS)


def test_sync_collection_answers_are_read() -> None:
    body = b"""<?xml version="1.0"?><multistatus xmlns="DAV:"
      xmlns:C="urn:ietf:params:xml:ns:caldav"><response><href>/a.ics</href><propstat><prop>
      <getetag>"1"</getetag><C:calendar-data>BEGIN:VCALENDAR\nEND:VCALENDAR</C:calendar-data>
      </prop><status>HTTP/1.1 200 OK</status></propstat></response>
      <response><href>/gone.ics</href><status>HTTP/1.1 404 Not Found</status></response>
      <sync-token>http://radicale/sync/2</sync-token></multistatus>"""
    data, token = changed_todos(body)
    assert data == ["BEGIN:VCALENDAR\nEND:VCALENDAR"] and token == "http://radicale/sync/2"


# --- Jira ------------------------------------------------------------------------------


def test_task_labels_carry_the_task_id_and_no_spaces() -> None:
    label = task_label("case-9:3")
    assert " " not in label and task_of_label(label) == "case-9:3"
    assert task_of_label("followup-result-no_answer") is None
    assert task_of_label("other") is None


def test_issue_fields_are_adf_and_leave_notes_out() -> None:
    fields = issue_fields(call_task(), "DESK", "Task", include_notes=False)
    assert fields["description"]["type"] == "doc" and fields["description"]["version"] == 1
    assert "Suspected infection" not in json.dumps(fields)
    assert fields["duedate"] == "2026-03-02"
    assert adf(["a", "", "b"])["content"][1]["content"][0]["text"] == "b"


def _resolved(labels: list[str], resolution: object = {"name": "Done"}) -> dict[str, object]:
    return {
        "webhookEvent": "jira:issue_updated",
        "user": {"accountId": "acc-1"},
        "issue": {
            "key": "DESK-1",
            "fields": {
                "labels": labels,
                "resolution": resolution,
                "resolutiondate": "2026-03-02T12:00:00.000+0200",
            },
        },
    }


def test_a_resolved_issue_with_a_result_label_is_the_report() -> None:
    found = resolution_report(_resolved([task_label("case-9:3"), "followup-result-busy"]))
    assert found is not None and found[0] == "case-9:3"
    assert (found[1].outcome, found[1].reported_by) == ("busy", "acc-1")
    assert found[1].reported_at is not None and found[1].reported_at.utcoffset() is not None


def test_unresolved_or_unlabelled_issues_are_no_report() -> None:
    assert resolution_report(_resolved([task_label("case-9:3")])) is None
    assert (
        resolution_report(_resolved([task_label("case-9:3"), "followup-result-busy"], None)) is None
    )
    assert resolution_report({"webhookEvent": "jira:issue_created"}) is None


def test_jira_signature_is_hex_hmac_of_the_body() -> None:
    expected = hmac.new(b"s", b"{}", hashlib.sha256).hexdigest()
    assert jira_signature("s", b"{}") == f"sha256={expected}"


# --- Zendesk ---------------------------------------------------------------------------


def test_the_ticket_is_a_private_task_named_by_the_task_id() -> None:
    ticket = ticket_body(call_task(), include_notes=False, group_id=7)["ticket"]
    assert ticket["external_id"] == "case-9:3" and ticket["group_id"] == 7
    assert ticket["comment"]["public"] is False and ticket["type"] == "task"
    assert "Suspected infection" not in ticket["comment"]["body"]


def test_the_solve_webhook_reads_the_result_tag() -> None:
    found = solved_report(
        {
            "external_id": "case-9:3",
            "tags": "followup followup_result_voicemail",
            "assignee_id": "5",
        }
    )
    assert found is not None and found[1].outcome == "voicemail"
    assert found[1].reported_by == "zendesk-5"
    assert solved_report({"external_id": "case-9:3", "tags": "followup"}) is None
    with pytest.raises(ReportError):
        solved_report([1])


def test_zendesk_signature_is_base64_hmac_of_timestamp_and_body() -> None:
    mac = hmac.new(b"k", b"2026-03-02T10:00:00Z{}", hashlib.sha256).digest()
    assert zendesk_signature("k", "2026-03-02T10:00:00Z", b"{}") == base64.b64encode(mac).decode()


# --- chat ------------------------------------------------------------------------------


def test_chat_notices_show_only_the_configured_fields() -> None:
    fields = tuple(DEFAULT_FIELDS.split(","))
    facts = notice_facts(call_task(), fields, include_notes=False, zone=VILNIUS)
    text = json.dumps(facts, ensure_ascii=False)
    assert "pat-9" in text and "Petraitiene" not in text and "+37060000009" not in text
    assert "Suspected" not in text
    richer = notice_facts(call_task(), (*fields, "name", "phone"), include_notes=True, zone=VILNIUS)
    assert {"Name", "Phone", "Doctor's notes"} <= {label for label, _ in richer}


def test_each_chat_payload_has_what_its_service_requires() -> None:
    task = call_task()
    facts = notice_facts(task, ("patient_id",), include_notes=False, zone=VILNIUS)
    links = ["https://desk.example/r/1"]
    slack = slack_message(task, facts, links)
    assert slack["text"] and slack["blocks"][0]["type"] == "header"  # Slack's no_text
    assert slack["blocks"][-1]["elements"][0]["url"] == links[0]
    teams = teams_message(task, facts, links)
    card = teams["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["type"] == "AdaptiveCard"
    assert mattermost_message(task, facts, links)["text"].startswith("#### Call task")


def test_connector_settings_are_checked_at_start_up() -> None:
    from common.config import ConfigError
    from services.notifier import registry
    from services.notifier.settings import NotifierSettings

    def wanted(**values: object) -> list[str]:
        return registry.wanted_sinks(NotifierSettings.model_validate(values))

    for sinks, problem in (
        ("fhir_task", "FOLLOWUP_FHIR_BASE_URL"),
        ("caldav", "FOLLOWUP_CALDAV_LIST_URL"),
        ("jira", "FOLLOWUP_JIRA_BASE_URL"),
        ("zendesk", "FOLLOWUP_ZENDESK_URL"),
        ("slack", "FOLLOWUP_SLACK_WEBHOOK_URL"),
    ):
        with pytest.raises(ConfigError, match=problem):
            wanted(call_task_sinks=sinks)
    with pytest.raises(
        ConfigError, match=r"FOLLOWUP_CHAT_FIELDS: unknown field\(s\) \['diagnosis'\]"
    ):
        wanted(
            call_task_sinks="teams", teams_webhook_url="http://t", chat_fields="reason,diagnosis"
        )
    assert wanted(call_task_sinks="mattermost", mattermost_webhook_url="http://m") == ["mattermost"]
