-- Contact details and consent: the only place personal data is stored.
CREATE TABLE contacts (
    patient_id    text PRIMARY KEY,
    given_name    text,
    family_name   text,
    phone_raw     text,
    phone_e164    text,
    email         text,
    language      text NOT NULL,
    timezone      text NOT NULL,
    consent_sms   boolean NOT NULL,
    consent_email boolean NOT NULL,
    consent_call  boolean NOT NULL,
    status        text NOT NULL,
    occurred_at   timestamptz NOT NULL,
    event_id      text NOT NULL
);
CREATE INDEX contacts_phone ON contacts (phone_e164);

-- followup.patients: deceased / transferred_out patients are never contacted.
CREATE TABLE patient_status (
    patient_id   text PRIMARY KEY,
    status       text NOT NULL,
    effective_at timestamptz NOT NULL,
    event_id     text NOT NULL
);

-- Opt-outs by address (E.164 phone or lower-cased email) and channel: the person who
-- said STOP is whoever holds that address, whichever patient record it came from.
CREATE TABLE opt_outs (
    address    text NOT NULL,
    channel    text NOT NULL,
    opted_out  boolean NOT NULL,
    changed_at timestamptz NOT NULL,
    event_id   text NOT NULL,
    PRIMARY KEY (address, channel)
);

-- The delivery ledger: one row per command (idempotency key and purpose), claimed before
-- anything is sent. state: pending -> sending -> done. A row in 'done' carries the outcome
-- to publish; outcome_published turns true once the broker acknowledged it.
CREATE TABLE deliveries (
    idempotency_key   text NOT NULL,
    purpose           text NOT NULL,
    case_id           text NOT NULL,
    attempt_number    integer NOT NULL,
    patient_id        text NOT NULL,
    channel           text NOT NULL,
    command           jsonb NOT NULL,
    state             text NOT NULL,
    due_at            timestamptz NOT NULL,
    tries             integer NOT NULL DEFAULT 0,
    sending_since     timestamptz,
    provider          text,
    provider_id       text,
    sinks_done        text[] NOT NULL DEFAULT '{}',
    outcome           text,
    detail            text,
    respond_by        timestamptz,
    outcome_published boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL,
    finished_at       timestamptz,
    PRIMARY KEY (idempotency_key, purpose)
);
CREATE INDEX deliveries_due ON deliveries (state, due_at);
CREATE INDEX deliveries_unpublished ON deliveries (outcome_published) WHERE outcome IS NOT NULL;
CREATE INDEX deliveries_provider_id ON deliveries (provider_id);
CREATE INDEX deliveries_patient_day ON deliveries (patient_id, created_at);
