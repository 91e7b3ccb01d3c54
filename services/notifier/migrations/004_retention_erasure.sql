-- Issue 19: retention and erasure. Each erasure request carried out, ids only: who asked,
-- when, and when this service removed the patient's personal fields (the audit trail).
CREATE TABLE erasures (
    event_id      text PRIMARY KEY,
    patient_id    text NOT NULL,
    requested_by  text,
    requested_at  timestamptz NOT NULL,
    erased_at     timestamptz NOT NULL
);
CREATE INDEX erasures_by_patient ON erasures (patient_id);
-- The retention sweep walks finished deliveries by age and contacts by last change.
CREATE INDEX deliveries_finished ON deliveries (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX contacts_by_age ON contacts (occurred_at);
CREATE INDEX opt_outs_by_age ON opt_outs (changed_at);
