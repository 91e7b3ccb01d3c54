"""The clinic's three ingest paths into followup, behind one small interface.

HL7 v2 SIU over MLLP, FHIR R4 over HTTP, canonical JSON on Kafka: each patient's data goes
in through the path the scenario gives them, so every adapter of the tracker is exercised.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import aiohttp

from common.kafka import KafkaPublisher
from demo.scenario import Appointment, Patient
from demo.simulator import canonical, fhir
from demo.simulator.hl7v2 import FillerStatus, MllpSender, SiuEvent, adt_death, adt_register, siu
from schemas.events import AppointmentStatus
from schemas.topics import TopicNames

HL7_STATUS: dict[AppointmentStatus, tuple[SiuEvent, FillerStatus]] = {
    "booked": ("S12", "Booked"),
    "arrived": ("S14", "Started"),
    "fulfilled": ("S14", "Complete"),
    "cancelled": ("S15", "Cancelled"),
    "noshow": ("S26", "Noshow"),
}
CHANGE: dict[AppointmentStatus, canonical.Change] = {
    "booked": "booked",
    "arrived": "status_changed",
    "fulfilled": "status_changed",
    "cancelled": "cancelled",
    "noshow": "noshow",
}


class FeedError(Exception):
    """The receiving end refused what the clinic sent (HTTP 4xx/5xx, HL7 AE/AR)."""


class ClinicFeed(Protocol):
    async def register(self, patient: Patient, now: datetime) -> None: ...

    async def death(self, patient: Patient, died_at: datetime, now: datetime) -> None: ...

    async def plan(self, patient: Patient, now: datetime) -> None: ...

    async def appointment(
        self,
        patient: Patient,
        appt: Appointment,
        status: AppointmentStatus,
        now: datetime,
        *,
        by_patient: bool = False,
    ) -> None: ...


@dataclass
class JsonFeed:
    """Canonical events produced straight onto the topics (an integrator's path)."""

    publisher: KafkaPublisher
    topics: TopicNames

    async def register(self, patient: Patient, now: datetime) -> None:
        await self.publisher.publish(self.topics.contacts, canonical.contact(patient, now))
        if (child := canonical.child_status(patient, now)) is not None:
            await self.publisher.publish(self.topics.patients, child)
        if (chosen := canonical.preferences(patient, now)) is not None:
            await self.publisher.publish(self.topics.patients, chosen)

    async def death(self, patient: Patient, died_at: datetime, now: datetime) -> None:
        contact = canonical.contact(patient, now, deceased=True)
        await self.publisher.publish(self.topics.contacts, contact)
        await self.publisher.publish(self.topics.patients, canonical.death(patient, died_at, now))

    async def plan(self, patient: Patient, now: datetime) -> None:
        await self.publisher.publish(self.topics.plans, canonical.plan(patient, now))

    async def appointment(
        self,
        patient: Patient,
        appt: Appointment,
        status: AppointmentStatus,
        now: datetime,
        *,
        by_patient: bool = False,
    ) -> None:
        event = canonical.appointment(
            patient, appt, change=CHANGE[status], status=status, now=now, by_patient=by_patient
        )
        await self.publisher.publish(self.topics.appointments, event)


@dataclass
class Hl7Feed:
    """ADT and SIU messages over MLLP; contact details ride in PID. HL7 scheduling feeds
    carry no treatment plans: the plan goes in as canonical JSON (the EHR's own path)."""

    sender: MllpSender
    json: JsonFeed
    run_id: str = "sim"

    def __post_init__(self) -> None:
        self._control = itertools.count(1)

    def _control_id(self) -> str:
        # Unique per message (the tracker derives event ids from it), short as HL7 likes.
        return f"{self.run_id}-{next(self._control)}"

    async def register(self, patient: Patient, now: datetime) -> None:
        await self.sender.send(adt_register(patient, sent_at=now, control_id=self._control_id()))

    async def death(self, patient: Patient, died_at: datetime, now: datetime) -> None:
        message = adt_death(patient, died_at=died_at, sent_at=now, control_id=self._control_id())
        await self.sender.send(message)

    async def plan(self, patient: Patient, now: datetime) -> None:
        await self.json.plan(patient, now)

    async def appointment(
        self,
        patient: Patient,
        appt: Appointment,
        status: AppointmentStatus,
        now: datetime,
        *,
        by_patient: bool = False,
    ) -> None:
        event, filler = HL7_STATUS[status]
        message = siu(
            event,
            patient,
            appt,
            status=filler,
            sent_at=now,
            control_id=self._control_id(),
            plan_id=patient.plan_id,
            cancelled_by_patient=by_patient,
        )
        await self.sender.send(message)


@dataclass
class FhirFeed:
    """FHIR R4 resources posted to the tracker's REST endpoints with a bearer token."""

    session: aiohttp.ClientSession
    base_url: str
    token: str

    def __post_init__(self) -> None:
        self._created: set[str] = set()

    async def _put_or_post(self, resource: fhir.Json) -> None:
        kind, rid = resource["resourceType"], resource["id"]
        key = f"{kind}/{rid}"
        if key in self._created:
            method, url = "PUT", f"{self.base_url}/fhir/{kind}/{rid}"
        else:
            method, url = "POST", f"{self.base_url}/fhir/{kind}"
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/fhir+json",
        }
        async with self.session.request(method, url, json=resource, headers=headers) as resp:
            if resp.status >= 300:
                # The reason names fields, never values: safe to show.
                raise FeedError(f"{method} {kind}: HTTP {resp.status}: {(await resp.text())[:300]}")
        self._created.add(key)

    async def register(self, patient: Patient, now: datetime) -> None:
        await self._put_or_post(fhir.patient_resource(patient))

    async def death(self, patient: Patient, died_at: datetime, now: datetime) -> None:
        await self._put_or_post(fhir.patient_resource(patient, died_at))

    async def plan(self, patient: Patient, now: datetime) -> None:
        await self._put_or_post(fhir.care_plan_resource(patient))

    async def appointment(
        self,
        patient: Patient,
        appt: Appointment,
        status: AppointmentStatus,
        now: datetime,
        *,
        by_patient: bool = False,
    ) -> None:
        if status not in ("booked", "arrived", "fulfilled", "cancelled", "noshow"):
            raise ValueError(f"the clinic never sends {status}")
        resource = fhir.appointment_resource(patient, appt, status, by_patient=by_patient)
        await self._put_or_post(resource)
