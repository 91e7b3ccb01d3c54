"""Free slots and booking requests on the hospital's FHIR R4 server (``slots.SlotSource``).

Free slots: ``GET {base}/Slot?status=free&start=ge<after>&start=lt<before>
&schedule.actor=<actor>&_include=Slot:schedule&_count=<n>`` where the actor is the stage's
practitioner (``Practitioner/<id>``) when the command names one, else its department
(``<FOLLOWUP_SLOTS_DEPARTMENT_ACTOR>/<department>``, ``HealthcareService`` by default; a
site whose schedules hang on a ``Location`` says so). A stage's service type, when given,
adds ``service-type``. The Bundle's ``match`` entries are the slots; an ``include``d
Schedule whose actors do not include the one asked for is not trusted (a server that
ignored the chained parameter must not offer another doctor's times).

Where the server declares the Appointment ``$find`` operation in its CapabilityStatement
(the Argonaut/HL7 Scheduling IG's "find appointment availability"), it is asked instead
(``FOLLOWUP_SLOTS_FHIR_SEARCH=auto``, the default, reads ``metadata`` once; ``find`` or
``slot`` choose): ``GET {base}/Appointment/$find?start=<after>&end=<before>`` with
``practitioner`` or the department as ``location``/``service-category`` and the stage's
service type as ``service-type``; the answer is a Bundle of ``proposed`` Appointments, each
naming its Slot, which is what is offered (an Appointment without a slot is not bookable
here and is left out).

Booking: the slot is read again (``GET Slot/<id>``): not ``free`` any more -> ``SlotTaken``.
Then ``PUT {base}/Appointment/<id derived from the request>`` (update-as-create: a repeated
request updates the same Appointment, as the FHIR Task sink does) with ``status``
``proposed`` (the hospital confirms) or ``booked`` (where the server lets us book), the
slot, the patient (``Patient/<patient id>``: the hospital's own id), start and end. HTTP
409/412 (someone booked it first) -> ``SlotTaken``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlencode

import aiohttp

from services.notifier.slots import (
    BookingReceipt,
    BookingRequest,
    BookingState,
    FreeSlot,
    SlotFilter,
    SlotSourceError,
    SlotTaken,
)
from services.notifier.tool_results import ToolClient

FHIR_JSON = "application/fhir+json"
SlotSearch = Literal["auto", "slot", "find"]
REQUEST_SYSTEM = "urn:followup:rebook-request"


def actor_for(wanted: SlotFilter, department_actor: str) -> str:
    if wanted.practitioner_id:
        return f"Practitioner/{wanted.practitioner_id}"
    return f"{department_actor}/{wanted.department}"


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def slot_query(wanted: SlotFilter, department_actor: str, limit: int) -> str:
    params: list[tuple[str, str]] = [
        ("status", "free"),
        ("start", f"ge{_instant(wanted.after)}"),
        ("start", f"lt{_instant(wanted.before)}"),
        ("schedule.actor", actor_for(wanted, department_actor)),
        ("_include", "Slot:schedule"),
        ("_count", str(limit)),
    ]
    if wanted.service_type:
        params.append(("service-type", wanted.service_type))
    return "Slot?" + urlencode(params)


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def slots_from_bundle(
    bundle: dict[str, Any], wanted: SlotFilter, actor: str, limit: int
) -> list[FreeSlot]:
    """The free slots a searchset Bundle holds that fit ``wanted`` (pure)."""
    entries = [e for e in bundle.get("entry") or () if isinstance(e, dict)]
    resources = [e.get("resource") or {} for e in entries]
    schedules = {
        f"Schedule/{r.get('id')}": r for r in resources if r.get("resourceType") == "Schedule"
    }
    found: list[FreeSlot] = []
    for entry, slot in zip(entries, resources, strict=True):
        if slot.get("resourceType") != "Slot" or (entry.get("search") or {}).get("mode") not in (
            None,
            "match",
        ):
            continue
        start, end = _moment(slot.get("start")), _moment(slot.get("end"))
        if slot.get("status") != "free" or start is None or end is None:
            continue
        if not wanted.after <= start < wanted.before:
            continue
        schedule_ref = (slot.get("schedule") or {}).get("reference")
        schedule = schedules.get(schedule_ref) if isinstance(schedule_ref, str) else None
        if schedule is not None:
            actors = {
                a.get("reference") for a in schedule.get("actor") or () if isinstance(a, dict)
            }
            if actor not in actors:
                continue
        found.append(
            FreeSlot(
                slot_id=str(slot.get("id")),
                start=start,
                end=end,
                schedule_id=schedule_ref.split("/", 1)[-1]
                if isinstance(schedule_ref, str)
                else None,
            )
        )
    found.sort(key=lambda s: s.start)
    return found[:limit]


def find_query(wanted: SlotFilter, department_actor: str) -> str:
    """``Appointment/$find``'s parameters (GET form) for what the stage wants."""
    params: list[tuple[str, str]] = [
        ("start", _instant(wanted.after)),
        ("end", _instant(wanted.before)),
    ]
    if wanted.practitioner_id:
        params.append(("practitioner", f"Practitioner/{wanted.practitioner_id}"))
    elif department_actor == "Location":
        params.append(("location", f"Location/{wanted.department}"))
    else:
        params.append(("service-category", wanted.department))
    if wanted.service_type:
        params.append(("service-type", wanted.service_type))
    return "Appointment/$find?" + urlencode(params)


def slots_from_find(bundle: dict[str, Any], wanted: SlotFilter, limit: int) -> list[FreeSlot]:
    """The bookable times a ``$find`` answer offers (pure): each proposed Appointment that
    names exactly one Slot and fits ``wanted``."""
    found: list[FreeSlot] = []
    for entry in bundle.get("entry") or ():
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") != "Appointment":
            continue
        if resource.get("status") != "proposed":
            continue
        slots = [s.get("reference") for s in resource.get("slot") or () if isinstance(s, dict)]
        if len(slots) != 1 or not isinstance(slots[0], str) or not slots[0].startswith("Slot/"):
            continue
        start, end = _moment(resource.get("start")), _moment(resource.get("end"))
        if start is None or end is None or not wanted.after <= start < wanted.before:
            continue
        found.append(FreeSlot(slot_id=slots[0].removeprefix("Slot/"), start=start, end=end))
    found.sort(key=lambda s: s.start)
    return found[:limit]


def declares_find(capabilities: dict[str, Any]) -> bool:
    """Whether a CapabilityStatement declares ``Appointment/$find`` (pure)."""
    for rest in capabilities.get("rest") or ():
        for resource in (rest.get("resource") or ()) if isinstance(rest, dict) else ():
            if not isinstance(resource, dict) or resource.get("type") != "Appointment":
                continue
            for operation in resource.get("operation") or ():
                if isinstance(operation, dict) and operation.get("name") in ("find", "$find"):
                    return True
    return False


def appointment_id(request: BookingRequest) -> str:
    """A FHIR logical id (``[A-Za-z0-9-.]{1,64}``) derived from the request: one per case."""
    return "followup-" + hashlib.sha256(request.request_id.encode()).hexdigest()[:32]


def appointment_resource(request: BookingRequest, state: BookingState) -> dict[str, Any]:
    participants: list[dict[str, Any]] = [
        {
            "actor": {"reference": f"Patient/{request.patient_id}"},
            "required": "required",
            "status": "accepted",
        }
    ]
    if request.practitioner_id:
        participants.append(
            {
                "actor": {"reference": f"Practitioner/{request.practitioner_id}"},
                "required": "required",
                "status": "needs-action",
            }
        )
    return {
        "resourceType": "Appointment",
        "id": appointment_id(request),
        "identifier": [{"system": REQUEST_SYSTEM, "value": request.request_id}],
        "status": state,
        "description": "Requested by the patient through the rebooking link",
        "start": _instant(request.slot.start),
        "end": _instant(request.slot.end),
        "slot": [{"reference": f"Slot/{request.slot.slot_id}"}],
        "participant": participants,
    }


class FhirSlots:
    name = "fhir"

    def __init__(
        self,
        base_url: str,
        *,
        token: str = "",
        department_actor: str = "HealthcareService",
        booking_state: BookingState = "proposed",
        search: SlotSearch = "auto",
        timeout: float = 10.0,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._search = search
        headers = {"Accept": FHIR_JSON, "Content-Type": FHIR_JSON}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = ToolClient(timeout=timeout, headers=headers)
        self._department_actor = department_actor
        self._booking_state = booking_state

    async def _get(self, path: str) -> tuple[int, dict[str, Any]]:
        try:
            async with self._client.session().get(f"{self._base}/{path}") as response:
                status = response.status
                body = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise SlotSourceError(f"fhir: {type(exc).__name__}") from None
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            raise SlotSourceError(f"fhir: HTTP {status}, not JSON") from None
        return status, data if isinstance(data, dict) else {}

    @property
    def searching(self) -> SlotSearch:
        """How free times are asked for: ``auto`` until the server's metadata was read."""
        return self._search

    async def _uses_find(self) -> bool:
        if self._search == "auto":
            status, capabilities = await self._get("metadata")
            if status != 200:
                return False  # asked again next time: the server may be starting
            self._search = "find" if declares_find(capabilities) else "slot"
        return self._search == "find"

    async def free_slots(self, wanted: SlotFilter, limit: int) -> Sequence[FreeSlot]:
        if await self._uses_find():
            status, bundle = await self._get(find_query(wanted, self._department_actor))
            if status != 200 or bundle.get("resourceType") != "Bundle":
                raise SlotSourceError(f"fhir: $find answered HTTP {status}")
            return slots_from_find(bundle, wanted, limit)
        status, bundle = await self._get(slot_query(wanted, self._department_actor, limit))
        if status != 200 or bundle.get("resourceType") != "Bundle":
            raise SlotSourceError(f"fhir: slot search answered HTTP {status}")
        return slots_from_bundle(bundle, wanted, actor_for(wanted, self._department_actor), limit)

    async def request_booking(self, request: BookingRequest) -> BookingReceipt:
        status, slot = await self._get(f"Slot/{request.slot.slot_id}")
        if status in (404, 410) or (status == 200 and slot.get("status") != "free"):
            raise SlotTaken(request.slot.slot_id)
        if status != 200:
            raise SlotSourceError(f"fhir: slot read answered HTTP {status}")
        resource = appointment_resource(request, self._booking_state)
        url = f"{self._base}/Appointment/{resource['id']}"
        try:
            async with self._client.session().put(
                url, data=json.dumps(resource).encode()
            ) as response:
                answered = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise SlotSourceError(f"fhir: {type(exc).__name__}") from None
        if answered in (409, 412):
            raise SlotTaken(request.slot.slot_id)
        if not 200 <= answered < 300:
            raise SlotSourceError(f"fhir: appointment answered HTTP {answered}")
        return BookingReceipt(reference=str(resource["id"]), state=self._booking_state)

    async def close(self) -> None:
        await self._client.close()
