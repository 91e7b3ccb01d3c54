-- The erasure (followup.patients) and the contact's tombstone (followup.contacts) are read
-- by two consumers in no order. A tombstone read first deletes the contact, the one link
-- from the patient to their addresses; it keeps the opt-outs (they protect whoever holds
-- the address) but writes here whose contact held them (patient ids only), so that the
-- erasure read after it still finds and deletes them.
ALTER TABLE opt_outs ADD COLUMN left_by text[] NOT NULL DEFAULT '{}';
CREATE INDEX opt_outs_left_by ON opt_outs USING gin (left_by);
