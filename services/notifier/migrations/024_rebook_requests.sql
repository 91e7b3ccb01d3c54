-- Rebooking by link (rebooking.py). One row per link: its id is an HMAC of the message's
-- idempotency key (rebook_links.link_id), written when the message is accepted, so the
-- short link in an SMS finds its message; expires_at is the link's own expiry.
CREATE TABLE rebook_links (
    link_id         text PRIMARY KEY,
    idempotency_key text NOT NULL,
    expires_at      timestamptz NOT NULL,
    opened_at       timestamptz  -- first opened (the link_opened outcome goes out once)
);
CREATE INDEX rebook_links_expiry ON rebook_links (expires_at);

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
