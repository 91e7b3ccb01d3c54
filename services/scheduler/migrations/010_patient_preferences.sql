-- Issue 15: the patient's preferences (followup.patients, no personal data): the channel
-- tried first and the hours to be reached in (HH:MM-HH:MM, the patient's zone), and the
-- patient's zone as their record says it. Kept per patient and copied onto each open case.
ALTER TABLE patient_status ADD COLUMN timezone text;
ALTER TABLE patient_status ADD COLUMN preferred_channel text;
ALTER TABLE patient_status ADD COLUMN contact_window text;
ALTER TABLE cases ADD COLUMN preferred_channel text;
ALTER TABLE cases ADD COLUMN contact_window text;
