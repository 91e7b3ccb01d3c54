"""Rebooking by link (issue 20) in the demo: the hospital's FHIR R4 server with its free slots,
the simulated patients who use the link in their texts, the hospital that books what they
ask for, what the report counts, and the checks.

- The hospital: a real FHIR R4 server (HAPI FHIR's libraries, ``standins.fhir_r4_server``),
  started first, beside the services, and seeded (``STARTUP_LEAD``: before the clinic opens,
  unless the machine is too busy: the clinic does not wait, the phones do) with one Schedule
  per doctor (actors: the doctor and the clinic's departments) and free Slots on the
  clinic's open days, from the first day of the run to two weeks after it. The notifier asks it for
  free slots (``FOLLOWUP_SLOTS_SOURCE=fhir``) and requests bookings there (a ``proposed``
  Appointment). The hospital's own scheduler works its requests every ``HOSPITAL_ROUND``:
  it books the slot (Slot ``busy``, Appointment ``booked``) and sends the booking on the
  patient's usual ingest path (HL7, FHIR or JSON): only then does the case close recovered.
  A slot gone meanwhile: the hospital cancels the request (the cadence goes on).
- The patients (``LinkPatients``): a few of those who recover get a ``link_use``
  (``rebooking_population``); what they do comes from the behaviour model
  (``demo.simulator.patients.decide_link`` / ``decide_call``): the phone opens the link of
  their first text (HTTP GET, as a phone would), then picks the first free time (the form's
  POST), or asks to be called back, or does nothing more. One picks a time the front desk
  gives to somebody else while the page is open (409: the next slots, and they pick the
  first of those); one leaves the page open and picks its latest time when the desk's call
  task comes (the task is withdrawn once the hospital books, if its window is still open).
- The report counts links sent, pages opened, slots offered, bookings requested, those the
  hospital booked, and recoveries by link (self-service) and with a call; the checks judge
  by the services' own stamps (the notifier's outcome, the hospital's booking event, the
  scheduler's close).
"""

from __future__ import annotations

import asyncio
import atexit
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from html import unescape
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from common.clock import Clock
from demo.observe import Metrics
from demo.report import Finding, Observed, case_state, unique_by_id
from demo.scenario import CLINIC_ZONE, DEPARTMENTS, Appointment, LinkUse, Patient, Scenario
from demo.simulator.clinic import Simulation, task_identity
from demo.simulator.patients import LinkChoice
from schemas.base import Channel
from services.scheduler.policy import CadencePolicy
from standins.fhir_r4_server import FhirR4Server

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
REQUEST_SYSTEM = "urn:followup:rebook-request"  # services.notifier.slots_fhir's identifier
LINK = re.compile(r"https?://[^\s/]+/r/[A-Za-z0-9_-]{12}")
# The doctors of the scenario (``demo.scenario.build``: dr-1 .. dr-4) and their day.
DOCTORS = ("dr-1", "dr-2", "dr-3", "dr-4")
SLOT_TIMES = (time(9, 0), time(11, 0), time(14, 30))
SLOT_MINUTES = 30
# Slots as far as a case of the run can rebook (its follow-up ends within the run; the page
# offers the earliest few): a small schedule seeds in seconds and searches fast.
SLOTS_AFTER_THE_RUN = timedelta(days=14)
# The hospital works a request when it arrives (its interface engine passes it on), and
# looks for any it missed this often.
HOSPITAL_ROUND = timedelta(hours=2)
# Real seconds the clinic opens later when the hospital's server starts too (a JVM, then
# the seeding), so the schedule is there before the first patient is registered.
STARTUP_LEAD = 5.0
# The call results of the desk (demo.simulator.patients.CallResult): a task with one of
# these is no longer out.
CALL_RESULTS = frozenset(
    {
        "answered_rebooked",
        "answered_declined",
        "callback_requested",
        "no_answer",
        "busy",
        "voicemail",
        "wrong_number",
        "clinical_concern",
    }
)
# In this order, to the patients who recover (one each): the first uses matter most.
LINK_USES: tuple[LinkUse, ...] = ("picks", "picks_while_called", "calls_back", "picks_taken")
PHONE_BROWSER = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0 Mobile Safari/537.36"
)


# --- the population ------------------------------------------------------------------------


def rebooking_population(scenario: Scenario) -> Scenario:
    """Link users among the patients who recover and can be reached by their own text (no
    shared phone: a redacted text carries no personal link; a mobile line; none of the other
    roles). They answer the desk's second call, so their first text (the cadence's second
    step) comes before anyone reaches them; one of each ``LINK_USES``, then "opens"."""
    eligible = [
        p
        for p in scenario.patients
        if p.behaviour == "recovers"
        and not p.shares_phone
        and p.phone_line == "mobile"
        and not p.books_first
        and not p.reports_concern
        and p.birth_date is None
    ]
    index = {p.patient_id: i for i, p in enumerate(scenario.patients)}
    patients = list(scenario.patients)
    for n, p in enumerate(eligible):
        use: LinkUse = LINK_USES[n] if n < len(LINK_USES) else "opens"
        patients[index[p.patient_id]] = replace(p, link_use=use, answers_on=2)
    return replace(scenario, patients=patients)


# --- the hospital's schedule (pure) ----------------------------------------------------------


def schedule_id(doctor: str) -> str:
    return f"sched-{doctor}"


def slot_id(doctor: str, start: datetime) -> str:
    return f"slot-{doctor}-{start.astimezone(ZoneInfo(CLINIC_ZONE)):%Y%m%d%H%M}"


def open_days(first: date, last: date, closed: Callable[[date], bool]) -> list[date]:
    days = (first + timedelta(days=n) for n in range((last - first).days + 1))
    return [d for d in days if d.weekday() < 5 and not closed(d)]


def schedule_resources(
    scenario: Scenario, closed: Callable[[date], bool] = lambda _d: False
) -> list[dict[str, Any]]:
    """The hospital's Schedules (one per doctor, who sees patients of every department) and
    their free Slots on the clinic's open days, from the run's first day to
    ``SLOTS_AFTER_THE_RUN`` after its end."""
    zone = ZoneInfo(CLINIC_ZONE)
    resources: list[dict[str, Any]] = []
    first = scenario.start.astimezone(zone).date()
    last = (scenario.end + SLOTS_AFTER_THE_RUN).astimezone(zone).date()
    for doctor in DOCTORS:
        actors = [{"reference": f"Practitioner/{doctor}"}] + [
            {"reference": f"HealthcareService/{d}"} for d in DEPARTMENTS
        ]
        resources.append(
            {
                "resourceType": "Schedule",
                "id": schedule_id(doctor),
                "active": True,
                "actor": actors,
            }
        )
    for day in open_days(first, last, closed):
        for doctor in DOCTORS:
            for at in SLOT_TIMES:
                start = datetime.combine(day, at, tzinfo=zone)
                resources.append(
                    {
                        "resourceType": "Slot",
                        "id": slot_id(doctor, start),
                        "schedule": {"reference": f"Schedule/{schedule_id(doctor)}"},
                        "status": "free",
                        "start": start.isoformat(),
                        "end": (start + timedelta(minutes=SLOT_MINUTES)).isoformat(),
                    }
                )
    return resources


def doctor_of_slot(slot_ref: str) -> str | None:
    """``Slot/slot-dr-2-202603041030`` -> ``dr-2``."""
    found = re.match(r"^(?:Slot/)?slot-(dr-\d+)-\d{12}$", slot_ref)
    return found.group(1) if found else None


def closed_days(policy: CadencePolicy) -> Callable[[date], bool]:
    """The days the clinic is closed (a public holiday or its own closure): no slots."""
    rules = [policy.rules_for(d, "no_show") for d in DEPARTMENTS]
    return lambda day: any(r.closed_on(day) for r in rules)


def deployment_env(fhir_url: str) -> dict[str, str]:
    """The notifier asks the hospital's FHIR server for slots and requests bookings there."""
    return {
        "FOLLOWUP_SLOTS_SOURCE": "fhir",
        "FOLLOWUP_SLOTS_FHIR_URL": fhir_url,
        "FOLLOWUP_SLOTS_DEPARTMENT_ACTOR": "HealthcareService",
        "FOLLOWUP_SLOTS_BOOKING_STATUS": "proposed",
    }


# --- reading the page (pure) -------------------------------------------------------------------

_TOKEN = re.compile(r'<input type="hidden" name="token" value="([^"]*)">')
_SLOT = re.compile(r'<input type="radio" name="slot" value="([^"]*)"')
_CALL_AT = re.compile(r'<input type="radio" name="call_at" value="([^"]*)"')
_KEY = re.compile(r'id="(?:message|status|notice)"(?: data-key="([^"]*)")?')
_NOTICE = re.compile(r'<p id="notice">')


@dataclass(frozen=True)
class PageSeen:
    """One page a patient's phone got: what the privacy check reads."""

    patient_id: str
    step: str  # open, book, rebook, callback
    status: int
    html: str

    @property
    def token(self) -> str | None:
        found = _TOKEN.search(self.html)
        return unescape(found.group(1)) if found else None

    @property
    def slots(self) -> list[str]:
        return [unescape(s) for s in _SLOT.findall(self.html)]

    @property
    def call_times(self) -> list[str]:
        return [unescape(s) for s in _CALL_AT.findall(self.html)]

    @property
    def keys(self) -> list[str]:
        return [k for k in _KEY.findall(self.html) if k]


def personal_data_on(page: PageSeen, patient: Patient, others: list[Patient]) -> list[str]:
    """What a page shows that it must not: beyond the first name and the visit, nothing of
    the patient (family name, phone, email, birth date, the doctor's notes) nor anything of
    another patient (their phone or email)."""
    text = unescape(page.html)
    found = []
    forbidden = {
        "family name": patient.family_name,
        "phone": patient.phone,
        "email": patient.email,
        **({"birth date": patient.birth_date.isoformat()} if patient.birth_date else {}),
        **{
            f"notes of {s.name}": s.notes
            for s in patient.stages
            if s.notes  # clinical free text
        },
    }
    for other in others:
        if other.patient_id != patient.patient_id and other.phone != patient.phone:
            forbidden[f"phone of {other.patient_id}"] = other.phone
            forbidden[f"email of {other.patient_id}"] = other.email
    for what, value in forbidden.items():
        if value and value in text:
            found.append(f"{patient.patient_id}'s {page.step} page shows the {what}")
    return found


# --- the hospital ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HospitalBooking:
    """A request the hospital booked: its Appointment id (also the booking's id on the
    patient's ingest path) and when the hospital booked it (virtual)."""

    case_id: str
    patient_id: str
    appointment_id: str
    start: datetime
    booked_at: datetime


@dataclass
class Hospital:
    """The hospital's FHIR server and its scheduler working the booking requests."""

    scenario: Scenario
    clock: Clock
    log_dir: Path
    closed: Callable[[date], bool] = lambda _d: False
    server: FhirR4Server = field(init=False)
    bookings: dict[str, HospitalBooking] = field(default_factory=dict)  # by case
    refused: list[str] = field(default_factory=list)  # request ids: slot gone meanwhile
    given_away: list[str] = field(default_factory=list)  # slots the desk gave to others
    errors: list[str] = field(default_factory=list)
    slots_seeded: int = 0
    seeded_at: datetime | None = None  # virtual: when the schedule was there
    _session: aiohttp.ClientSession | None = None
    _starting: asyncio.Task[None] | None = None
    _simulation: Simulation | None = None
    _rounds: asyncio.Task[None] | None = None
    _seen: set[str] = field(default_factory=set)
    _working: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.server = FhirR4Server(log_dir=self.log_dir)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def begin(self) -> None:
        """Start the server beside everything else; the clinic does not wait for it (a JVM
        on a busy machine may take longer than the services), the patients' phones and the
        hospital's rounds do (``started``)."""
        self._starting = asyncio.create_task(self.start())

    async def started(self) -> None:
        """Once the server answers and is seeded (raises what its start raised)."""
        assert self._starting is not None, "begin() first"
        await asyncio.shield(self._starting)

    def progress(self) -> str:
        if self.seeded_at is None:
            return f"FHIR R4 server {self.base_url}: starting"
        return f"FHIR R4 server {self.base_url}: {self.slots_seeded} free slots"

    async def start(self) -> None:
        """Build (once per machine) and start the server, then seed it."""
        atexit.register(self.server.stop)  # never a JVM left behind by a run that failed
        await asyncio.to_thread(self.server.start)
        self._session = aiohttp.ClientSession(headers=FHIR_JSON)
        resources = schedule_resources(self.scenario, self.closed)
        limit = asyncio.Semaphore(8)

        async def put(resource: dict[str, Any]) -> None:
            async with limit:
                await self._put(resource)

        # Schedules first: a Slot's search reads its Schedule's actors.
        await asyncio.gather(*(put(r) for r in resources if r["resourceType"] == "Schedule"))
        await asyncio.gather(*(put(r) for r in resources if r["resourceType"] == "Slot"))
        self.slots_seeded = sum(1 for r in resources if r["resourceType"] == "Slot")
        # The JVM compiles a search on its first use: not while the first patient waits.
        await self._get(
            f"Slot?status=free&schedule.actor=Practitioner/{DOCTORS[0]}&_include=Slot:schedule"
        )
        await self._requests()
        self.seeded_at = self.clock.now()

    def open(self, simulation: Simulation) -> None:
        """The hospital's scheduler starts working requests for this clinic."""
        self._simulation = simulation
        self._rounds = asyncio.create_task(self._work())

    async def stop(self) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
        if self._rounds is not None:
            self._rounds.cancel()
            await asyncio.gather(self._rounds, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        await asyncio.to_thread(self.server.stop)

    async def _put(self, resource: dict[str, Any]) -> None:
        assert self._session is not None
        url = f"{self.base_url}/{resource['resourceType']}/{resource['id']}"
        async with self._session.put(url, json=resource) as reply:
            if reply.status not in (200, 201):
                raise RuntimeError(f"FHIR PUT {resource['resourceType']}: HTTP {reply.status}")

    async def _get(self, path: str) -> dict[str, Any]:
        assert self._session is not None
        async with self._session.get(f"{self.base_url}/{path}") as reply:
            body = await reply.json(content_type=None)
            return body if isinstance(body, dict) else {}

    async def give_away(self, slot: str) -> None:
        """The front desk books ``slot`` for a patient at the counter (a conflict for whoever
        has it on their page)."""
        resource = await self._get(f"Slot/{slot}")
        if resource.get("resourceType") == "Slot":
            resource["status"] = "busy"
            await self._put(resource)
            self.given_away.append(slot)

    async def _requests(self) -> list[dict[str, Any]]:
        """followup's booking requests at the hospital (Appointments with its identifier)."""
        bundle = await self._get(
            f"Appointment?_lastUpdated=ge2000-01-01T00:00:00Z&identifier={REQUEST_SYSTEM}|"
        )
        return [e.get("resource") or {} for e in bundle.get("entry") or ()]

    async def work_now(self) -> None:
        """Book the requests not worked yet (read from the FHIR server, never from followup)."""
        if self._simulation is None:
            return
        async with self._working:
            try:
                for resource in await self._requests():
                    key = f"{resource.get('id')}@{(resource.get('meta') or {}).get('versionId')}"
                    if resource.get("status") == "proposed" and key not in self._seen:
                        self._seen.add(key)
                        await self._book(resource, self._simulation)
            except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
                self.errors.append(f"hospital round: {type(exc).__name__}")

    async def _work(self) -> None:
        await self.started()
        while True:
            await self.clock.sleep(HOSPITAL_ROUND.total_seconds())
            await self.work_now()

    async def _book(self, request: dict[str, Any], simulation: Simulation) -> None:
        request_id = next(
            (
                i.get("value")
                for i in request.get("identifier") or ()
                if i.get("system") == REQUEST_SYSTEM
            ),
            None,
        )
        patient_ref = next(
            (
                p["actor"]["reference"]
                for p in request.get("participant") or ()
                if str((p.get("actor") or {}).get("reference", "")).startswith("Patient/")
            ),
            "",
        )
        patient = simulation.by_id.get(patient_ref.removeprefix("Patient/"))
        slot_ref = str(((request.get("slot") or [{}])[0]).get("reference", ""))
        doctor = doctor_of_slot(slot_ref)
        if patient is None or doctor is None or not isinstance(request_id, str):
            self.errors.append(f"request {request.get('id')}: not the hospital's patient or slot")
            return
        slot = await self._get(slot_ref)
        if slot.get("status") != "free":
            request["status"] = "cancelled"  # the slot went meanwhile: the hospital declines
            await self._put(request)
            self.refused.append(request_id)
            return
        slot["status"] = "busy"
        request["status"] = "booked"
        for participant in request.get("participant") or ():
            participant["status"] = "accepted"
        await asyncio.gather(self._put(slot), self._put(request))
        start = datetime.fromisoformat(str(request["start"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(request["end"]).replace("Z", "+00:00"))
        visit = Appointment(
            str(request["id"]),
            patient.patient_id,
            start.astimezone(ZoneInfo(CLINIC_ZONE)),
            int((end - start).total_seconds() // 60),
            patient.stages[1].stage_id,
            patient.department,
            doctor,
        )
        self.bookings[request_id.removeprefix("rebook:")] = HospitalBooking(
            request_id.removeprefix("rebook:"),
            patient.patient_id,
            visit.appointment_id,
            visit.start,
            self.clock.now(),
        )
        simulation.book_visit(patient, visit)  # the booking on the patient's ingest path


# --- the patients' phones ----------------------------------------------------------------------


@dataclass
class LinkPatients:
    """The phones of the patients who use the link (``Simulation.links``)."""

    hospital: Hospital
    session: aiohttp.ClientSession
    latest: dict[str, str] = field(default_factory=dict)  # patient -> latest link
    open_pages: dict[str, PageSeen] = field(default_factory=dict)  # link -> the page shown
    pages: list[PageSeen] = field(default_factory=list)
    did: Counter[str] = field(default_factory=Counter)
    by_patient: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def received(self, patient: Patient, channel: Channel, text: str) -> None:
        found = LINK.search(text)
        if found:
            self.latest[patient.patient_id] = found.group(0)

    def _note(self, patient: Patient, what: str) -> None:
        self.did[what] += 1
        self.by_patient.setdefault(patient.patient_id, []).append(what)

    async def _fetch(
        self, patient: Patient, step: str, url: str, form: dict[str, str] | None = None
    ) -> PageSeen:
        headers = {"User-Agent": PHONE_BROWSER, "Accept-Language": patient.language}
        if form is None:
            request = self.session.get(url, headers=headers)
        else:
            origin = url.split("/r", 1)[0]
            request = self.session.post(url, data=form, headers={**headers, "Origin": origin})
        async with request as reply:
            page = PageSeen(patient.patient_id, step, reply.status, await reply.text())
        self.pages.append(page)
        return page

    async def use(self, patient: Patient, choice: LinkChoice) -> None:
        try:
            await self.hospital.started()  # links are opened once the hospital has slots
            await self._use(patient, choice)
        except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
            self.problems.append(f"{patient.patient_id}: {type(exc).__name__}")

    async def _use(self, patient: Patient, choice: LinkChoice) -> None:
        link = self.latest.get(patient.patient_id)
        if link is None:
            self.problems.append(f"{patient.patient_id}: no link in their messages")
            return
        page = self.open_pages.get(link) if choice == "pick_later" else None
        if page is None:
            page = await self._fetch(patient, "open", link)
            if page.status != 200 or page.token is None:
                self.problems.append(f"{patient.patient_id}: the link answered {page.status}")
                return
            self.open_pages[link] = page
            self._note(patient, "opened")
        assert page.token is not None
        form_url = link.rsplit("/", 1)[0]  # <base>/r
        if choice == "open":
            return
        if choice == "callback":
            # The first morning offered (the patient's zone), else "as soon as possible".
            times = [t for t in page.call_times if t != "soon"]
            when = times[0] if times else "soon"
            answer = await self._fetch(
                patient,
                "callback",
                form_url,
                {"token": page.token, "action": "callback", "call_at": when},
            )
            self._note(patient, "callback" if answer.status == 200 else f"refused_{answer.status}")
            return
        if not page.slots:
            self._note(patient, "no_slots")
            return
        # The page left open since the text: its latest time is still ahead.
        wanted = page.slots[-1] if choice == "pick_later" else page.slots[0]
        if choice == "pick_taken":
            await self.hospital.give_away(wanted)
        answer = await self._fetch(
            patient, "book", form_url, {"token": page.token, "action": "book", "slot": wanted}
        )
        if answer.status == 409 and answer.slots:  # taken meanwhile: the next ones offered
            self._note(patient, "taken")
            answer = await self._fetch(
                patient,
                "rebook",
                form_url,
                {"token": page.token, "action": "book", "slot": answer.slots[0]},
            )
        requested = answer.status == 200 and "requested" in answer.keys
        self._note(patient, "requested" if requested else f"refused_{answer.status}")
        if requested:
            await self.hospital.work_now()


# --- what the report counts ------------------------------------------------------------------


def _link_cases(observed: Observed) -> dict[str, str]:
    """case id -> patient id of the cases whose patient asked the hospital to book by link
    (the notifier's booking_requested outcome)."""
    return {
        o.case_id: o.patient_id
        for o in unique_by_id(observed.outcomes)
        if o.outcome == "booking_requested" and o.case_id
    }


def _moment(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def recoveries(observed: Observed) -> dict[str, int]:
    """Recovered cases: by link (the hospital's booking answered a link request; no call),
    after a call answered and rebooked, and otherwise (the patient phoned the clinic)."""
    asked = _link_cases(observed)
    called = {
        o.case_id for o in unique_by_id(observed.outcomes) if o.outcome == "answered_rebooked"
    }
    out = Counter({"by_link": 0, "with_a_call": 0, "patient_phoned": 0})
    for case in observed.cases or []:
        if case_state(case) != "recovered":
            continue
        cid = case.get("case_id")
        if cid in called:
            out["with_a_call"] += 1
        elif cid in asked:
            out["by_link"] += 1
        else:
            out["patient_phoned"] += 1
    return dict(out)


def counts(observed: Observed, hospital: Hospital, phones: LinkPatients) -> dict[str, Any]:
    notifier = observed.metrics.get("notifier", Metrics())
    in_messages = sum(1 for m in observed.sms if LINK.search(m.body)) + sum(
        1 for m in observed.mail if LINK.search(m.text)
    )
    requests = notifier.samples.get("followup_notifier_rebook_requests_total", [])

    def asked(kind: str, result: str) -> int:
        return int(sum(v for labels, v in requests if labels == {"kind": kind, "result": result}))

    recovered = recoveries(observed)
    total = sum(recovered.values())
    outcomes = unique_by_id(observed.outcomes)
    return {
        "slots_seeded": hospital.slots_seeded,
        "seeded_at": hospital.seeded_at.isoformat() if hospital.seeded_at else None,
        "seeded_before_the_clinic_opened": hospital.seeded_at is not None
        and hospital.seeded_at <= hospital.scenario.start,
        "links_sent": int(notifier.total("followup_notifier_rebook_links_sent_total")),
        "links_in_delivered_messages": in_messages,
        "pages_opened": int(
            notifier.total("followup_notifier_rebook_pages_total", result="opened")
        ),
        "links_opened": sum(1 for o in outcomes if o.outcome == "link_opened"),
        "slots_offered": int(notifier.total("followup_notifier_rebook_slots_offered_total")),
        "bookings_requested": asked("booking", "requested"),
        "slot_taken_meanwhile": asked("booking", "taken"),
        "callbacks_requested": asked("callback", "requested"),
        "booked_by_the_hospital": len(hospital.bookings),
        "confirmed": int(notifier.total("followup_notifier_rebook_confirmed_total")),
        "hospital_declined": len(hospital.refused),
        "patients_did": dict(phones.did),
        "recoveries": recovered,
        "share_without_a_call": round(recovered["by_link"] / total, 3) if total else None,
        "problems": phones.problems[:20] + hospital.errors[:20],
    }


# --- the checks ---------------------------------------------------------------------------------


def booked_on(details: dict[str, Any]) -> str | None:
    """The appointment the scheduler closed the case on (its history's ``booked`` note)."""
    for entry in details.get("history") or ():
        if entry.get("event") == "booked":
            appointment = (entry.get("detail") or {}).get("appointment")
            return str(appointment) if appointment else None
    return None


def tasks_out_at_close(observed: Observed, case_id: str, closed: datetime) -> list[int]:
    """The case's follow-up call tasks handed out, without a call result before ``closed``
    and with their window still open then (the notifier's and the scheduler's stamps)."""
    resulted = {
        o.attempt_number
        for o in unique_by_id(observed.outcomes)
        if o.case_id == case_id and o.outcome in CALL_RESULTS and o.occurred_at <= closed
    }
    return sorted(
        {
            n.attempt_number
            for n in unique_by_id(observed.notifications)
            if n.case_id == case_id
            and n.channel == "call_task"
            and n.purpose == "follow_up"
            and n.occurred_at <= closed < n.window_end
            and n.attempt_number not in resulted
        }
    )


def check(
    observed: Observed, scenario: Scenario, hospital: Hospital, pages: list[PageSeen]
) -> list[Finding]:
    """``pages``: every page the patients' phones got (``LinkPatients.pages``)."""
    findings = []
    cases = {str(c.get("case_id")): c for c in observed.cases or []}
    asked = _link_cases(observed)
    requested_at = {
        o.case_id: o.occurred_at
        for o in unique_by_id(observed.outcomes)
        if o.outcome == "booking_requested"
    }
    called = {
        o.case_id for o in unique_by_id(observed.outcomes) if o.outcome == "answered_rebooked"
    }
    booked_events: dict[str, Any] = {}
    for a in observed.appointments:  # the first booked event of each appointment
        if a.status == "booked" and a.change != "cancelled":
            booked_events.setdefault(a.appointment_id, a)
    pickers = sum(
        1 for p in scenario.patients if p.link_use in ("picks", "picks_taken", "picks_while_called")
    )
    by_link = [
        cid for cid in asked if case_state(cases.get(cid, {})) == "recovered" and cid not in called
    ]
    # 1. A self-service recovery is the hospital's booking, arrived on the ingest path, and
    # the scheduler closed the case on that booking.
    missing = []
    for cid in by_link:
        booking = hospital.bookings.get(cid)
        event = booked_events.get(booking.appointment_id) if booking else None
        closed_on = booked_on(observed.case_details.get(cid, {}))
        if booking is None:
            missing.append(f"{cid}: recovered by link, the hospital booked nothing")
        elif event is None:
            missing.append(f"{cid}: no booking event {booking.appointment_id} on the ingest path")
        elif closed_on != booking.appointment_id:
            missing.append(f"{cid}: closed on {closed_on}, not on the hospital's booking")
    findings.append(
        Finding(
            "self_service_recoveries_booked_by_the_hospital",
            bool(by_link or not pickers) and not missing,
            f"{len(by_link) - len(missing)}/{len(by_link)} recoveries by link closed on the"
            " hospital's booking from followup.appointments; "
            + ("; ".join(missing) or ("all" if by_link else "no recovery by link")),
        )
    )
    # 2. Not recovered before the hospital's booking (the tracker's and the scheduler's
    # stamps), and the booking came after the patient asked (the notifier's stamp).
    early = []
    for cid in by_link:
        booking = hospital.bookings.get(cid)
        event = booked_events.get(booking.appointment_id) if booking else None
        closed = _moment(cases[cid].get("closed_at"))
        if event is None or closed is None:
            early.append(f"{cid}: recovered without the hospital's booking")
        elif closed < event.occurred_at:
            early.append(f"{cid}: closed {closed:%d %b %H:%M}, booked {event.occurred_at:%H:%M}")
        elif requested_at.get(cid) is not None and event.occurred_at < requested_at[cid]:
            early.append(f"{cid}: a booking before the patient asked")
    findings.append(
        Finding(
            "no_recovery_by_link_before_the_hospital_booking",
            bool(asked or not pickers) and not early,
            f"{len(asked)} booking requests, {len(hospital.bookings)} booked by the hospital,"
            f" {len(by_link)} recovered by link; "
            + ("; ".join(early) or "every one closed after the hospital's booking event"),
        )
    )
    # 3. A call task still out when a case recovered by link is withdrawn, at every sink
    # that got it (the webhook's ticketing tool here).
    withdrawn = {
        (n.case_id, n.attempt_number)
        for n in unique_by_id(observed.notifications)
        if n.purpose == "withdrawal"
    }
    at_the_tool = {
        (identity[1], identity[2])
        for identity in (
            task_identity(t.payload) for t in observed.call_tasks if t.action == "withdraw"
        )
    }
    out, not_withdrawn = 0, []
    for cid in by_link:
        closed = _moment(cases[cid].get("closed_at"))
        for number in tasks_out_at_close(observed, cid, closed) if closed else []:
            out += 1
            if (cid, number) not in withdrawn:
                not_withdrawn.append(f"{cid}:{number}: no withdrawal commanded")
            elif (cid, number) not in at_the_tool:
                not_withdrawn.append(f"{cid}:{number}: the ticketing tool got no withdrawal")
    waiting = sum(1 for p in scenario.patients if p.link_use == "picks_while_called")
    findings.append(
        Finding(
            "call_task_withdrawn_on_link_rebooking",
            not not_withdrawn,
            f"{out - len(not_withdrawn)}/{out} call tasks out when their case recovered by"
            f" link withdrawn ({waiting} patient(s) picking while the desk's task is out); "
            + (
                "; ".join(not_withdrawn)
                or ("all" if out else "none was still out (its window ended first)")
            ),
        )
    )
    # 4. The page: the first name and the visit, nothing else personal.
    by_id = {p.patient_id: p for p in scenario.patients}
    shown = [
        problem
        for page in pages
        for problem in personal_data_on(page, by_id[page.patient_id], scenario.patients)
    ]
    named = sum(1 for page in pages if by_id[page.patient_id].given_name in unescape(page.html))
    findings.append(
        Finding(
            "rebook_page_shows_no_personal_data",
            bool(pages or not pickers) and not shown,
            f"{len(pages)} pages seen, {named} greet by first name; "
            + ("; ".join(shown[:10]) or "no family name, phone, email, birth date or notes"),
        )
    )
    return findings


def summary(values: dict[str, Any]) -> list[tuple[str, str]]:
    """The report table's rows for ``counts``."""
    if not values:
        return []
    r = values["recoveries"]
    share = values["share_without_a_call"]
    return [
        (
            "rebooking links",
            f"{values['links_sent']} sent, {values['pages_opened']} pages opened,"
            f" {values['slots_offered']} slots offered ({values['slots_seeded']} seeded"
            + ("" if values["seeded_before_the_clinic_opened"] else ", after the opening")
            + ")",
        ),
        (
            "bookings by link",
            f"{values['bookings_requested']} requested, {values['slot_taken_meanwhile']} slot"
            f" taken meanwhile, {values['booked_by_the_hospital']} booked by the hospital,"
            f" {values['confirmed']} confirmed; {values['callbacks_requested']} call-backs",
        ),
        (
            "recoveries",
            f"{r['by_link']} by link, {r['with_a_call']} with a call,"
            f" {r['patient_phoned']} patient phoned"
            + (f"; without a call {share:.0%}" if share is not None else ""),
        ),
    ]
