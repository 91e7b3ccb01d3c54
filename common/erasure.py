"""An erasure request (GDPR art. 17) as it travels: one home for the tracker's API route
and the admin tool, so both say the same thing.

The request is a ``PatientStatusEvent`` with status ``erased`` on followup.patients (ids
only), followed by a tombstone (a record with no value) keyed by the patient on the
compacted followup.contacts, so that compaction removes the patient's contact from the
topic itself. The status topic is compacted too: the latest status per patient, here the
erasure, stays as the record that the patient was erased, and a service that reads the
topic again from the start still finds it.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from schemas.events import PatientStatusEvent


def erasure_request(
    patient_id: str, *, requested_by: str, source: str, now: datetime
) -> PatientStatusEvent:
    """The event to publish on followup.patients (raises pydantic's ValidationError for an
    id that is not one). Its id is new per request: a second request is a second audit row."""
    return PatientStatusEvent(
        event_id=f"erasure:{uuid.uuid4()}",
        occurred_at=now,
        source=source,
        patient_id=patient_id,
        status="erased",
        effective_at=now,
        requested_by=requested_by,
    )
