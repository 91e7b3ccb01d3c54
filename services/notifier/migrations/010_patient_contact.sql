-- What the carrier said about the patient's number (carrier-error triage): 'landline'
-- (takes no SMS) or 'number_wrong' (does not exist). Kept for the number it was said of;
-- a contact event with another number clears it (directory.record_contact).
ALTER TABLE contacts ADD COLUMN phone_mark text;
ALTER TABLE contacts ADD COLUMN phone_marked_at timestamptz;

-- A proxy (guardian of a minor, a proxy an adult named): messages and call tasks go to
-- them instead of the patient. proxy is the contract's ProxyContact as JSON; its phone is
-- normalised like the patient's.
ALTER TABLE contacts ADD COLUMN proxy jsonb;
ALTER TABLE contacts ADD COLUMN proxy_phone_e164 text;
ALTER TABLE contacts ADD COLUMN proxy_email text;
CREATE INDEX contacts_proxy_phone ON contacts (proxy_phone_e164);
