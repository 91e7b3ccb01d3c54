"""``followup_admin erase PATIENT_ID``: a patient's erasure request, straight onto the
broker (the same events as the tracker's ``POST /patients/{id}/erasure``, from
common.erasure), for an operator answering a GDPR request without the API."""

from __future__ import annotations

from datetime import UTC, datetime

from common.codec import encode
from common.erasure import erasure_request
from followup_admin.config import Deployment
from schemas.events import PatientStatusEvent


def plan(patient_id: str, requested_by: str) -> PatientStatusEvent:
    """The erasure event (ValidationError for an id that is not one)."""
    return erasure_request(
        patient_id, requested_by=requested_by, source="followup-admin", now=datetime.now(UTC)
    )


def erase(deployment: Deployment, event: PatientStatusEvent) -> None:
    """Publish the erasure, then the contact's tombstone; wait for the broker to store both."""
    with deployment.producer() as producer:
        producer.send(deployment.names.patients, value=encode(event), key=event.key()).get(30)
        producer.send(deployment.names.contacts, value=None, key=event.key()).get(30)
        producer.flush()
