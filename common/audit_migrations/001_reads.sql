-- The breach protocol's record (issue 21): every read of personal data through the
-- services' APIs and pages, one row per patient per read. Ids only: who (the credential's
-- id, never the secret), when, which route of which service, which patient, which fields.
CREATE TABLE reads (
    id            bigserial PRIMARY KEY,
    at            timestamptz NOT NULL,
    service       text NOT NULL,
    credential_id text NOT NULL,
    route         text NOT NULL,
    patient_id    text NOT NULL,
    fields        text[] NOT NULL
);
CREATE INDEX reads_by_credential ON reads (credential_id, at);
CREATE INDEX reads_by_patient ON reads (patient_id, at);
