-- Issue 21: one short question after a recovered visit. A case closed as recovered by a
-- booking waits here for that visit; when it is attended the question goes out once
-- (asked_at); the patient's answer is kept with it (rating; comment: free text, for the
-- clinic through the case API, erased with the patient, never logged).
CREATE TABLE feedback (
    case_id        text PRIMARY KEY REFERENCES cases (case_id),
    patient_id     text NOT NULL,
    department     text NOT NULL,
    timezone       text NOT NULL,
    appointment_id text NOT NULL,
    channel        text NOT NULL,
    created_at     timestamptz NOT NULL,
    asked_at       timestamptz,
    rating         smallint CHECK (rating BETWEEN 1 AND 5),
    comment        text,
    answered_at    timestamptz
);
CREATE INDEX feedback_waiting ON feedback (appointment_id) WHERE asked_at IS NULL;
CREATE INDEX feedback_of_patient ON feedback (patient_id);
