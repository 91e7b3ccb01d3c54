-- Issue 19: retention and erasure. A patient may be erased (GDPR art. 17): the case closes
-- with its own resolution, and the erasure is recorded with ids only (the audit trail).
ALTER TABLE patient_status DROP CONSTRAINT patient_status_status_check;
ALTER TABLE patient_status ADD CONSTRAINT patient_status_status_check
    CHECK (status IN ('active', 'deceased', 'transferred_out', 'erased'));
ALTER TABLE cases DROP CONSTRAINT cases_resolution_check;
ALTER TABLE cases ADD CONSTRAINT cases_resolution_check CHECK (resolution IN ('recovered',
    'declined', 'opted_out', 'unreachable', 'escalated', 'superseded', 'deceased',
    'transferred_out', 'cleared', 'erased'));
CREATE TABLE erasures (
    event_id      text PRIMARY KEY,
    patient_id    text NOT NULL,
    requested_by  text,
    requested_at  timestamptz NOT NULL,
    erased_at     timestamptz NOT NULL
);
CREATE INDEX erasures_by_patient ON erasures (patient_id);
-- The retention sweep walks closed cases by close time and plans by age.
CREATE INDEX cases_closed_by_age ON cases (closed_at) WHERE closed_at IS NOT NULL;
CREATE INDEX plans_by_age ON plans (occurred_at);
