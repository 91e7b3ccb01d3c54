"""The simulator's wire formats: HL7 SIU parses back, FHIR validates, JSON fits the contract."""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

import hl7
import pytest
from fhir.resources.R4B.appointment import Appointment as FhirAppointment
from fhir.resources.R4B.careplan import CarePlan
from fhir.resources.R4B.patient import Patient as FhirPatient
from hl7.mllp import start_hl7_server

from demo.scenario import Patient, build
from demo.simulator import canonical, fhir
from demo.simulator.hl7v2 import (
    HL7Rejected,
    MllpSender,
    adt_death,
    adt_register,
    escape,
    siu,
)

VILNIUS = ZoneInfo("Europe/Vilnius")
NOW = datetime(2026, 3, 2, 7, 0, tzinfo=VILNIUS)


def a_patient_with_visit() -> Patient:
    scenario = build(patients=12, days=14, seed=3)
    return next(p for p in scenario.patients if p.appointments)


def test_escape_keeps_delimiters_out_of_fields() -> None:
    assert escape("a|b^c~d&e\\f") == "a\\F\\b\\S\\c\\R\\d\\T\\e\\E\\f"


def test_siu_parses_back_with_the_hl7_library() -> None:
    patient = a_patient_with_visit()
    appt = patient.appointments[0]
    message = siu(
        "S12", patient, appt, status="Booked", sent_at=NOW, control_id="c-1", plan_id="plan-1"
    )
    parsed = hl7.parse(message.text)
    assert str(parsed.segment("MSH")[9]) == "SIU^S12^SIU_S12"
    assert str(parsed["MSH.F10"]) == "c-1"
    assert parsed["SCH.F2.R1.C1"] == appt.appointment_id
    assert parsed["SCH.F25"] == "Booked"
    assert parsed["SCH.F26"] == "plan-1"
    assert parsed["PID.F3.R1.C1"] == patient.patient_id
    assert parsed["PID.F5.R1.C1"] == patient.family_name
    assert parsed["PID.F13.R1.C1"] == patient.phone
    assert parsed["PID.F15"] == patient.language
    assert parsed["PV1.F3.R1.C1"] == appt.department
    timing = str(parsed["SCH.F11.R1.C4"])
    assert datetime.strptime(timing, "%Y%m%d%H%M%S%z") == appt.start


def test_adt_registers_a_patient_before_any_visit() -> None:
    patient = a_patient_with_visit()
    parsed = hl7.parse(adt_register(patient, sent_at=NOW, control_id="r-1").text)
    assert str(parsed.segment("MSH")[9]) == "ADT^A28^ADT_A05"
    assert parsed["PID.F3.R1.C1"] == patient.patient_id
    assert parsed["PID.F13.R2.C4"] == patient.email


def test_a_death_travels_as_adt_a03_with_the_death_indicator() -> None:
    patient = a_patient_with_visit()
    message = adt_death(patient, died_at=NOW, sent_at=NOW, control_id="d-1")
    parsed = hl7.parse(message.text)
    assert str(parsed.segment("MSH")[9]) == "ADT^A03^ADT_A03"
    assert parsed["PID.F30"] == "Y"
    assert datetime.strptime(str(parsed["PID.F29"]), "%Y%m%d%H%M%S%z") == NOW
    resource = FhirPatient.model_validate(fhir.patient_resource(patient, NOW))
    assert resource.deceasedDateTime is not None


def test_patient_cancellation_names_the_patient_as_reason() -> None:
    patient = a_patient_with_visit()
    message = siu(
        "S15",
        patient,
        patient.appointments[0],
        status="Cancelled",
        sent_at=NOW,
        control_id="c-2",
        cancelled_by_patient=True,
    )
    parsed = hl7.parse(message.text)
    assert parsed["SCH.F6.R1.C1"] == "PAT"
    assert parsed["SCH.F25"] == "Cancelled"


async def test_mllp_sender_waits_for_the_ack_and_refuses_ae() -> None:
    answers = ["AA", "AE"]
    received: list[str] = []

    async def on_client(reader, writer):  # type: ignore[no-untyped-def]
        try:
            while not reader.at_eof():
                message = await reader.readmessage()
                received.append(str(message.segment("MSH")[10]))
                writer.writemessage(message.create_ack(answers.pop(0)))
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await start_hl7_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    patient = a_patient_with_visit()
    appt = patient.appointments[0]
    sender = MllpSender("127.0.0.1", port, timeout=5)
    try:
        ack = await sender.send(
            siu("S12", patient, appt, status="Booked", sent_at=NOW, control_id="m-1")
        )
        assert ack.code == "AA" and ack.control_id == "m-1"
        with pytest.raises(HL7Rejected):
            await sender.send(
                siu("S14", patient, appt, status="Started", sent_at=NOW, control_id="m-2")
            )
        assert received == ["m-1", "m-2"]
    finally:
        await sender.close()
        server.close()
        await server.wait_closed()


def test_fhir_resources_validate_as_r4() -> None:
    patient = a_patient_with_visit()
    appt = patient.appointments[0]
    p = FhirPatient.model_validate(fhir.patient_resource(patient))
    assert p.id == patient.patient_id
    plan = CarePlan.model_validate(fhir.care_plan_resource(patient))
    assert plan.activity is not None and len(plan.activity) == 3
    statuses: tuple[fhir.FhirStatus, ...] = (
        "booked",
        "arrived",
        "fulfilled",
        "cancelled",
        "noshow",
    )
    for status in statuses:
        resource = fhir.appointment_resource(patient, appt, status, by_patient=True)
        parsed = FhirAppointment.model_validate(resource)
        assert parsed.status == status
    cancelled = fhir.appointment_resource(patient, appt, "cancelled", by_patient=True)
    assert cancelled["cancelationReason"]["coding"][0]["code"] == "pat"


def test_canonical_events_fit_the_contracts() -> None:
    patient = a_patient_with_visit()
    appt = patient.appointments[0]
    event = canonical.appointment(
        patient, appt, change="cancelled", status="cancelled", now=NOW, by_patient=True
    )
    assert event.cancelled_by == "patient" and event.stage_id == appt.stage_id
    plan = canonical.plan(patient, NOW)
    assert [s.sequence for s in plan.stages] == [1, 2, 3]
    assert canonical.contact(patient, NOW).timezone == patient.timezone
    assert canonical.invitation_call(patient, NOW, "no_answer").case_id is None
