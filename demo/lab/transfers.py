"""Transfers to another provider, played into a lab run: the hospital's feed reports each
one (a PatientStatusEvent ``transferred_out`` on the patients topic, as the JSON feed
reports a death), either by itself some days after the missed visit or soon after the
patient said so on a call. The moment each was reported is kept: nobody may be contacted
after it (the lab's ``after_transfer`` safety count)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from demo.lab.model import ModelReactions, Transfer
from demo.scenario import Patient
from demo.simulator.canonical import SOURCE
from demo.simulator.clinic import Simulation
from schemas.events import PatientStatusEvent

# The front desk records what the patient said after hanging up.
RECORDED_AFTER_CALL = timedelta(minutes=10)


@dataclass
class TransferFeed:
    transfers: dict[str, Transfer]
    reported: dict[str, datetime] = field(default_factory=dict)  # patient -> when reported
    _planned: set[str] = field(default_factory=set)

    def attach(self, simulation: Simulation, reactions: ModelReactions) -> None:
        """Plan the hospital's own reports; hear the patients who say so on a call."""
        for t in self.transfers.values():
            if t.reported_at is not None:
                self._plan(simulation, simulation.by_id[t.patient_id], t.reported_at)

        def told(patient: Patient, at: datetime) -> None:
            self._plan(simulation, patient, max(at, simulation.clock.now()) + RECORDED_AFTER_CALL)

        reactions.on_told_transfer = told

    def _plan(self, simulation: Simulation, patient: Patient, at: datetime) -> None:
        if patient.patient_id in self._planned:
            return
        self._planned.add(patient.patient_id)

        async def report() -> None:
            now = simulation.clock.now()
            event = PatientStatusEvent(
                event_id=f"patient-status:{patient.patient_id}:transferred_out",
                occurred_at=now,
                source=SOURCE,
                patient_id=patient.patient_id,
                status="transferred_out",
                effective_at=now,
            )
            await simulation.publisher.publish(simulation.topics.patients, event)
            self.reported[patient.patient_id] = now

        simulation.at(at, patient, "transfer", report)
