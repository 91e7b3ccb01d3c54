-- What a patient asked for through a rebooking link, one row per case: the first request
-- claims the case (a second link of the case, or the same link again, finds it). A booking
-- stays 'requested' until the hospital's own booking arrives on followup.appointments
-- ('confirmed'); 'claimed' is a request under way (re-claimable after a crash).
CREATE TABLE rebook_requests (
    case_id         text PRIMARY KEY,
    patient_id      text NOT NULL,
    idempotency_key text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('booking', 'callback')),
    state           text NOT NULL CHECK (state IN ('claimed', 'requested', 'confirmed')),
    slot_id         text,
    slot_start      timestamptz,
    reference       text,
    callback_at     timestamptz,
    requested_at    timestamptz NOT NULL,
    confirmed_at    timestamptz
);
CREATE INDEX rebook_requests_waiting ON rebook_requests (patient_id) WHERE state = 'requested';
