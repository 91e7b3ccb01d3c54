-- Issue 12/19: a case cleared by later input, the patient's own zone, appointments known.

ALTER TABLE cases DROP CONSTRAINT cases_resolution_check;
ALTER TABLE cases ADD CONSTRAINT cases_resolution_check CHECK (resolution IN ('recovered',
    'declined', 'opted_out', 'unreachable', 'escalated', 'superseded', 'deceased',
    'transferred_out', 'cleared'));
-- For quiet hours: the patient's zone when the trigger knew it (else the clinic's timezone).
ALTER TABLE cases ADD COLUMN patient_timezone text;

-- The latest status of each appointment seen on followup.appointments, so that a trigger
-- whose fact the clinic already contradicted (the patient arrived) opens no case.
CREATE TABLE known_appointments (
    appointment_id  text PRIMARY KEY,
    patient_id      text NOT NULL,
    start           timestamptz,  -- null while only named by id (HL7 S15/S26 alone)
    status          text NOT NULL,
    status_at       timestamptz,
    occurred_at     timestamptz NOT NULL
);
