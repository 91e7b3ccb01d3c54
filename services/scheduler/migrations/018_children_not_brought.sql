-- Issue 18: children who were not brought. A child's birth date (followup.patients sends
-- no adult's) beside the patient's status, for the safeguarding rule alone; a case says only
-- whether it is a child's and since when it is a safeguarding case.
ALTER TABLE patient_status ADD COLUMN birth_date date;
ALTER TABLE cases ADD COLUMN child boolean NOT NULL DEFAULT false;
ALTER TABLE cases ADD COLUMN safeguarding_at timestamptz;
