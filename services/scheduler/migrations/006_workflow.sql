-- Issue 18: a clinical concern reported on a call. The administrator's note is kept on the
-- case alone (for the clinician on call's escalation task): never in history, logs or metrics.
ALTER TABLE cases ADD COLUMN concern_at timestamptz;
ALTER TABLE cases ADD COLUMN concern_note text;

-- Earlier no-shows of a patient (the risk score), counted at firing.
CREATE INDEX cases_by_patient_reason ON cases (patient_id, reason);

-- Call tasks each front desk (department) handed out per clinic day, for its capacity;
-- locked FOR UPDATE while firing, so replicas together stay within it.
CREATE TABLE desk_calls (
    department  text NOT NULL,
    day         date NOT NULL,
    calls       integer NOT NULL DEFAULT 0,
    PRIMARY KEY (department, day)
);
