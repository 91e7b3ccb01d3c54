"""Rebooking by link, the pure parts: link ids and their expiry, the page, the FHIR slot
query and Bundle reading, the Appointment request, the short cache."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from common.clock import ManualClock
from schemas.events import NotificationCommand
from services.notifier import localise, rebook_links
from services.notifier.report_links import LinkError, signature
from services.notifier.slots import (
    BookingReceipt,
    BookingRequest,
    CachedSlots,
    FreeSlot,
    SlotFilter,
    SlotTaken,
)
from services.notifier.slots_fhir import (
    appointment_id,
    appointment_resource,
    declares_find,
    find_query,
    slot_query,
    slots_from_bundle,
    slots_from_find,
)

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # Monday 10:00 in Vilnius
SECRET = "link-secret"


def _command(**changes: Any) -> NotificationCommand:
    values: dict[str, Any] = {
        "event_id": "c1:1",
        "occurred_at": NOW,
        "source": "scheduler",
        "idempotency_key": "c1:1",
        "case_id": "c1",
        "attempt_number": 1,
        "patient_id": "p1",
        "channel": "sms",
        "template": "no_show",
        "reason": "no_show",
        "department": "dental",
        "timezone": "Europe/Vilnius",
        "stage_name": "Implant",
        "stage_deadline": NOW + timedelta(days=20),
        "window_start": NOW,
        "window_end": NOW + timedelta(hours=8),
    }
    values.update(changes)
    return NotificationCommand.model_validate(values)


# --- the link ------------------------------------------------------------------------------


def test_a_link_id_is_short_derived_from_the_key_and_needs_the_secret() -> None:
    one = rebook_links.link_id(SECRET, "c1:1")
    assert one == rebook_links.link_id(SECRET, "c1:1")  # rendering twice: one link
    assert len(one) == rebook_links.ID_LENGTH and rebook_links.well_formed(one)
    assert one != rebook_links.link_id(SECRET, "c1:2")
    assert one != rebook_links.link_id("another-secret", "c1:1")
    # Another purpose's signature of the same text is not this id.
    assert signature(SECRET, b"followup call report link v1\n", "c1:1", size=9) != one
    with pytest.raises(ValueError):
        rebook_links.link_id("", "c1:1")
    url = rebook_links.link_for(SECRET, "https://fu.example", _command())
    assert url == f"https://fu.example/r/{one}"
    assert "p1" not in url and "c1" not in url  # nothing personal, not even ids


def test_a_link_holds_for_its_key_until_its_expiry() -> None:
    token = rebook_links.link_id(SECRET, "c1:1")
    expiry = NOW + timedelta(days=1)
    rebook_links.check(SECRET, token, "c1:1", expiry, NOW)
    with pytest.raises(LinkError) as wrong:
        rebook_links.check(SECRET, token, "c2:1", expiry, NOW)  # a row of another message
    assert wrong.value.why == "invalid"
    with pytest.raises(LinkError) as late:
        rebook_links.check(SECRET, token, "c1:1", expiry, expiry)
    assert late.value.why == "expired"
    assert not rebook_links.well_formed(token + ".x")
    assert not rebook_links.well_formed("<script>abcd")


def test_the_link_expires_days_after_the_window_never_past_the_deadline() -> None:
    days = timedelta(days=7)
    command = _command()
    assert rebook_links.link_expiry(command, days) == command.window_end + days
    soon = _command(stage_deadline=NOW + timedelta(days=2))
    assert rebook_links.link_expiry(soon, days) == NOW + timedelta(days=2)
    passed = _command(stage_deadline=NOW + timedelta(hours=1))  # at least the window
    assert rebook_links.link_expiry(passed, days) == passed.window_end
    assert rebook_links.link_expiry(_command(stage_deadline=None), days) == NOW + timedelta(
        days=7, hours=8
    )


# --- the page ------------------------------------------------------------------------------

SLOTS = [
    FreeSlot("s-1", NOW + timedelta(days=1), NOW + timedelta(days=1, minutes=30)),
    FreeSlot("s-2", NOW + timedelta(days=2), NOW + timedelta(days=2, minutes=30)),
]


def _facts(language: str = "en", **changes: Any) -> rebook_links.PageFacts:
    values: dict[str, Any] = {
        "language": language,
        "zone": "Europe/Vilnius",
        "token": "abcdefghijkl",
        "first_name": "Ona",
        "opening": "We missed you at your visit.",
        "stage_name": "Implant",
        "stage_deadline": NOW + timedelta(days=20),
        "clinic_phone": "+37052000000",
    }
    values.update(changes)
    return rebook_links.PageFacts(**values)


def test_the_page_offers_the_slots_in_the_patients_zone_and_a_call_back() -> None:
    callbacks = rebook_links.callback_choices(NOW, "Europe/Vilnius")
    page = rebook_links.choice_page(_facts(), SLOTS, callbacks)
    assert "<script" not in page  # plain forms: no JavaScript needed
    assert '<p id="greeting">Hello, Ona.</p>' in page
    assert '<p id="why">We missed you at your visit.</p>' in page
    assert "The next step of your treatment: Implant. It should happen by March 22, 2026." in page
    assert re.findall(r'name="slot" value="([^"]+)"', page) == ["s-1", "s-2"]
    assert "March 3, 2026" in page and "10:00" in page  # 08:00 UTC in Vilnius
    assert 'name="token" value="abcdefghijkl"' in page
    assert page.count('name="call_at"') == 1 + len(callbacks)


def test_the_page_in_lithuanian_and_its_text_escaped() -> None:
    page = rebook_links.choice_page(
        _facts("lt", stage_name="<b>Implant</b>", first_name=None), SLOTS, []
    )
    assert '<html lang="lt">' in page and "Pasirinkite naują laiką" in page
    assert "Sveiki." in page
    assert "&lt;b&gt;Implant&lt;/b&gt;" in page and "<b>Implant" not in page
    assert "2026 m. kovo 3 d. 10:00" in page


def test_without_slots_the_page_says_why_and_still_offers_the_call_back() -> None:
    none = rebook_links.choice_page(_facts(), [], [])
    assert "no free time we can offer here before March 22, 2026" in none
    assert 'name="slot"' not in none and 'id="callback"' in none
    down = rebook_links.choice_page(_facts(), None, [])
    assert "We cannot show free times right now." in down and 'id="callback"' in down


def test_call_back_choices_are_weekday_mornings_and_afternoons() -> None:
    friday = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)
    choices = rebook_links.callback_choices(friday, "Europe/Vilnius", days=2)
    assert [(c.weekday(), c.hour) for c in choices] == [(0, 10), (0, 15), (1, 10), (1, 15)]
    assert all(c.tzinfo is not None for c in choices)


def test_the_patient_words_are_complete_in_every_language() -> None:
    keys = set(localise.PATIENT_WORDS["en"])
    for language in localise.LANGUAGES:
        assert set(localise.PATIENT_WORDS[language]) == keys, language
    assert rebook_links.message_page("bg", "used").count('data-key="used"') == 1


# --- FHIR ------------------------------------------------------------------------------------

WANTED = SlotFilter("dental", NOW, NOW + timedelta(days=10))


def test_the_slot_query_asks_for_free_slots_of_the_stage_before_its_deadline() -> None:
    query = slot_query(WANTED, "HealthcareService", 6)
    assert query.startswith("Slot?status=free&start=ge2026-03-02T08%3A00%3A00Z")
    assert "start=lt2026-03-12T08%3A00%3A00Z" in query
    assert "schedule.actor=HealthcareService%2Fdental" in query
    assert "_include=Slot%3Aschedule" in query and "_count=6" in query
    by_doctor = SlotFilter("dental", NOW, NOW + timedelta(days=1), practitioner_id="dr-7")
    assert "schedule.actor=Practitioner%2Fdr-7" in slot_query(by_doctor, "Location", 6)
    command = _command(stage_deadline=NOW + timedelta(days=3))
    wanted = SlotFilter.for_command(command, NOW, timedelta(hours=2), timedelta(days=28))
    assert (wanted.after, wanted.before) == (NOW + timedelta(hours=2), NOW + timedelta(days=3))


def _slot(slot_id: str, start: datetime, status: str = "free", schedule: str = "dental") -> Any:
    return {
        "resource": {
            "resourceType": "Slot",
            "id": slot_id,
            "schedule": {"reference": f"Schedule/{schedule}"},
            "status": status,
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=30)).isoformat(),
        },
        "search": {"mode": "match"},
    }


def test_the_bundle_gives_free_slots_of_the_asked_schedule_only_earliest_first() -> None:
    day = timedelta(days=1)
    bundle = {
        "resourceType": "Bundle",
        "entry": [
            _slot("later", NOW + 2 * day),
            _slot("busy", NOW + day, status="busy"),
            _slot("first", NOW + day),
            _slot("after-deadline", NOW + 11 * day),
            _slot("other-doctor", NOW + day, schedule="eye"),  # a server ignoring the chain
            {"resource": {"resourceType": "Schedule", "id": "dental",
                          "actor": [{"reference": "HealthcareService/dental"}]},
             "search": {"mode": "include"}},
            {"resource": {"resourceType": "Schedule", "id": "eye",
                          "actor": [{"reference": "HealthcareService/eye"}]},
             "search": {"mode": "include"}},
        ],
    }  # fmt: skip
    found = slots_from_bundle(bundle, WANTED, "HealthcareService/dental", 5)
    assert [s.slot_id for s in found] == ["first", "later"]
    assert found[0].schedule_id == "dental" and found[0].start == NOW + day
    assert [
        s.slot_id for s in slots_from_bundle(bundle, WANTED, "HealthcareService/dental", 1)
    ] == ["first"]


def test_the_appointment_request_names_slot_patient_and_a_stable_id() -> None:
    request = BookingRequest("rebook:c1", "c1", "p1", SLOTS[0], "dental", practitioner_id="dr-7")
    resource = appointment_resource(request, "proposed")
    assert resource["id"] == appointment_id(request)
    assert re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", resource["id"])  # a FHIR logical id
    assert resource["status"] == "proposed"
    assert resource["slot"] == [{"reference": "Slot/s-1"}]
    actors = [p["actor"]["reference"] for p in resource["participant"]]
    assert actors == ["Patient/p1", "Practitioner/dr-7"]
    assert resource["start"] == "2026-03-03T08:00:00Z"
    assert resource["identifier"] == [
        {"system": "urn:followup:rebook-request", "value": "rebook:c1"}
    ]


# --- the cache -------------------------------------------------------------------------------


class CountingSource:
    name = "counting"

    def __init__(self) -> None:
        self.asked = 0
        self.taken = False

    async def free_slots(self, wanted: SlotFilter, limit: int) -> Sequence[FreeSlot]:
        self.asked += 1
        return SLOTS[:limit]

    async def request_booking(self, request: BookingRequest) -> BookingReceipt:
        if self.taken:
            raise SlotTaken(request.slot.slot_id)
        return BookingReceipt("a-1", "proposed")

    async def close(self) -> None:
        return None


async def test_the_cache_answers_for_a_few_minutes_and_forgets_on_a_conflict() -> None:
    clock = ManualClock(NOW)
    source = CountingSource()
    cached = CachedSlots(source, clock, timedelta(minutes=2))
    assert await cached.free_slots(WANTED, 6) == SLOTS
    clock.advance(timedelta(seconds=30))
    moved = SlotFilter("dental", NOW + timedelta(seconds=30), WANTED.before)
    await cached.free_slots(moved, 6)  # the same minute: the same question
    assert source.asked == 1
    clock.advance(timedelta(minutes=2))
    await cached.free_slots(WANTED, 6)
    assert source.asked == 2
    source.taken = True
    with pytest.raises(SlotTaken):
        await cached.request_booking(BookingRequest("r", "c1", "p1", SLOTS[0], "dental"))
    await cached.free_slots(WANTED, 6)  # forgotten: asked again at once
    assert source.asked == 3


def test_a_used_link_says_what_was_asked_and_how_it_stands() -> None:
    waiting = rebook_links.used_page("en", "booking", "requested", "March 3, 2026, 10:00")
    assert 'data-key="used"' in waiting and 'id="status" data-key="requested"' in waiting
    assert "We asked the clinic to book March 3, 2026, 10:00 for you." in waiting
    booked = rebook_links.used_page("lt", "booking", "confirmed", "kovo 3 d. 10:00")
    assert 'data-key="confirmed"' in booked and "užregistruotas" in booked
    called = rebook_links.used_page("ru", "callback", "requested", None)
    assert 'data-key="callback"' in called and "Клиника вам позвонит." in called


def test_a_message_naming_no_one_gets_the_general_url_not_the_patients_link() -> None:
    from services.notifier.channels import ClinicVoice
    from services.notifier.contacts import Contact

    voice = ClinicVoice(
        "Clinic", "+37052000000", "https://clinic.example/book", "en",
        link_for=lambda command: f"https://fu.example/r/{command.case_id}",
    )  # fmt: skip
    contact = Contact(
        patient_id="p1", given_name="Ona", family_name=None, phone_raw=None, phone=None,
        email=None, language="en", timezone="Europe/Vilnius", consent={},
    )  # fmt: skip
    assert voice.context(_command(), contact).rebook_url == "https://fu.example/r/c1"
    # A shared number or a proxy: whoever reads it may not be the patient.
    assert voice.context(_command(), contact, redacted=True).rebook_url == (
        "https://clinic.example/book"
    )


# --- Appointment/$find (the Argonaut / HL7 Scheduling IG's availability search) ----------


def test_find_is_used_only_where_the_capability_statement_declares_it() -> None:
    # Shaped as the Argonaut Scheduling IG's server CapabilityStatement: an operation on
    # the Appointment resource named "find" with its OperationDefinition.
    declared = {
        "resourceType": "CapabilityStatement",
        "rest": [{"mode": "server", "resource": [
            {"type": "Slot", "interaction": [{"code": "search-type"}]},
            {"type": "Appointment", "operation": [{
                "name": "find",
                "definition": "http://fhir.org/guides/argonaut-scheduling/OperationDefinition/appointment-find",
            }]},
        ]}],
    }  # fmt: skip
    assert declares_find(declared)
    slot_only = {"resourceType": "CapabilityStatement", "rest": [{"mode": "server", "resource": [
        {"type": "Appointment", "interaction": [{"code": "update"}]},
        {"type": "Slot", "operation": [{"name": "find"}]},  # not Appointment's
    ]}]}  # fmt: skip
    assert not declares_find(slot_only)
    assert not declares_find({})


def test_the_find_query_names_the_stage_and_its_deadline() -> None:
    query = find_query(WANTED, "HealthcareService")
    assert query.startswith("Appointment/$find?start=2026-03-02T08%3A00%3A00Z")
    assert "end=2026-03-12T08%3A00%3A00Z" in query and "service-category=dental" in query
    assert "location=Location%2Fdental" in find_query(WANTED, "Location")
    by_doctor = SlotFilter("dental", NOW, NOW + timedelta(days=1), practitioner_id="dr-7")
    assert "practitioner=Practitioner%2Fdr-7" in find_query(by_doctor, "Location")
    assert "location=" not in find_query(by_doctor, "Location")


def test_find_offers_proposed_appointments_with_one_slot_earliest_first() -> None:
    day = timedelta(days=1)

    def proposed(slot: str | None, start: datetime, status: str = "proposed") -> dict[str, Any]:
        resource: dict[str, Any] = {
            "resourceType": "Appointment",
            "status": status,
            "start": start.isoformat().replace("+00:00", "Z"),
            "end": (start + timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
        }
        if slot is not None:
            resource["slot"] = [{"reference": f"Slot/{slot}"}]
        return {"resource": resource}

    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            proposed("later", NOW + 2 * day),
            proposed("first", NOW + day),
            proposed(None, NOW + day),  # no slot: nothing to book here
            proposed("booked", NOW + day, status="booked"),
            proposed("after-deadline", NOW + 11 * day),
            {"resource": {"resourceType": "OperationOutcome", "issue": []}},
        ],
    }
    offered = slots_from_find(bundle, WANTED, 6)
    assert [s.slot_id for s in offered] == ["first", "later"]
    assert offered[0].end - offered[0].start == timedelta(minutes=30)
    assert [s.slot_id for s in slots_from_find(bundle, WANTED, 1)] == ["first"]
