-- What the carrier said about the patient's number (carrier-error triage): 'landline'
-- (takes no SMS) or 'number_wrong' (does not exist). Kept for the number it was said of;
-- a contact event with another number clears it (directory.record_contact).
ALTER TABLE contacts ADD COLUMN phone_mark text;
ALTER TABLE contacts ADD COLUMN phone_marked_at timestamptz;
