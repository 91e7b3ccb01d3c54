-- Issue 8: frequency caps and conversations in progress, per patient across all cases.

-- One row per patient, locked FOR UPDATE while that patient's attempts fire, so the caps
-- hold when several scheduler replicas fire at the same moment.
CREATE TABLE patient_locks (
    patient_id  text PRIMARY KEY
);

-- Every automated contact made (follow-ups, not escalations to staff), for the caps.
CREATE TABLE contact_log (
    case_id         text NOT NULL,
    attempt_number  integer NOT NULL,
    patient_id      text NOT NULL,
    channel_class   text NOT NULL CHECK (channel_class IN ('message', 'call')),
    sent_at         timestamptz NOT NULL,
    PRIMARY KEY (case_id, attempt_number)
);
CREATE INDEX contact_log_by_patient ON contact_log (patient_id, channel_class, sent_at);

-- A patient's reply that nobody has answered yet.
CREATE TABLE open_replies (
    patient_id  text PRIMARY KEY,
    since       timestamptz NOT NULL
);
